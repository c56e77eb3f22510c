"""API server faults, as a real server's HTTP answers show them (issue 7, item 3).

``machine-catalog serve --kubeconfig`` (1 worker x 4 threads, ``--max-cache-age 1.5``)
watches the loopback fake API server of ``tests/support/fakeapi.py``. A heartbeat thread asks the
fake for a BOOKMARK on every open watch every 0.25 s, as the real API server sends one
about every minute: a quiet but healthy watch must keep the cache fresh.

tests/test_watching.py covers each fault at the watcher level (what the cache holds);
here the point is what callers see: ``/readyz`` turning unready while the cache is older
than the bound and ready again once it catches up, the extender answering from the last
consistent state throughout (never from a half-applied relist), and the time each
recovery takes. The tests run in file order on one server; each one ends recovered.

Run with ``-s`` to see the recovery times.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from support.fakeapi import FakeApiServer, make_node, make_pod, write_kubeconfig
from support.helpers import CATALOG_A, Served, scheduler_pod, serve, wait_until

from machine_catalog.quantities import to_millis
from machine_catalog.resources import pod_cpu_request_millis

pytestmark = pytest.mark.slow

MAX_CACHE_AGE = 1.5
HEARTBEAT = 0.25
STARTUP_OUTAGE = 2.0
FILLERS = 1000  # 5m pods on n2: the pod LIST is two pages, a relist is not one write
NODES = [f"n{i}" for i in range(6)]  # room for a 7-CPU pod per fault
NODE_CPU = 8000  # millicores allocatable on each node
#: Generous: the watcher's backoff starts at 0.5 s and doubles (jittered) per failure.
RECOVERY_BOUND = 12.0
FIGURES: list[str] = []
STARTUP: dict[str, Any] = {}


def report(text: str) -> None:
    """Keep a figure for the module's summary (printed at the end, shown with ``-s``)."""
    FIGURES.append(text)


class Heartbeat:
    """BOOKMARKs on every open watch, periodically, like the real API server's."""

    def __init__(self, fake: FakeApiServer) -> None:
        self.fake = fake
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="bookmarks", daemon=True)

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT):
            self.fake.bookmark("nodes")
            self.fake.bookmark("pods")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, FakeApiServer]]:
    tmp = tmp_path_factory.mktemp("faults")
    fake = FakeApiServer().start()
    heartbeat = Heartbeat(fake)
    server = None
    try:
        for name in NODES:
            fake.add("nodes", make_node(name, cpu="8", instance_type="n2-standard-8"))
        for i in range(FILLERS):
            fake.add("pods", make_pod(f"filler-{i}", cpu="5m", node="n2", namespace="bulk"))
        heartbeat.thread.start()
        catalog = tmp / "catalog.yaml"
        catalog.write_text(CATALOG_A)
        # The API server is down when the server starts: what callers get then is recorded
        # here (checked by the first test), and it comes up once they have been answered.
        fake.refuse_connections(60)  # reopened below, once callers have been answered
        began = time.monotonic()
        server = serve(
            tmp,
            "--catalog",
            str(catalog),
            "--kubeconfig",
            str(write_kubeconfig(tmp / "kubeconfig", fake.url)),
            "--threads",
            "4",
            "--max-cache-age",
            str(MAX_CACHE_AGE),
        )
        body = orjson.dumps({"Pod": scheduler_pod("1"), "NodeNames": NODES})
        STARTUP["readyz"] = server.readyz()
        STARTUP["filter"] = server.post("/scheduler/filter", body)
        STARTUP["prioritize"] = server.post("/scheduler/prioritize", body)
        time.sleep(max(0.0, began + STARTUP_OUTAGE - time.monotonic()))
        fake.start()  # listening again, on the same port
        STARTUP["up"] = time.monotonic()
        yield server, fake
    finally:
        heartbeat.stopped.set()
        heartbeat.thread.join(5)
        try:
            if server is not None:
                assert server.stop() == 0
                assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
        finally:
            fake.stop()
        print("\n" + "\n".join(FIGURES))


# -- what callers see ------------------------------------------------------------------------


def verdicts(server: Served, cpu: str, names: list[str] = NODES) -> dict[str, str]:
    """pass / failed / unresolvable per node for a pod asking ``cpu``, from /scheduler/filter."""
    reply = server.post(
        "/scheduler/filter", orjson.dumps({"Pod": scheduler_pod(cpu), "NodeNames": names})
    )
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["Error"] == "", body
    out = dict.fromkeys(body["NodeNames"], "pass")
    out.update(dict.fromkeys(body["FailedNodes"], "failed"))
    out.update(dict.fromkeys(body["FailedAndUnresolvableNodes"], "unresolvable"))
    assert set(out) == set(names) and len(out) == len(names)
    return out


def expected(fake: FakeApiServer, cpu: str, names: list[str] = NODES) -> dict[str, str]:
    """What filter must answer if the cache holds exactly what the fake API server holds."""
    used = dict.fromkeys(names, 0)
    for pod in fake.objects("pods"):
        node = pod["spec"].get("nodeName")
        if node in used and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            used[node] += pod_cpu_request_millis(pod)
    need = to_millis(cpu)
    return {n: "pass" if NODE_CPU - used[n] >= need else "unresolvable" for n in names}


def in_step(server: Served, fake: FakeApiServer, cpu: str = "2") -> bool:
    return verdicts(server, cpu) == expected(fake, cpu)


def caught_up(server: Served, fake: FakeApiServer, cpu: str = "2") -> Callable[[], bool]:
    """A predicate for wait_until: the answers match the fake's state *now*.

    The expectation is computed once: reading the fake's store copies every pod under its
    lock, and doing that in a polling loop starves the fake's watch threads (and so the
    server's cache) of that lock.
    """
    target = expected(fake, cpu)
    return lambda: verdicts(server, cpu) == target


def roomy_node(fake: FakeApiServer) -> str:
    """A node with room for a 7-CPU pod, so adding one changes the answers."""
    return next(n for n, v in expected(fake, "7").items() if v == "pass")


def readyz(server: Served) -> tuple[int, dict[str, Any]]:
    return server.readyz()


def wait_ready(server: Served, what: str) -> float:
    return wait_until(lambda: readyz(server)[0] == 200, what, RECOVERY_BOUND)


def retry_delays(log: str, since: int) -> dict[str, list[float]]:
    """The watcher's logged backoff delays per kind, in log order, after offset ``since``."""
    delays: dict[str, list[float]] = {"nodes": [], "pods": []}
    for kind, seconds in re.findall(
        r"(nodes|pods) (?:watch|list|relist) failed \(.*?\); retrying in ([\d.]+)s", log[since:]
    ):
        delays[kind].append(float(seconds))
    return delays


# -- the faults ------------------------------------------------------------------------------


def test_starting_while_the_api_server_is_down(cluster) -> None:
    server, fake = cluster
    status, detail = STARTUP["readyz"]
    assert status == 503 and "cluster cache not synced" in detail["problems"]
    # Not synced: filter refuses to judge (the scheduler retries), prioritize says 503;
    # nobody is answered from an empty cache.
    reply = STARTUP["filter"]
    assert reply.status == 200 and reply.json()["Error"] == "cluster cache not synced"
    assert reply.json()["NodeNames"] is None
    assert STARTUP["prioritize"].status == 503
    wait_ready(server, "ready once the API server is up")
    report(
        f"API server down at startup for {STARTUP_OUTAGE:.1f}s: ready "
        f"{(time.monotonic() - STARTUP['up']) * 1000:.0f} ms after it came up"
    )
    _, detail = readyz(server)
    assert detail["cache"]["nodes"] == len(NODES) and detail["cache"]["pods"] == FILLERS
    # 5000m of 8000m used on n2: a 4-CPU pod fits everywhere else.
    assert (
        verdicts(server, "4")
        == expected(fake, "4")
        == {n: "pass" for n in NODES} | {"n2": "unresolvable"}
    )


def test_a_watch_stream_cut_mid_event(cluster) -> None:
    server, fake = cluster
    wait_ready(server, "ready")
    node = roomy_node(fake)
    fake.cut_next_event("pods", "cut")
    fake.add("pods", make_pod(f"cut-busy-{uuid.uuid4().hex[:6]}", cpu="7", node=node))
    took = wait_until(
        caught_up(server, fake),
        "the event cut in half arrives whole after the reconnect",
        RECOVERY_BOUND,
    )
    report(f"watch stream cut mid-event: the event reached the answers in {took * 1000:.0f} ms")
    # Counted once, not twice: 1000m is still free there.
    assert verdicts(server, "1") == expected(fake, "1")
    assert verdicts(server, "1")[node] == "pass"
    assert readyz(server)[0] == 200


PAIR = ["n2", "n3"]  # the filler pods move between these two


def move_fillers(api: FakeApiServer) -> None:
    """Every filler pod to the other node of :data:`PAIR` (deleted, re-created there)."""
    fillers = [p for p in api.objects("pods") if p["metadata"]["namespace"] == "bulk"]
    assert len(fillers) == FILLERS
    target = PAIR[1] if fillers[0]["spec"]["nodeName"] == PAIR[0] else PAIR[0]
    for pod in fillers:
        api.delete("pods", f"bulk/{pod['metadata']['name']}")
        api.add("pods", make_pod(f"f-{uuid.uuid4().hex}", cpu="5m", node=target, namespace="bulk"))


class Answers:
    """Polls filter for a 4-CPU pod on :data:`PAIR` in a thread, keeping every answer."""

    def __init__(self, server: Served) -> None:
        self.server = server
        self.seen: list[dict[str, str]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.seen.append(verdicts(self.server, "4", PAIR))

    def stop(self) -> list[dict[str, str]]:
        self.stopped.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.seen


def old_or_new(seen: list[dict[str, str]], old: dict[str, str], new: dict[str, str]) -> None:
    """Every answer is the old or the new state, and none is old once one was new."""
    assert all(v in (old, new) for v in seen), [v for v in seen if v not in (old, new)][:3]
    flipped = seen.index(new)
    assert all(v == new for v in seen[flipped:]), "an old answer after the new one"


def test_410_gone_relists_and_no_answer_comes_from_a_half_applied_relist(cluster) -> None:
    """While disconnected, every filler pod moves to the other of n2/n3 and the history is
    compacted: the watcher gets 410 Gone, relists (two pages) and swaps the new list in at
    once. Answers polled meanwhile are the old state or the new state, never a mix."""
    server, fake = cluster
    wait_ready(server, "ready")
    old = expected(fake, "4", PAIR)
    assert verdicts(server, "4", PAIR) == old
    answers = Answers(server)
    time.sleep(0.2)
    fake.missed_while_disconnected(move_fillers)
    new = expected(fake, "4", PAIR)
    assert new != old
    took = wait_until(
        lambda: answers.seen and answers.seen[-1] == new, "the relist reaches the answers", 10
    )
    time.sleep(0.3)
    seen = answers.stop()
    old_or_new(seen, old, new)
    report(
        f"410 Gone after a missed move of {FILLERS} pods: relisted and answering the new "
        f"state {took * 1000:.0f} ms after the fault; {len(seen)} answers polled meanwhile, "
        f"each the old or the new state"
    )
    assert in_step(server, fake)
    assert readyz(server)[1]["cache"]["pods"] == len(fake.objects("pods"))


def test_connection_refused_for_a_while_turns_unready_then_ready(cluster) -> None:
    server, fake = cluster
    wait_ready(server, "ready")
    outage = 2.5
    before = expected(fake, "2")
    log_offset = len(server.log_text())
    fake.refuse_connections(outage)
    began = time.monotonic()
    # Changed while the server cannot hear: it must catch up on reconnect.
    fake.add("pods", make_pod(f"outage-{uuid.uuid4().hex[:6]}", cpu="7", node=roomy_node(fake)))
    unready_at = None
    answered = 0
    while not fake.listening or unready_at is None:
        status, detail = readyz(server)
        if status == 503 and unready_at is None:
            unready_at = time.monotonic() - began
            assert any("stale" in p for p in detail["problems"]), detail
            assert detail["cache"]["synced"] is True
        # The extender keeps answering from the cache it has (readiness takes the replica
        # out of the Service; what it answers stays consistent).
        assert verdicts(server, "2") == before
        answered += 1
        assert time.monotonic() - began < outage + 5, "never unready during the outage"
        time.sleep(0.05)
    assert MAX_CACHE_AGE - HEARTBEAT - 0.2 <= unready_at <= outage
    reopened = began + outage
    wait_ready(server, "ready again after the outage")
    ready_after = time.monotonic() - reopened
    wait_until(caught_up(server, fake), "the pod made during the outage arrives", 10)
    missed_at = time.monotonic() - reopened
    delays = retry_delays(server.log_text(), log_offset)
    for kind, values in delays.items():
        assert values, f"no retry logged for {kind}"
        assert values == sorted(values), f"{kind} backoff not growing: {values}"
        assert len(values) <= 6, f"{kind} retried too often: {values}"
    report(
        f"connection refused for {outage:.1f}s: unready after {unready_at:.2f}s "
        f"(--max-cache-age {MAX_CACHE_AGE}), ready {ready_after * 1000:.0f} ms after the API"
        f" server came back, the missed pod in the answers at {missed_at * 1000:.0f} ms;"
        f" backoff delays {delays}; {answered} consistent filter answers during the outage"
    )


def test_one_kind_failing_while_the_other_streams_turns_unready(cluster) -> None:
    """Node watches refused (403, as when the RBAC rule for nodes is lost) while the pod
    watch streams happily: the node half of the cache ages, so the cache is stale even
    though the source as a whole is alive; ready again once nodes are watched again."""
    server, fake = cluster
    wait_ready(server, "ready")
    fake.fail_next(
        10**6, 403, resource="nodes", match=lambda request: request.watch
    )  # cleared below
    fake.drop_connections()  # both watches reconnect; the pod watch succeeds
    began = time.monotonic()
    try:
        unready = wait_until(
            lambda: readyz(server)[0] == 503, "stale while nodes are not watched", 6
        )
    finally:
        fake.clear_failures()
    cleared = time.monotonic()
    recovered = wait_ready(server, "ready once nodes are watched again")
    report(
        f"node watch refused (403) while pods stream: unready after {unready:.2f}s, ready "
        f"again {recovered * 1000:.0f} ms after the API server allowed it again"
    )
    assert cleared - began < 6 + 1


def test_a_slow_api_server_still_converges(cluster) -> None:
    """Every response and event 0.3 s late. A quiet watch stays fresh (its bookmarks come
    through, late), so the cache stays ready while an event makes its way. Then the pod
    stream is cut while the fillers move, and its resume gets 410: the relist comes in
    two pages 0.3 s apart, exactly where a relist applied page by page would show half of
    the move; the answers are the old state until the swap, the new one after. The pod
    half of the cache is as old as that relist takes, so readiness may drop meanwhile,
    and only for staleness."""
    server, fake = cluster
    wait_ready(server, "ready")
    fake.delay = 0.3
    statuses: list[int] = []
    try:
        fake.add("pods", make_pod(f"slow-{uuid.uuid4().hex[:6]}", cpu="7", node=roomy_node(fake)))
        landed = caught_up(server, fake)

        def event_landed() -> bool:
            statuses.append(readyz(server)[0])
            return landed()

        took = wait_until(event_landed, "an event through a slow stream", 10)
        assert set(statuses) == {200}, statuses

        old = expected(fake, "4", PAIR)
        answers = Answers(server)
        fake.expire_next_watch("pods", "status")
        fake.cut_next_event("pods")
        move_fillers(fake)  # the first of these events is cut, the rest wait in history
        new = expected(fake, "4", PAIR)
        problems: list[str] = []

        def relisted() -> bool:
            status, detail = readyz(server)
            if status != 200:
                problems.extend(detail["problems"])
            return bool(answers.seen) and answers.seen[-1] == new

        took_relist = wait_until(relisted, "the slow relist lands", 10)
        time.sleep(0.3)
        seen = answers.stop()
        old_or_new(seen, old, new)
        assert all(p.startswith("cluster cache is stale") for p in problems), problems
    finally:
        fake.delay = 0.0
    wait_ready(server, "ready once the relist landed")
    report(
        f"slow API server (+0.3 s per response and event): an event reached the answers "
        f"in {took * 1000:.0f} ms, ready throughout ({len(statuses)} checks); a paginated "
        f"relist of the moved fillers in {took_relist * 1000:.0f} ms, {len(seen)} answers "
        f"meanwhile each the old or the new state"
        + (f", unready for staleness on {len(problems)} checks" if problems else "")
    )


def test_a_stalled_api_server_turns_unready_until_it_speaks_again(cluster) -> None:
    server, fake = cluster
    wait_ready(server, "ready before the stall")
    fake.delay = 2.5  # longer than --max-cache-age between two events
    try:
        unready = wait_until(lambda: readyz(server)[0] == 503, "stale while stalled", 6)
        assert in_step(server, fake)  # still answering, from the cache
    finally:
        fake.delay = 0.0
    recovered = wait_ready(server, "ready once the server is prompt again")
    report(
        f"API server stalled (2.5 s per event): unready after {unready:.2f}s, ready again "
        f"{recovered * 1000:.0f} ms after it was prompt again"
    )
