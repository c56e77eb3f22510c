"""Concurrent filter, prioritize and mutate calls with a catalog swap in the middle (issue 7,
item 4).

A real gunicorn (one worker process x 4 threads) takes two equal, bounded rounds of load (3,000
requests or 3 s, whichever comes first) from 6 client threads on loopback: filter in both
extender modes (node names, and full Node objects), prioritize, mutate (real admissions
that take reservations, and dry runs), and the odd ``/readyz`` and ``/metrics`` scrape,
with random pods. Each round swaps the catalog half-way. Every answer must be a 200 of the
right shape, within a per-request timeout (a deadlock shows up as timeouts and as client
threads that never stop), no worker may be restarted, and the workers' resident memory
must not grow from the start to the end of the second round.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.configmap import ConfigMapVolume
from support.helpers import (
    CATALOG_A,
    CATALOG_B,
    FILTER_NAMES,
    Load,
    Reply,
    Sample,
    Served,
    admission_review,
    failures,
    fixture_nodes,
    ready,
    rss_mb,
    scheduler_pod,
    serve,
    wait_until,
    write_snapshot,
)

from machine_catalog.loading import parse_catalog

pytestmark = pytest.mark.slow

WORKERS = 1  # one process per replica owns the state
THREADS = 6
ROUND_REQUESTS = 3000
ROUND_SECONDS = 3.0
PER_REQUEST_TIMEOUT = 10.0
RSS_TOLERANCE_MB = 20.0
CPUS = ["0", "100m", "1", "2", "3500m", "7"]
FAMILIES = [None, None, "base", "m6i", "spr", "nope", " "]
NAMES = [*FILTER_NAMES, "not-a-node"]


# -- requests and how each answer is judged ---------------------------------------------------


def judge_filter(names: list[str], full: bool) -> Callable[[Reply], str]:
    def judge(reply: Reply) -> str:
        if reply.status != 200:
            return f"unexpected: HTTP {reply.status} {reply.body[:200]!r}"
        body = reply.json()
        if body["Error"]:
            return f"unexpected: Error {body['Error']}"
        if full:
            passing = [n["metadata"]["name"] for n in body["Nodes"]["items"]]
            ok = body["NodeNames"] is None
        else:
            passing, ok = body["NodeNames"], body["Nodes"] is None
        verdicts = [*passing, *body["FailedNodes"], *body["FailedAndUnresolvableNodes"]]
        if not ok or sorted(verdicts) != sorted(names):
            return f"unexpected: not one verdict per node: {reply.body[:300]!r}"
        return "ok"

    return judge


def judge_prioritize(names: list[str]) -> Callable[[Reply], str]:
    def judge(reply: Reply) -> str:
        if reply.status != 200:
            return f"unexpected: HTTP {reply.status} {reply.body[:200]!r}"
        body = reply.json()
        if [h["Host"] for h in body] != names or not all(0 <= h["Score"] <= 10 for h in body):
            return f"unexpected: {reply.body[:300]!r}"
        return "ok"

    return judge


def judge_mutate(uid: str) -> Callable[[Reply], str]:
    def judge(reply: Reply) -> str:
        if reply.status != 200:
            return f"unexpected: HTTP {reply.status} {reply.body[:200]!r}"
        response = reply.json()["response"]
        if response["uid"] != uid:
            return f"unexpected: uid {response['uid']} for {uid}"
        if response["allowed"]:
            ops = orjson.loads(base64.b64decode(response["patch"]))
            return "ok" if ops and response["patchType"] == "JSONPatch" else "unexpected: patch"
        # A denial the user can act on (an unknown family); never an internal error.
        if response["status"]["code"] == 403:
            return "ok"
        return f"unexpected: {response['status']}"

    return judge


def judge_get(route: str) -> Callable[[Reply], str]:
    def judge(reply: Reply) -> str:
        if reply.status != 200:
            return f"unexpected: HTTP {reply.status} on {route}"
        return "ok"

    return judge


FULL_NODES = fixture_nodes()


def pick(rng: Any) -> tuple[str, bytes | None, Callable[[Reply], str]]:
    roll = rng.random()
    if roll < 0.02:
        route = rng.choice(["/readyz", "/metrics"])
        return route, None, judge_get(route)
    family = rng.choice(FAMILIES)
    pod = scheduler_pod(rng.choice(CPUS), family)
    if roll < 0.32:
        names = rng.sample(NAMES, rng.randint(0, len(NAMES)))
        body = orjson.dumps({"Pod": pod, "NodeNames": names, "Nodes": None})
        return "/scheduler/filter", body, judge_filter(names, full=False)
    if roll < 0.45:
        nodes = rng.sample(FULL_NODES, rng.randint(0, len(FULL_NODES)))
        names = [n["metadata"]["name"] for n in nodes]
        body = orjson.dumps({"Pod": pod, "Nodes": {"items": nodes}, "NodeNames": None})
        return "/scheduler/filter", body, judge_filter(names, full=True)
    if roll < 0.7:
        names = rng.sample(NAMES, rng.randint(0, len(NAMES)))
        body = orjson.dumps({"Pod": pod, "NodeNames": names, "Nodes": None})
        return "/scheduler/prioritize", body, judge_prioritize(names)
    uid = str(uuid.UUID(int=rng.getrandbits(128)))
    review = admission_review(uid=uid)
    review["request"]["dryRun"] = rng.random() < 0.3
    container = review["request"]["object"]["spec"]["containers"][0]
    container["resources"]["requests"]["cpu"] = rng.choice(CPUS[1:])
    container["resources"]["limits"]["cpu"] = "8"
    if family is not None:
        review["request"]["object"]["metadata"]["annotations"]["machine-catalog.io/families"] = (
            family
        )
    return "/webhook/mutate", orjson.dumps(review), judge_mutate(uid)


# -- the run ----------------------------------------------------------------------------------


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Served, ConfigMapVolume]]:
    config = tmp_path / "config"
    config.mkdir()
    volume = ConfigMapVolume(config, CATALOG_A)
    server = serve(
        tmp_path,
        "--catalog",
        str(volume.path),
        "--snapshot",
        str(write_snapshot(tmp_path / "snapshot.json")),
        "--threads",
        "4",
        "--reload-interval",
        "0.2",
        "--state-dir",
        str(tmp_path / "state"),
    )
    try:
        ready(server)
        yield server, volume
    finally:
        assert server.stop() == 0


def one_round(
    server: Served, volume: ConfigMapVolume, swap_to: str, seed: int
) -> tuple[list[Sample], float]:
    """A bounded round of load with the catalog swapped half-way; (samples, seconds)."""
    load = Load(
        server,
        pick,
        threads=THREADS,
        max_requests=ROUND_REQUESTS,
        timeout=PER_REQUEST_TIMEOUT,
        seed=seed,
    )
    began = time.monotonic()
    load.start()
    while load.count < ROUND_REQUESTS // 2 and time.monotonic() - began < ROUND_SECONDS / 2:
        time.sleep(0.01)
    volume.update(swap_to)
    load.wait(ROUND_SECONDS - (time.monotonic() - began))
    samples = load.stop(timeout=PER_REQUEST_TIMEOUT + 5)
    return samples, time.monotonic() - began


def serves(server: Served, catalog_hash: str, pids: list[int]) -> bool:
    seen: dict[int, str] = {}
    for _ in range(50):
        _, detail = server.readyz()
        seen[detail["worker"]["pid"]] = detail["catalog"]["hash"]
        if set(pids) <= set(seen):
            break
    return set(pids) <= set(seen) and set(seen.values()) == {catalog_hash}


def test_concurrent_load_with_a_catalog_swap(setup) -> None:
    server, volume = setup
    pids = server.worker_pids()
    assert len(pids) == WORKERS
    rss_start = {pid: rss_mb(pid) for pid in pids}
    figures = []
    rss_by_round = []
    for number, (swap_to, seed) in enumerate(((CATALOG_B, 1), (CATALOG_A, 2)), start=1):
        samples, seconds = one_round(server, volume, swap_to, seed)
        bad = failures(samples, ("ok",))
        assert bad == [], bad[:5]
        assert len(samples) >= 200, "the load barely ran"
        slowest = max(s.received - s.sent for s in samples)
        assert slowest < PER_REQUEST_TIMEOUT
        routes = {s.route for s in samples}
        assert {"/scheduler/filter", "/scheduler/prioritize", "/webhook/mutate"} <= routes
        wait_until(
            lambda swap_to=swap_to: serves(server, parse_catalog(swap_to).hash, pids),
            "every worker serves the swapped catalog",
            5,
        )
        assert server.worker_pids() == pids, "a worker was restarted (timeout or crash)"
        rss = {pid: rss_mb(pid) for pid in pids}
        rss_by_round.append(rss)
        by_route = {r: sum(s.route == r for s in samples) for r in sorted(routes)}
        figures.append(
            f"round {number}: {len(samples)} requests in {seconds:.2f}s "
            f"({len(samples) / seconds:.0f}/s) from {THREADS} threads, 0 failed, slowest "
            f"{slowest * 1000:.0f} ms; {by_route}; catalog swapped half-way; worker RSS "
            + ", ".join(f"{pid}: {mb:.1f} MB" for pid, mb in rss.items())
        )
    # Memory is flat: the second round (same load) leaves the workers where the first did.
    for pid in pids:
        growth = rss_by_round[1][pid] - rss_by_round[0][pid]
        assert growth < RSS_TOLERANCE_MB, (pid, rss_start[pid], rss_by_round)
    figures.insert(
        0, "worker RSS at start: " + ", ".join(f"{p}: {mb:.1f} MB" for p, mb in rss_start.items())
    )
    assert "Traceback" not in server.log_text()
    print("\n" + "\n".join(figures))
