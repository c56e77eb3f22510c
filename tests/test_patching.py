"""The pod rewrite as a JSON patch: applied with ``jsonpatch`` and checked semantically.

The node-affinity checks evaluate the patched pod's ``nodeSelectorTerms`` against labelled
nodes (the real-world fixture plus one synthetic node per family of the default catalog)
with an evaluator written here from ``requirement_matches``, independent of the webhook's
own :mod:`extender.placement` code.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient

from extender.converting import keeps_whole_cores
from extender.patching import (
    CATALOG_ANNOTATION,
    FAMILY_ANNOTATION,
    REQUIRED,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
    PatchError,
    escape,
    normalize_ops,
    pin_terms,
    read_cpu_values,
    scheduler_ops,
    standard_resources_annotation,
    was_normalized,
)
from machine_catalog.loading import load_catalog
from machine_catalog.matching import (
    BETA_INSTANCE_TYPE_LABEL,
    INSTANCE_TYPE_LABEL,
    family_selector_terms,
)
from machine_catalog.quantities import parse_quantity, to_millis
from machine_catalog.selectors import requirement_matches

FIXTURES = Path(__file__).parent / "fixtures"
CATALOG = load_catalog()
ZONE = "topology.kubernetes.io/zone"


# -- helpers shared with test_admission ---------------------------------------------------


def fixture_nodes() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "nodes-real-world.json").read_text())["items"]


def synthetic_nodes() -> list[dict[str, Any]]:
    """One node per instance-type family (GA label), one with only the beta label, and odd ones."""
    nodes = []
    for i, family in enumerate(CATALOG.families):
        if not family.instance_types:
            continue
        itype = sorted(family.instance_types)[0]
        nodes.append(node(f"{family.name}-ga", {INSTANCE_TYPE_LABEL: itype, ZONE: f"z{i % 3}"}))
        nodes.append(
            node(f"{family.name}-beta", {BETA_INSTANCE_TYPE_LABEL: itype, ZONE: f"z{(i + 1) % 3}"})
        )
    nodes.append(node("unknown-1", {INSTANCE_TYPE_LABEL: "x9.weird", ZONE: "z0"}))
    nodes.append(node("bare-1", {ZONE: "z1"}))
    return nodes


def node(name: str, labels: Mapping[str, str], cpu: str = "8", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": dict(spec),
        "status": {"allocatable": {"cpu": cpu, "memory": "32Gi"}},
    }


def all_nodes() -> list[dict[str, Any]]:
    return fixture_nodes() + synthetic_nodes()


def term_selects(term: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> bool:
    """One nodeSelectorTerm, as kube-scheduler's nodeaffinity evaluates it."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term selects nothing
    return all(
        requirement_matches(labels, e["key"], e["operator"], e.get("values") or ())
        for e in expressions
    ) and all(
        requirement_matches({"metadata.name": name}, f["key"], f["operator"], f.get("values") or ())
        for f in fields
    )


def pod_selects(pod: Mapping[str, Any], node_obj: Mapping[str, Any]) -> bool:
    """nodeSelector AND (ORed required terms), for one node."""
    spec = pod.get("spec") or {}
    labels = node_obj["metadata"].get("labels") or {}
    name = node_obj["metadata"]["name"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(REQUIRED)
    if required is None:
        return True
    return any(term_selects(t, name, labels) for t in required.get("nodeSelectorTerms") or [])


def family_of(node_obj: Mapping[str, Any]) -> str | None:
    match = CATALOG.match(node_obj["metadata"].get("labels") or {})
    return match.family.name if match.family else None


def apply(pod: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply exactly as the API server would: the JSON bytes of the patch, to a copy."""
    patch = jsonpatch.JsonPatch(json.loads(orjson.dumps(list(ops))))
    return patch.apply(copy.deepcopy(pod))


def qos_class(pod: Mapping[str, Any]) -> str:
    """``v1.PodQOSClass`` as ``pkg/apis/core/v1/helper/qos`` computes it (cpu and memory)."""
    containers = list(pod["spec"].get("containers") or []) + list(
        pod["spec"].get("initContainers") or []
    )
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for name in ("cpu", "memory"):
            if name in requests or name in limits:
                any_set = True
            if name not in limits:
                guaranteed = False
                continue
            request = requests.get(name, limits[name])  # defaulting copies limit to request
            if parse_quantity(request) != parse_quantity(limits[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def expected_physical(scu: str, scu_per_core: Decimal) -> int:
    """ceil(scu millis / factor), with exact fractions, computed independently."""
    return math.ceil(Fraction(parse_quantity(scu)) * 1000 / Fraction(scu_per_core))


def pod(
    containers: Sequence[Mapping[str, Any]],
    init: Sequence[Mapping[str, Any]] = (),
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": list(containers), **spec}
    if init:
        body["initContainers"] = list(init)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a"},
        "spec": body,
    }


def container(name: str, requests: Mapping[str, str] | None = None, **extra: Any) -> dict:
    c: dict[str, Any] = {"name": name, "image": "registry.example/app:1"}
    resources = {}
    if requests is not None:
        resources["requests"] = dict(requests)
    if "limits" in extra:
        resources["limits"] = dict(extra.pop("limits"))
    if resources:
        c["resources"] = resources
    c.update(extra)
    return c


def normalize(p: Mapping[str, Any], family_name: str, scheduler: str | None = None) -> dict:
    family = CATALOG.by_name[family_name]
    ops = normalize_ops(p, read_cpu_values(p), family, CATALOG.version, scheduler)
    return apply(p, ops)


NODES = all_nodes()


# -- CPU ---------------------------------------------------------------------------------------


def test_every_container_init_container_and_sidecar_cpu_is_rewritten_memory_untouched():
    original = pod(
        [
            container("app", {"cpu": "2", "memory": "1Gi"}, limits={"cpu": "4", "memory": "2Gi"}),
            container("logger", {"cpu": "250m", "memory": "64Mi"}),
            container("no-cpu", {"memory": "32Mi"}, limits={"memory": "64Mi"}),
            container("nothing"),
        ],
        init=[
            container("migrate", {"cpu": "1.5"}, limits={"cpu": "1.5"}),
            container("mesh", {"cpu": "100m"}, limits={"cpu": "2"}, restartPolicy="Always"),
        ],
        resources={"requests": {"cpu": "3", "memory": "3Gi"}, "limits": {"cpu": "6"}},
    )
    family = CATALOG.by_name["aws-m6i"]
    patched = normalize(original, family.name)

    for section in ("containers", "initContainers"):
        for before, after in zip(original["spec"][section], patched["spec"][section], strict=True):
            res_b, res_a = before.get("resources"), after.get("resources")
            if res_b is None:
                assert res_a is None
                continue
            for kind in ("requests", "limits"):
                b, a = res_b.get(kind, {}), res_a.get(kind, {})
                assert set(a) == set(b)  # nothing added: no cpu stays without cpu
                for name, value in b.items():
                    if name == "cpu":
                        assert to_millis(a["cpu"]) == expected_physical(value, family.scu_per_core)
                    else:
                        assert a[name] == value
    pod_res = patched["spec"]["resources"]
    assert to_millis(pod_res["requests"]["cpu"]) == expected_physical("3", family.scu_per_core)
    assert to_millis(pod_res["limits"]["cpu"]) == expected_physical("6", family.scu_per_core)
    assert pod_res["requests"]["memory"] == "3Gi"
    # the rendering is millicores, or whole cores when exact
    assert patched["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1740m"


def test_standard_resources_annotation_parses_back_to_the_original_scu():
    original = pod(
        [
            container("app", {"cpu": "2"}, limits={"cpu": "4000m"}),
            container("side", {"memory": "1Mi"}),
        ],
        init=[container("init", {"cpu": "0.5"})],
        resources={"limits": {"cpu": "8"}},
    )
    patched = normalize(original, "aws-c5")
    doc = json.loads(patched["metadata"]["annotations"][STANDARD_RESOURCES_ANNOTATION])
    assert doc == {
        "containers": {"app": {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}}},
        "initContainers": {"init": {"requests": {"cpu": "500m"}}},
        "pod": {"limits": {"cpu": "8"}},
    }
    # every recorded SCU value equals the original quantity
    for section in ("containers", "initContainers"):
        for c in original["spec"][section]:
            for kind, values in (c.get("resources") or {}).items():
                if "cpu" in values:
                    recorded = doc[section][c["name"]][kind]["cpu"]
                    assert parse_quantity(recorded) == parse_quantity(values["cpu"])
    assert standard_resources_annotation([]) == "{}"
    assert " " not in patched["metadata"]["annotations"][STANDARD_RESOURCES_ANNOTATION]


@pytest.mark.parametrize("family_name", ["aws-m4", "aws-c5", "aws-m7a", "gcp-n1", "baremetal-spr"])
def test_guaranteed_pod_stays_guaranteed_and_burstable_stays_burstable(family_name):
    guaranteed = pod(
        [
            container(
                "app", {"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1000m", "memory": "1Gi"}
            ),
            container(
                "side", {"cpu": "333m", "memory": "64Mi"}, limits={"cpu": "333m", "memory": "64Mi"}
            ),
        ],
        init=[
            container(
                "init", {"cpu": "0.1", "memory": "8Mi"}, limits={"cpu": "100m", "memory": "8Mi"}
            )
        ],
    )
    assert qos_class(guaranteed) == "Guaranteed"
    assert qos_class(normalize(guaranteed, family_name)) == "Guaranteed"
    burstable = pod([container("app", {"cpu": "1"}, limits={"cpu": "2", "memory": "1Gi"})])
    assert qos_class(normalize(burstable, family_name)) == "Burstable"
    best_effort = pod([container("app")])
    assert qos_class(normalize(best_effort, family_name)) == "BestEffort"


def test_a_cpu_value_that_is_not_a_quantity_names_its_container():
    bad = pod([container("ok", {"cpu": "1"}), container("broken", {"cpu": "two"})])
    with pytest.raises(PatchError, match=r"container broken: resources\.requests\.cpu"):
        read_cpu_values(bad)
    bad_init = pod([container("ok")], init=[container("setup", limits={"cpu": "-1"})])
    with pytest.raises(PatchError, match=r"initContainer setup: resources\.limits\.cpu"):
        read_cpu_values(bad_init)
    with pytest.raises(PatchError, match="must be an object"):
        read_cpu_values(pod([{"name": "x", "resources": ["cpu"]}]))


def test_ephemeral_containers_and_overhead_are_left_alone():
    original = pod(
        [container("app", {"cpu": "1"})],
        overhead={"cpu": "250m"},
        ephemeralContainers=[{"name": "debug", "resources": {"requests": {"cpu": "1"}}}],
    )
    patched = normalize(original, "aws-m7i")
    assert patched["spec"]["overhead"] == {"cpu": "250m"}
    assert patched["spec"]["ephemeralContainers"] == original["spec"]["ephemeralContainers"]


# -- pinning --------------------------------------------------------------------------------


AFFINITIES: dict[str, Any] = {
    "none": None,
    "empty": {},
    "pod anti-affinity only": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    },
    "preferred only": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 5,
                    "preference": {
                        "matchExpressions": [{"key": ZONE, "operator": "In", "values": ["z1"]}]
                    },
                }
            ]
        }
    },
    "several required terms": {
        "nodeAffinity": {
            REQUIRED: {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["z0"]}]},
                    {
                        "matchExpressions": [
                            {"key": ZONE, "operator": "In", "values": ["z2", "us-east-1a"]},
                            {"key": "kubernetes.io/arch", "operator": "NotIn", "values": ["arm64"]},
                        ]
                    },
                    {
                        "matchFields": [
                            {
                                "key": "metadata.name",
                                "operator": "In",
                                "values": ["bare-1", "rack12-node07", "aws-m5-ga"],
                            }
                        ]
                    },
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]},
                }
            ],
        },
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []},
    },
}


@pytest.mark.parametrize("affinity", list(AFFINITIES.values()), ids=list(AFFINITIES))
@pytest.mark.parametrize(
    "family_name", ["aws-m5", "aws-m6i", "gcp-n2", "azure-dv5", "tencent-s5", "baremetal-spr"]
)
def test_pinning_selects_exactly_the_familys_nodes_within_the_pods_own_terms(affinity, family_name):
    original = pod([container("app", {"cpu": "1"})])
    if affinity is not None:
        original["spec"]["affinity"] = copy.deepcopy(affinity)
    patched = normalize(original, family_name)

    selected = [n["metadata"]["name"] for n in NODES if pod_selects(patched, n)]
    expected = [
        n["metadata"]["name"]
        for n in NODES
        if pod_selects(original, n) and family_of(n) == family_name
    ]
    assert selected == expected
    # What the patch did not own is untouched.
    before = original["spec"].get("affinity") or {}
    after = patched["spec"]["affinity"]
    for key in ("podAffinity", "podAntiAffinity"):
        assert after.get(key) == before.get(key)
    pref = "preferredDuringSchedulingIgnoredDuringExecution"
    assert after["nodeAffinity"].get(pref) == (before.get("nodeAffinity") or {}).get(pref)


def test_existing_terms_are_anded_with_the_family_terms_not_ored():
    family = CATALOG.by_name["aws-m5"]  # instance types: two ORed family terms
    existing = [
        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["z0"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
    ]
    terms = pin_terms(existing, family)
    family_terms = family_selector_terms(family)
    assert len(terms) == len(existing) * len(family_terms)
    for i, term in enumerate(terms):
        original = existing[i // len(family_terms)]
        extra = family_terms[i % len(family_terms)]
        assert term["matchExpressions"] == (original.get("matchExpressions") or []) + extra
        assert term.get("matchFields") == original.get("matchFields")


def test_missing_parents_are_created_with_add_on_the_deepest_existing_one():
    family = CATALOG.by_name["aws-m5"]
    p = pod([container("app")])
    cases = {
        "/spec/affinity": None,
        "/spec/affinity/nodeAffinity": {"podAffinity": {}},
        f"/spec/affinity/nodeAffinity/{REQUIRED}": {"nodeAffinity": {}},
        f"/spec/affinity/nodeAffinity/{REQUIRED}/nodeSelectorTerms": {
            "nodeAffinity": {REQUIRED: {}}
        },
    }
    for path, affinity in cases.items():
        candidate = copy.deepcopy(p)
        if affinity is not None:
            candidate["spec"]["affinity"] = affinity
        ops = normalize_ops(candidate, (), family, CATALOG.version)
        pin = [op for op in ops if op["path"].startswith("/spec/affinity")]
        assert [(op["op"], op["path"]) for op in pin] == [("add", path)]
        patched = apply(candidate, ops)
        for key, value in (affinity or {}).items():
            if key != "nodeAffinity":
                assert patched["spec"]["affinity"][key] == value


def test_annotations_are_created_whole_or_added_with_escaped_keys():
    family = CATALOG.by_name["gcp-n2"]
    bare = pod([container("app", {"cpu": "2"})])
    ops = normalize_ops(bare, read_cpu_values(bare), family, CATALOG.version)
    assert {"op": "add", "path": "/metadata/annotations"}.items() <= next(
        op for op in ops if op["path"].startswith("/metadata")
    ).items()
    patched = apply(bare, ops)
    annotations = patched["metadata"]["annotations"]
    assert annotations[FAMILY_ANNOTATION] == "gcp-n2"
    assert annotations[SCU_PER_CORE_ANNOTATION] == "1.05"
    assert annotations[CATALOG_ANNOTATION] == CATALOG.version
    assert was_normalized(annotations)

    existing = pod([container("app", {"cpu": "2"})])
    existing["metadata"]["annotations"] = {"a~b/c": "keep", FAMILY_ANNOTATION: "user-wrote-this"}
    ops = normalize_ops(existing, read_cpu_values(existing), family, CATALOG.version)
    assert "/metadata/annotations/machine-catalog.io~1family" in [op["path"] for op in ops]
    patched = apply(existing, ops)
    assert patched["metadata"]["annotations"]["a~b/c"] == "keep"
    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == "gcp-n2"
    assert escape("a~b/c") == "a~0b~1c"
    assert jsonpatch.JsonPointer("/" + escape("a~b/c")).resolve({"a~b/c": 1}) == 1

    no_metadata = {"spec": {"containers": [container("app")]}}
    patched = apply(no_metadata, normalize_ops(no_metadata, (), family, CATALOG.version))
    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == "gcp-n2"


def test_scheduler_name_is_set_only_for_the_default_scheduler():
    assert scheduler_ops({"schedulerName": "default-scheduler"}, "mc") == [
        {"op": "add", "path": "/spec/schedulerName", "value": "mc"}
    ]
    assert scheduler_ops({}, "mc") == [{"op": "add", "path": "/spec/schedulerName", "value": "mc"}]
    assert scheduler_ops({"schedulerName": "volcano"}, "mc") == []
    assert scheduler_ops({"schedulerName": "mc"}, "mc") == []
    assert scheduler_ops({"schedulerName": "default-scheduler"}, None) == []
    patched = normalize(pod([container("app")], schedulerName="default-scheduler"), "aws-m5", "mc")
    assert patched["spec"]["schedulerName"] == "mc"


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, False),
        ({FAMILY_ANNOTATION: "aws-m5"}, False),
        (
            {
                FAMILY_ANNOTATION: "aws-m5",
                SCU_PER_CORE_ANNOTATION: "1",
                STANDARD_RESOURCES_ANNOTATION: "{}",
                CATALOG_ANNOTATION: "default@abc",
            },
            True,
        ),
        (
            {
                FAMILY_ANNOTATION: "aws-m5",
                SCU_PER_CORE_ANNOTATION: "1",
                STANDARD_RESOURCES_ANNOTATION: "{not json",
                CATALOG_ANNOTATION: "default@abc",
            },
            False,
        ),
        (
            {
                FAMILY_ANNOTATION: "aws-m5",
                SCU_PER_CORE_ANNOTATION: "NaN",
                STANDARD_RESOURCES_ANNOTATION: "{}",
                CATALOG_ANNOTATION: "default@abc",
            },
            False,
        ),
        (
            {
                FAMILY_ANNOTATION: "aws-m5",
                SCU_PER_CORE_ANNOTATION: "1",
                STANDARD_RESOURCES_ANNOTATION: "[]",
                CATALOG_ANNOTATION: "default@abc",
            },
            False,
        ),
        (
            {
                FAMILY_ANNOTATION: "aws-m5",
                SCU_PER_CORE_ANNOTATION: "1",
                STANDARD_RESOURCES_ANNOTATION: "{}",
                CATALOG_ANNOTATION: "no-hash",
            },
            False,
        ),
    ],
)
def test_only_a_complete_well_formed_set_of_annotations_counts_as_already_normalized(
    annotations, expected
):
    assert was_normalized(annotations) is expected


def test_the_patched_pod_deserializes_with_the_kubernetes_client_models():
    review = json.loads((FIXTURES / "admission-review-replicaset-pod.json").read_text())
    original = review["request"]["object"]
    patched = normalize(original, "aws-m7i", "machine-catalog")

    model = ApiClient().deserialize(json.dumps(patched), "V1Pod", "application/json")
    app = model.spec.containers[0]
    scu = original["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert to_millis(app.resources.requests["cpu"]) == expected_physical(scu, Decimal("1.3"))
    assert (
        app.resources.requests["memory"]
        == original["spec"]["containers"][0]["resources"]["requests"]["memory"]
    )
    terms = model.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert terms.node_selector_terms[0].match_expressions[0].key == INSTANCE_TYPE_LABEL
    assert model.metadata.annotations[FAMILY_ANNOTATION] == "aws-m7i"
    assert model.spec.scheduler_name == "machine-catalog"
    assert model.spec.affinity.pod_anti_affinity is not None


# -- property ---------------------------------------------------------------------------------


KEYS = [ZONE, "kubernetes.io/arch", INSTANCE_TYPE_LABEL, "pool"]
VALUES = ["z0", "z1", "z2", "amd64", "arm64", "m5.large", "us-east-1a", "p1"]


@st.composite
def cpu_quantity(draw) -> str:
    millis = draw(st.integers(min_value=0, max_value=96_000))
    style = draw(st.sampled_from(["milli", "cores", "decimal"]))
    if style == "cores" and millis % 1000 == 0:
        return str(millis // 1000)
    if style == "decimal" and millis % 100 == 0:
        return str(Decimal(millis) / 1000)
    return f"{millis}m"


@st.composite
def resources(draw) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        values = {}
        if draw(st.booleans()):
            values["cpu"] = draw(cpu_quantity())
        if draw(st.booleans()):
            values["memory"] = draw(st.sampled_from(["64Mi", "1Gi", "1.5G", "100"]))
        if values or draw(st.booleans()):
            out[kind] = values
    return out


@st.composite
def requirement(draw) -> dict[str, Any]:
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    req: dict[str, Any] = {"key": draw(st.sampled_from(KEYS)), "operator": op}
    if op in ("In", "NotIn"):
        req["values"] = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3, unique=True))
    return req


@st.composite
def term(draw) -> dict[str, Any]:
    t: dict[str, Any] = {}
    expressions = draw(st.lists(requirement(), max_size=3))
    if expressions or draw(st.booleans()):
        t["matchExpressions"] = expressions
    if draw(st.integers(0, 4)) == 0:
        names = [n["metadata"]["name"] for n in NODES]
        t["matchFields"] = [
            {
                "key": "metadata.name",
                "operator": draw(st.sampled_from(["In", "NotIn"])),
                "values": draw(
                    st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)
                ),
            }
        ]
    return t


@st.composite
def pods(draw) -> dict[str, Any]:
    n_containers = draw(st.integers(1, 4))
    containers = [
        {"name": f"c{i}", "image": "x", "resources": draw(resources())} for i in range(n_containers)
    ]
    init = []
    for i in range(draw(st.integers(0, 3))):
        c: dict[str, Any] = {"name": f"i{i}", "image": "x", "resources": draw(resources())}
        if draw(st.booleans()):
            c["restartPolicy"] = "Always"
        init.append(c)
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    shape = draw(st.sampled_from(["none", "empty", "node-empty", "required"]))
    if shape == "empty":
        spec["affinity"] = {}
    elif shape == "node-empty":
        spec["affinity"] = {"nodeAffinity": {}}
    elif shape == "required":
        spec["affinity"] = {
            "nodeAffinity": {
                REQUIRED: {"nodeSelectorTerms": draw(st.lists(term(), min_size=1, max_size=3))}
            }
        }
    if draw(st.booleans()):
        spec["resources"] = draw(resources())
    meta: dict[str, Any] = {"generateName": "p-"}
    if draw(st.booleans()):
        meta["annotations"] = {"other/key": "v"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), st.sampled_from([f.name for f in CATALOG.families]))
def test_property_patch_applies_and_keeps_the_invariants(original, family_name):
    family = CATALOG.by_name[family_name]
    snapshot = copy.deepcopy(original)
    ops = normalize_ops(original, read_cpu_values(original), family, CATALOG.version, "mc")
    assert original == snapshot  # pure: the input is not modified
    patched = apply(original, ops)

    # cpu = ceil(scu / factor), memory and everything else unchanged
    sections = [("containers", i) for i in range(len(original["spec"]["containers"]))]
    sections += [
        ("initContainers", i) for i in range(len(original["spec"].get("initContainers", [])))
    ]
    pairs = [
        (
            original["spec"][s][i].get("resources") or {},
            patched["spec"][s][i].get("resources") or {},
        )
        for s, i in sections
    ]
    pairs.append((original["spec"].get("resources") or {}, patched["spec"].get("resources") or {}))
    # Container requests are exactly ceil(scu / factor) unless whole cores apply; every
    # other value is never below it (raised only where validation needs it, see
    # test_converting), and at most by the container totals.
    whole = keeps_whole_cores(original)
    ceiling = sum(v.scu_millis for v in read_cpu_values(original))
    for position, (before, after) in enumerate(pairs):
        assert set(before) == set(after)
        for kind, values in before.items():
            assert set(after[kind]) == set(values)
            for name, value in values.items():
                if name == "cpu":
                    got, exact = (
                        to_millis(after[kind]["cpu"]),
                        expected_physical(value, family.scu_per_core),
                    )
                    assert exact <= got <= max(exact, ceiling + 1000 * len(pairs))
                    if kind == "requests" and position < len(pairs) - 1 and not whole:
                        assert got == exact
                else:
                    assert after[kind][name] == value
    assert qos_class(patched) == qos_class(original)

    # affinity ANDed into every original term: the patched pod selects exactly the
    # original's nodes that belong to the family
    for n in NODES:
        assert pod_selects(patched, n) == (pod_selects(original, n) and family_of(n) == family_name)
    required = ((original["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(REQUIRED)
    new_terms = patched["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    family_terms = family_selector_terms(family)
    if required is not None:
        # every non-empty original term, once per family term; an empty one (it selects
        # nothing) stays empty
        expected = []
        for old in required["nodeSelectorTerms"]:
            if not old.get("matchExpressions") and not old.get("matchFields"):
                expected.append((old, None))
            else:
                expected += [(old, extra) for extra in family_terms]
        assert len(new_terms) == len(expected)
        for t, (old, extra) in zip(new_terms, expected, strict=True):
            prefix = old.get("matchExpressions") or []
            if extra is None:
                assert t == old
            else:
                assert t["matchExpressions"] == prefix + extra
            assert t.get("matchFields") == old.get("matchFields")

    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == family_name
    assert was_normalized(patched["metadata"]["annotations"])
    assert patched["metadata"].get("annotations", {}).get("other/key") == (
        original["metadata"].get("annotations", {}).get("other/key")
    )
    assert patched["spec"]["schedulerName"] == "mc"
