"""Which map of kube-scheduler's answer each filter rejection lands in, by table.

Every rejection must be ``FailedAndUnresolvableNodes``: the extender has no
``preemptVerb``, so kube-scheduler's preemption dry run re-runs only the in-tree filters on
a ``FailedNodes`` node, finds no victim on a node those filters pass (every node the
extender sees), and fails the whole preemption with ``expected at least one victim pod on
node`` (kubernetes#139270) instead of dropping the node.
"""

from __future__ import annotations

import time

import pytest
from support.fakeapi import make_node, make_pod

from extender.scheduler.filtering import REASONS, filter_nodes
from extender.state.cluster import ClusterState
from extender.state.usage import UsageSample
from machine_catalog.loading import parse_catalog

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: maps}
spec:
  baseline: old
  unknownNodes: reject
  scoring: {strategy: loadAware, hotSpotUsage: 0.8}
  families:
    - {name: old, scuPerCore: 1, instanceTypes: [m5.2xlarge]}
    - {name: new, scuPerCore: 1.5, instanceTypes: [m7i.2xlarge]}
    - {name: gone, scuPerCore: 1, schedulable: false, instanceTypes: [m4.2xlarge]}
"""


def _state() -> ClusterState:
    state = ClusterState(parse_catalog(CATALOG))
    state.replace(
        [
            make_node("old-full", cpu="8", instance_type="m5.2xlarge"),
            make_node("old-hot", cpu="8", instance_type="m5.2xlarge"),
            make_node("new-a", cpu="8", instance_type="m7i.2xlarge"),
            make_node("gone-a", cpu="8", instance_type="m4.2xlarge"),
            make_node("odd-a", cpu="8", instance_type="x9.huge"),
        ],
        [make_pod("filler", cpu="7500m", node="old-full")],
    )
    state.set_usage({"old-hot": UsageSample(7500, time.time() - 1)})
    return state


TABLE = [
    ("ghost", "old", "not_in_cache"),
    ("odd-a", None, "unknown_node"),
    ("gone-a", None, "retired_family"),
    ("new-a", "old", "family_mismatch"),
    ("old-full", "old", "insufficient_scu"),
    ("old-hot", "old", "hot_spot"),
]


@pytest.mark.parametrize(("node", "pinned", "reason"), TABLE)
def test_every_rejection_is_unresolvable(node: str, pinned: str | None, reason: str) -> None:
    view = _state().view([node], usage=True)
    outcome = filter_nodes(view, 1000, pinned, now=time.time())
    assert outcome.rejections == {reason: 1}
    assert set(outcome.unresolvable) == {node}
    assert dict(outcome.failed) == {}


def test_the_table_covers_every_per_node_reason() -> None:
    """A reason added later must join the table. Not in it: pod_family_unknown (decided once
    per request, before any node: :func:`_all_unresolvable`) and ambiguous_node (its map is
    checked in tests/test_scheduling.py on the fixture cluster's AKS node)."""
    assert set(REASONS) - {"pod_family_unknown", "ambiguous_node"} == {r for *_, r in TABLE}
