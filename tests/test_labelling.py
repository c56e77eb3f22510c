"""The leader's family label on nodes: what the cache says each node should carry, the loop
that patches it through the fake API server, and the watch that brings the change back.

Catalog: ``std`` (m5 instance types), ``fast`` (c7 types), ``old`` retired (m4 types), and
``twin-a``/``twin-b`` both selecting ``pool=twin`` (a node with it is ambiguous).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.fakeapi import FakeApiServer, make_node, write_kubeconfig

from extender.admission.patching import normalize_ops, read_cpu_values
from extender.feeds.watching import ClusterWatcher, load_api_client
from extender.loops.labelling import Labeller
from extender.state.cluster import ClusterState
from machine_catalog.annotations import FAMILY_LABEL
from machine_catalog.loading import parse_catalog

CATALOG_TEXT = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: labels}
spec:
  baseline: std
  families:
    - {name: std, scuPerCore: 1.0, instanceTypes: [m5.large]}
    - {name: fast, scuPerCore: 1.25, instanceTypes: [c7.large]}
    - {name: old, scuPerCore: 0.8, schedulable: false, instanceTypes: [m4.large]}
    - {name: twin-a, scuPerCore: 1.0, nodeSelector: {matchLabels: {pool: twin}}}
    - {name: twin-b, scuPerCore: 1.0, nodeSelector: {matchLabels: {pool: twin}}}
"""
CATALOG = parse_catalog(CATALOG_TEXT)


def node(name: str, instance_type: str, **labels: str) -> dict:
    return make_node(name, instance_type=instance_type, labels=labels)


@pytest.mark.parametrize(
    ("labels", "instance_type", "wanted"),
    [
        ({}, "m5.large", "std"),  # matched, no label yet: set it
        ({FAMILY_LABEL: "std"}, "m5.large", None),  # already right: nothing to do
        ({FAMILY_LABEL: "fast"}, "m5.large", "std"),  # wrong family: corrected
        ({}, "m4.large", None),  # retired family, no label: nothing to do
        ({FAMILY_LABEL: "old"}, "m4.large", "(remove)"),  # retired: the label goes
        ({FAMILY_LABEL: "std"}, "t3.micro", "(remove)"),  # unknown node: the label goes
        ({FAMILY_LABEL: "twin-a", "pool": "twin"}, "x.large", "(remove)"),  # ambiguous
        ({"pool": "twin"}, "x.large", None),  # ambiguous, no label: nothing to do
    ],
)
def test_what_each_node_should_carry(labels, instance_type, wanted):
    state = ClusterState(CATALOG)
    state.replace([node("n", instance_type, **labels)], [])
    fixes = state.labels_to_fix()
    if wanted is None:
        assert fixes == []
    else:
        assert fixes == [("n", None if wanted == "(remove)" else wanted)]


def test_a_family_is_labelled_once_every_node_of_it_carries_the_label():
    state = ClusterState(CATALOG)
    state.replace([node("a", "m5.large"), node("b", "m5.large", **{FAMILY_LABEL: "std"})], [])
    assert not state.family_labelled("std")
    state.apply("Node", "MODIFIED", node("a", "m5.large", **{FAMILY_LABEL: "std"}))
    assert state.family_labelled("std")
    state.apply("Node", "ADDED", node("c", "m5.large"))  # a new node: not yet
    assert not state.family_labelled("std")
    state.apply("Node", "DELETED", node("c", "m5.large"))
    assert state.family_labelled("std")


def test_the_pin_is_the_label_in_the_nodeselector_once_the_family_is_labelled():
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
    }
    family = CATALOG.by_name["std"]

    def pin(labelled: bool) -> dict[str, Any]:
        ops = normalize_ops(pod, read_cpu_values(pod), family, "v", labelled=labelled)
        return {
            op["path"]: op["value"]
            for op in ops
            if not op["path"].startswith(("/spec/containers", "/metadata"))
        }

    assert pin(True) == {"/spec/nodeSelector": {FAMILY_LABEL: "std"}}
    unlabelled = pin(False)
    assert "/spec/nodeSelector" not in unlabelled and "/spec/affinity" in unlabelled


@pytest.fixture
def cluster(tmp_path) -> Iterator[tuple[FakeApiServer, ClusterState, Labeller]]:
    with FakeApiServer() as fake:
        fake.add("nodes", node("std-1", "m5.large"))
        fake.add("nodes", node("old-1", "m4.large", **{FAMILY_LABEL: "old"}))
        fake.add("nodes", node("twin-1", "x.large", pool="twin", **{FAMILY_LABEL: "twin-a"}))
        fake.add("nodes", node("fast-1", "c7.large", keep="me"))
        client = load_api_client(write_kubeconfig(tmp_path / "kubeconfig", fake.url))
        state = ClusterState(CATALOG)
        watcher = ClusterWatcher(state, client)
        watcher.start()
        assert watcher.wait_synced(10)
        leading = {"now": True}
        labeller = Labeller(state, client, leader=lambda: leading["now"])
        labeller.leading = leading  # type: ignore[attr-defined]
        try:
            yield fake, state, labeller
        finally:
            watcher.stop()
            client.close()


def wait_for(predicate, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_the_loop_labels_and_unlabels_and_touches_nothing_else(cluster):
    fake, state, labeller = cluster
    assert labeller.run_once() == 4
    stored = {n["metadata"]["name"]: n["metadata"]["labels"] for n in fake.objects("nodes")}
    assert stored["std-1"][FAMILY_LABEL] == "std"
    assert stored["fast-1"][FAMILY_LABEL] == "fast" and stored["fast-1"]["keep"] == "me"
    assert FAMILY_LABEL not in stored["old-1"] and FAMILY_LABEL not in stored["twin-1"]
    assert stored["twin-1"]["pool"] == "twin"
    # The watch brings the patches back: nothing left to do, every family labelled.
    wait_for(lambda: state.labels_to_fix() == [])
    assert labeller.run_once() == 0
    assert state.family_labelled("std") and state.family_labelled("fast")
    patches = [r for r in fake.requests if r.method == "PATCH"]
    assert len(patches) == 4


def test_a_catalog_reload_moves_the_labels(cluster):
    fake, state, labeller = cluster
    labeller.run_once()
    wait_for(lambda: state.labels_to_fix() == [])
    state.set_catalog(
        parse_catalog(
            CATALOG_TEXT.replace(
                "name: fast, scuPerCore: 1.25,", "name: fast, scuPerCore: 1.25, schedulable: false,"
            )
        )
    )
    assert state.labels_to_fix() == [("fast-1", None)]
    assert labeller.run_once() == 1
    stored = {n["metadata"]["name"]: n["metadata"]["labels"] for n in fake.objects("nodes")}
    assert FAMILY_LABEL not in stored["fast-1"]


def test_only_the_leader_patches(cluster):
    fake, _state, labeller = cluster
    labeller.leading["now"] = False
    assert labeller.run_once() == 0
    assert not [r for r in fake.requests if r.method == "PATCH"]
