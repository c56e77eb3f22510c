"""The pod rewrite as a JSON patch: applied with ``jsonpatch`` and checked semantically.

The node-affinity checks evaluate the patched pod's ``nodeSelectorTerms`` against labelled
nodes (the real-world fixture plus one synthetic node per family of the default catalog)
with the test suite's node-selector oracle (:mod:`support.oracles`), independent of the
webhook's own :mod:`extender.admission.placement` code.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient
from support.nodes import NODES, ZONE, family_of
from support.oracles import expected_physical, pod_selects, qos_class
from support.strategies import pods

from extender.admission.converting import keeps_whole_cores
from extender.admission.patching import (
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
    INSTANCE_TYPE_LABEL,
    family_selector_terms,
)
from machine_catalog.quantities import parse_quantity, to_millis

FIXTURES = Path(__file__).parent / "fixtures"
CATALOG = load_catalog()


# -- helpers -------------------------------------------------------------------------------


def apply(pod: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply exactly as the API server would: the JSON bytes of the patch, to a copy."""
    patch = jsonpatch.JsonPatch(json.loads(orjson.dumps(list(ops))))
    return patch.apply(copy.deepcopy(pod))


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
    # Container requests are exactly ceil(scu / factor), or that rounded up to whole cores
    # when whole cores apply and the SCU request is whole. Every other value is never below
    # ceil(scu / factor) and is raised only where validation needs it (see test_converting):
    # by whole-core rounding (under 1000m per container), the rounding of a sum of ceilings
    # (under 1m per container) and 1m per strict inequality. So no value exceeds the
    # *physical* conversion of all the pod's SCU together plus 1000m per container and one
    # for the pod level. (The bound is physical: on a family below 1 SCU per core, 12 SCU
    # of limits are 14.118 cores and 15 whole ones, above 12 + 2 "SCU".)
    whole = keeps_whole_cores(original)
    total_scu = sum(v.scu_millis for v in read_cpu_values(original))
    ceiling = expected_physical(f"{total_scu}m", family.scu_per_core) + 1000 * len(pairs)
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
                    assert exact <= got <= ceiling
                    if kind == "requests" and position < len(pairs) - 1:
                        scu_whole = to_millis(value) % 1000 == 0
                        cores = -(-exact // 1000) * 1000
                        assert got == (cores if whole and scu_whole else exact)
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
