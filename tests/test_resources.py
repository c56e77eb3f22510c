"""A pod's effective CPU request, by kube-scheduler's rules (PodRequests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machine_catalog.quantities import QuantityError, to_millis
from machine_catalog.resources import (
    AGGREGATE,
    PER_CONTAINER,
    holds_resources,
    is_sidecar,
    node_allocatable_millis,
    pod_cpu_request_millis,
    pod_requests,
)

FIXTURES = Path(__file__).parent / "fixtures"


def c(cpu: str | None = None, *, limit: str | None = None, sidecar: bool = False) -> dict:
    resources: dict[str, Any] = {}
    if cpu is not None:
        resources["requests"] = {"cpu": cpu, "memory": "64Mi"}
    if limit is not None:
        resources["limits"] = {"cpu": limit}
    container: dict[str, Any] = {"name": "c", "image": "x", "resources": resources}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


def pod(containers=(), init=(), overhead: str | None = None, pod_cpu: str | None = None) -> dict:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    if overhead is not None:
        spec["overhead"] = {"cpu": overhead}
    if pod_cpu is not None:
        spec["resources"] = {"requests": {"cpu": pod_cpu}}
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(
    ("the_pod", "millis"),
    [
        (pod([c("500m"), c("1")]), 1500),  # app containers add up
        (pod([c("500m"), c()]), 500),  # a container without CPU counts 0
        (pod([]), 0),
        (pod([c(limit="2")]), 2000),  # limit only: defaulting makes it the request
        (pod([c("250m", limit="2")]), 250),  # the request, not the limit
        # a sidecar runs beside the app for the pod's whole life
        (pod([c("1")], init=[c("200m", sidecar=True)]), 1200),
        # a regular init container runs alone: the larger of it and the steady state
        (pod([c("1")], init=[c("3")]), 3000),
        (pod([c("1")], init=[c("500m")]), 1000),
        # an init container after a sidecar runs beside that sidecar: 2 + 0.5 > 1 + 0.5
        (pod([c("1")], init=[c("500m", sidecar=True), c("2")]), 2500),
        # ... but not beside a sidecar that starts after it: max(2, 1 + 0.5) = 2
        (pod([c("1")], init=[c("2"), c("500m", sidecar=True)]), 2000),
        # two sidecars, then an init container beside both: 0.3 + 0.4 + 1 = 1.7 > 0.5 + 0.7
        (
            pod(
                [c("500m")],
                init=[c("300m", sidecar=True), c("400m", sidecar=True), c("1")],
            ),
            1700,
        ),
        # RuntimeClass overhead is added on top
        (pod([c("1")], overhead="250m"), 1250),
        (pod([c("1")], init=[c("3")], overhead="100m"), 3100),
        # pod-level resources replace the container sum; overhead still adds
        (pod([c("1"), c("1")], pod_cpu="1500m"), 1500),
        (pod([c("1")], pod_cpu="3", overhead="200m"), 3200),
    ],
)
def test_effective_cpu_request(the_pod: dict, millis: int) -> None:
    assert pod_cpu_request_millis(the_pod) == millis


def test_pod_level_memory_only_keeps_the_container_cpu() -> None:
    the_pod = pod([c("700m")])
    the_pod["spec"]["resources"] = {"requests": {"memory": "1Gi"}}
    assert pod_cpu_request_millis(the_pod) == 700


def test_empty_and_null_fields_are_tolerated() -> None:
    assert pod_cpu_request_millis({}) == 0
    assert pod_cpu_request_millis({"spec": {"containers": None, "initContainers": None}}) == 0
    assert pod_cpu_request_millis({"spec": {"containers": [{"name": "a", "resources": None}]}}) == 0


def test_bad_quantity_raises_quantity_error() -> None:
    with pytest.raises(QuantityError):
        pod_cpu_request_millis(pod([c("lots")]))


def test_the_admission_review_fixture_pod() -> None:
    review = json.loads((FIXTURES / "admission-review-replicaset-pod.json").read_text())
    the_pod = review["request"]["object"]
    sidecars = [x for x in the_pod["spec"]["initContainers"] if is_sidecar(x)]
    assert sidecars, "the fixture carries a restartable sidecar init container"
    expected = sum(
        to_millis(x["resources"]["requests"]["cpu"])
        for x in the_pod["spec"]["containers"] + sidecars
    )
    assert pod_cpu_request_millis(the_pod) == expected


@pytest.mark.parametrize(
    ("node_name", "phase", "holds"),
    [
        ("n1", "Running", True),
        ("n1", "Pending", True),  # bound, containers starting: the scheduler counts it
        ("n1", None, True),
        ("n1", "Succeeded", False),
        ("n1", "Failed", False),
        (None, "Pending", False),  # not bound yet
        ("", "Pending", False),
    ],
)
def test_holds_resources(node_name: str | None, phase: str | None, holds: bool) -> None:
    the_pod: dict[str, Any] = {"spec": {"containers": []}, "status": {}}
    if node_name is not None:
        the_pod["spec"]["nodeName"] = node_name
    if phase is not None:
        the_pod["status"]["phase"] = phase
    assert holds_resources(the_pod) is holds


def test_node_allocatable_prefers_allocatable_over_capacity() -> None:
    node = {"status": {"capacity": {"cpu": "8"}, "allocatable": {"cpu": "7910m"}}}
    assert node_allocatable_millis(node) == 7910
    assert node_allocatable_millis({"status": {"capacity": {"cpu": "8"}}}) == 8000
    assert node_allocatable_millis({"status": {}}) == 0
    assert node_allocatable_millis({}) == 0


def test_fixture_nodes_allocatable() -> None:
    nodes = json.loads((FIXTURES / "nodes-real-world.json").read_text())["items"]
    for node in nodes:
        assert node_allocatable_millis(node) == to_millis(node["status"]["allocatable"]["cpu"])
        assert node_allocatable_millis(node) <= to_millis(node["status"]["capacity"]["cpu"])


# -- in-place resize: what kube-scheduler counts for a bound pod ---------------------------


def resized(
    spec_cpu: str,
    reported: str | None,
    allocated: str | None,
    *,
    condition: str | None = None,
    legacy: str | None = None,
    sidecar_status: bool = False,
) -> dict:
    """A bound pod with one app container (and one sidecar at 100m) mid-resize."""
    status_entry: dict[str, Any] = {"name": "c"}
    if reported is not None:
        status_entry["resources"] = {"requests": {"cpu": reported}}
    if allocated is not None:
        status_entry["allocatedResources"] = {"cpu": allocated}
    the_pod = pod([c(spec_cpu)], init=[{**c("100m", sidecar=True), "name": "s"}])
    the_pod["spec"]["nodeName"] = "n1"
    status: dict[str, Any] = {"phase": "Running", "containerStatuses": [status_entry]}
    if sidecar_status:
        status["initContainerStatuses"] = [
            {"name": "s", "resources": {"requests": {"cpu": "300m"}}, "allocatedResources": {}}
        ]
    if condition is not None:
        status["conditions"] = [{"type": "PodResizePending", "status": "True", "reason": condition}]
    if legacy is not None:
        status["resize"] = legacy
    the_pod["status"] = status
    return the_pod


@pytest.mark.parametrize(
    ("the_pod", "millis"),
    [
        # no resize in flight: spec == status
        (resized("1", "1", "1"), 1100),
        # downsize not applied yet: the kubelet still holds 2, the scheduler counts 2
        (resized("500m", "2", "2"), 2100),
        # downsize allocated but not yet reported by the runtime: the larger, 2
        (resized("500m", "2", "500m"), 2100),
        # upsize pending (Deferred): the spec's 3 counts
        (resized("3", "1", "1", condition="Deferred"), 3100),
        # upsize Infeasible: it will never happen, only what is allocated counts
        (resized("3", "1", "1", condition="Infeasible"), 1100),
        (resized("3", "1", "1500m", condition="Infeasible"), 1600),
        # the field used before the condition (<= 1.32)
        (resized("3", "1", "1", legacy="Infeasible"), 1100),
        # a status without resources (old kubelet, container not started): the spec
        (resized("500m", None, "2"), 600),
        # sidecars are resized too; their status counts like an app container's
        (resized("1", "1", "1", sidecar_status=True), 1300),
    ],
)
def test_resized_pod_counts_like_kube_scheduler(the_pod: dict, millis: int) -> None:
    assert pod_cpu_request_millis(the_pod) == millis


def test_infeasible_resize_of_a_pod_without_status_resources_counts_the_spec() -> None:
    # determineContainerReqs applies only to containers whose status reports resources
    assert pod_cpu_request_millis(resized("3", None, None, condition="Infeasible")) == 3100


# -- the two resize rules: kube-scheduler 1.34 (per container) and 1.37 (aggregate) --------


def two_way(**status_extra: Any) -> dict:
    """A pod whose two containers resize in opposite directions: a 2 -> 1 (not yet applied),
    b 1 -> 2 (not yet applied); the kubelet still holds the old values."""
    the_pod = pod([{**c("1"), "name": "a"}, {**c("2"), "name": "b"}])
    the_pod["spec"]["nodeName"] = "n1"
    the_pod["status"] = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "a",
                "resources": {"requests": {"cpu": "2"}},
                "allocatedResources": {"cpu": "2"},
            },
            {
                "name": "b",
                "resources": {"requests": {"cpu": "1"}},
                "allocatedResources": {"cpu": "1"},
            },
        ],
        **status_extra,
    }
    return the_pod


@pytest.mark.parametrize(
    ("case", "the_pod", "per_container", "aggregate"),
    [
        # each container at its larger value (2 + 2) against the larger pod total (3 vs 3)
        ("opposite directions", two_way(), 4000, 3000),
        # allocatedResources without resources: 1.34 reads the spec, 1.37 the allocation
        ("allocated, not actuated", resized("500m", None, "2"), 600, 2100),
        # both agree when the pod moves one way
        ("downsize pending", resized("500m", "2", "2"), 2100, 2100),
        # Infeasible: 1.37 drops the spec of every container, so the sidecar with no
        # status counts nothing (containerAllocatedRequests returns nil), 1.34 keeps it
        ("upsize infeasible", resized("3", "1", "1", condition="Infeasible"), 1100, 1000),
        # pod-level status (1.36+ kubelets) is taken as it is by 1.37
        (
            "pod-level status",
            two_way(allocatedResources={"cpu": "5"}, resources={"requests": {"cpu": "3"}}),
            4000,
            5000,
        ),
        ("no status at all", pod([c("1")], init=[c("3")]), 3000, 3000),
    ],
)
def test_resize_rules_by_release(
    case: str, the_pod: dict, per_container: int, aggregate: int
) -> None:
    assert pod_cpu_request_millis(the_pod, PER_CONTAINER) == per_container, case
    assert pod_cpu_request_millis(the_pod, AGGREGATE) == aggregate, case


def test_pod_level_request_mid_resize_under_1_37() -> None:
    """Pod-level requests count max(spec, status.resources, status.allocatedResources)."""
    the_pod = pod([c("1")], pod_cpu="2")
    the_pod["status"] = {
        "resources": {"requests": {"cpu": "3"}},
        "allocatedResources": {"cpu": "3"},
    }
    assert pod_cpu_request_millis(the_pod, PER_CONTAINER) == 2000
    assert pod_cpu_request_millis(the_pod, AGGREGATE) == 3000


@pytest.mark.parametrize(
    ("the_pod", "expected"),
    [
        # every resource, limits standing in for requests; overhead on top
        (
            pod(
                [
                    {
                        "name": "a",
                        "resources": {
                            "requests": {"cpu": "1", "memory": "1Gi"},
                            "limits": {"nvidia.com/gpu": "2", "ephemeral-storage": "1G"},
                        },
                    }
                ],
                overhead="100m",
            ),
            {"cpu": 1100, "memory": 2**30, "nvidia.com/gpu": 2, "ephemeral-storage": 10**9},
        ),
        # a regular init container's memory peak exceeds the steady state
        (
            pod(
                [{"name": "a", "resources": {"requests": {"memory": "1Gi"}}}],
                init=[{"name": "i", "resources": {"requests": {"memory": "3Gi"}}}],
            ),
            {"memory": 3 * 2**30},
        ),
        # pod-level memory replaces the containers'; their GPUs stay (not a pod-level resource)
        (
            {
                "spec": {
                    "resources": {"requests": {"memory": "4Gi"}},
                    "containers": [
                        {"name": "a", "resources": {"requests": {"memory": "1Gi", "x.io/dev": "1"}}}
                    ],
                }
            },
            {"memory": 4 * 2**30, "x.io/dev": 1},
        ),
        # memory rounds up to whole bytes, as Quantity.Value() does
        (pod([{"name": "a", "resources": {"requests": {"memory": "1500m"}}}]), {"memory": 2}),
    ],
)
def test_every_resource_is_counted(the_pod: dict, expected: dict) -> None:
    assert pod_requests(the_pod) == expected
