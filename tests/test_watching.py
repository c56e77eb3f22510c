"""ClusterWatcher against a loopback fake API server, through the real kubernetes client.

Every fault test measures how long the cache took to catch up after the fault ended and
prints it (``pytest -s tests/test_watching.py`` shows the recovery times).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from kubernetes import client
from support.fakeapi import FakeApiServer, make_node, make_pod, write_kubeconfig

from extender.feeds.watching import (
    ApiConfigError,
    ClusterWatcher,
    _loads_without_gc,
    backoff_delay,
    load_api_client,
)
from extender.state.cluster import ClusterState
from machine_catalog.loading import load_catalog
from machine_catalog.quantities import to_millis

pytestmark = pytest.mark.slow  # loopback API server and watcher threads (~10 s in all)

DEADLINE = 10.0  # generous: the first call through the client builds its validators (~1s)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def api(fake, tmp_path) -> Iterator[client.ApiClient]:
    api_client = load_api_client(write_kubeconfig(tmp_path / "kubeconfig", fake.url))
    yield api_client
    api_client.close()


@pytest.fixture
def start(api, catalog) -> Iterator[Callable[..., ClusterWatcher]]:
    """Start a watcher with fast test timings; every one is stopped (promptly) at teardown."""
    watchers: list[ClusterWatcher] = []

    def _start(**options: Any) -> ClusterWatcher:
        settings = {
            "timeout_seconds": 30,
            "backoff_initial": 0.05,
            "backoff_max": 0.4,
            "page_size": 5,
            **options,
        }
        watcher = ClusterWatcher(ClusterState(catalog), api, **settings)
        watchers.append(watcher)
        watcher.start()
        return watcher

    yield _start
    for watcher in watchers:
        assert watcher.stop(timeout=5), "watcher threads did not stop"


def eventually(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> float:
    """Poll until ``predicate()`` is true; return the seconds it took."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - began


def report(fault: str, seconds: float) -> None:
    print(f"\nrecovery after {fault}: {seconds * 1000:.0f} ms")


def populate(fake: FakeApiServer, nodes: int = 4, pods: int = 12, cpu: str = "250m") -> None:
    for i in range(nodes):
        fake.add("nodes", make_node(f"n{i}"))
    for i in range(pods):
        fake.add("pods", make_pod(f"p{i}", cpu=cpu, node=f"n{i % nodes}"))


def total_requested(state: ClusterState) -> int:
    return int(state.all_nodes().requested.sum())


def expected_by_node(fake: FakeApiServer) -> dict[str, int]:
    """What the cache must say: CPU of bound, non-terminal pods on each existing node."""
    totals = {n["metadata"]["name"]: 0 for n in fake.objects("nodes")}
    for pod in fake.objects("pods"):
        node = pod["spec"].get("nodeName")
        if node in totals and pod["status"]["phase"] not in ("Succeeded", "Failed"):
            totals[node] += to_millis(pod["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    return totals


def synced_with(fake: FakeApiServer, state: ClusterState) -> bool:
    view = state.all_nodes()
    return dict(zip(view.names, view.requested.tolist(), strict=True)) == expected_by_node(fake)


# -- pure parts --------------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_jittered_within_bounds():
    for attempt in range(1, 12):
        cap = min(30.0, 0.5 * 2 ** (attempt - 1))
        assert backoff_delay(attempt, 0.5, 30.0, rand=lambda: 0.0) == pytest.approx(cap / 2)
        assert backoff_delay(attempt, 0.5, 30.0, rand=lambda: 1.0) == pytest.approx(cap)
        assert cap / 2 <= backoff_delay(attempt, 0.5, 30.0) <= cap
    assert backoff_delay(50, 0.5, 30.0, rand=lambda: 1.0) == 30.0


def test_page_decoding_leaves_the_garbage_collector_as_it_found_it():
    assert gc.isenabled()
    assert _loads_without_gc(b'{"items": [1]}') == {"items": [1]}
    assert gc.isenabled()
    with pytest.raises(orjson.JSONDecodeError):
        _loads_without_gc(b'{"items": [')
    assert gc.isenabled()
    gc.disable()
    try:
        _loads_without_gc(b"{}")
        assert not gc.isenabled()  # an application that turned it off keeps it off
    finally:
        gc.enable()


def test_load_api_client_uses_its_own_configuration(fake, tmp_path):
    before = client.Configuration.get_default_copy().host
    api_client = load_api_client(write_kubeconfig(tmp_path / "kc", fake.url))
    try:
        assert api_client.configuration.host == fake.url
        assert client.Configuration.get_default_copy().host == before
    finally:
        api_client.close()


def test_load_api_client_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(ApiConfigError, match="missing-kubeconfig"):
        load_api_client(str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ApiConfigError, match="in-cluster"):
        load_api_client(None, in_cluster=True)


# -- list and watch ----------------------------------------------------------------------


def test_initial_list_is_paginated_raw_and_swapped_in_once(fake, start, monkeypatch):
    populate(fake, nodes=7, pods=23)
    listed_at = fake.resource_version

    def no_models(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the watcher built client model objects")

    monkeypatch.setattr(client.ApiClient, "deserialize", no_models)
    watcher = start(page_size=5)
    assert watcher.wait_synced(DEADLINE)
    state = watcher.state
    assert state.synced and state.source == "kubernetes API"
    assert state.counts()["nodes"] == 7
    assert total_requested(state) == 23 * 250
    pod_lists = fake.list_requests("pods")
    assert len(pod_lists) == 5  # 23 pods, 5 per page
    assert all(r.query["limit"] == "5" for r in pod_lists)
    assert "continue" not in pod_lists[0].query
    assert all("continue" in r.query for r in pod_lists[1:])
    assert watcher.resource_versions == {"nodes": listed_at, "pods": listed_at}
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "pods watch opened")
    eventually(lambda: len(fake.watch_requests("nodes")) == 1, "nodes watch opened")
    for resource in ("nodes", "pods"):
        query = fake.watch_requests(resource)[0].query
        assert query["resourceVersion"] == listed_at
        assert query["allowWatchBookmarks"] == "true"
        assert query["timeoutSeconds"] == "30"


def test_not_synced_until_both_kinds_are_listed(fake, start):
    populate(fake)
    fake.fail_next(10_000, 503, resource="pods")
    watcher = start()
    eventually(lambda: len(fake.list_requests("pods")) >= 3, "pods list retried")
    assert not watcher.state.synced and not watcher.wait_synced(0)
    assert watcher.state.counts() == {"nodes": 0, "pods": 0}  # nodes not swapped in alone
    fake.clear_failures()
    assert watcher.wait_synced(DEADLINE)
    assert synced_with(fake, watcher.state)


def test_added_modified_deleted_are_applied(fake, start):
    populate(fake, nodes=2, pods=2)
    watcher = start()
    assert watcher.wait_synced(DEADLINE)
    state = watcher.state
    fake.add("nodes", make_node("n9", cpu="16"))
    fake.add("pods", make_pod("new", cpu="1", node="n9"))
    eventually(lambda: state.view(["n9"]).requested.tolist() == [1000], "ADDED applied")
    fake.modify("pods", "default/new", lambda p: p["spec"].update(nodeName="n0"))
    eventually(lambda: state.view(["n9"]).requested.tolist() == [0], "MODIFIED applied")
    deleted = fake.delete("pods", "default/p0")
    eventually(lambda: synced_with(fake, state), "pod DELETED applied")
    assert watcher.resource_versions["pods"] == deleted["metadata"]["resourceVersion"]
    fake.delete("nodes", "n9")
    eventually(lambda: state.view(["n9"]).slots.tolist() == [-1], "node DELETED applied")
    eventually(
        lambda: watcher.resource_versions["nodes"] == fake.resource_version,
        "nodes resourceVersion follows the last node event",
    )
    assert watcher.resource_versions["pods"] == deleted["metadata"]["resourceVersion"]


def test_bookmark_advances_the_resource_version_and_activity(fake, start):
    populate(fake, nodes=2, pods=2)
    watcher = start()
    assert watcher.wait_synced(DEADLINE)
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "pods watch opened")
    pods_rv = watcher.resource_versions["pods"]
    fake.add("nodes", make_node("other"))  # advances the shared counter, not the pods watch
    eventually(lambda: watcher.resource_versions["nodes"] == fake.resource_version, "node event")
    assert watcher.resource_versions["pods"] == pods_rv
    activity = watcher.state.last_activity
    time.sleep(0.02)
    fake.bookmark("pods")
    eventually(
        lambda: watcher.resource_versions["pods"] == fake.resource_version, "bookmark applied"
    )
    assert watcher.state.last_activity > activity
    assert watcher.state.resource_version == fake.resource_version


def test_a_watch_that_ends_normally_resumes_from_the_last_resource_version(fake, start):
    populate(fake, nodes=1, pods=1)
    watcher = start(timeout_seconds=1)
    assert watcher.wait_synced(DEADLINE)
    added = fake.add("pods", make_pod("late", node="n0"))
    eventually(
        lambda: watcher.resource_versions["pods"] == added["metadata"]["resourceVersion"], "event"
    )
    activity = watcher.state.last_activity
    eventually(lambda: len(fake.watch_requests("pods")) >= 2, "re-watch after timeoutSeconds")
    second = fake.watch_requests("pods")[1]
    assert second.query["resourceVersion"] == added["metadata"]["resourceVersion"]
    assert len(fake.list_requests("pods")) == 1  # resumed, not relisted
    assert watcher.state.last_activity > activity  # a normal end is a sign of life


def test_error_event_410_relists_that_kind(fake, start):
    populate(fake, nodes=3, pods=9)
    watcher = start()
    assert watcher.wait_synced(DEADLINE)
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "pods watch opened")
    lists_before = len(fake.list_requests("pods"))

    def change(server: FakeApiServer) -> None:
        server.delete("pods", "default/p0")
        server.add("pods", make_pod("while-away", cpu="2", node="n1"))

    began = time.monotonic()
    fake.missed_while_disconnected(change)  # the delete's event is compacted away
    took = eventually(lambda: synced_with(fake, watcher.state), "relisted after 410")
    report("ERROR 410 event (compacted history)", took)
    assert watcher.status()["pods"]["relists"] == 1
    relist = fake.list_requests("pods")[lists_before]
    assert relist.at > began and "continue" not in relist.query
    # the watch after the relist starts from the relist's version
    eventually(lambda: fake.watch_requests("pods")[-1].at > relist.at, "re-watch")
    assert fake.watch_requests("pods")[-1].query["resourceVersion"] == fake.resource_version


def test_http_410_on_watch_start_relists_only_that_kind(fake, start):
    populate(fake)
    watcher = start()
    assert watcher.wait_synced(DEADLINE)
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "pods watch opened")
    fake.expire_next_watch("pods", how="status")
    fake.drop_connections()
    took = eventually(lambda: watcher.status()["pods"]["relists"] == 1, "pods relisted")
    report("HTTP 410 on watch start", took)
    assert watcher.status()["nodes"]["relists"] == 0  # the nodes watch just resumed
    eventually(lambda: len(fake.watch_requests("nodes")) >= 2, "nodes re-watch")
    assert (
        fake.watch_requests("nodes")[1].query["resourceVersion"]
        == fake.watch_requests("nodes")[0].query["resourceVersion"]
    )
    fake.add("pods", make_pod("after", node="n0"))
    eventually(lambda: synced_with(fake, watcher.state), "events flow after the relist")


@pytest.mark.parametrize("how", ["cut", "garbage"])
def test_stream_cut_mid_event_reconnects_without_losing_or_repeating(fake, start, how):
    populate(fake, nodes=2, pods=2)
    watcher = start()
    assert watcher.wait_synced(DEADLINE)
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "pods watch opened")
    applied: list[tuple[str, str]] = []
    original = watcher.state.apply

    def recording(kind: str, event_type: str, obj: dict, rv: str | None = None) -> None:
        applied.append((event_type, obj["metadata"]["name"]))
        original(kind, event_type, obj, rv)

    watcher.state.apply = recording
    last_rv = watcher.resource_versions["pods"]
    fake.cut_next_event("pods", how)
    began = time.monotonic()
    for name in ("a", "b", "c"):
        fake.add("pods", make_pod(name, node="n0"))
    took = eventually(lambda: len(applied) >= 3, "events after the cut")
    report(f"stream broken mid-event ({how})", took)
    time.sleep(0.1)  # a duplicate would show up here
    assert applied == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    resumed = [r for r in fake.watch_requests("pods") if r.at > began]
    assert resumed and resumed[0].query["resourceVersion"] == last_rv
    assert synced_with(fake, watcher.state)
    assert watcher.status()["pods"]["relists"] == 0


def test_connection_refused_for_a_second_recovers(fake, start):
    populate(fake)
    watcher = start()
    assert watcher.wait_synced(DEADLINE)
    fake.refuse_connections(1.0)
    fake.add("pods", make_pod("during-outage", cpu="3", node="n2"))
    fake.delete("nodes", "n3")
    eventually(lambda: fake.listening, "listener back", timeout=5)
    took = eventually(lambda: synced_with(fake, watcher.state), "caught up after the outage")
    report("connection refused for 1 s (from reopen)", took)
    assert took < 2.0
    status = watcher.status()
    assert status["pods"]["relists"] == status["nodes"]["relists"] == 0  # resumed, no relist
    assert status["pods"]["failures"] >= 1 and "refused" in status["pods"]["lastError"].lower()


def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after(fake, start):
    populate(fake)
    watcher = start(backoff_max=2.0)
    assert watcher.wait_synced(DEADLINE)
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "pods watch opened")
    fake.fail_next(2, 500, resource="pods", match=lambda r: r.watch)
    fake.fail_next(1, 429, resource="pods", match=lambda r: r.watch, retry_after=1)
    fake.drop_connections()
    fake.add("pods", make_pod("later", node="n1"))
    took = eventually(lambda: synced_with(fake, watcher.state), "caught up after 500, 500, 429")
    report("two 500s and a 429 (Retry-After: 1)", took)
    watches = fake.watch_requests("pods")
    assert len(watches) >= 5  # first, 500, 500, 429, success
    assert watches[4].at - watches[3].at >= 0.95  # Retry-After respected
    assert watcher.status()["pods"]["relists"] == 0


def test_list_failing_part_way_starts_over(fake, start):
    populate(fake, nodes=2, pods=14)
    fake.fail_next(1, 500, resource="pods", match=lambda r: "continue" in r.query)
    fake.fail_next(1, 410, resource="nodes", match=lambda r: "continue" in r.query)
    fake.add("nodes", make_node("n8"))
    fake.add("nodes", make_node("n9"))  # 4 nodes: two pages of 3
    watcher = start(page_size=3)
    assert watcher.wait_synced(DEADLINE)
    assert synced_with(fake, watcher.state)
    for resource in ("nodes", "pods"):
        firsts = [r for r in fake.list_requests(resource) if "continue" not in r.query]
        assert len(firsts) == 2, f"{resource} list was not restarted from the first page"


def test_slow_server_still_converges(fake, start):
    populate(fake, nodes=3, pods=10)
    fake.delay = 0.5
    watcher = start(list_timeout=0.3)  # every LIST times out while the server is this slow
    # urllib3 retries a timed-out GET three times itself; then the watcher backs off
    eventually(lambda: watcher.status()["nodes"]["failures"] >= 1, "a LIST timed out")
    assert "ReadTimeoutError" in watcher.status()["nodes"]["lastError"]
    assert not watcher.state.synced
    began = time.monotonic()
    fake.delay = 0.1  # slow, but within the timeouts
    assert watcher.wait_synced(DEADLINE)
    fake.add("pods", make_pod("slow", cpu="1", node="n0"))
    took = eventually(lambda: synced_with(fake, watcher.state), "converged on a slow server")
    report("slow server (0.5 s -> 0.1 s per response)", time.monotonic() - began)
    assert took < DEADLINE


def test_a_relist_is_applied_atomically(fake, start):
    for i in range(10):
        fake.add("nodes", make_node(f"n{i}"))
    for i in range(200):
        fake.add("pods", make_pod(f"old{i}", cpu="100m", node=f"n{i % 10}"))
    watcher = start(page_size=20)  # the relist takes 10 pages
    assert watcher.wait_synced(DEADLINE)
    state = watcher.state
    names = [f"n{i}" for i in range(10)]
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(int(state.view(names).requested.sum()))

    reader = threading.Thread(target=read)
    reader.start()
    eventually(lambda: seen, "the reader has seen the state before the relist")

    def replace_all(server: FakeApiServer) -> None:
        for i in range(200):
            server.delete("pods", f"default/old{i}")
            server.add("pods", make_pod(f"new{i}", cpu="300m", node=f"n{i % 10}"))

    try:
        fake.missed_while_disconnected(replace_all)
        took = eventually(lambda: total_requested(state) == 60_000, "relist applied")
        report("410 relist of 200 pods in 10 pages", took)
        # The reader thread may not have run since: let it see the new state too.
        eventually(lambda: 60_000 in seen, "the reader has seen the state after the relist")
    finally:
        stop.set()
        reader.join(5)
    assert seen == {20_000, 60_000}, f"a reader saw a half-applied relist: {sorted(seen)}"


def test_stop_is_prompt_while_watching_and_while_backing_off(fake, start, api, catalog):
    populate(fake, nodes=1, pods=1)
    watcher = start(timeout_seconds=300)
    assert watcher.wait_synced(DEADLINE)
    eventually(lambda: len(fake.watch_requests("pods")) == 1, "long watch open")
    began = time.monotonic()
    assert watcher.stop(timeout=3)
    print(f"\nstop with two open watches: {(time.monotonic() - began) * 1000:.0f} ms")
    assert time.monotonic() - began < 1.0

    backing_off = ClusterWatcher(ClusterState(catalog), api, backoff_initial=20, backoff_max=20)
    fake.fail_next(10, 503)
    lists = len(fake.list_requests("nodes"))
    backing_off.start()
    eventually(lambda: len(fake.list_requests("nodes")) > lists, "failed once, now backing off")
    time.sleep(0.05)
    began = time.monotonic()
    assert backing_off.stop(timeout=3)
    assert time.monotonic() - began < 1.0
