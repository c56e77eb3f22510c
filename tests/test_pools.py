"""Per-family pool totals (:func:`extender.admission.pools.family_pools`), table-driven.

Each row builds a cluster cache from nodes and pods, as the server and ``machine-catalog
report`` do, and states one family's totals worked out by hand: SCU = floor(physical
millicores x scuPerCore), cordoned nodes in ``nodes``/``cordoned`` only, finished pods
nowhere, overcommitted nodes freeing nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.fakeapi import make_node, make_pod

from extender.admission.pools import FamilyPool, family_pools
from extender.state.cluster import ClusterState
from machine_catalog.loading import parse_catalog

CATALOG = parse_catalog(
    """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: pools}
spec:
  baseline: base
  families:
    - {name: base, scuPerCore: 1, instanceTypes: [b.large]}
    - {name: fast, scuPerCore: 1.18, instanceTypes: [f.large]}
    - {name: old, scuPerCore: 0.8, schedulable: false, instanceTypes: [o.large]}
    - {name: twin-a, scuPerCore: 1.1, instanceTypes: [t.large]}
    - {name: twin-b, scuPerCore: 1.2, nodeSelector: {matchLabels: {twin: "yes"}}}
"""
)


def cordoned(node: dict[str, Any]) -> dict[str, Any]:
    node["spec"]["unschedulable"] = True
    return node


PINNED = {"machine-catalog.io/family": "fast"}

CASES = {
    "two nodes, one pod": (
        [make_node("f1", "8", "f.large"), make_node("f2", "8", "f.large")],
        [make_pod(cpu="3", node="f1")],
        "fast",
        # 16000m x 1.18 = 18880; 3000m x 1.18 = 3540; free 13000m = 15340; f2 8000m = 9440.
        dict(nodes=2, cordoned=0, capacity=18880, requested=3540, free=15340, largest=9440),
    ),
    "a cordoned node counts in nodes and cordoned only": (
        [make_node("f1", "8", "f.large"), cordoned(make_node("f2", "8", "f.large"))],
        [make_pod(cpu="2", node="f1"), make_pod(cpu="4", node="f2")],
        "fast",
        dict(nodes=2, cordoned=1, capacity=9440, requested=2360, free=7080, largest=7080),
    ),
    "finished pods count nowhere": (
        [make_node("b1", "4", "b.large")],
        [
            make_pod(cpu="1", node="b1", phase="Succeeded"),
            make_pod(cpu="1", node="b1", phase="Failed"),
            make_pod(cpu="1", node="b1"),
            make_pod(cpu="1", phase="Succeeded", annotations={"machine-catalog.io/family": "base"}),
        ],
        "base",
        dict(nodes=1, cordoned=0, capacity=4000, requested=1000, free=3000, largest=3000),
    ),
    "an overcommitted node frees nothing for the others": (
        [make_node("b1", "4", "b.large"), make_node("b2", "4", "b.large")],
        [make_pod(cpu="6", node="b1"), make_pod(cpu="1", node="b2")],
        "base",
        dict(nodes=2, cordoned=0, capacity=8000, requested=7000, free=3000, largest=3000),
    ),
    "fragmentation: free spread over nodes": (
        [make_node(f"b{i}", "4", "b.large") for i in range(4)],
        [make_pod(cpu="3", node=f"b{i}") for i in range(4)],
        "base",
        dict(nodes=4, cordoned=0, capacity=16000, requested=12000, free=4000, largest=1000),
    ),
    "pinned, unbound pods are pending on their family": (
        [make_node("f1", "8", "f.large")],
        [make_pod(cpu="2", annotations=PINNED), make_pod(cpu="500m", annotations=PINNED)],
        "fast",
        dict(
            nodes=1, cordoned=0, capacity=9440, requested=0, free=9440, largest=9440, pending=2950
        ),
    ),
    "a retired family is still counted": (
        [make_node("o1", "4", "o.large")],
        [make_pod(cpu="1", node="o1")],
        "old",
        dict(nodes=1, cordoned=0, capacity=3200, requested=800, free=2400, largest=2400),
    ),
    "an ambiguous node belongs to neither family": (
        [make_node("t1", "4", "t.large", labels={"twin": "yes"})],
        [make_pod(cpu="1", node="t1")],
        "twin-a",
        dict(nodes=0, cordoned=0, capacity=0, requested=0, free=0, largest=0),
    ),
    "an unknown node belongs to no family": (
        [make_node("x1", "4", "x.large")],
        [],
        "base",
        dict(nodes=0, cordoned=0, capacity=0, requested=0, free=0, largest=0),
    ),
}


@pytest.mark.parametrize(("nodes", "pods", "family", "expected"), CASES.values(), ids=CASES)
def test_family_pool(nodes, pods, family, expected) -> None:
    state = ClusterState(CATALOG)
    state.replace(nodes, pods)
    pools = {p.name: p for p in family_pools(state.all_nodes(), state.pending_millis())}
    assert list(pools) == [f.name for f in CATALOG.families]  # every family, catalog order
    pool = pools[family]
    assert isinstance(pool, FamilyPool)
    got = dict(
        nodes=pool.nodes,
        cordoned=pool.cordoned,
        capacity=pool.capacity_scu,
        requested=pool.requested_scu,
        free=pool.free_scu,
        largest=pool.largest_free_scu,
    )
    assert got == {k: v for k, v in expected.items() if k != "pending"}
    assert pool.pending_scu == expected.get("pending", 0)
    assert pool.schedulable is CATALOG.by_name[family].schedulable


def test_the_pools_follow_watch_events() -> None:
    state = ClusterState(CATALOG)
    state.replace([make_node("f1", "8", "f.large")], [])
    pod = make_pod(cpu="1", node="f1")
    state.apply("Pod", "ADDED", pod)
    (fast,) = [p for p in family_pools(state.all_nodes(), {}) if p.name == "fast"]
    assert fast.requested_scu == 1180
    state.apply("Node", "MODIFIED", cordoned(make_node("f1", "8", "f.large")))
    (fast,) = [p for p in family_pools(state.all_nodes(), {}) if p.name == "fast"]
    assert (fast.nodes, fast.cordoned, fast.capacity_scu, fast.requested_scu) == (1, 1, 0, 0)
