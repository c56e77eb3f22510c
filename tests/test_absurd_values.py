"""Absurd CPU values (``cpu: "1e16"`` on a pod, on a node's allocatable) never break the
cache: bounded to ``MAX_CPU_MILLIS``, logged once per object, counted in
``machine_catalog_cache_bad_values_total``, and every other node is served as before.

Three levels: the cluster state directly, ``serve --snapshot`` (real gunicorn), and the
watch against the fake API server.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from support.fakeapi import FakeApiServer, make_node, make_pod
from support.helpers import (
    CATALOG_A,
    EKS,
    FILTER_NAMES,
    GKE,
    METAL,
    extender_args,
    ready,
    scheduler_pod,
    serve,
    snapshot_objects,
    wait_until,
)

from extender.feeds.watching import ClusterWatcher, load_api_client
from extender.state.cluster import MAX_CPU_MILLIS, ClusterState
from machine_catalog.loading import load_catalog

CATALOG = load_catalog()
ABSURD = "1e16"  # 10^19 millicores: beyond int64 (9.2 * 10^18)


def bad_values(kind: str, problem: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "machine_catalog_cache_bad_values_total", {"kind": kind, "problem": problem}
        )
        or 0.0
    )


def requested(state: ClusterState, names: list[str]) -> list[int]:
    return state.view(names).requested.tolist()


# -- the cluster state ---------------------------------------------------------------------


def test_an_absurd_pod_is_bounded_logged_once_counted_once_and_others_unaffected(caplog):
    state = ClusterState(CATALOG)
    nodes = [make_node("a", cpu="16"), make_node("b", cpu="16")]
    absurd = make_pod("absurd", cpu=ABSURD, node="a")
    normal = [make_pod(f"p{i}", cpu="500m", node=n) for i, n in enumerate("abab")]
    before = bad_values("pod", "out_of_range")
    with caplog.at_level(logging.WARNING, logger="extender.state.cluster"):
        state.replace(nodes, [absurd, *normal])
        assert requested(state, ["a", "b"]) == [MAX_CPU_MILLIS + 1000, 1000]
        # every later event for the pod and its node still applies
        for i in range(5):
            changed = copy.deepcopy(absurd)
            changed["metadata"]["labels"] = {"round": str(i)}
            state.apply("Pod", "MODIFIED", changed)
            state.apply("Node", "MODIFIED", make_node("a", cpu=str(16 + i)))
        state.apply("Pod", "ADDED", make_pod("late", cpu="250m", node="a"))
        assert requested(state, ["a", "b"]) == [MAX_CPU_MILLIS + 1250, 1000]
        assert state.view(["a"]).allocatable.tolist() == [20_000]
        # deleting it gives the node back exactly
        state.apply("Pod", "DELETED", absurd)
        assert requested(state, ["a", "b"]) == [1250, 1000]
    (line,) = [r.getMessage() for r in caplog.records if "beyond any machine" in r.getMessage()]
    assert absurd["metadata"]["uid"] in line  # one line, naming the pod
    assert bad_values("pod", "out_of_range") == before + 1


def test_an_absurd_node_allocatable_is_bounded_and_its_neighbours_exact():
    state = ClusterState(CATALOG)
    before = bad_values("node", "out_of_range")
    state.replace(
        [make_node("huge", cpu=ABSURD), make_node("ok", cpu="8")],
        [make_pod("p", cpu="1", node="huge"), make_pod("q", cpu="2", node="ok")],
    )
    view = state.view(["huge", "ok"])
    assert view.allocatable.tolist() == [MAX_CPU_MILLIS, 8000]
    assert view.requested.tolist() == [1000, 2000]
    state.apply("Node", "MODIFIED", make_node("huge", cpu="1e17"))  # the same node: not again
    assert bad_values("node", "out_of_range") == before + 1
    # totals over the whole fleet (the webhook's per-family sums) stay exact int64
    everything = state.all_nodes()
    assert int(everything.allocatable.sum()) == MAX_CPU_MILLIS + 8000


def test_many_absurd_pods_on_one_node_cannot_overflow_its_total():
    state = ClusterState(CATALOG)
    pods = [make_pod(f"p{i}", cpu="1e24", node="a") for i in range(1000)]
    state.replace([make_node("a")], pods)
    assert requested(state, ["a"]) == [1000 * MAX_CPU_MILLIS]


def test_unparsable_values_count_zero_and_are_counted_separately():
    state = ClusterState(CATALOG)
    before = bad_values("pod", "unparsable")
    bad = make_pod("bad", cpu="lots", node="a")
    state.replace([make_node("a")], [bad, make_pod("good", cpu="1", node="a")])
    state.apply("Pod", "MODIFIED", bad)
    assert requested(state, ["a"]) == [1000]
    assert bad_values("pod", "unparsable") == before + 1


def test_the_scheduling_routes_answer_for_an_absurd_pending_pod():
    from extender.server.app import create_app
    from extender.state.runtime import Runtime, Settings
    from machine_catalog.loading import CatalogSource

    state = ClusterState(CATALOG)
    objects = snapshot_objects()
    state.replace(
        [o for o in objects if o["kind"] == "Node"], [o for o in objects if o["kind"] == "Pod"]
    )
    runtime = Runtime(catalogs=CatalogSource(initial=CATALOG), cluster=state, settings=Settings())
    client = create_app(runtime).test_client()
    body = extender_args(scheduler_pod(cpu=ABSURD))
    for route in ("/scheduler/filter", "/scheduler/prioritize"):
        reply = client.post(route, data=body, content_type="application/json")
        assert reply.status_code == 200, reply.data
    assert client.post("/scheduler/filter", data=body).get_json()["NodeNames"] == []


# -- serve --snapshot (real gunicorn) ----------------------------------------------------


def test_serve_with_an_absurd_snapshot_serves_every_other_node(tmp_path):
    objects = snapshot_objects()
    absurd_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "absurd", "namespace": "team-a", "uid": "uid-absurd"},
        "spec": {
            "nodeName": GKE,
            "containers": [{"name": "x", "resources": {"requests": {"cpu": ABSURD}}}],
        },
        "status": {"phase": "Running"},
    }
    absurd_node = copy.deepcopy(next(o for o in objects if o["kind"] == "Node"))
    absurd_node["metadata"]["name"] = "absurd-node"
    absurd_node["status"]["allocatable"]["cpu"] = ABSURD
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps({"kind": "List", "items": [*objects, absurd_pod, absurd_node]}))
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG_A)
    served = serve(tmp_path, "--catalog", str(catalog), "--snapshot", str(snapshot))
    try:
        ready(served)
        reply = served.post("/scheduler/filter", extender_args(scheduler_pod("1")))
        assert reply.status == 200, reply.body
        body = reply.json()
        # As without the absurd objects, except GKE, which the absurd pod fills
        # (EKS: 1910m free >= 1 SCU; KARPENTER, AKS, TKE: no family).
        assert body["NodeNames"] == [EKS, METAL]
        assert "needs 1 SCU" in body["FailedAndUnresolvableNodes"][GKE]
        names = [*FILTER_NAMES, "absurd-node"]
        reply = served.post("/scheduler/prioritize", extender_args(scheduler_pod("1"), names))
        assert reply.status == 200, reply.body
        metrics = served.metrics()
        assert (
            metrics[
                (
                    "machine_catalog_cache_bad_values_total",
                    (("kind", "pod"), ("problem", "out_of_range")),
                )
            ]
            == 1
        )
        assert (
            metrics[
                (
                    "machine_catalog_cache_bad_values_total",
                    (("kind", "node"), ("problem", "out_of_range")),
                )
            ]
            == 1
        )
    finally:
        assert served.stop() == 0
    log = served.log_text()
    assert "Traceback" not in log
    assert log.count("beyond any machine") == 2  # once per object


# -- the watch -------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def test_the_watch_keeps_applying_events_after_an_absurd_pod(fake, tmp_path):
    import yaml

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "f", "cluster": {"server": fake.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "f", "context": {"cluster": "f", "user": "u"}}],
                "current-context": "f",
            }
        )
    )
    for name in ("a", "b"):
        fake.add("nodes", make_node(name, cpu="16"))
    fake.add("pods", make_pod("p0", cpu="1", node="b"))
    api = load_api_client(str(kubeconfig))
    watcher = ClusterWatcher(
        ClusterState(CATALOG), api, timeout_seconds=30, backoff_initial=0.05, backoff_max=0.4
    )
    watcher.start()
    try:
        assert watcher.wait_synced(10)
        state = watcher.state
        fake.add("pods", make_pod("absurd", cpu=ABSURD, node="a"))
        fake.add("nodes", make_node("c", cpu="1e18"))
        fake.modify("pods", "default/absurd", lambda p: p["metadata"].update(labels={"x": "1"}))
        # later events, for the same node and others, all apply
        fake.add("pods", make_pod("after-a", cpu="250m", node="a"))
        fake.add("pods", make_pod("after-b", cpu="2", node="b"))
        fake.add("pods", make_pod("after-c", cpu="3", node="c"))

        def caught_up() -> bool:
            view = state.view(["a", "b", "c"])
            return view.requested.tolist() == [MAX_CPU_MILLIS + 250, 3000, 3000] and (
                view.allocatable.tolist() == [16_000, 16_000, MAX_CPU_MILLIS]
            )

        wait_until(caught_up, "events after the absurd pod applied", timeout=10)
        relists = len(fake.list_requests("pods"))
        time.sleep(0.3)
        assert len(fake.list_requests("pods")) == relists  # no error loop, no relist
    finally:
        assert watcher.stop(timeout=5)
        api.close()
