"""The family choice and the stranded-pod remedy count every resource kube-scheduler's
``NodeResourcesFit`` counts, not CPU alone: a node holds the pod only if its CPU, memory,
ephemeral storage, a pod slot and every extended resource it requests fit on that same node.

Tables over :func:`extender.admission.placement.choose_family` and
:func:`extender.loops.recreation.room_for` on a real :class:`ClusterState`.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from extender.admission.placement import (
    NodeConstraints,
    Placement,
    choose_family,
    family_capacity,
    pod_needs,
)
from extender.admission.webhook import Fleet
from extender.loops.recreation import room_for
from extender.state.cluster import ClusterState
from machine_catalog.loading import parse_catalog
from machine_catalog.resources import pod_requests

IT = "node.kubernetes.io/instance-type"
CATALOG = parse_catalog(
    """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: fit-resources}
spec:
  baseline: mem
  families:
    - {name: mem, scuPerCore: 1.0, instanceTypes: [r.large]}
    - {name: cpu, scuPerCore: 1.5, instanceTypes: [c.large]}
"""
)
_uids = itertools.count()


def node(name: str, family: str, cpu: str, memory: str, pods: str = "110", **extra: str) -> dict:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "100Gi"}
    return {
        "metadata": {"name": name, "labels": {IT: {"mem": "r.large", "cpu": "c.large"}[family]}},
        "spec": {},
        "status": {"allocatable": {**allocatable, **extra}},
    }


def pod(cpu: str, memory: str = "0", node_name: str | None = None, **extra: str) -> dict:
    out: dict[str, Any] = {
        "metadata": {"uid": f"u{next(_uids)}", "name": "p", "namespace": "ns"},
        "spec": {
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": cpu, "memory": memory, **extra}}}
            ]
        },
        "status": {"phase": "Running" if node_name else "Pending"},
    }
    if node_name:
        out["spec"]["nodeName"] = node_name
    return out


# The cpu family has far more free SCU (8 cores x 1.5 = 12 SCU, against 4) but small nodes'
# memory; the mem family has 64Gi nodes.
NODES = [
    node("mem-1", "mem", "4", "64Gi"),
    node("cpu-1", "cpu", "8", "8Gi"),
    node("cpu-2", "cpu", "8", "8Gi", pods="3", **{"example.com/gpu": "1"}),
]
BOUND = [pod("100m", "1Gi", "cpu-2"), pod("100m", "1Gi", "cpu-2"), pod("100m", "1Gi", "cpu-2")]


def choose(the_pod: dict, nodes: list[dict] = NODES, bound: list[dict] = BOUND) -> Placement:
    state = ClusterState(CATALOG)
    state.replace(nodes, bound)
    view = state.all_nodes()
    requests = pod_requests(the_pod)
    decision = choose_family(
        view,
        family_capacity(CATALOG, view, None, fixed=False),
        constraints=NodeConstraints(),
        allowed_nodes=None,
        requested=None,
        pending_physical={},
        reserved_scu={},
        pod_scu=requests.get("cpu", 0),
        needs=pod_needs(requests),
    )
    assert isinstance(decision, Placement)
    return decision


@pytest.mark.parametrize(
    ("case", "the_pod", "family", "fits"),
    [
        ("CPU only: the most free SCU", pod("1", "1Gi"), "cpu", True),
        # 16Gi fits no cpu node (8Gi each): the mem family, though it has less free SCU
        ("memory-heavy", pod("1", "16Gi"), "mem", True),
        # GPUs only on cpu-2, whose 3 pod slots are taken: no node holds it anywhere
        (
            "extended resource on a full node",
            pod("1", "1Gi", **{"example.com/gpu": "1"}),
            "cpu",
            False,
        ),
        # ephemeral storage beyond every node's 100Gi
        ("storage nowhere", pod("1", "1Gi", **{"ephemeral-storage": "200Gi"}), "cpu", False),
        # no CPU request: memory alone decides
        ("memory only", pod("0", "32Gi"), "mem", True),
    ],
)
def test_a_family_fits_only_where_one_node_holds_every_resource(
    case: str, the_pod: dict, family: str, fits: bool
) -> None:
    decision = choose(the_pod)
    assert (decision.family.name, decision.fits) == (family, fits), case
    if not fits:
        assert any("may stay Pending" in w for w in decision.warnings), case


def test_the_gpu_pod_fits_once_a_pod_slot_frees() -> None:
    decision = choose(pod("1", "1Gi", **{"example.com/gpu": "1"}), bound=BOUND[:2])
    assert (decision.family.name, decision.fits) == ("cpu", True)


def _normalized(family: str, cpu: str, memory: str) -> dict:
    """The pod as the webhook leaves it for ``family``: its patch applied (the SCU record
    the remedy sizes a replacement from, the pin, the annotations)."""
    import jsonpatch

    from extender.admission.patching import normalize_ops, read_cpu_values

    stranded = pod(cpu, memory)
    ops = normalize_ops(stranded, read_cpu_values(stranded), CATALOG.by_name[family], "v")
    return jsonpatch.apply_patch(stranded, ops)


@pytest.mark.parametrize(
    ("case", "stranded", "fits", "elsewhere"),
    [
        # pinned to cpu with 16Gi: CPU is free there, memory is not: move it to mem
        ("memory-heavy on the cpu family", _normalized("cpu", "1", "16Gi"), False, "mem"),
        ("fits where it is", _normalized("cpu", "1", "4Gi"), True, None),
        # 100Gi fits no node of any family: nowhere to go
        ("too big everywhere", _normalized("cpu", "1", "100Gi"), False, None),
    ],
)
def test_the_remedy_moves_a_pod_whose_memory_its_family_lacks(
    case: str, stranded: dict, fits: bool, elsewhere: str | None
) -> None:
    state = ClusterState(CATALOG)
    state.replace(NODES, BOUND)
    room = room_for(Fleet(state), stranded)
    assert (room.family_fits, room.elsewhere) == (fits, elsewhere), case
