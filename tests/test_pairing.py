"""serve's check that kube-scheduler calls the extender verbs the catalog's strategy needs:
the verdict as a table, the binding count the cache keeps, and the whole path through the
verbs of a served runtime (``/readyz`` and ``/metrics`` read the same ``Runtime.pairing``).
"""

from __future__ import annotations

import copy
import json

import pytest
from support.fakeapi import make_node, make_pod

from extender.scheduler.verbs import filter_verb, prioritize_verb
from extender.state.cluster import ClusterState
from extender.state.pairing import MISSING_AFTER, ExtenderCalls, needed_verbs, verdict
from extender.state.runtime import Runtime, Settings
from machine_catalog.annotations import FAMILY_ANNOTATION
from machine_catalog.loading import CatalogSource, parse_catalog

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: pairing}
spec:
  baseline: std
  scoring: %s
  families:
    - {name: std, scuPerCore: 1.0, instanceTypes: [m5.2xlarge]}
"""
K = MISSING_AFTER


@pytest.mark.parametrize(
    ("strategy", "hot_spot", "since", "calls", "state"),
    [
        ("balanced", False, {"filter": 500, "prioritize": 500}, {}, "in-tree"),
        ("binpack", False, {"filter": 0, "prioritize": 0}, {"prioritize": 3}, "extender"),
        ("loadAware", False, {"filter": K, "prioritize": K - 1}, {}, "ok"),
        ("loadAware", False, {"filter": 0, "prioritize": K}, {"filter": 9}, "missing"),
        ("loadAware", True, {"filter": K, "prioritize": 0}, {"prioritize": 9}, "missing"),
        ("loadAware", True, {"filter": 0, "prioritize": 0}, {"filter": 1}, "ok"),
    ],
)
def test_verdict(strategy, hot_spot, since, calls, state):
    calls = {"filter": 0, "prioritize": 0, **calls}
    got = verdict(strategy, hot_spot, since, calls)
    assert got["state"] == state, got
    assert got["needs"] == list(needed_verbs(strategy, hot_spot))


def test_counting_restarts_when_the_strategy_changes():
    calls = ExtenderCalls()
    assert calls.status("balanced", False, 100)["state"] == "in-tree"
    # 100 bindings under balanced say nothing about loadAware's calls.
    assert calls.status("loadAware", False, 100)["bindingsSinceCall"]["prioritize"] == 0
    assert calls.status("loadAware", False, 100 + K)["state"] == "missing"
    calls.seen("prioritize", 100 + K)
    assert calls.status("loadAware", False, 100 + K + 1)["state"] == "ok"


def pinned(name: str) -> dict:
    return make_pod(name, "1", phase="Pending", annotations={FAMILY_ANNOTATION: "std"})


def test_the_cache_counts_pinned_pods_going_from_pending_to_bound_only():
    cluster = ClusterState(parse_catalog(CATALOG % "{}"))
    cluster.replace([make_node("n1")], [])
    pod = pinned("p")
    cluster.apply("Pod", "ADDED", pod)
    cluster.apply("Pod", "MODIFIED", pod)  # still pending
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = "n1"
    cluster.apply("Pod", "MODIFIED", bound)
    cluster.apply("Pod", "MODIFIED", bound)  # a status update of the bound pod
    cluster.apply("Pod", "ADDED", make_pod("fixed", "1", node="n1"))  # created with a node
    assert cluster.scheduled_bindings == 1


@pytest.mark.parametrize(
    ("scoring", "call", "state"),
    [
        ("{strategy: loadAware}", False, "missing"),
        ("{strategy: loadAware}", True, "ok"),
        ("{strategy: balanced}", False, "in-tree"),
        ("{strategy: balanced}", True, "extender"),
    ],
)
def test_a_served_runtime_reports_the_calls_it_gets(tmp_path, scoring, call, state):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG % scoring)
    catalogs = CatalogSource(str(path), state_dir=str(tmp_path / "state"))
    cluster = ClusterState(catalogs.current)
    cluster.replace([make_node("n1")], [])
    runtime = Runtime(catalogs=catalogs, cluster=cluster, settings=Settings())
    runtime.pairing()  # the strategy as the server starts
    for i in range(K + 5):
        pod = pinned(f"p{i}")
        cluster.apply("Pod", "ADDED", pod)
        if call:
            body = json.dumps({"Pod": pod, "NodeNames": ["n1"]}).encode()
            for verb in (filter_verb, prioritize_verb):  # loadAware's default has hot spots
                status, _ = verb(runtime, body)
                assert status == 200
        pod["spec"]["nodeName"] = "n1"
        cluster.apply("Pod", "MODIFIED", pod)
    got = runtime.pairing()
    assert got["state"] == state, got
