"""Latency and throughput of ``machine-catalog serve`` as deployed, side by side with a floor.

One command (``python benchmarks/extender_latency.py``; ``--quick`` for a smoke run):

1. generates seeded fleets (1,000 / 5,000 / 15,000 EKS-shaped nodes of three families,
   ~10 ReplicaSet pods per node, plus 1,000 nodes with 10x the pods) and loads each into
   the loopback fake API server (:mod:`benchmarks.watch_feed`), which pushes pod and node
   events at a stated rate for as long as the requests are timed;
2. starts ``machine-catalog serve --kubeconfig ... --catalog ... --certfile ... --keyfile
   ...`` as a user would (the installed console script, TLS with a certificate from
   :mod:`machine_catalog.certs`, the cache fed by list + watch), and the floor
   (:mod:`benchmarks.floor_app`: the same gunicorn options, TLS and worker memory
   settings, only ``orjson.loads`` of the body and a prebuilt answer of the same size),
   plus the floor over plain HTTP for the cost of TLS;
3. drives ``/scheduler/filter`` and ``/scheduler/prioritize`` with as many ``NodeNames``
   as kube-scheduler sends (:func:`names_sent`: its ``numFeasibleNodesToFind`` with the
   default adaptive ``percentageOfNodesToScore``, and with 100), with the whole fleet, and
   with full ``Nodes`` at 1,000 and 5,000, plus ``/webhook/mutate``; every request takes
   the next body of a seeded pool of different ones (random subsets of the pod's family,
   in random order; different pods for the webhook); over keep-alive HTTPS connections
   that verify the server against the CA, from 1 and from 4 client processes; every
   call's latency is recorded on the client side, in alternating rounds per server;
4. gives a 95% bootstrap interval for every ratio and every p99 (resampling the rounds,
   paired between servers: :func:`round_interval`), reads the RSS of the gunicorn
   workers, profiles the hot path in-process, and rewrites its section of
   ``benchmarks/README.md`` and ``benchmarks/results/extender_latency.png``.

Clients run in separate processes so that the load generator's own GIL does not cap the
4-client numbers; on a 2-core machine they still share the CPUs with the servers and the
fake API server, which the README states next to the numbers.
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
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson

from benchmarks import fleets, report
from benchmarks.floor_app import response_key
from benchmarks.watch_feed import Churn, Feed
from machine_catalog import certs

BENCH_DIR = Path(__file__).resolve().parent
READY_TIMEOUT = 600.0  # seconds for a server to list a 150,000-pod fleet from the fake
CALL_TIMEOUT = 60.0
#: Bytes of request bodies per case (the pool of different bodies a case cycles through).
POOL_BYTES = 16_000_000
POOL_MAX = 256
POOL_MIN = 2
#: Bodies above this are "heavy": fewer calls and rounds (full Nodes of a whole fleet).
HEAVY_BYTES = 5_000_000
BOOTSTRAP_REPS = 1000


# -- what kube-scheduler sends ----------------------------------------------------------------

#: kube-scheduler's constants (pkg/scheduler/schedule_one.go).
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5


def num_feasible_nodes_to_find(num_all_nodes: int, percentage: int = 0) -> int:
    """kube-scheduler's ``numFeasibleNodesToFind``: how many feasible nodes it looks for.

    Under 100 nodes, all of them. Otherwise ``percentage`` (``percentageOfNodesToScore``;
    0 = the default, adaptive: ``50 - nodes/125``, at least 5) of the nodes, at least 100.
    Integer arithmetic as in Go (int32, truncating division).
    """
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    if percentage == 0:
        percentage = 50 - num_all_nodes // 125
        percentage = max(percentage, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def names_sent(num_all_nodes: int, feasible: int, percentage: int = 0) -> int:
    """Names in the extender's request: the feasible nodes kube-scheduler found, capped.

    ``findNodesThatPassFilters`` stops once it has found ``numFeasibleNodesToFind`` of all
    the nodes (its own filters, NodeAffinity to the pod's pinned family among them, run
    before the extender), and ``findNodesThatPassExtenders`` sends what it found.
    """
    return min(feasible, num_feasible_nodes_to_find(num_all_nodes, percentage))


# -- fleets and request bodies ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One kind of call: a route and a pool of bodies, under a name the floor answers by."""

    name: str  # e.g. "filter/names-default"
    route: str
    bodies: tuple[bytes, ...]  # every call takes the next one
    verb: str  # filter | prioritize | webhook
    shape: str  # "NodeNames 500", "Nodes 5,000", "AdmissionReview"
    names: int  # nodes named in each request (0 for the webhook)
    note: str = ""  # why this many names
    clients: tuple[int, ...] = (1,)  # concurrency levels to measure
    plain: bool = False  # also against the floor over plain HTTP (the cost of TLS)

    def url(self, index: int) -> str:
        return f"{self.route}?case={self.name}&i={index}"

    @property
    def body_bytes(self) -> int:
        return len(self.bodies[0])


@dataclass(slots=True)
class Fleet:
    nodes: int
    pods: int
    cases: list[Case]


def pool_size(body_bytes: int) -> int:
    return max(POOL_MIN, min(POOL_MAX, POOL_BYTES // max(body_bytes, 1)))


def build_fleet(
    n_nodes: int, pods_per_node: int, full_nodes: bool, seed: int, *, lean: bool = False
) -> tuple[Fleet, list[dict[str, Any]], list[dict[str, Any]]]:
    """The nodes and pods of a fleet, and the request bodies for it.

    ``lean``: only the default-size calls and the webhook (the pods-vs-latency comparison).
    """
    nodes = fleets.make_nodes(n_nodes, seed=seed)
    pods = fleets.make_pods(nodes, pods_per_node, seed=seed + 1)
    rng = random.Random(seed + 2)
    pod = fleets.pending_pod(seed=seed + 3, normalized=True)  # pinned to m5, asks 500m
    m5 = [n for n in nodes if n["metadata"]["labels"][fleets.INSTANCE_TYPE_LABEL].startswith("m5.")]
    # kube-scheduler's own filters (NodeAffinity: the webhook's pin) run before the
    # extender, so a request names nodes of the pod's family only, as many as
    # numFeasibleNodesToFind of the whole fleet: the default (adaptive) percentage, or all
    # of them with percentageOfNodesToScore 100. "all" sends every node of the fleet, two
    # thirds of another family: the extender's worst case, not a request it gets.
    default_k = names_sent(n_nodes, len(m5))
    busy = (1,) if lean else (1, 4)
    cases: list[Case] = []

    def add(verb: str, tag: str, pick: Callable[[], list[dict[str, Any]]], full: bool, **kw: Any):
        first = pick()
        size = len(fleets.extender_args(pod, first, full=full))
        bodies = [fleets.extender_args(pod, first, full=full)]
        bodies += [fleets.extender_args(pod, pick(), full=full) for _ in range(pool_size(size) - 1)]
        shape = f"{'Nodes' if full else 'NodeNames'} {len(first):,}"
        cases.append(
            Case(
                f"{verb}/{tag}", f"/scheduler/{verb}", tuple(bodies), verb, shape, len(first), **kw
            )
        )

    def sample(k: int) -> Callable[[], list[dict[str, Any]]]:
        return lambda: rng.sample(m5, k)

    def shuffled(population: list[dict[str, Any]]) -> Callable[[], list[dict[str, Any]]]:
        return lambda: rng.sample(population, len(population))

    default_note = f"default percentageOfNodesToScore: {names_note(n_nodes, len(m5))}"
    for verb in ("filter", "prioritize"):
        add(
            verb,
            "names-default",
            sample(default_k),
            False,
            note=default_note,
            clients=busy,
            plain=not lean,
        )
        if not lean:
            if len(m5) != default_k:
                add(
                    verb,
                    "names-family",
                    shuffled(m5),
                    False,
                    plain=True,
                    note="percentageOfNodesToScore 100: all of the pod's family",
                )
            add(
                verb,
                "names-all",
                shuffled(nodes),
                False,
                plain=True,
                note="whole fleet, 3 families: worst case",
            )
    reviews = tuple(fleets.admission_review(seed=seed + 4 + i) for i in range(64))
    cases.append(
        Case(
            "webhook",
            "/webhook/mutate",
            reviews,
            "webhook",
            "AdmissionReview",
            0,
            note="64 different pods",
            clients=busy,
            plain=not lean,
        )
    )
    if full_nodes and not lean:
        for verb in ("filter", "prioritize"):
            add(verb, "nodes-default", sample(default_k), True, note=default_note)
            add(verb, "nodes-all", shuffled(nodes), True, note="whole fleet")
    return Fleet(n_nodes, len(pods), cases), nodes, pods


def names_note(n_nodes: int, family: int) -> str:
    """How :func:`names_sent` got its count, for the tables."""
    if n_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return f"fewer than {MIN_FEASIBLE_NODES_TO_FIND} nodes: all feasible, {family:,}"
    k = num_feasible_nodes_to_find(n_nodes)
    pct = max(50 - n_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    found = f"{pct}% of {n_nodes:,} = {k:,}"
    return found if k <= family else f"{found}, the family has {family:,}"


# -- catalog and strategy variants -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """A catalog the project is served with. The first is "project" (every case); each
    further one runs its own ``serve`` on the same fleet and is measured on the
    default-size filter and prioritize calls against the same floor.

    ``hot_share`` (``loadAware`` only): the variant's ``serve`` also reads a NodeMetricsList
    of every node (``--node-metrics``), usage uniform in 30-75% of allocatable and this
    share of the nodes at 85-95% (hot spots the filter rejects, with a reason each)."""

    name: str
    strategy: str  # spec.scoring.strategy of the benchmark catalog
    hot_share: float | None = None

    def write_catalog(self, directory: Path) -> Path:
        path = fleets.write_catalog(directory / f"catalog-{self.name}.json", self.strategy)
        if self.hot_share is not None:
            # The metrics file is written once; samples must not age into the fallback
            # (maxSampleAgeSeconds, 180 s by default) while a large fleet is measured.
            doc = orjson.loads(path.read_bytes())
            doc["spec"]["scoring"]["maxSampleAgeSeconds"] = 86400
            path.write_bytes(orjson.dumps(doc))
        return path

    def serve_args(self, directory: Path, nodes: Sequence[dict[str, Any]], seed: int) -> list[str]:
        if self.hot_share is None:
            return []
        path = directory / f"node-metrics-{self.name}-{len(nodes)}.json"
        write_node_metrics(path, nodes, seed, self.hot_share)
        return ["--node-metrics", str(path)]


VARIANTS: tuple[Variant, ...] = (
    Variant("balanced", "balanced"),
    Variant("loadAware", "loadAware", hot_share=0.0),
    Variant("loadAware-5%-hot", "loadAware", hot_share=0.05),
)


def write_node_metrics(
    path: Path, nodes: Sequence[dict[str, Any]], seed: int, hot_share: float
) -> int:
    """A NodeMetricsList for ``nodes``, stamped now; returns how many are hot."""
    from datetime import UTC, datetime

    rng = random.Random(seed)
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
    tls: bool

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


@dataclass(frozen=True, slots=True)
class Tls:
    """A CA and a serving certificate for 127.0.0.1 (what ``serve`` gets in a cluster)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> Tls:
        ca = certs.make_ca("machine-catalog-bench-ca")
        pair = certs.issue_serving_cert(
            ca.cert_pem, ca.key_pem, ["localhost"], ip_addresses=["127.0.0.1"], days=2
        )
        paths = cls(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
        paths.ca.write_bytes(ca.cert_pem)
        paths.cert.write_bytes(pair.cert_pem)
        paths.key.write_bytes(pair.key_pem)
        paths.key.chmod(0o600)
        return paths

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server against the CA, as kube-scheduler's ``tlsConfig.caFile``."""
        return ssl.create_default_context(cafile=str(self.ca))


def start(name: str, argv: list[str], port: int, log: Path, tls: bool) -> Server:
    handle = log.open("wb")
    process = subprocess.Popen(
        argv,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: cleanup never touches anything else
    )
    handle.close()
    return Server(name, port, process, log, tls)


def connect(
    port: int, tls: Tls | None, timeout: float = CALL_TIMEOUT
) -> http.client.HTTPConnection:
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=tls.client_context()
        )
    conn.connect()
    # Go's net/http (kube-scheduler) disables Nagle on every connection; so do we.
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def wait_ready(server: Server, tls: Tls | None, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n"
                + server.log.read_text()[-3000:]
            )
        try:
            conn = connect(server.port, tls if server.tls else None, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log.read_text()}")


def wait_synced(server: Server, workers: int, timeout: float = READY_TIMEOUT) -> None:
    """Until every worker logged that its cache listed the whole fleet from the API."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log.read_text(errors="replace").count("cluster cache synced:") >= workers:
            return
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: not all {workers} workers synced after {timeout:.0f}s")


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


def serve_project(
    tmp: Path,
    name: str,
    kubeconfig: Path,
    catalog: Path,
    tls: Tls,
    args: argparse.Namespace,
    extra: Sequence[str] = (),
) -> Server:
    port = free_port()
    exe = Path(sys.executable).with_name("machine-catalog")
    argv = [
        str(exe) if exe.exists() else "machine-catalog",
        "serve",
        "--kubeconfig",
        str(kubeconfig),
        "--catalog",
        str(catalog),
        "--bind",
        f"127.0.0.1:{port}",
        "--certfile",
        str(tls.cert),
        "--keyfile",
        str(tls.key),
        "--threads",
        str(args.threads),
        "--log-level",
        "info",  # for the "cluster cache synced" lines (no access log)
        *extra,
    ]
    return start(
        name,
        argv,
        port,
        tmp / f"{name.replace(':', '-').replace('/', '-').replace(' ', '-')}.log",
        tls=True,
    )


def serve_floor(
    tmp: Path, name: str, responses: Path, tls: Tls | None, args: argparse.Namespace
) -> Server:
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
    if tls is not None:
        argv += ["--certfile", str(tls.cert), "--keyfile", str(tls.key)]
    return start(name, argv, port, tmp / f"{name}.log", tls=tls is not None)


# -- clients ----------------------------------------------------------------------------------


def call(conn: http.client.HTTPConnection, url: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", url, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


#: port, TLS?, case index, start_at, stop_at, min_calls
Command = tuple[int, bool, int, float, float, int]


def _client_loop(pipe: Any, cases: Sequence[Case], tls: Tls, client_id: int) -> None:
    """A client process: one keep-alive connection per server, runs on command.

    Connection set-up (the TLS handshake) and two untimed calls happen once per server and
    case, before the round's start time; kube-scheduler keeps its connections open the
    same way. Each call takes the case's next body (every client starts at its own place
    in the pool). Latencies go back in nanoseconds.
    """
    conns: dict[int, http.client.HTTPConnection] = {}
    warmed: set[tuple[int, int]] = set()
    cursor = {i: client_id * len(c.bodies) // 4 for i, c in enumerate(cases)}
    while True:
        command: Command | None = pipe.recv()
        if command is None:
            break
        port, secure, index, start_at, stop_at, min_calls = command
        case = cases[index]
        n = len(case.bodies)
        conn = conns.get(port)
        if conn is None:
            conn = conns[port] = connect(port, tls if secure else None)
        if (port, index) not in warmed:
            for k in range(2):
                call(conn, case.url(k % n), case.bodies[k % n])
            warmed.add((port, index))
        while time.monotonic() < start_at:
            time.sleep(0.0002)
        latencies: list[int] = []
        errors = 0
        hard_stop = stop_at + 4 * (stop_at - start_at) + 5
        begin = time.monotonic()
        i = cursor[index]
        while True:
            now = time.monotonic()
            if now >= hard_stop or (now >= stop_at and len(latencies) >= min_calls):
                break
            j = i % n
            t0 = time.perf_counter_ns()
            status, _ = call(conn, case.url(j), case.bodies[j])
            latencies.append(time.perf_counter_ns() - t0)
            errors += status != 200
            i += 1
        cursor[index] = i
        pipe.send((latencies, errors, begin, time.monotonic()))
    for conn in conns.values():
        conn.close()


@dataclass(slots=True)
class Sample:
    """Latencies of one case on one server at one concurrency, round by round."""

    rounds: list[np.ndarray] = field(default_factory=list)  # ms, one array per round
    wall: float = 0.0  # seconds the rounds took, summed
    errors: int = 0

    @property
    def latencies_ms(self) -> np.ndarray:
        return np.concatenate(self.rounds) if self.rounds else np.zeros(0)

    @property
    def calls(self) -> int:
        return sum(len(r) for r in self.rounds)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall if self.wall > 0 else 0.0

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


def round_interval(
    samples: Sequence[Sample],
    statistic: Callable[..., float],
    *,
    paired: bool = True,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% bootstrap interval of ``statistic(*latency arrays)``, resampling whole rounds.

    Each resample draws the rounds with replacement and pools their calls. ``paired``:
    the same round indices for every sample, for servers measured back to back in each
    round, so a burst of background load moves numerator and denominator together, as it
    did in the measurement. Resampling rounds rather than single calls keeps the
    round-to-round drift of a shared machine in the interval; calls within a round are
    not independent, and an interval over calls would be too narrow.
    """
    rng = np.random.default_rng(seed)
    counts = [len(s.rounds) for s in samples]
    if min(counts) == 0:
        return (float("nan"), float("nan"))
    values = np.empty(reps)
    for b in range(reps):
        if paired and len(set(counts)) == 1:
            picks = rng.integers(0, counts[0], counts[0])
            arrays = [np.concatenate([s.rounds[i] for i in picks]) for s in samples]
        else:
            arrays = [
                np.concatenate([s.rounds[i] for i in rng.integers(0, len(s.rounds), len(s.rounds))])
                for s in samples
            ]
        values[b] = statistic(*arrays)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def median_ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median(a) / np.median(b))


def p99(a: np.ndarray) -> float:
    return float(np.percentile(a, 99))


def pods_per_s(f: np.ndarray, p: np.ndarray) -> float:
    """1 / (p50 filter + p50 prioritize): one scheduler's serial cycle, extender only."""
    return float(1000 / (np.median(f) + np.median(p)))


class ClientPool:
    """Client processes forked once per fleet (they inherit the request bodies)."""

    def __init__(self, cases: Sequence[Case], size: int, tls: Tls) -> None:
        ctx = mp.get_context("fork")
        self.pipes = []
        self.procs = []
        for client_id in range(size):
            here, there = ctx.Pipe()
            proc = ctx.Process(
                target=_client_loop, args=(there, cases, tls, client_id), daemon=True
            )
            proc.start()
            there.close()
            self.pipes.append(here)
            self.procs.append(proc)

    def run(
        self,
        server: Server,
        index: int,
        clients: int,
        duration: float,
        min_calls: int,
        into: Sample,
    ) -> None:
        """``clients`` processes call case ``index`` for ``duration`` s: one round of ``into``."""
        start_at = time.monotonic() + 0.01
        stop_at = start_at + duration
        each = max(1, min_calls // clients)
        for pipe in self.pipes[:clients]:
            pipe.send((server.port, server.tls, index, start_at, stop_at, each))
        begins, ends, latencies = [], [], []
        for pipe in self.pipes[:clients]:
            lat, errors, begin, end = pipe.recv()
            latencies += lat
            into.errors += errors
            begins.append(begin)
            ends.append(end)
        into.rounds.append(np.array(latencies, dtype=np.float64) / 1e6)
        into.wall += max(ends) - min(begins)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=30)


@dataclass(slots=True)
class Result:
    case: Case
    #: server name ("project", "floor", "floor-http", "variant:NAME", or a fleet label)
    #: -> clients -> sample
    samples: dict[str, dict[int, Sample]] = field(default_factory=dict)
    response_bytes: int = 0

    @property
    def project(self) -> dict[int, Sample]:
        return self.samples.get("project", {})

    @property
    def floor(self) -> dict[int, Sample]:
        return self.samples.get("floor", {})

    def ratio(self, name: str = "project", to: str = "floor") -> tuple[float, float, float]:
        """p50 of ``name`` / p50 of ``to`` (1 client), with its 95% interval."""
        a, b = self.samples[name][1], self.samples[to][1]
        low, high = round_interval([a, b], median_ratio)
        return a.p(50) / b.p(50), low, high


def measure(
    pool: ClientPool,
    servers_for: Callable[[Case, int], list[Server]],
    cases: Sequence[Case],
    args: argparse.Namespace,
    on_case: Any = None,
) -> list[Result]:
    """Every case on its servers, interleaved in rounds so that drift hits all alike.

    Each round runs the servers in turn (alternating the order) for ``duration / rounds``
    seconds each: a burst of background load then lands on all of them, not on one.
    """
    results = []
    for index, case in enumerate(cases):
        result = Result(case)
        heavy = case.body_bytes > HEAVY_BYTES
        min_calls = 4 if heavy else args.min_calls
        duration = args.duration / 2 if heavy else args.duration
        rounds = min(2, args.rounds) if heavy else args.rounds
        for clients in case.clients:
            servers = servers_for(case, clients)
            for server in servers:
                result.samples.setdefault(server.name, {})[clients] = Sample()
            for r in range(rounds):
                for server in servers if r % 2 == 0 else servers[::-1]:
                    sample = result.samples[server.name][clients]
                    calls = max(1, min_calls // rounds)
                    pool.run(server, index, clients, duration / rounds, calls, sample)
        if on_case is not None:
            on_case(result)
        results.append(result)
    return results


# -- one fleet ------------------------------------------------------------------------------


@dataclass(slots=True)
class FleetRun:
    fleet: Fleet
    results: list[Result]
    rss_mb: list[float]  # after the run
    boot_s: float
    boot_rss_mb: list[float] = field(default_factory=list)  # once every worker has synced
    feed: dict[str, float] = field(default_factory=dict)  # events the fake pushed


def record_responses(server: Server, fleet: Fleet, tls: Tls, path: Path) -> dict[str, int]:
    """Ask the project once per body; the floor will answer each with the same bytes."""
    conn = connect(server.port, tls)
    answers: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for case in fleet.cases:
        for i, body in enumerate(case.bodies):
            status, answer = call(conn, case.url(i), body)
            if status != 200:
                raise RuntimeError(f"{case.name}: HTTP {status}: {answer[:500]!r}")
            answers[response_key(case.name, i)] = answer.decode()
            sizes.setdefault(case.name, len(answer))
    conn.close()
    path.write_bytes(orjson.dumps(answers))
    return sizes


def run_fleet(
    tmp: Path,
    n_nodes: int,
    seed: int,
    catalogs: list[tuple[Variant, Path]],
    tls: Tls,
    args: argparse.Namespace,
    *,
    profiled: bool,
) -> tuple[FleetRun, list[Profile]]:
    fleet, nodes, pods = build_fleet(
        n_nodes, args.pods_per_node, n_nodes <= args.full_nodes_up_to, seed
    )
    feed = Feed(nodes, pods, args.churn, seed=seed + 5)
    extra_args = [v.serve_args(tmp, nodes, seed + 8) for v, _ in catalogs]
    del nodes, pods
    kubeconfig = feed.write_kubeconfig(tmp / f"kubeconfig-{n_nodes}")
    profiles: list[Profile] = []
    try:
        t0 = time.monotonic()
        (_, catalog), *others = catalogs
        project = serve_project(tmp, "project", kubeconfig, catalog, tls, args, extra_args[0])
        extras = [
            serve_project(tmp, f"variant:{v.name}", kubeconfig, path, tls, args, more)
            for (v, path), more in zip(others, extra_args[1:], strict=True)
        ]
        servers = [project, *extras]
        with running(servers):
            wait_synced(project, 1)
            wait_ready(project, tls)
            boot = time.monotonic() - t0
            boot_rss = project.worker_rss_mb()
            for extra in extras:
                wait_synced(extra, 1)
                wait_ready(extra, tls)
            feed.start_churn()
            responses = tmp / f"responses-{fleet.nodes}.json"
            sizes = record_responses(project, fleet, tls, responses)
            floor = serve_floor(tmp, "floor", responses, tls, args)
            floor_http = serve_floor(tmp, "floor-http", responses, None, args)
            servers += [floor, floor_http]
            wait_ready(floor, tls, timeout=60)
            wait_ready(floor_http, tls, timeout=60)

            def servers_for(case: Case, clients: int) -> list[Server]:
                chosen = [project]
                if clients == 1 and case.name.endswith("/names-default"):
                    chosen += extras
                chosen.append(floor)
                if clients == 1 and case.plain:
                    chosen.append(floor_http)
                return chosen

            pool = ClientPool(
                fleet.cases, max(c for case in fleet.cases for c in case.clients), tls
            )
            try:
                results = measure(
                    pool, servers_for, fleet.cases, args, on_case=lambda r: _progress(fleet, r)
                )
            finally:
                pool.close()
            for r in results:
                r.response_bytes = sizes[r.case.name]
            rss = project.worker_rss_mb()
        if profiled:
            profiles = profile(fleet, kubeconfig, catalog, args.profile_calls)
    finally:
        stats = feed.stop()
    return FleetRun(fleet, results, rss, boot, boot_rss, stats), profiles


@dataclass(slots=True)
class PodsRun:
    """The same nodes with ``pods_per_node`` and 10x as many pods, measured side by side."""

    fleets: list[Fleet]
    results: list[Result]
    rss_mb: dict[str, list[float]]


def pods_label(ppn: int) -> str:
    return f"{ppn} pods/node"


def run_pods_comparison(
    tmp: Path, n_nodes: int, catalog: Path, tls: Tls, args: argparse.Namespace
) -> PodsRun:
    feeds: list[Feed] = []
    fleets_: list[Fleet] = []
    servers: list[Server] = []
    try:
        for ppn in (args.pods_per_node, 10 * args.pods_per_node):
            fleet, nodes, pods = build_fleet(n_nodes, ppn, False, args.seed, lean=True)
            feeds.append(Feed(nodes, pods, args.churn, seed=args.seed + ppn))
            del nodes, pods
            fleets_.append(fleet)
            kubeconfig = feeds[-1].write_kubeconfig(tmp / f"kubeconfig-pods-{ppn}")
            servers.append(serve_project(tmp, pods_label(ppn), kubeconfig, catalog, tls, args))
        with running(servers):
            for server in servers:
                wait_synced(server, 1)
                wait_ready(server, tls)
            for feed in feeds:
                feed.start_churn()
            cases = fleets_[0].cases  # same nodes and pod -> identical bodies
            pool = ClientPool(cases, 1, tls)
            try:
                results = measure(pool, lambda case, clients: servers, cases, args)
            finally:
                pool.close()
            rss = {server.name: server.worker_rss_mb() for server in servers}
    finally:
        for feed in feeds:
            feed.stop()
    for r in results:
        line = "  ".join(
            f"{name}: p50 {by[1].p(50):.2f} ms p99 {by[1].p(99):.2f} ms"
            for name, by in r.samples.items()
        )
        print(f"  {n_nodes:>6} nodes {r.case.name:<22} {line}", flush=True)
    return PodsRun(fleets_, results, rss)


def _progress(fleet: Fleet, r: Result) -> None:
    s = r.project[1]
    floor = f" floor p50 {r.floor[1].p(50):.2f} ms" if r.floor else ""
    plain = (
        f" http floor p50 {r.samples['floor-http'][1].p(50):.2f}"
        if "floor-http" in r.samples
        else ""
    )
    print(
        f"  {fleet.nodes:>6} nodes {r.case.name:<24} p50 {s.p(50):7.2f} ms  p99 {s.p(99):7.2f} ms"
        f"  n={s.calls}{floor}{plain}",
        flush=True,
    )


# -- profile --------------------------------------------------------------------------------


#: Functions whose cumulative time makes up a request, by layer: (file suffix, function, label).
LAYERS = (
    ("extender/server/metrics.py", "wsgi_app", "whole app (WSGI call)"),
    (
        "extender/scheduler/wire.py",
        "decode_extender_args",
        "decode ExtenderArgs (orjson + shape checks)",
    ),
    (
        "extender/scheduler/filtering.py",
        "complete_view",
        "judge nodes the cache lacks (full Nodes)",
    ),
    ("extender/state/cluster.py", "view", "cache view (name -> slot, array gathers)"),
    ("extender/scheduler/filtering.py", "filter_nodes", "filter verdicts + reasons"),
    ("extender/scheduler/scoring.py", "node_scores", "scores"),
    ("extender/scheduler/wire.py", "encode_filter_result", "encode filter answer"),
    ("extender/scheduler/wire.py", "encode_host_priorities", "encode priorities"),
    ("extender/admission/webhook.py", "decode_review", "decode AdmissionReview"),
    ("extender/admission/webhook.py", "admit", "webhook decision + patch"),
    ("extender/admission/webhook.py", "encode_response", "encode AdmissionReview"),
)

Profile = tuple[str, float, list[tuple[str, float]]]


def profile(fleet: Fleet, kubeconfig: Path, catalog: Path, calls: int) -> list[Profile]:
    """cProfile of the app in-process (Flask's test client): where a request's time goes.

    The runtime is fed by the same fake API server (churning) as the servers were. For
    each NodeNames case and the webhook: the app's time per call and the cumulative time
    of the layers in :data:`LAYERS` (profiler overhead inflates call-heavy code).
    """
    from extender.server.app import create_app
    from extender.server.serve import ServeConfig, build_runtime, shutdown_runtime

    runtime = build_runtime(ServeConfig(kubeconfig=str(kubeconfig), catalog=str(catalog)))
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not runtime.cluster.synced and time.monotonic() < deadline:
            time.sleep(0.1)
        client = create_app(runtime).test_client()
        out: list[Profile] = []
        for case in fleet.cases:
            if "nodes-" in case.name:
                continue
            n = len(case.bodies)
            for i in range(3):
                client.post(
                    case.url(i % n), data=case.bodies[i % n], content_type="application/json"
                )
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(calls):
                client.post(
                    case.url(i % n), data=case.bodies[i % n], content_type="application/json"
                )
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
    finally:
        shutdown_runtime(runtime)


# -- report -----------------------------------------------------------------------------------


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


def _ci(value: float, low: float, high: float, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"


def _describe(case: Case) -> str:
    return f"{case.shape} ({case.note})" if case.note else case.shape


def render(
    runs: list[FleetRun],
    pods: PodsRun | None,
    profiles: list[Profile],
    args: argparse.Namespace,
    seconds: float,
) -> str:
    rows = []
    for run in runs:
        for r in run.results:
            s1, s4 = r.project[1], r.project.get(4)
            f1, f4 = r.floor.get(1), r.floor.get(4)
            rows.append(
                [
                    f"{run.fleet.nodes:,}",
                    r.case.verb,
                    _describe(r.case),
                    f"{_size(r.case.body_bytes)} / {_size(r.response_bytes)} "
                    f"(x{len(r.case.bodies)})",
                    f"{_ms(s1.p(50))} / {_ms(s1.p(95))} / {_ms(s1.p(99))}",
                    f"{s1.calls_per_s:,.0f}",
                    f"{_ms(s4.p(50))} / {_ms(s4.p(99))}" if s4 else "",
                    f"{s4.calls_per_s:,.0f}" if s4 else "",
                    f"{_ms(f1.p(50))} / {_ms(f1.p(99))}" if f1 else "",
                    f"{f4.calls_per_s:,.0f}" if f4 else "",
                    f"**{_ci(*r.ratio())}**" if f1 else "",
                ]
            )
    header = [
        "nodes",
        "call",
        "request",
        "body in / out (pool)",
        "p50 / p95 / p99 ms (1 client)",
        "calls/s (1)",
        "p50 / p99 ms (4 clients)",
        "calls/s (4)",
        "floor p50 / p99 ms (1)",
        "floor calls/s (4)",
        "p50 / floor [95% CI]",
    ]

    tls_rows = []
    for run in runs:
        for r in run.results:
            if "floor-http" not in r.samples:
                continue
            tls_s, plain = r.floor[1], r.samples["floor-http"][1]
            diff_lo, diff_hi = round_interval(
                [tls_s, plain], lambda a, b: float(np.median(a) - np.median(b))
            )
            tls_rows.append(
                [
                    f"{run.fleet.nodes:,}",
                    r.case.verb,
                    r.case.shape,
                    f"{_size(r.case.body_bytes)} / {_size(r.response_bytes)}",
                    f"{_ms(plain.p(50))} / {_ms(plain.p(99))}",
                    f"{_ms(tls_s.p(50))} / {_ms(tls_s.p(99))}",
                    _ci(tls_s.p(50) - plain.p(50), diff_lo, diff_hi, "{:+.2f}"),
                    _ci(*r.ratio("floor", "floor-http")),
                ]
            )

    variant_rows = []
    for run in runs:
        for r in run.results:
            if not r.case.name.endswith("/names-default") or not r.floor:
                continue
            for name in r.samples:
                if name == "project" or name.startswith("variant:"):
                    label = args.variants[0].name if name == "project" else name.split(":", 1)[1]
                    s = r.samples[name][1]
                    variant_rows.append(
                        [
                            label,
                            f"{run.fleet.nodes:,}",
                            r.case.verb,
                            r.case.shape,
                            f"{_ms(s.p(50))} / {_ms(s.p(99))}",
                            _ci(*r.ratio(name, "floor")),
                        ]
                    )

    checks = targets(runs, pods)
    check_rows = [[what, got, goal, met] for what, got, goal, met in checks]

    pods_rows = []
    pods_header = ["call"]
    if pods is not None and pods.results:
        names = list(pods.results[0].samples)
        pods_header += [f"{n}: p50 / p99 ms" for n in names] + ["p50 ratio [95% CI]"]
        for r in pods.results:
            by = [r.samples[n][1] for n in names]
            pods_rows.append(
                [r.case.name]
                + [f"{_ms(s.p(50))} / {_ms(s.p(99))}" for s in by]
                + [_ci(*r.ratio(names[-1], names[0]))]
            )
    mem_rows = [
        [
            f"{run.fleet.nodes:,}",
            f"{run.fleet.pods:,}",
            f"{run.boot_s:.1f} s",
            " / ".join(f"{x:.0f}" for x in sorted(run.boot_rss_mb)),
            " / ".join(f"{x:.0f}" for x in sorted(run.rss_mb)),
        ]
        for run in runs
    ]
    if pods is not None:
        for f, rss in zip(pods.fleets, pods.rss_mb.values(), strict=False):
            mem_rows.append(
                [f"{f.nodes:,}", f"{f.pods:,}", "", "", " / ".join(f"{x:.0f}" for x in sorted(rss))]
            )
    feed_lines = ", ".join(
        f"{run.fleet.nodes:,} nodes: {run.feed.get('pod_events', 0):,.0f} pod + "
        f"{run.feed.get('node_events', 0):,.0f} node events in {run.feed.get('seconds', 0):.0f} s"
        f" ({run.feed.get('events_per_s', 0):.0f}/s)"
        for run in runs
    )
    churn: Churn = args.churn
    lines = [
        f"Run {report.stamp()} on {report.machine()}, load average {args.load_before} "
        f"before / {_loadavg()} after (the machine is shared with other work: the tails "
        f"and the absolute numbers are noisy, the paired ratios less so): "
        f"`python benchmarks/extender_latency.py{' --quick' if args.quick else ''}` "
        f"({seconds:.0f} s). Server: `machine-catalog serve --kubeconfig ... --certfile ... "
        f"--keyfile ... --threads {args.threads}` (one gunicorn worker; the floor "
        f"runs {args.workers}; "
        "gthread, TLS) on loopback, its cache fed by list + watch from the fake API server "
        f"while it pushed {churn.pod_events_per_s:g} pod events/s and every node's status "
        f"once per {churn.node_status_period_s:g} s ({feed_lines}). Each case runs "
        f"{args.duration:g} s per server and client count in {args.rounds} alternating "
        f"rounds (at least {args.min_calls} calls; 4 calls in 2 rounds for bodies over 5 MB). "
        "Clients are separate processes with one keep-alive HTTPS connection each, "
        "verifying the server against the CA, on the same 2 CPUs as the server: the "
        "4-client rows show saturation throughput, not unloaded latency. Latency is "
        "measured at the client, request sent to response read. Intervals: 95%, bootstrap "
        f"over rounds ({BOOTSTRAP_REPS} resamples, paired between servers).",
        "",
        report.table(header, rows),
        "",
        "Targets (met = the point estimate meets the goal; the interval is shown so a "
        "result on the line reads as one):",
        "",
        report.table(["target", "measured [95% CI]", "goal", "met"], check_rows),
        "",
        "What TLS costs: the floor over HTTPS against the same floor over plain HTTP, same "
        "bodies and answers, in the same rounds (1 client, keep-alive: no handshake per "
        "call). The project pays the same bytes, so the same cost:",
        "",
        report.table(
            [
                "nodes",
                "call",
                "request",
                "body in / out",
                "HTTP p50 / p99 ms",
                "HTTPS p50 / p99 ms",
                "TLS adds, p50 ms [95% CI]",
                "HTTPS / HTTP p50 [95% CI]",
            ],
            tls_rows,
        )
        if tls_rows
        else "(not run)",
        "",
        "Scoring strategies (catalog variants; each its own `serve` on the same fleet and "
        "watch, default-size calls, 1 client, against the same floor):",
        "",
        report.table(
            ["strategy", "nodes", "call", "request", "p50 / p99 ms", "p50 / floor [95% CI]"],
            variant_rows,
        ),
        "",
        "Latency against pods: the same nodes and requests with 10x the pods, both servers "
        "up at once, each fed by its own fake API server with the same churn, measured in "
        "alternating rounds (1 client):",
        "",
        report.table(pods_header, pods_rows) if pods_rows else "(not run)",
        "",
        "Memory and start-up (RSS of each gunicorn worker once every worker has listed the "
        "fleet, and after the run, whose full-`Nodes` requests parse up to 27 MB bodies; "
        "start-up = process start to every worker synced and ready, listing from the fake "
        "API server):",
        "",
        report.table(
            ["nodes", "pods", "start-up", "worker RSS MB, synced", "after the run"], mem_rows
        ),
        "",
        "![latency](results/extender_latency.png)",
        "",
        "Where the time goes (cProfile of the app in-process through Flask's test client, "
        f"fed by the same churning fake API server, {args.profile_calls} calls per case on "
        f"the {profile_fleet(runs)} fleet; cumulative time of each layer per call, profiler "
        "overhead included; the layers do not nest, the rest is the framework):",
        "",
    ]
    for title, whole, parts in profiles:
        if whole <= 0:
            continue
        shown = ", ".join(
            f"{label} {us:.0f} µs ({us / whole:.0%})" for label, us in parts if us >= 1
        )
        rest = max(whole - sum(us for _, us in parts), 0.0)
        lines.append(
            f"- {title}: app {whole:.0f} µs per call = {shown}; Flask/werkzeug + metrics "
            f"{rest:.0f} µs ({rest / whole:.0%})"
        )
    return "\n".join(lines)


def _get(run: FleetRun, name: str) -> Result | None:
    return next((r for r in run.results if r.case.name == name), None)


def summary(runs: list[FleetRun], pods: PodsRun | None) -> str:
    """The key ratios, for the README's closing note."""
    lines = []
    for run in runs:
        parts = []
        for name in ("filter/names-default", "prioritize/names-default", "webhook"):
            r = _get(run, name)
            if r and r.floor:
                s1 = r.project[1]
                parts.append(
                    f"{name.split('/')[0]} p50 {s1.p(50):.2f} ms = "
                    f"{_ci(*r.ratio())}x floor, p99 {s1.p(99):.2f} ms"
                )
        f, p = _get(run, "filter/names-default"), _get(run, "prioritize/names-default")
        rate = ""
        if f and p:
            a, b = f.project[1], p.project[1]
            lo, hi = round_interval([a, b], pods_per_s, paired=False)
            point = pods_per_s(a.latencies_ms, b.latencies_ms)
            rate = f"; one scheduler thread: {_ci(point, lo, hi, '{:,.0f}')} pods/s"
        lines.append(
            f"- {run.fleet.nodes:,} nodes, {f.case.shape if f else ''}: "
            + "; ".join(parts)
            + rate
            + "."
        )
    for verb in ("filter", "prioritize"):
        points = sorted(
            (r.case.names, r.project[1].p(50))
            for run in runs
            for r in run.results
            if r.case.verb == verb and r.case.name.endswith(("names-default", "names-family"))
        )
        worst = [
            (run.fleet.nodes, r)
            for run in runs
            if (r := _get(run, f"{verb}/names-all")) and r.floor
        ]
        if len(points) < 2:
            continue
        xs, ys = np.array(points, dtype=float).T
        slope, intercept = np.polyfit(xs, ys, 1)
        fleet_wide = "; ".join(
            f"{n:,} names {r.project[1].p(50):.2f} ms ({_ci(*r.ratio(), '{:.1f}')}x floor)"
            for n, r in worst
        )
        lines.append(
            f"- {verb} grows linearly with the names of the pod's family in the request: "
            f"p50 = {intercept:.2f} ms + {1000 * slope:.2f} µs per name ({len(points)} "
            f"requests of {int(xs.min()):,} to {int(xs.max()):,} names). Whole fleet, two "
            f"thirds of another family: {fleet_wide}."
        )
    for run in runs:
        plain = [r for r in run.results if "floor-http" in r.samples and r.case.names <= 1000]
        if plain:
            text = ", ".join(
                f"{r.case.name} {r.floor[1].p(50) - r.samples['floor-http'][1].p(50):+.2f} ms"
                f" ({_ci(*r.ratio('floor', 'floor-http'))}x)"
                for r in plain
            )
            lines.append(f"- TLS on keep-alive connections, {run.fleet.nodes:,} nodes: {text}.")
            break
    if pods is not None and pods.results:
        names = list(pods.results[0].samples)
        ratios = ", ".join(
            f"{r.case.name} {_ci(*r.ratio(names[-1], names[0]))}x" for r in pods.results
        )
        small, big = pods.fleets[0], pods.fleets[-1]
        lines.append(
            f"- 10x the pods ({small.pods:,} -> {big.pods:,}) on {small.nodes:,} nodes, "
            f"p50 ratio [95% CI]: {ratios}."
        )
    for run in runs:
        if 45_000 <= run.fleet.pods <= 55_000 and run.boot_rss_mb:
            lines.append(
                f"- Worker RSS with {run.fleet.pods:,} pods cached (fed by the watch): "
                f"{max(run.boot_rss_mb):.0f} MB once synced, {max(run.rss_mb):.0f} MB after "
                "the run."
            )
    return "\n".join(lines)


def profile_fleet(runs: list[FleetRun]) -> str:
    sizes = sorted({r.fleet.nodes for r in runs})
    return f"{(5000 if 5000 in sizes else sizes[-1]):,}-node"


def _met(value: float, low: float, high: float, goal: float, below: bool) -> str:
    ok = value < goal if below else value > goal
    crosses = low < goal < high
    text = "yes" if ok else "**no**"
    return text + (" (interval crosses the goal)" if crosses else "")


def targets(runs: list[FleetRun], pods: PodsRun | None) -> list[tuple[str, str, str, str]]:
    """The issue's targets, each with what was measured, its interval and whether it was met."""
    checks: list[tuple[str, str, str, str]] = []

    def check_call(r: Result, p99_goal: float, nodes: int) -> None:
        where = f"{r.case.shape} ({nodes:,}-node fleet)"
        if r.floor:
            ratio = r.ratio()
            checks.append(
                (
                    f"{r.case.verb} p50 / floor, {where}",
                    _ci(*ratio) + "x",
                    "<= 1.5x",
                    _met(*ratio, 1.5 + 1e-9, below=True),
                )
            )
        s = r.project[1]
        lo, hi = round_interval([s], p99)
        checks.append(
            (
                f"{r.case.verb} p99, {where}",
                _ci(s.p(99), lo, hi) + " ms",
                f"< {p99_goal:g} ms",
                _met(s.p(99), lo, hi, p99_goal, below=True),
            )
        )

    for run in runs:
        for r in run.results:
            if r.case.name.endswith("/names-default"):
                check_call(r, 3.0, run.fleet.nodes)
    # 5,000 names: all of one family in a 15,000-node fleet (what percentageOfNodesToScore
    # 100 sends for a pinned pod), and a whole 5,000-node fleet of three families.
    for run in runs:
        for r in run.results:
            big = r.case.name.endswith(("names-family", "names-all"))
            if big and 4000 <= r.case.names <= 6000:
                check_call(r, 5.0, run.fleet.nodes)
    for run in runs:
        r = _get(run, "webhook")
        if r is not None:
            s = r.project[1]
            lo, hi = round_interval([s], p99)
            checks.append(
                (
                    f"webhook p99 ({run.fleet.nodes:,} nodes)",
                    _ci(s.p(99), lo, hi) + " ms",
                    "< 2 ms",
                    _met(s.p(99), lo, hi, 2.0, below=True),
                )
            )
    for run in runs:
        f, p = _get(run, "filter/names-default"), _get(run, "prioritize/names-default")
        if f and p:
            a, b = f.project[1], p.project[1]
            rate = pods_per_s(a.latencies_ms, b.latencies_ms)
            lo, hi = round_interval([a, b], pods_per_s, paired=False)
            checks.append(
                (
                    f"pods/s one kube-scheduler can place with both calls = 1 / (p50 filter + "
                    f"p50 prioritize), {f.case.shape} ({run.fleet.nodes:,} nodes)",
                    _ci(rate, lo, hi, "{:,.0f}") + " pods/s",
                    "> 400 pods/s",
                    _met(rate, lo, hi, 400, below=False),
                )
            )
    for run in runs:
        if 45_000 <= run.fleet.pods <= 55_000 and run.boot_rss_mb:
            top = max(run.boot_rss_mb)
            checks.append(
                (
                    f"worker RSS, {run.fleet.pods:,} pods cached (watch)",
                    f"{top:.0f} MB",
                    "< 300 MB",
                    "yes" if top < 300 else "**no**",
                )
            )
    if pods is not None and pods.results:
        names = list(pods.results[0].samples)
        for r in pods.results:
            ratio = r.ratio(names[-1], names[0])
            ok = 0.9 <= ratio[0] <= 1.1
            checks.append(
                (
                    f"latency flat in pods: p50 at 10x the pods / p50, {r.case.name}",
                    _ci(*ratio) + "x",
                    "within 1 ± 0.1",
                    "yes" if ok else "**no**",
                )
            )
    return checks


def plot(runs: list[FleetRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    styles = {"filter": "tab:blue", "prioritize": "tab:green", "webhook": "tab:purple"}
    panels = (
        (axes[0], ("names-family", "names-all"), "large requests: NodeNames of a family / fleet"),
        (axes[1], ("names-default",), "default NodeNames count and the webhook"),
    )
    for ax, tags, title in panels:
        for verb, color in styles.items():
            for tag in tags if verb != "webhook" else (("webhook",) if len(tags) == 1 else ()):
                name = "webhook" if verb == "webhook" else f"{verb}/{tag}"
                xs, p50, p99s, floor = [], [], [], []
                for run in runs:
                    r = _get(run, name)
                    if r is None:
                        continue
                    xs.append(r.case.names if len(tags) > 1 else run.fleet.nodes)
                    p50.append(r.project[1].p(50))
                    p99s.append(r.project[1].p(99))
                    floor.append(r.floor[1].p(50) if r.floor else np.nan)
                if not xs:
                    continue
                dash = "-" if tag != "names-all" else "-."
                ax.plot(xs, p50, "o" + dash, color=color, label=f"{name} p50")
                ax.plot(xs, p99s, "s:", color=color, label=f"{name} p99", alpha=0.6)
                ax.plot(xs, floor, "x--", color="grey", alpha=0.6)
        xlabel = "names in the request" if len(tags) > 1 else "nodes in the fleet"
        ax.set(xlabel=xlabel, ylabel="ms, 1 client, TLS (grey x: floor p50)", title=title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)

    ax = axes[2]
    labels, one, four, floor4 = [], [], [], []
    for run in runs:
        for r in run.results:
            if r.case.name in ("filter/names-default", "prioritize/names-default", "webhook"):
                labels.append(f"{r.case.name.split('/')[0]}\n{run.fleet.nodes // 1000}k")
                one.append(r.project[1].calls_per_s)
                four.append(r.project[4].calls_per_s if 4 in r.project else 0)
                floor4.append(r.floor[4].calls_per_s if 4 in r.floor else 0)
    x = np.arange(len(labels))
    ax.bar(x - 0.27, one, 0.27, label="1 client")
    ax.bar(x, four, 0.27, label="4 clients")
    ax.bar(x + 0.27, floor4, 0.27, label="floor, 4 clients", color="grey")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylabel="calls/s", title="throughput (default NodeNames / webhook)")
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
    p.add_argument("--duration", type=float, default=None, help="seconds per case and server")
    p.add_argument("--min-calls", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per case")
    p.add_argument(
        "--workers", type=int, default=1, help="the floor server's gunicorn workers (serve has one)"
    )
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--profile-calls", type=int, default=None)
    p.add_argument("--pod-events", type=float, default=100.0, help="pod events/s in the watch")
    p.add_argument(
        "--node-status-period", type=float, default=300.0, help="s between a node's updates"
    )
    p.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help="catalog variants to serve, by name (the first is the project)",
    )
    p.add_argument("--no-pods", action="store_true", help="skip the 10x-pods comparison")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=report.RESULTS, help="directory for the plot")
    p.add_argument("--readme", type=Path, default=report.README, help="README to update")
    p.add_argument("--no-readme", action="store_true", help="print the tables only")
    p.add_argument("--keep", type=Path, default=None, help="keep logs and responses here")
    args = p.parse_args(argv)
    known = {v.name: v for v in VARIANTS}
    try:
        args.variants = [known[name] for name in args.variants.split(",") if name]
    except KeyError as exc:
        p.error(f"unknown variant {exc}; known: {', '.join(known)}")
    if not args.variants:
        p.error("at least one variant")
    args.churn = Churn(args.pod_events, args.node_status_period)
    if args.quick:
        args.sizes = args.sizes or [150]
        args.duration = args.duration or 0.1
        args.min_calls = args.min_calls or 3
        args.profile_calls = args.profile_calls or 3
        args.rounds = args.rounds or 2
    args.sizes = args.sizes or [1000, 5000, 15000]
    args.duration = args.duration or 0.9
    args.min_calls = args.min_calls or 50
    args.profile_calls = args.profile_calls or 200
    args.rounds = args.rounds or 6
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_before = _loadavg()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-", dir=args.keep))
    try:
        tls = Tls.create(tmp)
        catalogs = [(v, v.write_catalog(tmp)) for v in args.variants]
        runs: list[FleetRun] = []
        profiles: list[Profile] = []
        sizes = sorted(args.sizes)
        profile_at = 5000 if 5000 in sizes else sizes[-1]
        for i, n in enumerate(sizes):
            print(f"fleet {n} nodes x {args.pods_per_node} pods", flush=True)
            run, found = run_fleet(
                tmp, n, args.seed + 10 * i, catalogs, tls, args, profiled=n == profile_at
            )
            runs.append(run)
            profiles = profiles or found
        pods = None
        if not args.no_pods:
            n = sizes[0]
            print(f"fleet {n} nodes, {args.pods_per_node} vs {10 * args.pods_per_node} pods/node")
            pods = run_pods_comparison(tmp, n, catalogs[0][1], tls, args)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
