"""ClusterState: incremental per-node totals, per-kind atomic relists, catalog re-matching."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support.fakeapi import make_node, make_pod

from extender.state.cluster import (
    ABSENT,
    AMBIGUOUS,
    UNKNOWN,
    ClusterState,
    compact_node,
    compact_pod,
)
from machine_catalog.loading import parse_catalog

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: test}
spec:
  baseline: base
  families:
    - {name: base, scuPerCore: 1.0, instanceTypes: [b.large]}
    - {name: fast, scuPerCore: 1.25, instanceTypes: [f.large]}
    - name: nfd
      scuPerCore: 1.5
      nodeSelector: {matchLabels: {cpu: spr}}
"""

# The same families, but f.large has moved to "base" (a catalog edit on hot reload).
CATALOG_MOVED = CATALOG.replace("[b.large]", "[b.large, f.large]").replace(
    "instanceTypes: [f.large]", "instanceTypes: [f.xlarge]"
)


@pytest.fixture
def catalog():
    return parse_catalog(CATALOG)


@pytest.fixture
def state(catalog) -> ClusterState:
    return ClusterState(catalog)


def requested(state: ClusterState, *names: str) -> list[int]:
    return [int(v) for v in state.view(list(names)).requested]


def bound(pod: dict[str, Any], node: str | None) -> dict[str, Any]:
    pod = {**pod, "spec": {**pod["spec"]}}
    if node is None:
        pod["spec"].pop("nodeName", None)
    else:
        pod["spec"]["nodeName"] = node
    return pod


def with_phase(pod: dict[str, Any], phase: str) -> dict[str, Any]:
    return {**pod, "status": {"phase": phase}}


# -- incremental totals ------------------------------------------------------------------


def test_bound_pods_count_unbound_and_terminal_pods_hold_nothing(state):
    state.replace([make_node("n1"), make_node("n2")], [])
    state.apply("Pod", "ADDED", make_pod(cpu="500m", node="n1"))
    state.apply("Pod", "ADDED", make_pod(cpu="250m", node="n1"))
    state.apply("Pod", "ADDED", make_pod(cpu="4"))  # unbound, not pinned: nothing anywhere
    state.apply("Pod", "ADDED", make_pod(cpu="1", node="n2", phase="Succeeded"))
    state.apply("Pod", "ADDED", make_pod(cpu="1", node="n2", phase="Failed"))
    assert requested(state, "n1", "n2") == [750, 0]
    assert state.pending_millis() == {}


def test_pod_turning_terminal_releases_its_cpu(state):
    state.replace([make_node("n1")], [])
    pod = make_pod(cpu="2", node="n1")
    state.apply("Pod", "ADDED", pod)
    assert requested(state, "n1") == [2000]
    state.apply("Pod", "MODIFIED", with_phase(pod, "Succeeded"))
    assert requested(state, "n1") == [0]


def test_modified_moves_a_pod_between_nodes_and_deleted_removes_it(state):
    state.replace([make_node("n1"), make_node("n2")], [])
    pod = make_pod(cpu="1500m", node="n1")
    state.apply("Pod", "ADDED", pod)
    state.apply("Pod", "MODIFIED", bound(pod, "n2"))
    assert requested(state, "n1", "n2") == [0, 1500]
    state.apply("Pod", "MODIFIED", bound(pod, "n2"))  # a repeated event changes nothing
    assert requested(state, "n1", "n2") == [0, 1500]
    state.apply("Pod", "DELETED", bound(pod, "n2"))
    assert requested(state, "n1", "n2") == [0, 0]
    assert state.counts() == {"nodes": 2, "pods": 0}


def test_pod_arriving_before_its_node_is_counted_when_the_node_appears(state):
    state.replace([], [])
    state.apply("Pod", "ADDED", make_pod(cpu="700m", node="late"))
    view = state.view(["late"])
    assert view.slots[0] == -1 and view.family[0] == ABSENT and view.requested[0] == 0
    state.apply("Node", "ADDED", make_node("late"))
    assert requested(state, "late") == [700]


def test_node_deleted_and_re_added_keeps_the_pods_still_bound_to_it(state):
    state.replace([make_node("n1", cpu="8"), make_node("n2")], [make_pod(cpu="3", node="n1")])
    state.apply("Node", "DELETED", make_node("n1"))
    assert state.view(["n1"]).slots[0] == -1
    assert requested(state, "n2") == [0]
    state.apply("Node", "ADDED", make_node("n1", cpu="16"))
    view = state.view(["n1"])
    assert (int(view.allocatable[0]), int(view.requested[0])) == (16000, 3000)


def test_a_freed_slot_reused_by_another_node_does_not_inherit_totals(state):
    state.replace([make_node("old")], [make_pod(cpu="2", node="old")])
    state.apply("Node", "DELETED", make_node("old"))
    state.apply("Node", "ADDED", make_node("new"))
    assert requested(state, "new") == [0]


def test_effective_request_follows_sidecar_init_peak_and_overhead(state):
    state.replace([make_node("n1"), make_node("n2")], [])
    pod = make_pod(node="n1", cpu="500m")
    pod["spec"]["initContainers"] = [
        {"name": "mesh", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "migrate", "resources": {"requests": {"cpu": "2"}}},
    ]
    pod["spec"]["overhead"] = {"cpu": "250m"}
    state.apply("Pod", "ADDED", pod)
    # steady state 500m + 100m sidecar; the init peak is 100m sidecar + 2 = 2.1; + overhead
    assert requested(state, "n1") == [2350]

    pod_level = make_pod(node="n2", cpu="4")
    pod_level["spec"]["resources"] = {"requests": {"cpu": "1"}}  # wins over the containers
    pod_level["spec"]["overhead"] = {"cpu": "100m"}
    state.apply("Pod", "ADDED", pod_level)
    assert requested(state, "n2") == [1100]


def test_pods_pinned_but_unbound_are_pending_on_their_family(state):
    state.replace([make_node("n1", instance_type="f.large")], [])
    pinned = make_pod(cpu="1", annotations={"machine-catalog.io/family": "fast"})
    other = make_pod(cpu="300m", annotations={"machine-catalog.io/family": "fast"})
    state.apply("Pod", "ADDED", pinned)
    state.apply("Pod", "ADDED", other)
    assert state.pending_millis() == {"fast": 1300}
    state.apply("Pod", "MODIFIED", bound(pinned, "n1"))  # bound: pending -> node total
    assert state.pending_millis() == {"fast": 300}
    assert requested(state, "n1") == [1000]
    state.apply("Pod", "MODIFIED", with_phase(other, "Failed"))  # never bound, gave up
    assert state.pending_millis() == {}


def test_view_reports_families_and_unknown_names(state, catalog):
    state.replace(
        [
            make_node("b", instance_type="b.large"),
            make_node("f", instance_type="f.large"),
            make_node("x", instance_type="x.huge"),
            make_node("two", instance_type="b.large", labels={"cpu": "spr"}),
        ],
        [],
    )
    view = state.view(["f", "missing", "b", "x", "two"])
    idx = catalog.family_index
    assert view.family.tolist() == [idx["fast"], ABSENT, idx["base"], UNKNOWN, AMBIGUOUS]
    assert view.slots[1] == -1 and view.allocatable[1] == 0 and view.requested[1] == 0
    assert set(view.unmatched_labels) == {3, 4}
    assert view.match(4).status == "ambiguous"
    assert view.match(0) is None


def test_a_name_the_cache_lacks_is_absent_even_when_every_slot_is_taken(state, catalog):
    # Slot -1 reads the last slot of the arrays; with the tables exactly full that slot
    # holds a real node, which must not leak into the unknown name's facts.
    nodes = [make_node(f"n{i}", cpu="4", instance_type="f.large") for i in range(64)]
    state.replace(nodes, [make_pod(cpu="1", node="n63")])
    view = state.view(["n0", "missing"])
    assert view.family.tolist() == [catalog.family_index["fast"], ABSENT]
    assert view.allocatable.tolist() == [4000, 0]
    assert view.requested.tolist() == [0, 0]
    assert view.unmatched_labels == {}


def test_cordoned_node_is_reported_unschedulable(state):
    node = make_node("n1")
    state.replace([node], [])
    assert state.view(["n1"]).unschedulable.tolist() == [False]
    state.apply("Node", "MODIFIED", {**node, "spec": {"unschedulable": True}})
    assert state.view(["n1"]).unschedulable.tolist() == [True]


def test_set_catalog_re_matches_every_node(state):
    state.replace([make_node("f", instance_type="f.large")], [make_pod(cpu="1", node="f")])
    moved = parse_catalog(CATALOG_MOVED)
    state.set_catalog(moved)
    view = state.view(["f"])
    assert view.catalog is moved
    assert view.family.tolist() == [moved.family_index["base"]]
    assert view.requested.tolist() == [1000]  # totals survive a catalog change


def test_a_catalog_reload_during_a_replace_is_not_lost(state):
    moved = parse_catalog(CATALOG_MOVED)

    def nodes() -> Iterator[dict]:
        yield make_node("f", instance_type="f.large")
        state.set_catalog(moved)  # a hot reload lands while the relist is being built

    state.replace(nodes(), [])
    assert state.view(["f"]).family.tolist() == [moved.family_index["base"]]
    state.replace_nodes(nodes())
    assert state.view(["f"]).family.tolist() == [moved.family_index["base"]]


# -- relists -----------------------------------------------------------------------------


def test_synced_only_after_both_kinds_were_listed(state):
    assert not state.synced and state.age() is None
    state.replace_nodes([make_node("n1")], "10")
    assert not state.synced
    state.replace_pods([make_pod(node="n1")], "11")
    assert state.synced and state.resource_version == "11"
    assert state.age() is not None and state.age() < 5


def test_replace_nodes_keeps_pods_and_their_totals(state):
    state.replace(
        [make_node("n1"), make_node("n2")],
        [
            make_pod(cpu="1", node="n1"),
            make_pod(cpu="2", annotations={"machine-catalog.io/family": "base"}),
        ],
    )
    state.replace_nodes([make_node("n1", cpu="32"), make_node("n3")])
    view = state.view(["n1", "n2", "n3"])
    assert view.allocatable.tolist() == [32000, 0, 8000]
    assert view.requested.tolist() == [1000, 0, 0]
    assert view.slots[1] == -1
    assert state.pending_millis() == {"base": 2000}
    assert state.counts() == {"nodes": 2, "pods": 2}


def test_replace_pods_keeps_nodes_and_recomputes_totals(state):
    state.replace([make_node("n1"), make_node("n2")], [make_pod(cpu="1", node="n1")])
    state.apply("Node", "MODIFIED", make_node("n2", cpu="4"))
    state.replace_pods([make_pod(cpu="3", node="n2"), make_pod(cpu="1", node="gone")])
    view = state.view(["n1", "n2"])
    assert view.requested.tolist() == [0, 3000]
    assert view.allocatable.tolist() == [8000, 4000]
    state.apply("Node", "ADDED", make_node("gone"))  # the relisted totals of unknown nodes too
    assert requested(state, "gone") == [1000]


def test_a_relist_that_fails_part_way_leaves_the_state_untouched(state):
    state.replace([make_node("n1")], [make_pod(cpu="1", node="n1")])
    generation = state.generation

    def pods() -> Iterator[dict]:
        yield make_pod(cpu="5", node="n1")
        raise ConnectionResetError("the LIST broke on page 2")

    with pytest.raises(ConnectionResetError):
        state.replace_pods(pods())
    with pytest.raises(ConnectionResetError):
        state.replace([make_node("n1")], pods())
    assert requested(state, "n1") == [1000]
    assert state.generation == generation


def _hammer(state: ClusterState, names: list[str], seen: set, stop: threading.Event) -> None:
    while not stop.is_set():
        view = state.view(names)
        seen.add((int(view.requested.sum()), int(view.allocatable.sum())))


@pytest.mark.parametrize("how", ["replace", "replace_pods", "replace_nodes"])
def test_readers_never_see_a_half_applied_relist(state, how):
    names = [f"n{i}" for i in range(50)]
    small_nodes = [make_node(n, cpu="8") for n in names]
    big_nodes = [make_node(n, cpu="16") for n in names]
    old_pods = [make_pod(cpu="100m", node=names[i % 50]) for i in range(2000)]
    new_pods = [make_pod(cpu="300m", node=names[i % 50]) for i in range(2000)]
    state.replace(small_nodes, old_pods)
    before = (200_000, 400_000)
    after = {
        "replace": (600_000, 800_000),
        "replace_pods": (600_000, 400_000),
        "replace_nodes": (200_000, 800_000),
    }[how]
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()
    reader = threading.Thread(target=_hammer, args=(state, names, seen, stop))
    reader.start()
    try:
        for i in range(10):
            forward = i % 2 == 0
            if how == "replace":
                state.replace(
                    big_nodes if forward else small_nodes, new_pods if forward else old_pods
                )
            elif how == "replace_pods":
                state.replace_pods(new_pods if forward else old_pods)
            else:
                state.replace_nodes(big_nodes if forward else small_nodes)
    finally:
        stop.set()
        reader.join(5)
    assert seen <= {before, after}, seen - {before, after}
    assert len(seen) >= 1


class _Untouchable(dict):
    """A pods table that fails the test if the request path reads it."""

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the request path touched the pods table")

    __getitem__ = __iter__ = __len__ = __contains__ = get = items = values = keys = _fail


def test_views_never_touch_the_pods(state):
    names = [f"n{i}" for i in range(20)]
    state.replace([make_node(n) for n in names], [make_pod(node=n) for n in names * 50])
    expected = state.view(names).requested.copy()
    state._t.pods = _Untouchable()
    view = state.view([*names, "missing"])
    assert np.array_equal(view.requested[:-1], expected)
    assert state.all_nodes().requested.sum() == expected.sum()
    assert state.pending_millis() == {}


# -- compact objects (what a snapshot feed builds the cache from) ------------------------


def _varied_cluster() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tainted = make_node("t1", instance_type="f.large")
    tainted["spec"] = {
        "unschedulable": True,
        "taints": [
            {"key": "gpu", "value": "yes", "effect": "NoSchedule"},
            {"key": "soft", "effect": "PreferNoSchedule"},
        ],
    }
    capacity_only = make_node("c1", instance_type="b.large")
    del capacity_only["status"]["allocatable"]
    nodes = [
        make_node("n1"),  # matches no family
        make_node("n2", instance_type="b.large"),
        make_node("n3", cpu="7910m", labels={"cpu": "spr"}),
        tainted,
        capacity_only,
    ]
    sidecar = make_pod(node="n2", cpu="500m")
    sidecar["spec"]["initContainers"] = [
        {"name": "mesh", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        {"name": "migrate", "resources": {"limits": {"cpu": "2"}}},
    ]
    sidecar["spec"]["overhead"] = {"cpu": "250m"}
    pod_level = make_pod(node="n3", cpu="4")
    pod_level["spec"]["resources"] = {"requests": {"cpu": "1"}}
    no_uid = make_pod(node="n2", cpu="300m")
    del no_uid["metadata"]["uid"]
    gone_twice = make_pod(node="n2", cpu="1")
    gone_twice_later = with_phase(gone_twice, "Succeeded")  # a duplicate: the later one wins
    pods = [
        sidecar,
        pod_level,
        no_uid,
        gone_twice,
        gone_twice_later,
        make_pod(node="t1", cpu="bogus"),  # unparsable: counted 0 either way
        make_pod(cpu="2", annotations={"machine-catalog.io/family": "fast"}),  # pending
        make_pod(cpu="2", annotations={"machine-catalog.io/family": "fast"}, phase="Failed"),
        make_pod(cpu="3"),  # unbound, not pinned: nothing
        make_pod(node="ghost", cpu="700m"),  # bound to a node not (yet) in the cache
    ]
    return nodes, pods


def test_compact_objects_feed_exactly_the_same_cache(catalog):
    nodes, pods = _varied_cluster()
    full, compact = ClusterState(catalog), ClusterState(catalog)
    full.replace(nodes, pods)
    compact.replace([compact_node(n) for n in nodes], [compact_pod(p) for p in pods])
    names = [n["metadata"]["name"] for n in nodes] + ["ghost"]
    a, b = full.view(names), compact.view(names)
    for field in ("slots", "allocatable", "requested", "family", "unschedulable"):
        assert getattr(a, field).tolist() == getattr(b, field).tolist(), field
    assert full.labels_of(names) == compact.labels_of(names)
    assert full.taints_of(names) == compact.taints_of(names)
    assert full.pending_millis() == compact.pending_millis() == {"fast": 2000}
    assert full.counts() == compact.counts()
    # The effective request really was the full rule's (sidecar + init peak + overhead).
    assert a.requested.tolist()[1] == 2350 + 300


def test_compact_pod_keeps_nothing_the_cache_does_not_read():
    pod = make_pod(node="n1", cpu="1", annotations={"team": "a", "machine-catalog.io/x": "y"})
    pod["spec"]["containers"][0]["env"] = [{"name": "A", "value": "b" * 1000}]
    compact = compact_pod(pod)
    assert compact == {
        "metadata": {"uid": pod["metadata"]["uid"]},
        "spec": {"nodeName": "n1", "resources": {"requests": {"cpu": "1000m"}}},
    }


def test_an_in_place_resize_is_counted_as_kube_scheduler_counts_it(state):
    """Spec, then kubelet status, event by event: a downsize holds its CPU until the
    kubelet reports it, an Infeasible upsize counts only what is allocated."""
    state.replace([make_node("n1")], [])
    pod = make_pod(cpu="2", node="n1")

    def stage(spec_cpu: str, reported: str, allocated: str, reason: str | None = None) -> dict:
        out = {**pod, "spec": {**pod["spec"]}}
        out["spec"]["containers"] = [
            {"name": "app", "image": "app:1", "resources": {"requests": {"cpu": spec_cpu}}}
        ]
        status: dict[str, Any] = {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "app",
                    "resources": {"requests": {"cpu": reported}},
                    "allocatedResources": {"cpu": allocated},
                }
            ],
        }
        if reason is not None:
            status["conditions"] = [
                {"type": "PodResizePending", "status": "True", "reason": reason}
            ]
        out["status"] = status
        return out

    state.apply("Pod", "ADDED", stage("2", "2", "2"))
    assert requested(state, "n1") == [2000]
    state.apply("Pod", "MODIFIED", stage("500m", "2", "2"))  # downsize asked, not applied
    assert requested(state, "n1") == [2000]
    state.apply("Pod", "MODIFIED", stage("500m", "500m", "500m"))  # applied
    assert requested(state, "n1") == [500]
    state.apply("Pod", "MODIFIED", stage("6", "500m", "500m", "Deferred"))  # may still come
    assert requested(state, "n1") == [6000]
    state.apply("Pod", "MODIFIED", stage("6", "500m", "500m", "Infeasible"))  # never will
    assert requested(state, "n1") == [500]


def beta_node(name: str, instance_type: str, **labels: str) -> dict[str, Any]:
    """A node with only the deprecated beta instance-type label (and ``labels``)."""
    node = make_node(name, instance_type=instance_type)
    del node["metadata"]["labels"]["node.kubernetes.io/instance-type"]
    node["metadata"]["labels"].update({"beta.kubernetes.io/instance-type": instance_type, **labels})
    return node


def test_families_with_a_node_only_the_beta_label_selects_are_tracked(state):
    """The webhook pins with the deprecated beta term only for such a family; the count
    follows adds, relabels, deletes, relists and catalog reloads."""
    assert not state.beta_label_only("fast")
    state.replace([make_node("ga", instance_type="f.large"), beta_node("b1", "f.large")], [])
    assert state.beta_label_only("fast") and not state.beta_label_only("base")

    state.apply("Node", "ADDED", beta_node("b2", "f.large"))
    state.apply("Node", "DELETED", beta_node("b1", "f.large"))
    assert state.beta_label_only("fast")  # b2 is left
    ga_too = beta_node("b2", "f.large", **{"node.kubernetes.io/instance-type": "f.large"})
    state.apply("Node", "MODIFIED", ga_too)  # the GA label added: the GA term selects it
    assert not state.beta_label_only("fast")

    state.apply("Node", "ADDED", beta_node("b3", "b.large"))
    assert state.beta_label_only("base")
    state.apply("Node", "ADDED", beta_node("b4", "nothing.large"))  # unknown: no family
    state.apply("Node", "ADDED", beta_node("b5", "b.large", cpu="spr"))  # ambiguous
    state.set_catalog(parse_catalog(CATALOG_MOVED))  # f.large moves to base, f.xlarge to fast
    state.apply("Node", "ADDED", beta_node("b6", "f.large"))
    assert state.beta_label_only("base") and not state.beta_label_only("fast")
    state.apply("Node", "DELETED", beta_node("b3", "b.large"))
    assert state.beta_label_only("base")  # b6 is still one
    state.apply("Node", "DELETED", beta_node("b6", "f.large"))
    assert not state.beta_label_only("base")

    state.replace_nodes([beta_node("b7", "f.xlarge")])
    state.replace_pods([])  # a pod relist keeps the node tables, the count with them
    assert state.beta_label_only("fast") and not state.beta_label_only("base")
    state.apply("Node", "DELETED", beta_node("b7", "f.xlarge"))
    assert not state.beta_label_only("fast")
