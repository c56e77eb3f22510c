"""Property tests (hypothesis) for the three inputs the outside world writes (issue 7, item 5).

- **Catalog files.** A strategy builds valid catalog documents, then maybe applies *one*
  mutation known to break a rule (dropped key, typo, bad factor, duplicate name or
  instance type, bad selector, ...) which also says the path the error must name. The
  loader must accept exactly the unbroken documents, with the families as generated, and
  refuse every broken one with an error at the expected path; no error may lack a path.
- **Pods through the webhook.** Random pods (support.strategies) go through the whole
  webhook (placement on a real fleet, patch, encoding): the answer is never an internal
  error, a returned patch applies to the original with ``jsonpatch``, the result
  round-trips through the ``kubernetes`` client's ``V1Pod`` model without losing a field,
  and a second admission of the patched pod changes nothing. (test_patching.py checks the
  patch arithmetic itself on the pure function.)
- **Extender requests.** Valid shapes with random names, pods and Node objects must get a
  200 with a consistent answer; any value of the wrong type anywhere gets a 400 or a 200,
  never a 5xx or an ``Error`` from filter.

Everything runs in-process (Flask test client); examples are kept modest so the file takes
seconds.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient
from support.helpers import CATALOG_A, admission_pod, fixture_nodes, snapshot_objects
from support.strategies import pods as patching_pods
from support.webhook import Webhook

from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource, parse_catalog
from machine_catalog.validation import CatalogInvalid

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- catalog documents ----------------------------------------------------------------------

FAMILY_NAMES = ["base", "s5", "m6i", "c7g", "sa3", "spr", "gen-2", "x_1"]
INSTANCE_TYPES = [f"t{i}.large" for i in range(12)]
SELECTOR_KEYS = ["feature.node.kubernetes.io/cpu-model.vendor_id", "pool", "example.com/gen"]
SELECTOR_VALUES = ["Intel", "AMD", "p1", "v2"]
#: Valid spellings of a factor and the value each means.
FACTORS = [
    (0.8, Decimal("0.8")),
    (1.18, Decimal("1.18")),
    ("1.35", Decimal("1.35")),
    ("1180m", Decimal("1.18")),
    (2, Decimal(2)),
    (16, Decimal(16)),
    ("0.5", Decimal("0.5")),
]
ONE = [1, 1.0, "1", "1000m", "1.000"]


@st.composite
def selectors(draw: st.DrawFn) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    if draw(st.booleans()):
        selector["matchLabels"] = {
            draw(st.sampled_from(SELECTOR_KEYS)): draw(st.sampled_from(SELECTOR_VALUES))
        }
    if draw(st.booleans()) or not selector:
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]))
        req: dict[str, Any] = {"key": draw(st.sampled_from(SELECTOR_KEYS)), "operator": op}
        if op in ("In", "NotIn"):
            req["values"] = draw(st.lists(st.sampled_from(SELECTOR_VALUES), min_size=1, max_size=3))
        elif op in ("Gt", "Lt"):
            req["values"] = [str(draw(st.integers(-5, 99)))]
        selector["matchExpressions"] = [req]
    return selector


@st.composite
def valid_catalogs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(FAMILY_NAMES), min_size=1, max_size=5, unique=True))
    baseline = draw(st.sampled_from(names))
    types = draw(st.permutations(INSTANCE_TYPES))
    families = []
    for i, name in enumerate(names):
        family: dict[str, Any] = {"name": name}
        if name == baseline:
            family["scuPerCore"] = draw(st.sampled_from(ONE))
        else:
            family["scuPerCore"] = draw(st.sampled_from(FACTORS))[0]
        rules = draw(st.sampled_from(["types", "selector", "both"]))
        if rules in ("types", "both"):
            family["instanceTypes"] = types[2 * i : 2 * i + draw(st.integers(1, 2))]
        if rules in ("selector", "both"):
            family["nodeSelector"] = draw(selectors())
        if draw(st.booleans()):
            family["description"] = "a family"
        if draw(st.booleans()):
            family["schedulable"] = draw(st.booleans())
        if draw(st.booleans()):
            family["generation"] = draw(st.integers(1, 9))
        families.append(family)
    spec: dict[str, Any] = {"baseline": baseline, "families": families}
    if draw(st.booleans()):
        spec["unknownNodes"] = draw(st.sampled_from(["reject", "allow"]))
    if draw(st.booleans()):
        spec["scoring"] = {"strategy": draw(st.sampled_from(["balanced", "binpack"]))}
    return {
        "apiVersion": "machine-catalog.io/v1alpha1",
        "kind": "MachineCatalog",
        "metadata": {"name": "fuzz"},
        "spec": spec,
    }


def _family_index(draw: st.DrawFn, doc: dict[str, Any], **where: Any) -> int | None:
    families = doc["spec"]["families"]
    options = [
        i
        for i, f in enumerate(families)
        if all((k in f) == v if isinstance(v, bool) else f.get(k) == v for k, v in where.items())
    ]
    return draw(st.sampled_from(options)) if options else None


@st.composite
def broken(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Break one rule of ``doc`` (in place); the path the error must name, or None if the
    drawn mutation does not apply to this document."""
    spec = doc["spec"]
    families = spec["families"]
    kind = draw(
        st.sampled_from(
            [
                "drop-top",
                "drop-family-key",
                "typo",
                "factor",
                "baseline-factor",
                "duplicate-name",
                "duplicate-type",
                "selector",
                "baseline-missing",
                "no-families",
                "no-rules",
                "wrong-type",
                "enum",
                "bad-name",
            ]
        )
    )
    i = draw(st.integers(0, len(families) - 1))
    family = families[i]
    if kind == "drop-top":
        key = draw(st.sampled_from(["apiVersion", "kind", "metadata", "spec"]))
        del doc[key]
        return doc, key
    if kind == "drop-family-key":
        key = draw(st.sampled_from(["name", "scuPerCore"]))
        del family[key]
        return doc, f"spec.families[{i}].{key}"
    if kind == "typo":
        where, key = draw(
            st.sampled_from(
                [("family", "scuPerCor"), ("family", "instancetypes"), ("spec", "unknownNode")]
            )
        )
        if where == "family":
            family[key] = family.get("scuPerCore", 1)
            return doc, f"spec.families[{i}].{key}"
        spec[key] = "reject"
        return doc, f"spec.{key}"
    if kind == "factor":
        bad = draw(st.sampled_from([0, -1, 16.5, 17, "abc", True, "1e400", "0m", None, [1]]))
        family["scuPerCore"] = bad
        return doc, f"spec.families[{i}].scuPerCore"
    if kind == "baseline-factor":
        b = next(k for k, f in enumerate(families) if f["name"] == spec["baseline"])
        families[b]["scuPerCore"] = draw(st.sampled_from([1.18, "2", "999m", 0.5]))
        return doc, f"spec.families[{b}].scuPerCore"
    if kind == "duplicate-name":
        if len(families) < 2:
            return None
        j = draw(st.integers(1, len(families) - 1))
        k = draw(st.integers(0, j - 1))
        families[j]["name"] = families[k]["name"]
        return doc, f"spec.families[{j}].name"
    if kind == "duplicate-type":
        owners = [k for k, f in enumerate(families) if f.get("instanceTypes")]
        if len(families) < 2 or not owners:
            return None
        k = draw(st.sampled_from(owners))
        j = draw(st.sampled_from([n for n in range(len(families)) if n != k]))
        taken = families[k]["instanceTypes"][0]
        types = families[j].setdefault("instanceTypes", [])
        types.append(taken)
        second = max(j, k)
        index = families[second]["instanceTypes"].index(taken)
        return doc, f"spec.families[{second}].instanceTypes[{index}]"
    if kind == "selector":
        bad_req, suffix = draw(
            st.sampled_from(
                [
                    ({"key": "pool", "operator": "Equals", "values": ["p1"]}, "operator"),
                    ({"key": "pool", "operator": "In"}, ""),
                    ({"key": "pool", "operator": "Exists", "values": ["p1"]}, ""),
                    ({"key": "pool", "operator": "Gt", "values": ["high"]}, ""),
                    ({"key": "bad key!", "operator": "Exists"}, "key"),
                    ({"key": "pool", "operator": "In", "values": ["not a value!"]}, ""),
                ]
            )
        )
        family["nodeSelector"] = {"matchExpressions": [bad_req]}
        path = f"spec.families[{i}].nodeSelector.matchExpressions[0]"
        return doc, f"{path}.{suffix}" if suffix else path
    if kind == "baseline-missing":
        spec["baseline"] = "not-a-family"
        return doc, "spec.baseline"
    if kind == "no-families":
        spec["families"] = []
        return doc, "spec.families"
    if kind == "no-rules":
        family.pop("instanceTypes", None)
        family.pop("nodeSelector", None)
        return doc, f"spec.families[{i}]"
    if kind == "wrong-type":
        target = draw(st.sampled_from(["families", "family", "instanceTypes", "metadata"]))
        if target == "families":
            spec["families"] = {"x": families[0]}
            return doc, "spec.families"
        if target == "family":
            families[i] = "a family"
            return doc, f"spec.families[{i}]"
        if target == "instanceTypes":
            family["instanceTypes"] = "t1.large"
            return doc, f"spec.families[{i}].instanceTypes"
        doc["metadata"] = ["fuzz"]
        return doc, "metadata"
    if kind == "enum":
        if draw(st.booleans()):
            spec["unknownNodes"] = "maybe"
            return doc, "spec.unknownNodes"
        spec["scoring"] = {"strategy": "fastest"}
        return doc, "spec.scoring.strategy"
    if kind == "bad-name":
        if family["name"] == spec["baseline"]:
            return None  # would also move the baseline: covered by baseline-missing
        family["name"] = draw(st.sampled_from(["x" * 64, "has space", "-lead", ""]))
        return doc, f"spec.families[{i}].name"
    raise AssertionError(kind)


@st.composite
def catalog_documents(draw: st.DrawFn) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """(document, path of the rule broken or None, the valid original)."""
    original = draw(valid_catalogs())
    doc = copy.deepcopy(original)
    if draw(st.integers(0, 3)) == 0:
        return doc, None, original
    result = draw(broken(doc))
    assume(result is not None)
    mutated, path = result
    return mutated, path, original


def as_text(draw_format: str, doc: dict[str, Any]) -> str:
    if draw_format == "json":
        return json.dumps(doc)
    return "# a catalog\n" + yaml.safe_dump(doc, sort_keys=False)


def factor_value(spelling: Any) -> Decimal:
    for written, value in FACTORS:
        if written == spelling and type(written) is type(spelling):
            return value
    assert spelling in ONE
    return Decimal(1)


@FUZZ
@given(catalog_documents(), st.sampled_from(["json", "yaml"]))
def test_the_loader_accepts_exactly_the_valid_catalogs(generated, text_format) -> None:
    doc, broken_path, original = generated
    text = as_text(text_format, doc)
    if broken_path is None:
        catalog = parse_catalog(text)
        families = original["spec"]["families"]
        assert [f.name for f in catalog.families] == [f["name"] for f in families]
        for family, written in zip(catalog.families, families, strict=True):
            assert family.scu_per_core == factor_value(written["scuPerCore"])
            assert family.instance_types == tuple(written.get("instanceTypes", ()))
        assert catalog.baseline.name == original["spec"]["baseline"]
        return
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text)
    errors = info.value.errors
    assert errors
    assert all(e.path and e.message for e in errors), errors
    assert any(
        e.path == broken_path
        or e.path.startswith(broken_path + ".")
        or e.path.startswith(broken_path + "[")
        for e in errors
    ), (broken_path, [str(e) for e in errors])


# -- pods through the whole webhook --------------------------------------------------------


@pytest.fixture(scope="module")
def webhook() -> Webhook:
    return Webhook()


def review_of(pod: dict[str, Any], uid: str = "fuzz-uid") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "fuzz",
            "operation": "CREATE",
            "object": pod,
            "dryRun": True,
        },
    }


def round_trip(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the kubernetes client's models read and write it."""
    api = ApiClient()
    model = api.deserialize(json.dumps(pod), "V1Pod", "application/json")
    return api.sanitize_for_serialization(model)


@FUZZ
@given(pod=patching_pods())
def test_webhook_patches_apply_and_round_trip_through_the_client_models(webhook, pod) -> None:
    pod = copy.deepcopy(pod)
    original = copy.deepcopy(pod)
    response = webhook.review(review_of(pod))
    assert pod == original  # the webhook does not modify what it was sent
    if not response["allowed"]:
        assert response["status"]["code"] in (403, 503), response  # a reason, not a crash
        return
    if "patch" not in response:
        return  # skipped: nothing to do for this pod
    ops = orjson.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(pod, ops)
    assert round_trip(patched) == patched
    # Reinvocation with the patched pod: already normalized, left alone.
    again = webhook.review(review_of(patched, uid="fuzz-uid-2"))
    assert again["allowed"] is True and "patch" not in again


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False)
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    )


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(doc: Any, path: tuple, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


FIXTURE_POD = admission_pod()
POD_PATHS = list(paths(FIXTURE_POD))


@FUZZ
@given(path=st.sampled_from(POD_PATHS), value=json_values())
def test_any_value_anywhere_in_a_pod_gets_an_answer_not_an_internal_error(
    webhook, path, value
) -> None:
    pod = replaced(FIXTURE_POD, path, value)
    reply = webhook.post(review_of(pod))
    assert reply.status_code in (200, 400), reply.data
    assert b"Traceback" not in reply.data
    if reply.status_code == 200:
        response = reply.get_json()["response"]
        assert response.get("status", {}).get("code") != 500, (path, value, response)


# -- extender requests ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def extender() -> Any:
    catalog = parse_catalog(CATALOG_A)
    cluster = ClusterState(catalog)
    objects = snapshot_objects()
    cluster.replace(
        [o for o in objects if o["kind"] == "Node"], [o for o in objects if o["kind"] == "Pod"]
    )
    runtime = Runtime(catalogs=CatalogSource(initial=catalog), cluster=cluster, settings=Settings())
    return create_app(runtime).test_client()


CACHED = [n["metadata"]["name"] for n in fixture_nodes()]
node_names = st.one_of(st.sampled_from(CACHED), st.text(min_size=1, max_size=30))
LABEL_KEYS = [
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "feature.node.kubernetes.io/cpu-model.vendor_id",
    "topology.kubernetes.io/zone",
]
LABEL_VALUES = ["n2-standard-8", "m6i.2xlarge", "m7g.4xlarge", "Intel", "AMD", "z1"]
quantities = st.one_of(
    st.sampled_from(["0", "100m", "1", "2", "7910m", "111", "1.5", "64", "0.001"]),
    st.integers(0, 10**6).map(lambda n: f"{n}m"),
)


@st.composite
def request_nodes(draw: st.DrawFn) -> dict[str, Any]:
    node: dict[str, Any] = {
        "metadata": {
            "name": draw(node_names),
            "labels": draw(
                st.dictionaries(
                    st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=3
                )
            ),
        },
        "status": {},
    }
    if draw(st.booleans()):
        node["status"]["allocatable"] = {"cpu": draw(quantities)}
    if draw(st.booleans()):
        node["status"]["capacity"] = {"cpu": draw(st.one_of(quantities, st.text(max_size=5)))}
    return node


@st.composite
def extender_pods(draw: st.DrawFn) -> dict[str, Any]:
    containers = [
        {"name": f"c{i}", "resources": {"requests": {"cpu": draw(quantities)}}}
        for i in range(draw(st.integers(0, 3)))
    ]
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"containers": containers}}
    family = draw(
        st.one_of(
            st.none(), st.sampled_from(["base", "m6i", "spr", "nope", ""]), st.text(max_size=10)
        )
    )
    if family is not None:
        pod["metadata"]["annotations"] = {"machine-catalog.io/family": family}
    if draw(st.booleans()):
        pod["spec"]["overhead"] = {"cpu": draw(quantities)}
    return pod


@st.composite
def extender_requests(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], bool]:
    pod = draw(extender_pods())
    if draw(st.booleans()):
        # Node names are unique in a cluster: kube-scheduler never sends one twice.
        nodes = draw(
            st.lists(request_nodes(), max_size=8, unique_by=lambda n: n["metadata"]["name"])
        )
        names = [n["metadata"]["name"] for n in nodes]
        return {"Pod": pod, "Nodes": {"items": nodes}, "NodeNames": None}, names, True
    names = draw(st.lists(node_names, max_size=8))
    return {"Pod": pod, "NodeNames": names, "Nodes": None}, names, False


@FUZZ
@given(generated=extender_requests())
def test_valid_extender_requests_get_a_consistent_answer(extender, generated) -> None:
    args, names, full = generated
    body = orjson.dumps(args)
    reply = extender.post("/scheduler/filter", data=body, content_type="application/json")
    assert reply.status_code == 200, reply.data
    result = reply.get_json()
    assert result["Error"] == ""
    if full:
        assert result["NodeNames"] is None
        items = result["Nodes"]["items"]
        passing = [n["metadata"]["name"] for n in items]
        # The node objects come back exactly as sent.
        assert all(n in args["Nodes"]["items"] for n in items)
    else:
        assert result["Nodes"] is None
        passing = result["NodeNames"]
    failed, unresolvable = result["FailedNodes"], result["FailedAndUnresolvableNodes"]
    for name in set(names):
        verdicts = (name in passing) + (name in failed) + (name in unresolvable)
        assert verdicts == 1, (name, result)
        reason = unresolvable.get(name, "")
        if not full and name not in CACHED and not reason.startswith("pod is pinned to"):
            assert "not in the extender's cluster cache" in reason, reason
    assert passing == [n for n in names if n in set(passing)]  # request order kept
    assert not set(failed) - set(names) and not set(unresolvable) - set(names)

    reply = extender.post("/scheduler/prioritize", data=body, content_type="application/json")
    assert reply.status_code == 200, reply.data
    scores = reply.get_json()
    assert [s["Host"] for s in scores] == names
    assert all(isinstance(s["Score"], int) and 0 <= s["Score"] <= 10 for s in scores)


VALID_REQUEST = {
    "Pod": {
        "metadata": {"name": "p", "annotations": {"machine-catalog.io/family": "base"}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
    },
    "NodeNames": ["gke-prod-pool-n2-8f7c2a1b-x7k2", "nope"],
    "Nodes": None,
}
FULL_REQUEST = {
    "Pod": VALID_REQUEST["Pod"],
    "Nodes": {"items": fixture_nodes()[:2]},
    "NodeNames": None,
}
REQUEST_PATHS = [("names", p) for p in paths(VALID_REQUEST)] + [
    ("full", p) for p in paths(FULL_REQUEST)
]


@FUZZ
@given(where=st.sampled_from(REQUEST_PATHS), value=json_values())
def test_any_value_anywhere_in_an_extender_request_is_a_200_or_a_400(
    extender, where, value
) -> None:
    which, path = where
    args = replaced(VALID_REQUEST if which == "names" else FULL_REQUEST, path, value)
    body = json.dumps(args).encode()  # integers beyond 64 bits too
    for route in ("/scheduler/filter", "/scheduler/prioritize"):
        reply = extender.post(route, data=body, content_type="application/json")
        assert reply.status_code in (200, 400), (route, path, value, reply.data)
        assert b"Traceback" not in reply.data
        if reply.status_code == 400:
            assert reply.get_json()["error"]
        elif route == "/scheduler/filter":
            assert reply.get_json()["Error"] == "", (path, value, reply.data)
