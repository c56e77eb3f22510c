"""Hot reload of the catalog while a real server is under load (issue 7, item 2).

gunicorn (one worker process x 4 threads) reads its catalog through a kubelet-style ConfigMap
volume (``catalog.yaml -> ..data/catalog.yaml``, ``..data`` swapped atomically) and polls it
every 0.2 s. Six client threads send filter, prioritize and (dry-run) mutate requests
while the test swaps the volume from version A to version B, then to an invalid file, then
kills a worker, then goes back to A.

The catalog versions are built so that every route's answer differs between them in more
than one place (see ``support.helpers.CATALOG_B``). The exact A and B answers come from the same
app built in this process on each version, so "every response equals the A answer or the
B answer" means no response was computed from a mix of the two, and no request failed.

Run with ``-s`` to see the figures (requests, reload latencies).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.configmap import ConfigMapVolume
from support.helpers import (
    AKS,
    CATALOG_A,
    CATALOG_B,
    CATALOG_INVALID,
    EKS,
    GKE,
    INVALID_PATH,
    METAL,
    Load,
    Reply,
    Sample,
    Served,
    admission_review,
    extender_args,
    failures,
    ready,
    scheduler_pod,
    serve,
    wait_until,
    write_snapshot,
)

from extender.server.app import create_app
from extender.server.serve import ServeConfig, build_runtime, shutdown_runtime
from machine_catalog.loading import parse_catalog

pytestmark = pytest.mark.slow

WORKERS = 1  # one process per replica owns the state
ROUTES = ("/scheduler/filter", "/scheduler/prioritize", "/webhook/mutate")
RELOAD_INTERVAL = 0.2
#: A generous bound on "every worker serves the new version": 0.2 s polling plus a re-match
#: of six nodes is ~0.3 s; the rest is room for a loaded CI machine.
RELOAD_BOUND = 3.0
HASH_A = parse_catalog(CATALOG_A).hash
HASH_B = parse_catalog(CATALOG_B).hash
RELOAD_FAILURES = "machine_catalog_catalog_reload_failures_total"


def bodies() -> dict[str, bytes]:
    review = admission_review()
    review["request"]["dryRun"] = True  # same answer every time: no reservation is taken
    return {
        "/scheduler/filter": extender_args(scheduler_pod("1")),
        "/scheduler/prioritize": extender_args(scheduler_pod("1")),
        "/webhook/mutate": orjson.dumps(review),
    }


def expected_answers(tmp_path: Path, text: str, snapshot: Path) -> dict[str, Any]:
    """Each route's answer under one catalog version, from the app built in-process."""
    path = tmp_path / f"expected-{parse_catalog(text).hash}.yaml"
    path.write_text(text)
    runtime = build_runtime(ServeConfig(catalog=str(path), snapshot=str(snapshot)), start=False)
    try:
        client = create_app(runtime).test_client()
        answers = {}
        for route, body in bodies().items():
            reply = client.post(route, data=body, content_type="application/json")
            assert reply.status_code == 200, reply.data
            answers[route] = orjson.loads(reply.data)
        return answers
    finally:
        shutdown_runtime(runtime)


class Versions:
    """Judges a reply: "A", "B", or "unexpected: ..." (a mix, an error, anything else)."""

    def __init__(self, a: dict[str, Any], b: dict[str, Any]) -> None:
        self.answers = {"A": a, "B": b}
        for route in ROUTES:
            assert a[route] != b[route], f"versions A and B must answer {route} differently"
        self.bodies = bodies()

    def judge(self, route: str) -> Callable[[Reply], str]:
        def label(reply: Reply) -> str:
            if reply.status != 200:
                return f"unexpected: HTTP {reply.status} {reply.body[:200]!r}"
            answer = orjson.loads(reply.body)
            for version, answers in self.answers.items():
                if answer == answers[route]:
                    return version
            return f"unexpected: {reply.body[:300]!r}"

        return label

    def pick(self, rng: Any) -> tuple[str, bytes, Callable[[Reply], str]]:
        route = rng.choice(ROUTES)
        return route, self.bodies[route], self.judge(route)


@pytest.fixture
def versions(tmp_path: Path) -> Versions:
    snapshot = write_snapshot(tmp_path / "snapshot.json")
    return Versions(
        expected_answers(tmp_path, CATALOG_A, snapshot),
        expected_answers(tmp_path, CATALOG_B, snapshot),
    )


@pytest.fixture
def setup(tmp_path: Path, versions: Versions) -> Iterator[tuple[Served, ConfigMapVolume, Versions]]:
    snapshot = tmp_path / "snapshot.json"
    config = tmp_path / "config"
    config.mkdir()
    volume = ConfigMapVolume(config, CATALOG_A)
    server = serve(
        tmp_path,
        "--catalog",
        str(volume.path),
        "--snapshot",
        str(snapshot),
        "--threads",
        "4",
        "--reload-interval",
        str(RELOAD_INTERVAL),
        "--state-dir",
        str(tmp_path / "state"),
    )
    try:
        ready(server)
        yield server, volume, versions
    finally:
        assert server.stop() == 0


def test_the_answers_are_what_each_version_says(versions: Versions) -> None:
    """The A and B answers the load is judged against, checked by hand once."""
    a, b = versions.answers["A"], versions.answers["B"]
    assert a["/scheduler/filter"]["NodeNames"] == [EKS, GKE, METAL]
    assert b["/scheduler/filter"]["NodeNames"] == [GKE, METAL, AKS]
    assert "retired" in b["/scheduler/filter"]["FailedAndUnresolvableNodes"][EKS]
    balanced = [s["Score"] for s in a["/scheduler/prioritize"]]
    assert [s["Score"] for s in b["/scheduler/prioritize"]] == [10 - s for s in balanced]
    assert a["/webhook/mutate"]["response"]["allowed"] is True
    assert a["/webhook/mutate"]["response"]["patch"] != b["/webhook/mutate"]["response"]["patch"]


def per_worker_readyz(server: Served, pids: list[int], timeout: float = 10.0) -> dict[int, dict]:
    """/readyz detail of each live worker (fresh connections land on either worker; a
    worker that is still booting answers nothing yet)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while not set(pids) <= set(seen):
        assert time.monotonic() < deadline, f"only workers {sorted(seen)} of {pids} answered"
        status, detail = server.readyz()
        assert status == 200, detail
        seen[detail["worker"]["pid"]] = detail
    return seen


def reload_latency(
    samples: list[Sample], swapped: float, old: str, new: str
) -> tuple[float, float]:
    """(first answer of ``new``, last answer of ``old`` sent after the swap), in seconds."""
    after = [s for s in samples if s.sent >= swapped]
    first_new = min(s.received for s in after if s.verdict == new) - swapped
    old_after = [s.sent for s in after if s.verdict == old]
    last_old = (max(old_after) - swapped) if old_after else 0.0
    return first_new, last_old


def reload_failures(server: Served) -> float:
    return server.metrics().get((RELOAD_FAILURES, ()), 0.0)


def test_hot_reload_under_load(setup) -> None:
    server, volume, versions = setup
    pids = server.worker_pids()
    assert len(pids) == WORKERS
    figures: list[str] = []

    # -- A -> B while requests are in flight -------------------------------------------
    load = Load(server, versions.pick, threads=6).start()
    load.wait(0.5)
    swapped = time.monotonic()
    volume.update(CATALOG_B)
    # Every worker's /readyz shows B...
    wait_until(
        lambda: all(
            d["catalog"]["hash"] == HASH_B for d in per_worker_readyz(server, pids).values()
        ),
        "every worker reports catalog B in /readyz",
        RELOAD_BOUND,
    )
    settled = time.monotonic()
    readyz_latency = settled - swapped
    load.wait(0.7)  # ...and B alone is served from then on
    samples = load.stop()
    assert failures(samples, ("A", "B")) == []
    first_b, last_a = reload_latency(samples, swapped, "A", "B")
    assert last_a < RELOAD_BOUND
    # /readyz shows the new version just before the cache's re-match (a listener) is done.
    tail = [s.verdict for s in samples if s.sent > settled + 0.1]
    assert tail and set(tail) == {"B"}
    assert {s.route for s in samples} == set(ROUTES)
    figures.append(
        f"A->B under load: {len(samples)} requests, 0 failed, "
        f"{sum(s.verdict == 'A' for s in samples)} answered A, "
        f"{sum(s.verdict == 'B' for s in samples)} answered B; first B answer "
        f"{first_b * 1000:.0f} ms after the swap, last A answer {last_a * 1000:.0f} ms, "
        f"every /readyz on B at {readyz_latency * 1000:.0f} ms"
    )
    metrics = server.metrics()
    assert metrics[("machine_catalog_catalog_info", (("hash", HASH_B), ("name", "hardening")))] == 1
    assert metrics[("machine_catalog_catalog_info", (("hash", HASH_A), ("name", "hardening")))] == 0
    assert metrics.get((RELOAD_FAILURES, ()), 0.0) == 0

    # -- B -> an invalid file: B stays, the error is visible --------------------------
    load = Load(server, versions.pick, threads=6, seed=1).start()
    load.wait(0.3)
    swapped = time.monotonic()
    volume.update(CATALOG_INVALID)
    seen = wait_until(
        lambda: reload_failures(server) == WORKERS,
        "each worker counts the refused file once",
        RELOAD_BOUND,
    )
    load.wait(0.5)
    samples = load.stop()
    assert failures(samples, ("B",)) == []
    figures.append(
        f"B->invalid under load: {len(samples)} requests, 0 failed, all answered B; "
        f"refusal counted {seen * 1000:.0f} ms after the swap"
    )
    for detail in per_worker_readyz(server, pids).values():
        assert detail["status"] == "ready" and detail["catalog"]["hash"] == HASH_B
        error = detail["catalog"]["lastReloadError"]
        assert error is not None and any(e.startswith(INVALID_PATH) for e in error["errors"])
        assert detail["catalog"]["reloadFailures"] == 1
    assert "catalog_last_reload_success 0.0" in server.request("GET", "/metrics").body.decode()

    # -- a worker dies while the file is invalid: its successor boots on B -------------
    original = set(pids)
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: victim not in server.worker_pids() and len(server.worker_pids()) == WORKERS,
        "gunicorn replaces the killed worker",
        10,
    )
    pids = server.worker_pids()
    (newcomer,) = set(pids) - original
    detail = per_worker_readyz(server, pids)[newcomer]
    replaced = time.monotonic() - killed
    assert detail["catalog"]["hash"] == HASH_B
    assert INVALID_PATH in " ".join(detail["catalog"]["lastReloadError"]["errors"])
    assert reload_failures(server) == 1  # the newcomer's own refusal at boot: a new process
    time.sleep(0.5)  # no crash loop: the same worker a while later
    assert server.worker_pids() == pids
    assert len(re.findall(r"Booting worker with pid", server.log_text())) == WORKERS + 1
    load = Load(server, versions.pick, threads=6, seed=2).start()
    load.wait(0.5)
    samples = load.stop()
    assert failures(samples, ("B",)) == []
    figures.append(
        f"worker {victim} killed while the file is invalid: replaced by {newcomer} serving B"
        f" within {replaced * 1000:.0f} ms; then {len(samples)} requests, 0 failed, all B"
    )

    # -- a valid file again: A everywhere, the error cleared ------------------------
    load = Load(server, versions.pick, threads=6, seed=3).start()
    load.wait(0.3)
    swapped = time.monotonic()
    volume.update(CATALOG_A)
    wait_until(
        lambda: all(
            d["catalog"]["hash"] == HASH_A and d["catalog"]["lastReloadError"] is None
            for d in per_worker_readyz(server, pids).values()
        ),
        "every worker back on A with no error",
        RELOAD_BOUND,
    )
    load.wait(0.5)
    samples = load.stop()
    assert failures(samples, ("A", "B")) == []
    first_a, last_b = reload_latency(samples, swapped, "B", "A")
    assert last_b < RELOAD_BOUND
    figures.append(
        f"invalid->A under load: {len(samples)} requests, 0 failed; first A answer "
        f"{first_a * 1000:.0f} ms after the swap, last B answer {last_b * 1000:.0f} ms"
    )
    assert "Traceback" not in server.log_text()
    print("\n" + "\n".join(figures))
