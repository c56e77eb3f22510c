"""Reinvocation (``reinvocationPolicy: IfNeeded``): the pod we normalized, changed by a later
webhook, comes back. Real-shaped AdmissionReviews through the app.

Each test admits the fixture ReplicaSet pod (with an Istio native sidecar), applies our
patch as the API server would, changes the pod as a later webhook does (a sidecar
injector, VPA, a policy webhook), sends it again and applies the second answer. The
expected values are computed here from the recorded factor with exact fractions.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from fractions import Fraction
from typing import Any

import jsonpatch
import pytest
from support.helpers import admission_review, serve

from extender.admission.converting import CpuValue
from extender.admission.patching import (
    FAMILY_ANNOTATION,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
)
from extender.admission.placement import pod_constraints
from extender.admission.reinvocation import reconcile_cpu, written_by_us
from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource, load_catalog
from machine_catalog.matching import INSTANCE_TYPE_LABEL as IT

CATALOG = load_catalog()
ZONE = "topology.kubernetes.io/zone"


def node(name: str, instance_type: str, cpu: str, zone: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {IT: instance_type, ZONE: zone}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu, "memory": "64Gi"}},
    }


# aws-m6i (1.15 SCU/core) has the most free SCU: the first call pins the pod there.
NODES = [
    node("m6i-a", "m6i.4xlarge", "16", "us-east-1a"),
    node("m6i-b", "m6i.4xlarge", "16", "us-east-1b"),
    node("m5-a", "m5.2xlarge", "8", "us-east-1a"),
]


class Hook:
    def __init__(self) -> None:
        cluster = ClusterState(CATALOG)
        cluster.replace(NODES, [])
        runtime = Runtime(
            catalogs=CatalogSource(initial=CATALOG),
            cluster=cluster,
            settings=Settings(scheduler_name="machine-catalog"),
        )
        self.client = create_app(runtime).test_client()

    def call(self, pod: dict[str, Any], uid: str = "uid-1") -> tuple[dict, dict]:
        """The response, and the pod with its patch applied (the pod itself if none)."""
        review = admission_review(pod, uid=uid)
        reply = self.client.post("/webhook/mutate", json=review)
        assert reply.status_code == 200
        response = reply.get_json()["response"]
        assert response["uid"] == uid
        if "patch" not in response:
            return response, copy.deepcopy(pod)
        ops = json.loads(base64.b64decode(response["patch"]))
        return response, jsonpatch.JsonPatch(ops).apply(copy.deepcopy(pod))

    def normalized(self) -> dict[str, Any]:
        response, pod = self.call(admission_review()["request"]["object"])
        assert response["allowed"] and "patch" in response
        assert pod["metadata"]["annotations"][FAMILY_ANNOTATION] == "aws-m6i"
        return pod


@pytest.fixture
def hook() -> Hook:
    return Hook()


def factor(pod: dict[str, Any]) -> Fraction:
    return Fraction(pod["metadata"]["annotations"][SCU_PER_CORE_ANNOTATION])


def physical(scu_millis: int, f: Fraction) -> str:
    millis = math.ceil(scu_millis / f)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def record(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"][STANDARD_RESOURCES_ANNOTATION])


def sidecar(name: str, request: str, limit: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example/agent:1.0",
        "resources": {
            "requests": {"cpu": request, "memory": "64Mi"},
            "limits": {"cpu": limit, "memory": "128Mi"},
        },
    }


def assert_stable(hook: Hook, pod: dict[str, Any]) -> None:
    """A further call (another reinvocation, a re-admission) changes nothing."""
    response, _ = hook.call(pod, uid="uid-3")
    assert response["allowed"] is True
    assert "patch" not in response


@pytest.mark.parametrize(
    ("section", "extra"),
    [
        ("containers", {}),
        ("initContainers", {"restartPolicy": "Always"}),  # a native sidecar
    ],
)
def test_a_container_added_after_us_is_normalized_and_recorded(hook, section, extra):
    pod = hook.normalized()
    before = copy.deepcopy(pod)
    pod["spec"][section].append({**sidecar("mesh-agent", "500m", "1"), **extra})

    response, after = hook.call(pod, uid="uid-2")

    assert response["allowed"] is True and "patch" in response
    f = factor(after)
    added = after["spec"][section][-1]["resources"]
    assert added["requests"] == {"cpu": physical(500, f), "memory": "64Mi"}
    assert added["limits"] == {"cpu": physical(1000, f), "memory": "128Mi"}
    # What we converted the first time is not converted again.
    for name in ("containers", "initContainers"):
        assert after["spec"][name][: len(before["spec"][name])] == before["spec"][name]
    expected = record(before)
    expected.setdefault(section, {})["mesh-agent"] = {
        "requests": {"cpu": "500m"},
        "limits": {"cpu": "1"},
    }
    assert record(after) == expected
    assert_stable(hook, after)


def test_a_value_changed_after_us_is_kept_as_physical_and_re_recorded(hook):
    # The VPA admission controller writes its recommendation (physical cores) over ours.
    pod = hook.normalized()
    app = pod["spec"]["containers"][0]
    app["resources"]["requests"]["cpu"] = "700m"

    response, after = hook.call(pod, uid="uid-2")

    assert response["allowed"] is True
    assert after["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "700m"
    f = factor(after)
    scu = math.floor(700 * f)
    assert record(after)["containers"][app["name"]]["requests"]["cpu"] == f"{scu}m"
    assert any("VPA" in w and "physical" in w for w in response["warnings"])
    # Everything else in the record is what it was.
    rest = record(after)
    rest["containers"][app["name"]]["requests"]["cpu"] = record(pod)["containers"][app["name"]][
        "requests"
    ]["cpu"]
    assert rest == record(pod)
    assert_stable(hook, after)


def test_a_container_removed_after_us_leaves_the_record(hook):
    pod = hook.normalized()
    gone = pod["spec"]["initContainers"].pop()["name"]
    response, after = hook.call(pod, uid="uid-2")
    assert response["allowed"] is True
    assert gone not in record(after).get("initContainers", {})
    assert record(after)["containers"] == record(pod)["containers"]


def test_a_later_node_selector_for_another_family_is_denied_naming_the_family(hook):
    pod = hook.normalized()
    pod["spec"]["nodeSelector"] = {IT: "m5.2xlarge"}
    response, _ = hook.call(pod, uid="uid-2")
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "aws-m6i" in response["status"]["message"]
    assert "after normalization" in response["status"]["message"]


def test_a_later_node_selector_that_keeps_a_family_node_is_allowed_unchanged(hook):
    pod = hook.normalized()
    pod["spec"]["nodeSelector"] = {ZONE: "us-east-1b"}
    response, _ = hook.call(pod, uid="uid-2")
    assert response == {"uid": "uid-2", "allowed": True}


def allowed_nodes(pod: dict[str, Any]) -> set[str]:
    constraints = pod_constraints(pod)
    return {
        n["metadata"]["name"]
        for n in NODES
        if constraints.allows(n["metadata"]["name"], n["metadata"]["labels"])
    }


def test_an_affinity_replaced_after_us_gets_the_pin_back(hook):
    pod = hook.normalized()
    pod["spec"]["affinity"]["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["us-east-1a"]}]}
            ]
        }
    }
    assert allowed_nodes(pod) == {"m6i-a", "m5-a"}  # the pod escaped its family

    response, after = hook.call(pod, uid="uid-2")

    assert response["allowed"] is True and "patch" in response
    assert allowed_nodes(after) == {"m6i-a"}  # the later rule and the family, ANDed
    assert_stable(hook, after)


def test_a_term_ored_in_after_us_is_pinned_too(hook):
    pod = hook.normalized()
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    terms.append({"matchExpressions": [{"key": IT, "operator": "In", "values": ["m5.2xlarge"]}]})
    assert "m5-a" in allowed_nodes(pod)

    response, after = hook.call(pod, uid="uid-2")

    # The m5-only term ANDed with aws-m6i selects nothing; the pod keeps its family nodes.
    assert response["allowed"] is True
    assert allowed_nodes(after) == {"m6i-a", "m6i-b"}
    assert_stable(hook, after)


def test_a_forged_record_on_a_new_pod_still_gets_its_containers_normalized(hook):
    # All four annotations written by hand on a fresh pod, with an empty record: every
    # container is "new", so nothing escapes conversion.
    pod = admission_review()["request"]["object"]
    pod["metadata"]["annotations"].update(
        {
            FAMILY_ANNOTATION: "aws-m5",
            SCU_PER_CORE_ANNOTATION: "1",
            STANDARD_RESOURCES_ANNOTATION: "{}",
            "machine-catalog.io/catalog": "default@forged",
        }
    )
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1500m"
    response, after = hook.call(pod, uid="uid-2")
    assert response["allowed"] is True
    assert allowed_nodes(after) <= {"m5-a"}
    assert record(after)["containers"][pod["spec"]["containers"][0]["name"]]["requests"] == {
        "cpu": "1500m"
    }


def test_pod_level_resources_recorded_are_ours_and_unrecorded_ones_are_scu(hook):
    pod = admission_review()["request"]["object"]
    pod["spec"]["resources"] = {"requests": {"cpu": "4"}, "limits": {"cpu": "6"}}
    _, first = hook.call(pod)
    f = factor(first)
    written = first["spec"]["resources"]
    assert record(first)["pod"] == {"requests": {"cpu": "4"}, "limits": {"cpu": "6"}}
    # A sidecar injected after us, the pod-level values left as we wrote them.
    first["spec"]["containers"].append(sidecar("mesh-agent", "100m", "200m"))
    response, after = hook.call(first, uid="uid-2")
    assert response["allowed"] is True
    assert after["spec"]["resources"] == written
    assert record(after)["pod"] == record(first)["pod"]
    assert "warnings" not in response
    # Pod-level CPU that a later webhook added (no record of it): SCU, converted.
    later = hook.normalized()
    later["spec"]["resources"] = {"requests": {"cpu": "2"}}
    _, converted = hook.call(later, uid="uid-4")
    assert converted["spec"]["resources"]["requests"]["cpu"] == physical(2000, f)
    assert record(converted)["pod"] == {"requests": {"cpu": "2"}}


# -- through `machine-catalog serve --snapshot` ------------------------------------------------


def test_serve_snapshot_picks_a_family_that_fits_and_normalizes_a_sidecar_on_reinvocation(
    tmp_path,
):
    # aws-m5 (1.0): 4 nodes with 2 cores free each (8 SCU in total, no node holds 4 SCU);
    # aws-m6i (1.15): one node with 5 cores free (5.75 SCU). Aggregated free SCU would
    # pick aws-m5, where the pod could never run.
    nodes = [node(f"m5-{i}", "m5.xlarge", "4", "us-east-1a") for i in range(4)]
    nodes.append(node("m6i-0", "m6i.2xlarge", "8", "us-east-1b"))
    busy = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"busy-{n}", "namespace": "x", "uid": f"uid-{n}"},
            "spec": {
                "nodeName": n,
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
            },
            "status": {"phase": "Running"},
        }
        for n, cpu in [*((f"m5-{i}", "2") for i in range(4)), ("m6i-0", "3")]
    ]
    items = [{"apiVersion": "v1", "kind": "Node", **n} for n in nodes] + busy
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    server = serve(tmp_path, "--snapshot", str(snapshot))
    try:
        pod = admission_review()["request"]["object"]
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "4"
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "4"

        def call(obj: dict[str, Any], uid: str) -> tuple[dict, dict]:
            reply = server.post("/webhook/mutate", json.dumps(admission_review(obj, uid)).encode())
            assert reply.status == 200
            response = reply.json()["response"]
            if "patch" not in response:
                return response, obj
            ops = json.loads(base64.b64decode(response["patch"]))
            return response, jsonpatch.JsonPatch(ops).apply(copy.deepcopy(obj))

        response, first = call(pod, "uid-1")
        assert response["allowed"] is True
        assert first["metadata"]["annotations"][FAMILY_ANNOTATION] == "aws-m6i"
        assert first["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "3479m"

        first["spec"]["containers"].append(sidecar("mesh-agent", "250m", "500m"))
        response, second = call(first, "uid-2")
        assert response["allowed"] is True
        added = second["spec"]["containers"][-1]["resources"]
        # ceil(250 / 1.15) and ceil(500 / 1.15)
        assert (added["requests"]["cpu"], added["limits"]["cpu"]) == ("218m", "435m")
        assert record(second)["containers"]["mesh-agent"] == {
            "requests": {"cpu": "250m"},
            "limits": {"cpu": "500m"},
        }
        assert call(second, "uid-3")[0] == {"uid": "uid-3", "allowed": True}
    finally:
        assert server.stop() == 0


# -- what we wrote is recognised by the rule that wrote it (whole cores, limits) ---------


def guaranteed_pod(cpu: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    values = {"cpu": cpu, "memory": "1Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db", "namespace": "shop", "annotations": dict(annotations or {})},
        "spec": {
            "containers": [
                {"name": "db", "image": "x", "resources": {"requests": values, "limits": values}}
            ]
        },
    }


@pytest.mark.parametrize(
    ("cpu", "annotations", "written"),
    [
        # Whole cores for a Guaranteed pod: 2 SCU on aws-m6i (1.15) is 2, not 1740m.
        ("2", {}, "2"),
        ("3", {}, "3"),  # ceil(3000 / 1.15) = 2609m -> 3 cores
        # Not whole: exact. Opted out: exact.
        ("1500m", {}, "1305m"),
        ("2", {"machine-catalog.io/cpu-conversion": "exact"}, "1740m"),
    ],
)
def test_our_own_values_are_not_read_as_changed_after_us(hook, cpu, annotations, written):
    response, pod = hook.call(guaranteed_pod(cpu, annotations))
    assert pod["metadata"]["annotations"][FAMILY_ANNOTATION] == "aws-m6i"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == written
    before = record(pod)
    # A sidecar injector adds a Burstable container after us: the pod is Burstable now,
    # but the whole cores we wrote when it was Guaranteed are still ours.
    pod["spec"]["containers"].append(sidecar("mesh-agent", "100m", "500m"))

    response, after = hook.call(pod, uid="uid-2")

    assert response["allowed"] is True
    assert not any("VPA" in w for w in response.get("warnings", [])), response["warnings"]
    assert after["spec"]["containers"][0] == pod["spec"]["containers"][0]
    assert record(after)["containers"]["db"] == before["containers"]["db"]
    assert record(after)["containers"]["mesh-agent"] == {
        "requests": {"cpu": "100m"},
        "limits": {"cpu": "500m"},
    }
    assert_stable(hook, after)


def test_whole_cores_on_an_opted_out_pod_were_not_ours():
    # The opt-out pod got 1740m; a later webhook setting 2 cores is a change after us.
    values = [
        CpuValue("containers", "db", "requests", "/spec/containers/0/resources/requests/cpu", 2000),
    ]
    record_ = {("containers", "db", "requests"): 2000}
    f = Fraction(115, 100)
    assert written_by_us(values, record_, f) == {values[0].pointer: frozenset({1740, 2000})}
    exact = written_by_us(values, record_, f, whole_cores_possible=False)
    assert exact == {values[0].pointer: frozenset({1740})}
    _, new_record, warnings = reconcile_cpu(
        values, record_, {("containers", "db")}, f, "aws-m6i", whole_cores_possible=False
    )
    assert warnings and new_record[0].scu_millis == 2300  # floor(2000 * 1.15)
