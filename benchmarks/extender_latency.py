"""Latency and throughput of ``machine-catalog serve``, side by side with a floor server.

One command (``python benchmarks/extender_latency.py``; ``--quick`` for a smoke run):

1. generates seeded fleets (1,000 / 5,000 / 15,000 EKS-shaped nodes of three families,
   ~10 ReplicaSet pods per node, plus 1,000 nodes with 10x the pods) as snapshot files in
   a temporary directory;
2. starts ``machine-catalog serve --snapshot ... --catalog ... --bind 127.0.0.1:PORT``
   exactly as a user would (a subprocess of the installed console script), and the floor
   (:mod:`benchmarks.floor_app`: same gunicorn options, only ``orjson.loads`` of the body
   and a prebuilt answer of the same size);
3. drives ``/scheduler/filter``, ``/scheduler/prioritize`` (``NodeNames`` with 500 names
   and with the whole fleet; full ``Nodes`` at 1,000 and 5,000) and ``/webhook/mutate``
   with kube-scheduler / API-server shaped bodies over keep-alive HTTP, from 1 and from 4
   client processes, and records every call's latency on the client side;
4. reads the RSS of the gunicorn workers, profiles the hot path in-process (cProfile via
   Flask's test client), and rewrites its section of ``benchmarks/README.md`` and
   ``benchmarks/results/extender_latency.png``.

Clients run in separate processes so that the load generator's own GIL does not cap the
4-client numbers; on a 2-core machine they still share the CPUs with the server, which the
README states next to the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import multiprocessing as mp
import os
import pstats
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from benchmarks import fleets, report

BENCH_DIR = Path(__file__).resolve().parent
READY_TIMEOUT = 300.0  # seconds for a server to load a 150,000-pod snapshot
CALL_TIMEOUT = 60.0


# -- fleets and request bodies ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One kind of call: a route and a body, under a name the floor answers by."""

    name: str  # e.g. "filter/names-500"
    route: str
    body: bytes
    verb: str  # filter | prioritize | webhook
    shape: str  # "NodeNames 500", "Nodes 5000", "AdmissionReview"
    names: int  # nodes named in the request (0 for the webhook)
    clients: tuple[int, ...] = (1,)  # concurrency levels to measure

    @property
    def url(self) -> str:
        return f"{self.route}?case={self.name}"


@dataclass(slots=True)
class Fleet:
    nodes: int
    pods: int
    snapshot: Path
    snapshot_bytes: int
    cases: list[Case]


def build_fleet(
    tmp: Path, n_nodes: int, pods_per_node: int, full_nodes: bool, seed: int, *, lean: bool = False
) -> Fleet:
    """Write a snapshot for ``n_nodes`` and build the request bodies for it.

    ``lean``: only the 500-name calls and the webhook (the pods-vs-latency comparison).
    """
    nodes = fleets.make_nodes(n_nodes, seed=seed)
    pods = fleets.make_pods(nodes, pods_per_node, seed=seed + 1)
    snapshot = fleets.write_snapshot(tmp / f"snapshot-{n_nodes}x{pods_per_node}.json", nodes, pods)
    n_pods = len(pods)
    del pods
    rng = random.Random(seed + 2)
    pod = fleets.pending_pod(seed=seed + 3, normalized=True)  # pinned to m5, asks 500m
    m5 = [n for n in nodes if n["metadata"]["labels"][fleets.INSTANCE_TYPE_LABEL].startswith("m5.")]
    # kube-scheduler's own filters (NodeAffinity: the webhook's pin) run before the
    # extender, so a real request names nodes of the pod's family only: 500 of them by
    # default (percentageOfNodesToScore), all of them ("family") with 100%. "all" sends
    # every node of the fleet, two thirds of another family: the extender's worst case.
    sample = rng.sample(m5, min(500, len(m5)))
    busy = (1,) if lean else (1, 4)
    cases: list[Case] = []

    def add(verb: str, tag: str, chosen: list[dict[str, Any]], full: bool, clients=(1,)) -> None:
        shape = f"{'Nodes' if full else 'NodeNames'} {len(chosen):,}"
        body = fleets.extender_args(pod, chosen, full=full)
        route = f"/scheduler/{verb}"
        cases.append(Case(f"{verb}/{tag}", route, body, verb, shape, len(chosen), clients))

    for verb in ("filter", "prioritize"):
        add(verb, "names-500", sample, full=False, clients=busy)
        if not lean:
            add(verb, "names-family", m5, full=False)
            add(verb, "names-all", nodes, full=False)
    review = fleets.admission_review(seed=seed + 4)
    cases.append(Case("webhook", "/webhook/mutate", review, "webhook", "AdmissionReview", 0, busy))
    if full_nodes and not lean:
        for verb in ("filter", "prioritize"):
            add(verb, "nodes-500", sample, full=True)
            add(verb, "nodes-all", nodes, full=True)
    return Fleet(n_nodes, n_pods, snapshot, snapshot.stat().st_size, cases)


# -- processes we start ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(slots=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def children(self) -> list[int]:
        """The gunicorn workers: processes whose parent is the master we started."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def worker_rss_mb(self) -> list[float]:
        sizes = []
        for pid in self.children():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]) / 1024)
        return sizes

    def stop(self) -> None:
        """SIGTERM to the master we started (gunicorn stops its workers), then wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start(name: str, argv: list[str], port: int, log: Path) -> Server:
    handle = log.open("wb")
    process = subprocess.Popen(
        argv,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: cleanup never touches anything else
    )
    handle.close()
    return Server(name, port, process, log)


def wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n"
                + server.log.read_text()[-3000:]
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log.read_text()}")


def wait_workers(server: Server, workers: int, timeout: float = READY_TIMEOUT) -> None:
    """Until every worker logged that it loaded its cache (``/readyz`` answers from one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log.read_text(errors="replace").count(" ready: catalog ") >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: not all {workers} workers ready after {timeout:.0f}s")


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


def serve_project(
    tmp: Path,
    fleet: Fleet,
    catalog: Path,
    args: argparse.Namespace,
    extra: Sequence[str] = (),
    tag: str = "",
) -> Server:
    port = free_port()
    exe = Path(sys.executable).with_name("machine-catalog")
    argv = [
        str(exe) if exe.exists() else "machine-catalog",
        "serve",
        "--snapshot",
        str(fleet.snapshot),
        "--catalog",
        str(catalog),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--log-level",
        "info",  # for the "worker N ready" lines (no access log)
        *extra,
    ]
    return start("machine-catalog", argv, port, tmp / f"serve-{fleet.nodes}{tag}.log")


def serve_floor(tmp: Path, responses: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        str(BENCH_DIR / "floor_app.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--responses",
        str(responses),
    ]
    return start("floor", argv, port, tmp / "floor.log")


# -- clients ----------------------------------------------------------------------------------


def call(conn: http.client.HTTPConnection, url: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", url, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


Command = tuple[int, int, float, float, int]  # port, case index, start_at, stop_at, min_calls


def _client_loop(pipe: Any, cases: Sequence[Case]) -> None:
    """A client process: one keep-alive connection per server, runs on command.

    Warm-up (connection set-up, two untimed calls) happens once per server and case,
    before the round's start time. Latencies go back in nanoseconds.
    """
    conns: dict[int, http.client.HTTPConnection] = {}
    warmed: set[tuple[int, int]] = set()
    while True:
        command: Command | None = pipe.recv()
        if command is None:
            break
        port, index, start_at, stop_at, min_calls = command
        case = cases[index]
        conn = conns.get(port)
        if conn is None:
            conn = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT)
        if (port, index) not in warmed:
            for _ in range(2):
                call(conn, case.url, case.body)
            warmed.add((port, index))
        while time.monotonic() < start_at:
            time.sleep(0.0002)
        latencies: list[int] = []
        errors = 0
        hard_stop = stop_at + 4 * (stop_at - start_at) + 5
        begin = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= hard_stop or (now >= stop_at and len(latencies) >= min_calls):
                break
            t0 = time.perf_counter_ns()
            status, _ = call(conn, case.url, case.body)
            latencies.append(time.perf_counter_ns() - t0)
            errors += status != 200
        pipe.send((latencies, errors, begin, time.monotonic()))
    for conn in conns.values():
        conn.close()


@dataclass(slots=True)
class Sample:
    """Latencies of one case on one server at one concurrency, over all rounds."""

    latencies_ns: list[int] = field(default_factory=list)
    wall: float = 0.0  # seconds the rounds took, summed
    errors: int = 0

    @property
    def latencies_ms(self) -> np.ndarray:
        return np.array(self.latencies_ns, dtype=np.float64) / 1e6

    @property
    def calls_per_s(self) -> float:
        return len(self.latencies_ns) / self.wall if self.wall > 0 else 0.0

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


class ClientPool:
    """Client processes forked once per fleet (they inherit the request bodies)."""

    def __init__(self, cases: Sequence[Case], size: int) -> None:
        ctx = mp.get_context("fork")
        self.pipes = []
        self.procs = []
        for _ in range(size):
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_client_loop, args=(there, cases), daemon=True)
            proc.start()
            there.close()
            self.pipes.append(here)
            self.procs.append(proc)

    def run(
        self, port: int, index: int, clients: int, duration: float, min_calls: int, into: Sample
    ) -> None:
        """``clients`` processes call case ``index`` for ``duration`` s; add to ``into``."""
        start_at = time.monotonic() + 0.01
        stop_at = start_at + duration
        each = max(1, min_calls // clients)
        for pipe in self.pipes[:clients]:
            pipe.send((port, index, start_at, stop_at, each))
        begins, ends = [], []
        for pipe in self.pipes[:clients]:
            latencies, errors, begin, end = pipe.recv()
            into.latencies_ns += latencies
            into.errors += errors
            begins.append(begin)
            ends.append(end)
        into.wall += max(ends) - min(begins)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=30)


def measure(
    pool: ClientPool,
    servers: dict[str, Server],
    cases: Sequence[Case],
    args: argparse.Namespace,
    on_case: Any = None,
) -> list[Result]:
    """Every case on every server, interleaved in rounds so that drift hits all alike.

    Each round runs the servers in turn (alternating the order) for ``duration / rounds``
    seconds each: a burst of background load then lands on all of them, not on one.
    """
    results = []
    for index, case in enumerate(cases):
        result = Result(case)
        heavy = len(case.body) > 5_000_000
        min_calls = 5 if heavy else args.min_calls
        duration = args.duration / 2 if heavy else args.duration
        rounds = 1 if heavy else args.rounds
        for clients in case.clients:
            for name in servers:
                result.samples.setdefault(name, {})[clients] = Sample()
            for r in range(rounds):
                order = list(servers.items())
                for name, server in order if r % 2 == 0 else order[::-1]:
                    sample = result.samples[name][clients]
                    calls = max(1, min_calls // rounds)
                    pool.run(server.port, index, clients, duration / rounds, calls, sample)
        if on_case is not None:
            on_case(result)
        results.append(result)
    return results


# -- one fleet ------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    case: Case
    #: server name ("project", "floor", or a fleet label) -> clients -> sample
    samples: dict[str, dict[int, Sample]] = field(default_factory=dict)
    response_bytes: int = 0

    @property
    def project(self) -> dict[int, Sample]:
        return self.samples.get("project", {})

    @property
    def floor(self) -> dict[int, Sample]:
        return self.samples.get("floor", {})


@dataclass(slots=True)
class FleetRun:
    fleet: Fleet
    results: list[Result]
    rss_mb: list[float]  # after the run
    boot_s: float
    boot_rss_mb: list[float] = field(default_factory=list)  # once every worker has loaded


def record_responses(server: Server, fleet: Fleet, path: Path) -> dict[str, int]:
    """Ask the project once per case; the floor will answer with the same bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CALL_TIMEOUT)
    answers: dict[str, str] = {}
    for case in fleet.cases:
        status, body = call(conn, case.url, case.body)
        if status != 200:
            raise RuntimeError(f"{case.name}: HTTP {status}: {body[:500]!r}")
        answers[case.name] = body.decode()
    conn.close()
    path.write_bytes(orjson.dumps(answers))
    return {k: len(v.encode()) for k, v in answers.items()}


def run_fleet(tmp: Path, fleet: Fleet, catalog: Path, args: argparse.Namespace) -> FleetRun:
    t0 = time.monotonic()
    project = serve_project(tmp, fleet, catalog, args)
    servers = [project]
    with running(servers):
        wait_ready(project)
        wait_workers(project, args.workers)
        boot = time.monotonic() - t0
        boot_rss = project.worker_rss_mb()
        responses = tmp / f"responses-{fleet.nodes}.json"
        sizes = record_responses(project, fleet, responses)
        floor = serve_floor(tmp, responses, args)
        servers.append(floor)
        wait_ready(floor, timeout=60)
        pool = ClientPool(fleet.cases, max(c for case in fleet.cases for c in case.clients))
        try:
            results = measure(
                pool,
                {"project": project, "floor": floor},
                fleet.cases,
                args,
                on_case=lambda r: _progress(fleet, r),
            )
        finally:
            pool.close()
        for r in results:
            r.response_bytes = sizes[r.case.name]
        rss = project.worker_rss_mb()
    return FleetRun(fleet, results, rss, boot, boot_rss)


@dataclass(slots=True)
class PodsRun:
    """The same nodes with ``pods_per_node`` and 10x as many pods, measured side by side."""

    fleets: list[Fleet]
    results: list[Result]
    rss_mb: dict[str, list[float]]


def run_pods_comparison(
    tmp: Path, n_nodes: int, catalog: Path, args: argparse.Namespace
) -> PodsRun:
    fleets_ = [
        build_fleet(tmp, n_nodes, ppn, False, args.seed, lean=True)
        for ppn in (args.pods_per_node, 10 * args.pods_per_node)
    ]
    servers = {
        f"{f.pods // f.nodes} pods/node": serve_project(tmp, f, catalog, args) for f in fleets_
    }
    with running(list(servers.values())):
        for server in servers.values():
            wait_ready(server)
            wait_workers(server, args.workers)
        cases = fleets_[0].cases  # same nodes and pod -> identical bodies
        pool = ClientPool(cases, 1)
        try:
            results = measure(pool, servers, cases, args)
        finally:
            pool.close()
        rss = {name: server.worker_rss_mb() for name, server in servers.items()}
    for r in results:
        line = "  ".join(
            f"{name}: p50 {by[1].p(50):.2f} ms p99 {by[1].p(99):.2f} ms"
            for name, by in r.samples.items()
        )
        print(f"  {n_nodes:>6} nodes {r.case.name:<22} {line}", flush=True)
    return PodsRun(fleets_, results, rss)


@dataclass(slots=True)
class StrategyRun:
    """The same fleet and bodies under a ``balanced`` and a ``loadAware`` catalog."""

    fleet: Fleet
    results: list[Result]
    hot_nodes: int


def write_node_metrics(path: Path, snapshot: Path, seed: int, hot_share: float = 0.05) -> int:
    """A NodeMetricsList for every node of ``snapshot``, stamped now: usage uniform in
    30-75% of allocatable, ``hot_share`` of the nodes at 85-95%. Returns the hot count."""
    from datetime import UTC, datetime

    rng = random.Random(seed)
    nodes = [i for i in orjson.loads(snapshot.read_bytes())["items"] if i.get("kind") == "Node"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    items, hot = [], 0
    for node in nodes:
        share = rng.uniform(0.3, 0.75)
        if rng.random() < hot_share:
            share, hot = rng.uniform(0.85, 0.95), hot + 1
        millis = int(fleets.node_allocatable_millis(node) * share)
        items.append(
            {
                "metadata": {"name": node["metadata"]["name"]},
                "timestamp": stamp,
                "window": "20s",
                "usage": {"cpu": f"{millis}m", "memory": "1Gi"},
            }
        )
    path.write_bytes(orjson.dumps({"kind": "NodeMetricsList", "items": items}))
    return hot


def run_strategy_comparison(tmp: Path, n_nodes: int, args: argparse.Namespace) -> StrategyRun:
    """``balanced`` and ``loadAware`` (with a metrics file of every node) side by side,
    interleaved in rounds like the floor comparison, on the 500-name calls."""
    fleet = build_fleet(tmp, n_nodes, args.pods_per_node, False, args.seed + 7, lean=True)
    cases = [c for c in fleet.cases if c.verb in ("filter", "prioritize")]
    balanced = fleets.write_catalog(tmp / "catalog-balanced.json", "balanced")
    load_aware = fleets.write_catalog(tmp / "catalog-loadaware.json", "loadAware")
    cool, metrics = tmp / "node-metrics-cool.json", tmp / "node-metrics.json"
    write_node_metrics(cool, fleet.snapshot, args.seed + 8, hot_share=0.0)
    hot = write_node_metrics(metrics, fleet.snapshot, args.seed + 8)
    servers = {
        "balanced": serve_project(tmp, fleet, balanced, args, tag="-balanced"),
        "loadAware": serve_project(
            tmp, fleet, load_aware, args, ["--node-metrics", str(cool)], tag="-loadaware"
        ),
        "loadAware, 5% hot": serve_project(
            tmp, fleet, load_aware, args, ["--node-metrics", str(metrics)], tag="-hot"
        ),
    }
    with running(list(servers.values())):
        for server in servers.values():
            wait_ready(server)
            wait_workers(server, args.workers)
        pool = ClientPool(cases, 1)
        try:
            results = measure(pool, servers, cases, args)
        finally:
            pool.close()
    for r in results:
        line = "  ".join(
            f"{name}: p50 {by[1].p(50):.2f} ms p99 {by[1].p(99):.2f} ms"
            for name, by in r.samples.items()
        )
        print(f"  {n_nodes:>6} nodes {r.case.name:<22} {line}", flush=True)
    fleet.snapshot.unlink()
    return StrategyRun(fleet, results, hot)


def render_strategies(run: StrategyRun) -> str:
    rows = []
    for r in run.results:
        b = r.samples["balanced"][1]
        for name in ("loadAware", "loadAware, 5% hot"):
            la = r.samples[name][1]
            rows.append(
                [
                    r.case.verb,
                    r.case.shape,
                    f"`{name}`",
                    f"{b.p(50):.2f} / {b.p(99):.2f}",
                    f"{la.p(50):.2f} / {la.p(99):.2f}",
                    f"{la.p(50) - b.p(50):+.2f} ms ({la.p(50) / b.p(50):.2f}x)",
                    f"{la.p(99) - b.p(99):+.2f} ms",
                    "yes" if la.p(99) < 3.0 else "**no**",
                    f"{len(b.latencies_ns)} / {len(la.latencies_ns)}",
                ]
            )
    return "\n".join(
        [
            f"Run {report.stamp()} on {report.machine()}; load average {_loadavg()}.",
            "",
            f"{run.fleet.nodes:,} nodes x {run.fleet.pods // run.fleet.nodes} pods, the same"
            " snapshot and bodies, three servers side by side: `balanced`, `loadAware` with a"
            " NodeMetricsList of every node (`--node-metrics`, stamped at start, usage 30-75%),"
            f" and `loadAware` with {run.hot_nodes} nodes (5%) at 85-95%, above hotSpotUsage"
            " 0.8, so the filter writes hot-spot reasons. One client, keep-alive, interleaved"
            " rounds; p99 target < 3 ms (section 2).",
            "",
            report.table(
                [
                    "call",
                    "request",
                    "against",
                    "`balanced` p50 / p99 ms",
                    "load-aware p50 / p99 ms",
                    "p50 cost",
                    "p99 cost",
                    "p99 < 3 ms",
                    "calls",
                ],
                rows,
            ),
        ]
    )


def _progress(fleet: Fleet, r: Result) -> None:
    s = r.project[1]
    floor = f" floor p50 {r.floor[1].p(50):.2f} ms" if r.floor else ""
    print(
        f"  {fleet.nodes:>6} nodes {r.case.name:<22} p50 {s.p(50):7.2f} ms  p99 {s.p(99):7.2f} ms"
        f"  n={len(s.latencies_ns)}{floor}",
        flush=True,
    )


# -- profile --------------------------------------------------------------------------------


#: Functions whose cumulative time makes up a request, by layer: (file suffix, function, label).
LAYERS = (
    ("extender/metrics.py", "wsgi_app", "whole app (WSGI call)"),
    ("extender/wire.py", "decode_extender_args", "decode ExtenderArgs (orjson + shape checks)"),
    ("extender/filtering.py", "complete_view", "judge nodes the cache lacks (full Nodes)"),
    ("extender/cluster.py", "view", "cache view (name -> slot, array gathers)"),
    ("extender/filtering.py", "filter_nodes", "filter verdicts + reasons"),
    ("extender/scoring.py", "node_scores", "scores"),
    ("extender/wire.py", "encode_filter_result", "encode filter answer"),
    ("extender/wire.py", "encode_host_priorities", "encode priorities"),
    ("extender/admission.py", "decode_review", "decode AdmissionReview"),
    ("extender/admission.py", "admit", "webhook decision + patch"),
    ("extender/admission.py", "encode_response", "encode AdmissionReview"),
)

Profile = tuple[str, float, list[tuple[str, float]]]


def profile(fleet: Fleet, catalog: Path, calls: int) -> list[Profile]:
    """cProfile of the app in-process (Flask's test client): where a request's time goes.

    For each NodeNames case and the webhook: the app's time per call and the cumulative
    time of the layers in :data:`LAYERS` (profiler overhead inflates call-heavy code).
    """
    from extender.app import create_app
    from extender.server import ServeConfig, build_runtime

    runtime = build_runtime(
        ServeConfig(snapshot=str(fleet.snapshot), catalog=str(catalog)), start=False
    )
    client = create_app(runtime).test_client()
    out: list[Profile] = []
    for case in fleet.cases:
        if "nodes-" in case.name:
            continue
        for _ in range(3):
            client.post(case.url, data=case.body, content_type="application/json")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            client.post(case.url, data=case.body, content_type="application/json")
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        cumulative: dict[tuple[str, str], float] = {}
        for (filename, _line, func), (_, _, _, cumtime, _) in stats.items():
            for suffix, name, label in LAYERS:
                if func == name and filename.endswith(suffix):
                    cumulative[(label, suffix)] = cumulative.get((label, suffix), 0.0) + cumtime
        per_call = {label: 1e6 * t / calls for (label, _), t in cumulative.items()}
        whole = per_call.pop("whole app (WSGI call)", 0.0)
        parts = sorted(per_call.items(), key=lambda kv: -kv[1])
        out.append((f"{case.name}, {case.shape}", whole, parts))
    return out


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- report -----------------------------------------------------------------------------------


DESCRIBE = {
    "names-500": "(500 of the pod's family)",
    "names-family": "(all of the pod's family)",
    "names-all": "(whole fleet, 3 families)",
    "nodes-500": "(500 of the pod's family)",
    "nodes-all": "(whole fleet)",
}


def _loadavg() -> str:
    """1-minute load average: other work on the machine shows in the tails."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def render(
    runs: list[FleetRun],
    pods: PodsRun | None,
    profiles: list[Profile],
    args: argparse.Namespace,
    seconds: float,
) -> str:
    main = runs
    rows = []
    for run in main:
        for r in run.results:
            s1, s4 = r.project[1], r.project.get(4)
            f1, f4 = r.floor.get(1), r.floor.get(4)
            rows.append(
                [
                    f"{run.fleet.nodes:,}",
                    r.case.verb,
                    f"{r.case.shape} {DESCRIBE.get(r.case.name.split('/')[-1], '')}".strip(),
                    f"{_size(len(r.case.body))} / {_size(r.response_bytes)}",
                    f"{_ms(s1.p(50))} / {_ms(s1.p(95))} / {_ms(s1.p(99))}",
                    f"{s1.calls_per_s:,.0f}",
                    f"{_ms(s4.p(50))} / {_ms(s4.p(99))}" if s4 else "",
                    f"{s4.calls_per_s:,.0f}" if s4 else "",
                    f"{_ms(f1.p(50))} / {_ms(f1.p(99))}" if f1 else "",
                    f"{f4.calls_per_s:,.0f}" if f4 else "",
                    f"**{s1.p(50) / f1.p(50):.2f}**" if f1 else "",
                ]
            )
    header = [
        "nodes",
        "call",
        "request",
        "body in / out",
        "p50 / p95 / p99 ms (1 client)",
        "calls/s (1)",
        "p50 / p99 ms (4 clients)",
        "calls/s (4)",
        "floor p50 / p99 ms (1)",
        "floor calls/s (4)",
        "p50 / floor",
    ]

    checks = targets(runs)
    check_rows = [[what, got, goal, "yes" if ok else "**no**"] for what, got, goal, ok in checks]

    pods_rows = []
    pods_header = ["call"]
    if pods is not None:
        names = list(pods.results[0].samples) if pods.results else []
        pods_header += [f"{n}: p50 / p99 ms" for n in names] + ["p50 ratio"]
        for r in pods.results:
            by = [r.samples[n][1] for n in names]
            pods_rows.append(
                [r.case.name]
                + [f"{_ms(s.p(50))} / {_ms(s.p(99))}" for s in by]
                + [f"{by[-1].p(50) / by[0].p(50):.2f}"]
            )
    mem_rows = [
        [
            f"{run.fleet.nodes:,}",
            f"{run.fleet.pods:,}",
            f"{run.fleet.snapshot_bytes / 1e6:.0f} MB",
            f"{run.boot_s:.1f} s",
            " / ".join(f"{x:.0f}" for x in sorted(run.boot_rss_mb)),
            " / ".join(f"{x:.0f}" for x in sorted(run.rss_mb)),
        ]
        for run in runs
    ]
    if pods is not None:
        for f in pods.fleets:
            rss = pods.rss_mb.get(f"{f.pods // f.nodes} pods/node", [])
            mem_rows.append(
                [
                    f"{f.nodes:,}",
                    f"{f.pods:,}",
                    f"{f.snapshot_bytes / 1e6:.0f} MB",
                    "",
                    "",
                    " / ".join(f"{x:.0f}" for x in sorted(rss)),
                ]
            )
    lines = [
        f"Run {report.stamp()} on {report.machine()}, load average {args.load_before} "
        f"before / {_loadavg()} after: "
        f"`python benchmarks/extender_latency.py{' --quick' if args.quick else ''}` "
        f"({seconds:.0f} s). Server: `machine-catalog serve --workers {args.workers} "
        f"--threads {args.threads}` (gunicorn gthread) on loopback; each case runs "
        f"{args.duration:g} s per client count (at least {args.min_calls} calls; 5 for bodies "
        "over 5 MB). Clients are separate processes with one keep-alive connection each, "
        "on the same 2 CPUs as the server: the 4-client rows share the CPUs between 4 "
        "load generators and 2 workers, so they show saturation throughput, not "
        "unloaded latency. Latency is measured at the client, request sent to response "
        "read.",
        "",
        report.table(header, rows),
        "",
        "Targets:",
        "",
        report.table(["target", "measured", "goal", "met"], check_rows),
        "",
        "Latency against pods: the same nodes and requests with 10x the pods, both servers "
        "up at once and measured in alternating rounds (1 client):",
        "",
        report.table(pods_header, pods_rows) if pods_rows else "(not run)",
        "",
        "Memory and start-up (RSS of each gunicorn worker once every worker has loaded the "
        "snapshot, and after the run, whose full-`Nodes` requests parse up to 27 MB "
        "bodies; start-up = process start to every worker ready, including the master's "
        "snapshot validation):",
        "",
        report.table(
            ["nodes", "pods", "snapshot", "start-up", "worker RSS MB, loaded", "after the run"],
            mem_rows,
        ),
        "",
        "![latency](results/extender_latency.png)",
        "",
        "Where the time goes (cProfile of the app in-process through Flask's test client, "
        f"{args.profile_calls} calls per case on the {profile_fleet(runs)} fleet; cumulative "
        "time of each layer per call, profiler overhead included; the layers do not "
        "nest, the rest is the framework):",
        "",
    ]
    for title, whole, parts in profiles:
        shown = ", ".join(
            f"{label} {us:.0f} µs ({us / whole:.0%})" for label, us in parts if us >= 1
        )
        rest = max(whole - sum(us for _, us in parts), 0.0)
        lines.append(
            f"- {title}: app {whole:.0f} µs per call = {shown}; Flask/werkzeug + metrics "
            f"{rest:.0f} µs ({rest / whole:.0%})"
        )
    return "\n".join(lines)


def summary(runs: list[FleetRun], pods: PodsRun | None) -> str:
    """The key ratios, for the README's closing note."""
    main = runs
    lines = []

    def get(run: FleetRun, name: str) -> Result | None:
        return next((r for r in run.results if r.case.name == name), None)

    for run in main:
        parts = []
        for name in ("filter/names-500", "prioritize/names-500", "webhook"):
            r = get(run, name)
            if r and r.floor:
                s1 = r.project[1]
                ratio = s1.p(50) / r.floor[1].p(50)
                parts.append(
                    f"{name.split('/')[0]} p50 {s1.p(50):.2f} ms = {ratio:.2f}x floor, "
                    f"p99 {s1.p(99):.2f} ms"
                )
        f, p = get(run, "filter/names-500"), get(run, "prioritize/names-500")
        rate = 1000 / (f.project[1].p(50) + p.project[1].p(50)) if f and p else 0
        lines.append(
            f"- {run.fleet.nodes:,} nodes, {f.case.shape if f else ''}: "
            + "; ".join(parts)
            + f"; one scheduler thread: {rate:,.0f} pods/s."
        )
    # Linear growth: requests that name nodes of the pod's family only (all pass), from
    # 333 to 5,000 names; the whole-fleet requests (two thirds rejected) are quoted apart.
    for verb in ("filter", "prioritize"):
        points = sorted(
            (r.case.names, r.project[1].p(50))
            for run in main
            for r in run.results
            if r.case.verb == verb and r.case.name.endswith(("names-500", "names-family"))
        )
        worst = [
            (run.fleet.nodes, r)
            for run in main
            for r in run.results
            if r.case.name == f"{verb}/names-all" and r.floor
        ]
        if len(points) < 2:
            continue
        xs, ys = np.array(points, dtype=float).T
        slope, intercept = np.polyfit(xs, ys, 1)
        fleet_wide = "; ".join(
            f"{n:,} names {r.project[1].p(50):.2f} ms ({r.project[1].p(50) / r.floor[1].p(50):.1f}x"
            " floor)"
            for n, r in worst
        )
        lines.append(
            f"- {verb} grows linearly with the names of the pod's family in the request: "
            f"p50 = {intercept:.2f} ms + {1000 * slope:.2f} µs per name ({len(points)} "
            f"requests of {int(xs.min()):,} to {int(xs.max()):,} names). Whole fleet, two "
            f"thirds of another family: {fleet_wide}."
        )
    if pods is not None and pods.results:
        names = list(pods.results[0].samples)
        ratios = ", ".join(
            f"{r.case.name} {r.samples[names[-1]][1].p(50) / r.samples[names[0]][1].p(50):.2f}x"
            for r in pods.results
        )
        small, big = pods.fleets[0], pods.fleets[-1]
        lines.append(
            f"- 10x the pods ({small.pods:,} -> {big.pods:,}) on {small.nodes:,} nodes, "
            f"p50 ratio: {ratios}."
        )
    for run in main:
        if 45_000 <= run.fleet.pods <= 55_000 and run.boot_rss_mb:
            lines.append(
                f"- Worker RSS with {run.fleet.pods:,} pods cached (snapshot source): "
                f"{max(run.boot_rss_mb):.0f} MB once loaded, {max(run.rss_mb):.0f} MB after "
                "the run."
            )
    return "\n".join(lines)


def profile_fleet(runs: list[FleetRun]) -> str:
    sizes = sorted({r.fleet.nodes for r in runs})
    return f"{(5000 if 5000 in sizes else sizes[-1]):,}-node"


def targets(runs: list[FleetRun]) -> list[tuple[str, str, str, bool]]:
    """The issue's targets, each with what was measured and whether it was met."""
    checks: list[tuple[str, str, str, bool]] = []
    main = runs

    def check_call(r: Result, p99_goal: float, nodes: int) -> None:
        where = f"{r.case.shape} ({nodes:,}-node fleet)"
        if r.floor:
            ratio = r.project[1].p(50) / r.floor[1].p(50)
            checks.append(
                (f"{r.case.verb} p50 / floor, {where}", f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5)
            )
        p99 = r.project[1].p(99)
        checks.append(
            (f"{r.case.verb} p99, {where}", f"{p99:.2f} ms", f"< {p99_goal:g} ms", p99 < p99_goal)
        )

    for run in main:
        for r in run.results:
            if r.case.name.endswith("names-500"):
                check_call(r, 3.0, run.fleet.nodes)
    # 5,000 names: all of one family in a 15,000-node fleet (what percentageOfNodesToScore
    # 100 sends for a pinned pod), and a whole 5,000-node fleet of three families.
    for run in main:
        for r in run.results:
            big = r.case.name.endswith(("names-family", "names-all"))
            if big and 4000 <= r.case.names <= 6000:
                check_call(r, 5.0, run.fleet.nodes)
    for run in main:
        for r in run.results:
            if r.case.verb == "webhook":
                p99 = r.project[1].p(99)
                checks.append(
                    (
                        f"webhook p99 ({run.fleet.nodes:,} nodes)",
                        f"{p99:.2f} ms",
                        "< 2 ms",
                        p99 < 2.0,
                    )
                )
    for run in main:
        f = next((r for r in run.results if r.case.name == "filter/names-500"), None)
        p = next((r for r in run.results if r.case.name == "prioritize/names-500"), None)
        if f and p:
            rate = 1000 / (f.project[1].p(50) + p.project[1].p(50))
            checks.append(
                (
                    f"pods/s one kube-scheduler can place with both calls = 1 / (p50 filter + "
                    f"p50 prioritize), {f.case.shape} ({run.fleet.nodes:,} nodes)",
                    f"{rate:,.0f} pods/s",
                    "> 400 pods/s",
                    rate > 400,
                )
            )
    for run in main:
        if 45_000 <= run.fleet.pods <= 55_000 and run.boot_rss_mb:
            top = max(run.boot_rss_mb)
            checks.append(
                (
                    f"worker RSS, {run.fleet.pods:,} pods cached",
                    f"{top:.0f} MB",
                    "< 300 MB",
                    top < 300,
                )
            )
    return checks


def plot(runs: list[FleetRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = runs
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    styles = {"filter": "tab:blue", "prioritize": "tab:green", "webhook": "tab:purple"}
    panels = (
        (axes[0], ("names-family", "names-all"), "large requests: NodeNames of a family / fleet"),
        (axes[1], ("names-500",), "500 NodeNames (common case) and the webhook"),
    )
    for ax, tags, title in panels:
        for verb, color in styles.items():
            for tag in tags if verb != "webhook" else (("webhook",) if len(tags) == 1 else ()):
                name = "webhook" if verb == "webhook" else f"{verb}/{tag}"
                xs, p50, p99, floor = [], [], [], []
                for run in main:
                    r = next((x for x in run.results if x.case.name == name), None)
                    if r is None:
                        continue
                    xs.append(r.case.names if len(tags) > 1 else run.fleet.nodes)
                    p50.append(r.project[1].p(50))
                    p99.append(r.project[1].p(99))
                    floor.append(r.floor[1].p(50) if r.floor else np.nan)
                if not xs:
                    continue
                dash = "-" if tag != "names-all" else "-."
                ax.plot(xs, p50, "o" + dash, color=color, label=f"{name} p50")
                ax.plot(xs, p99, "s:", color=color, label=f"{name} p99", alpha=0.6)
                ax.plot(xs, floor, "x--", color="grey", alpha=0.6)
        xlabel = "names in the request" if len(tags) > 1 else "nodes in the fleet"
        ax.set(xlabel=xlabel, ylabel="ms, 1 client (grey x: floor p50)", title=title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    ax = axes[2]
    labels, one, four, floor4 = [], [], [], []
    for run in main:
        for r in run.results:
            if r.case.name in ("filter/names-500", "prioritize/names-500", "webhook"):
                labels.append(f"{r.case.name.split('/')[0]}\n{run.fleet.nodes // 1000}k")
                one.append(r.project[1].calls_per_s)
                four.append(r.project[4].calls_per_s if 4 in r.project else 0)
                floor4.append(r.floor[4].calls_per_s if 4 in r.floor else 0)
    x = np.arange(len(labels))
    ax.bar(x - 0.27, one, 0.27, label="1 client")
    ax.bar(x, four, 0.27, label="4 clients")
    ax.bar(x + 0.27, floor4, 0.27, label="floor, 4 clients", color="grey")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylabel="calls/s", title="throughput (500 names / webhook)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny fleet, a few calls (smoke test)")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--pods-per-node", type=int, default=10)
    p.add_argument("--full-nodes-up-to", type=int, default=5000)
    p.add_argument("--duration", type=float, default=None, help="seconds per case and clients")
    p.add_argument("--min-calls", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per case")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--profile-calls", type=int, default=None)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=report.RESULTS, help="directory for the plot")
    p.add_argument("--readme", type=Path, default=report.README, help="README to update")
    p.add_argument("--no-readme", action="store_true", help="print the tables only")
    p.add_argument("--keep", type=Path, default=None, help="keep snapshots and logs here")
    p.add_argument(
        "--strategies-only",
        action="store_true",
        help="only the balanced vs loadAware comparison (its README section)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [150]
        args.duration = args.duration or 0.1
        args.min_calls = args.min_calls or 3
        args.profile_calls = args.profile_calls or 3
        args.rounds = args.rounds or 1
    args.sizes = args.sizes or [1000, 5000, 15000]
    args.duration = args.duration or 1.0
    args.min_calls = args.min_calls or 50
    args.profile_calls = args.profile_calls or 200
    args.rounds = args.rounds or 4
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_before = _loadavg()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-", dir=args.keep))
    if args.strategies_only:
        try:
            n = 5000 if 5000 in args.sizes else max(args.sizes)
            strategies = render_strategies(run_strategy_comparison(tmp, n, args))
        finally:
            if args.keep is None:
                shutil.rmtree(tmp, ignore_errors=True)
        print(strategies)
        if not args.no_readme:
            report.replace_section(args.readme, "load_aware_latency", strategies)
        return 0
    try:
        catalog = fleets.write_catalog(tmp / "catalog.json")
        runs: list[FleetRun] = []
        profiles: list[Profile] = []
        sizes = sorted(args.sizes)
        profile_at = 5000 if 5000 in sizes else sizes[-1]
        for i, n in enumerate(sizes):
            print(f"fleet {n} nodes x {args.pods_per_node} pods", flush=True)
            fleet = build_fleet(
                tmp, n, args.pods_per_node, n <= args.full_nodes_up_to, args.seed + 10 * i
            )
            runs.append(run_fleet(tmp, fleet, catalog, args))
            if n == profile_at:
                profiles = profile(fleet, catalog, args.profile_calls)
            if n != sizes[-1]:
                fleet.snapshot.unlink()
        n = sizes[0]
        print(f"fleet {n} nodes, {args.pods_per_node} vs {10 * args.pods_per_node} pods/node")
        pods = run_pods_comparison(tmp, n, catalog, args)
        n = 5000 if 5000 in sizes else sizes[-1]
        print(f"fleet {n} nodes, balanced vs loadAware")
        strategies = render_strategies(run_strategy_comparison(tmp, n, args))
        text = render(runs, pods, profiles, args, time.monotonic() - started)
        closing = summary(runs, pods)
        plot(runs, args.out / "extender_latency.png")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(text)
    print(closing)
    if not args.no_readme:
        report.replace_section(args.readme, "extender_latency", text)
        report.replace_section(args.readme, "extender_latency_summary", closing)
        report.replace_section(args.readme, "load_aware_latency", strategies)
    print(strategies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
