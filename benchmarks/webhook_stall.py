"""The webhook stall of issue 17, hunted on the real control plane, and one replica's cost.

Issue 17 saw a pod create hit the webhook's 5 s timeout (``failurePolicy: Fail``) in the
throughput benchmark's warm-up round, right after 1,000 nodes were created, with two
gunicorn workers per ``serve``. This script repeats that moment on purpose and measures what
one replica costs (``PYTHONPATH=e2e python benchmarks/webhook_stall.py``; run it from the
tree whose ``serve`` is to be measured, ``--label`` names it):

1. **stall tries** (``--tries``): per try a fresh control plane, ``serve`` with the
   Deployment's arguments, the webhook and both kube-schedulers (the throughput benchmark's
   own ``start_cluster``), ``--load`` busy-loop processes from the start, ``--nodes`` nodes
   created from 16 client threads, then at once ``--bursts`` bursts of ``--burst``
   concurrent creates in opted-in namespaces (the webhook pins and normalizes each pod; the
   machine-catalog kube-scheduler binds them through the extender meanwhile). Every
   create's latency is kept; while any create has been in flight for ``--dump-after``
   seconds, ``py-spy dump`` is taken of every process of serve's tree (master and workers)
   once per burst. serve's log is kept for tries with a slow create, and the number of
   "Worker exiting" lines it wrote at shutdown is counted against its workers.
2. **cost** (``--cost-rounds``, no load processes): on the last try's cluster, rounds of
   ``--cost-pods`` pods created and bound through webhook + extender; the CPU seconds of
   serve's process tree per 1,000 pods (from /proc, user + system), the watches of pods and
   nodes the API server holds open (``apiserver_longrunning_requests``), and the RSS of
   every process of serve's tree.

``--json`` writes the raw results; ``--render A.json B.json`` writes the README section
(``webhook_stall``) comparing two runs (old: two workers, new: one process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "e2e"):  # run as a script: the project, benchmarks and harness
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmarks import report  # noqa: E402
from benchmarks import scheduling_throughput as st  # noqa: E402

SLOW = 1.0  # seconds: a create slower than this is counted
TIMEOUT = 5.0  # the webhook's timeoutSeconds (manifests/base/webhook.yaml)
BUSY_LOOP = "while True: pass"


@dataclass
class Burst:
    index: int
    seconds_after_serve: float  # first create of the burst, from serve's start
    latencies: list[float]  # seconds per create that answered
    errors: list[str]  # creates that failed (the webhook's timeout: fail closed)
    dumps: list[str] = field(default_factory=list)  # py-spy dump files taken meanwhile

    @property
    def slow(self) -> int:
        return sum(x > SLOW for x in self.latencies) + len(self.errors)


@dataclass
class Try:
    index: int
    workers: int  # processes in serve's tree besides the master (gunicorn workers)
    node_create_seconds: float
    bursts: list[Burst]
    worker_exits_logged: int  # "Worker exiting" lines in serve's log after stop
    log: str | None = None  # serve's log kept (tries with a slow create)


@dataclass
class Cost:
    rounds: int
    pods: int
    serve_cpu_per_1000: list[float]  # CPU s of serve's tree per 1,000 pods, per round
    bound: list[int]
    watches: dict[str, float]  # resource -> WATCH requests the API server holds open
    rss_mb: dict[str, float]  # process (master / worker pid) -> RSS MB
    create_p50_ms: float


@dataclass
class Memory:
    nodes: int
    pods: int
    rss_mb: dict[str, float]  # process of serve's tree -> RSS MB, every worker synced
    sync_seconds: float
    #: Proportional set size: pages the fork shares between master and worker counted once.
    pss_mb: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    label: str
    meta: dict[str, Any]
    tries: list[Try]
    cost: Cost | None
    memory: Memory | None = None


# -- serve's processes ---------------------------------------------------------------------


def serve_tree(cluster: st.Cluster) -> list[int]:
    from harness.controlplane import process_tree

    return process_tree(cluster.server.proc.popen.pid)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def py_spy_dumps(pids: Sequence[int], out: Path, tag: str) -> list[str]:
    """``py-spy dump`` of each pid into ``out``; the file names written."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    written = []
    for pid in pids:
        path = out / f"{tag}-pid{pid}.txt"
        with path.open("w") as f:
            subprocess.run(
                [spy, "dump", "--pid", str(pid), "--locals"],
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        written.append(str(path))
    return written


def wait_for_serve_nodes(cluster: st.Cluster, count: int, workers: int, timeout: float = 120):
    """Until every worker's cache holds ``count`` nodes (/readyz answers per worker)."""
    deadline = time.monotonic() + timeout
    seen: dict[int, int] = {}
    while time.monotonic() < deadline:
        _status, body = cluster.server.get("/readyz")
        if isinstance(body, dict):
            seen[body["worker"]["pid"]] = body["cache"]["nodes"]
        if len(seen) >= workers and all(n >= count for n in seen.values()):
            return
        time.sleep(0.1)
    raise TimeoutError(f"serve workers saw {seen} nodes, expected {count}")


# -- one burst -------------------------------------------------------------------------------


def burst(
    cluster: st.Cluster, namespace: str, pods: int, started: float, dump_after: float, out: Path
) -> Burst:
    """``pods`` concurrent creates; py-spy dumps of serve while one is slower than
    ``dump_after`` (once per burst)."""
    st.make_namespace(cluster, namespace, opted_in=True)
    inflight: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()
    result = Burst(0, time.monotonic() - started, [], [])

    def one(name: str) -> None:
        t0 = time.monotonic()
        with lock:
            inflight[name] = t0
        try:
            r = cluster.core.create_namespaced_pod(
                namespace, st.pod_body(name), _preload_content=False
            )
            r.read()
            result.latencies.append(time.monotonic() - t0)
        except Exception as err:  # the API server's answer when the webhook timed out
            text = getattr(err, "body", None) or repr(err)
            result.errors.append(f"{time.monotonic() - t0:.2f} s: {str(text)[:300]}")
        finally:
            with lock:
                inflight.pop(name, None)

    def watchdog() -> None:
        while not done.wait(0.05):
            with lock:
                oldest = min(inflight.values(), default=None)
            if oldest is not None and time.monotonic() - oldest > dump_after:
                tag = f"{namespace}-{time.monotonic() - started:.1f}s"
                result.dumps = py_spy_dumps(serve_tree(cluster), out, tag)
                return

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    with ThreadPoolExecutor(cluster.clients) as pool:
        list(pool.map(one, [f"p{i:05d}" for i in range(pods)]))
    done.set()
    guard.join()
    return result


# -- a try ------------------------------------------------------------------------------------


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def one_try(args: argparse.Namespace, index: int, out: Path, log: Any) -> tuple[Try, Cost | None]:
    workdir = Path(tempfile.mkdtemp(prefix="mc-stall-"))
    load = start_load(args.load)
    cluster = st.start_cluster(workdir, args.clients)
    started = time.monotonic()  # serve answered /readyz just before
    cost, exits = None, None
    try:
        workers = len(serve_tree(cluster)) - 1
        seconds = st.create_nodes(cluster, st.make_nodes(0, args.nodes, args.seed))
        wait_for_serve_nodes(cluster, args.nodes, workers)
        log(f"try {index}: {workers} workers, {args.nodes} nodes in {seconds:.1f} s")
        bursts = []
        for b in range(args.bursts):
            r = burst(cluster, f"stall-{b}", args.burst, started, args.dump_after, out)
            r.index = b
            bursts.append(r)
            worst = max(r.latencies, default=0)
            log(
                f"  burst {b} at {r.seconds_after_serve:.0f} s: slow {r.slow}, "
                f"errors {len(r.errors)}, max {worst:.2f} s, dumps {len(r.dumps)}"
            )
        if args.cost_rounds and index == args.tries - 1:
            stop_load(load)
            load = []
            cost, exits = measure_cost(cluster, args)
    finally:
        stop_load(load)
        cluster.server.stop()
        cluster.plane.stop()
    text = cluster.server.proc.log.read_text(errors="replace")
    kept = None
    if any(b.slow for b in bursts):
        kept = str(out / f"serve-try{index}.log")
        Path(kept).write_text(text)
    shutil.rmtree(workdir, ignore_errors=True)
    if exits is None:
        exits = text.count("Worker exiting")
    return Try(index, workers, seconds, bursts, exits, kept), cost


# -- a replica's cost ---------------------------------------------------------------------------


def watches(cluster: st.Cluster) -> dict[str, float]:
    """WATCH requests of pods and nodes the API server holds open (its own gauge)."""
    sample = cluster.scrape(f"{cluster.plane.server}/metrics", cluster.plane.ssl_context())
    out = {}
    for resource in ("pods", "nodes"):
        out[resource] = st.metric_sum(
            sample, "apiserver_longrunning_requests", verb="WATCH", resource=resource
        )
    return out


def watchers_without_serve(cluster: st.Cluster) -> tuple[dict[str, float], int]:
    """The same gauge with serve stopped: the schedulers' own watches; and the "Worker
    exiting" lines serve logged on that stop."""
    cluster.server.stop()
    exits = cluster.server.proc.log.read_text(errors="replace").count("Worker exiting")
    time.sleep(3)
    try:
        return watches(cluster), exits
    finally:
        cluster.server.start()


def measure_cost(cluster: st.Cluster, args: argparse.Namespace) -> tuple[Cost, int]:
    from harness.controlplane import tree_cpu_seconds

    with_serve = watches(cluster)
    pids = serve_tree(cluster)
    rss = {("master" if i == 0 else f"worker {i}"): rss_mb(p) for i, p in enumerate(pids)}
    per_1000, bound, create_ms = [], [], []
    for i in range(args.cost_rounds):
        namespace = f"cost-r{i}"
        st.make_namespace(cluster, namespace, opted_in=True)
        bodies = [st.pod_body(f"p{k:05d}") for k in range(args.cost_pods)]
        watch = st.BindWatch(cluster.core, namespace, args.cost_pods, 60 + args.cost_pods / 20)
        before = tree_cpu_seconds(cluster.server.proc.popen.pid)
        times = st.create_pods(cluster, namespace, bodies)
        watch.done.wait()
        cpu = tree_cpu_seconds(cluster.server.proc.popen.pid) - before
        per_1000.append(1000 * cpu / max(len(watch.bound), 1))
        bound.append(len(watch.bound))
        create_ms += [1000 * (b - a) for a, b in times]
        st.delete_pods(cluster, namespace)
    without, exits = watchers_without_serve(cluster)
    serve_watches = {k: with_serve[k] - without.get(k, 0) for k in with_serve}
    cost = Cost(
        args.cost_rounds,
        args.cost_pods,
        per_1000,
        bound,
        serve_watches,
        rss,
        statistics.median(create_ms),
    )
    return cost, exits


# -- memory at a large cluster --------------------------------------------------------------------


def measure_memory(nodes_count: int, pods_per_node: int, seed: int, workdir: Path) -> Memory:
    """serve's RSS (master + workers) once every worker has listed and watches ``nodes_count``
    nodes and their pods, fed by the loopback fake API server of ``benchmarks.watch_feed``
    (no churn): ``serve --kubeconfig`` with the CLI's defaults otherwise."""
    from harness.controlplane import free_port, process_tree, start

    from benchmarks import fleets
    from benchmarks.watch_feed import Churn, Feed

    nodes = fleets.make_nodes(nodes_count, seed=seed)
    pods = fleets.make_pods(nodes, pods_per_node, seed=seed + 1)
    total = len(pods)
    feed = Feed(nodes, pods, Churn(0, 0), seed)
    del nodes, pods
    port = free_port()
    kubeconfig = feed.write_kubeconfig(workdir / "fake-kubeconfig")
    argv = [sys.executable, "-m", "machine_catalog_cli", "serve", "--kubeconfig", str(kubeconfig)]
    proc = start("serve-memory", [*argv, "--bind", f"127.0.0.1:{port}"], workdir)
    began = time.monotonic()
    try:
        seen: dict[int, int] = {}
        while time.monotonic() - began < 600:
            with contextlib.suppress(OSError, ValueError):
                url = f"http://127.0.0.1:{port}/readyz"
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = json.loads(r.read())
                seen[body["worker"]["pid"]] = body["cache"]["pods"]
            workers = len(process_tree(proc.popen.pid)) - 1
            if workers and len(seen) >= workers and min(seen.values()) >= total * 0.9:
                break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"serve's workers saw {seen} pods of {total}")
        synced = time.monotonic() - began
        time.sleep(5)  # the GC freeze and the first usage poll after the sync
        pids = process_tree(proc.popen.pid)
        names = ["master" if i == 0 else f"worker {i}" for i in range(len(pids))]
        rss = {n: rss_mb(p) for n, p in zip(names, pids, strict=True)}
        pss = {n: pss_mb(p) for n, p in zip(names, pids, strict=True)}
    finally:
        proc.stop()
        feed.stop()
    return Memory(nodes_count, total, rss, synced, pss)


# -- rendering ---------------------------------------------------------------------------------


def load_run(path: Path) -> Run:
    raw = json.loads(path.read_text())
    tries = []
    for t in raw["tries"]:
        bursts = [Burst(**b) for b in t.pop("bursts")]
        tries.append(Try(bursts=bursts, **t))
    cost = Cost(**raw["cost"]) if raw.get("cost") else None
    memory = Memory(**raw["memory"]) if raw.get("memory") else None
    return Run(raw["label"], raw["meta"], tries, cost, memory)


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def render(runs: Sequence[Run]) -> str:
    stalls = [r for r in runs if r.tries]
    meta = runs[0].meta
    lines = [
        f"Run {meta['stamp']} on {meta['machine']}; load average before each run "
        + ", ".join(r.meta["load_before"] for r in runs)
        + ". **The machine was shared with other work** (other sessions' tests and control "
        "planes ran meanwhile, and the runs of two trees ran side by side), and each try "
        "adds the busy-loop processes of the load column: latencies are upper bounds that "
        "vary with that load and are not comparable across rows run at different times; CPU "
        "seconds and RSS are serve's own and vary less.",
        "",
        "Stall tries: per try a fresh control plane, serve (Deployment arguments, TLS), the "
        "webhook and both kube-schedulers, the nodes created from 16 client threads, then "
        "bursts of concurrent creates (16 client threads) in opted-in namespaces, the "
        "first one a few seconds after the last node. A create is *slow* above "
        f"{SLOW:g} s; the webhook times out at {TIMEOUT:g} s (the create fails). py-spy "
        "dumps were taken of serve's processes whenever a create was in flight for "
        f"{meta['dump_after']:g} s.",
        "",
    ]
    rows = []
    for r in stalls:
        lat = [x for t in r.tries for b in t.bursts for x in b.latencies]
        errs = sum(len(b.errors) for t in r.tries for b in t.bursts)
        slow = sum(b.slow for t in r.tries for b in t.bursts)
        tries_slow = sum(any(b.errors for b in t.bursts) for t in r.tries)
        exits = [f"{t.worker_exits_logged}/{t.workers}" for t in r.tries]
        q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [float("nan")] * 99
        rows.append(
            [
                r.label,
                f"{r.meta['nodes']:,}",
                str(r.tries[0].workers),
                f"{len(r.tries)} x {r.meta['bursts']} x {r.meta['burst']}, load {r.meta['load']}",
                f"{len(lat) + errs:,}",
                f"{fmt(1000 * q[49], 0)} / {fmt(1000 * q[98], 0)} / {fmt(1000 * max(lat), 0)}",
                str(slow),
                f"**{errs}** in {tries_slow} tries",
                ", ".join(exits),
            ]
        )
    lines += [
        report.table(
            [
                "serve",
                "nodes",
                "workers",
                "tries x bursts x creates, busy loops",
                "creates",
                "answered p50 / p99 / max ms",
                f"slower than {SLOW:g} s (failed included)",
                f"failed at the {TIMEOUT:g} s timeout",
                "worker exits logged at stop, per try",
            ],
            rows,
        ),
        "",
    ]
    mems = [r for r in runs if r.memory]
    if mems:
        m0 = mems[0].memory
        lines += [
            f"Memory at {m0.nodes:,} nodes and {m0.pods:,} pods: serve (the CLI's defaults, "
            "`--kubeconfig` to the loopback fake API server of `benchmarks/watch_feed.py`, "
            "no churn), RSS of every process of its tree 5 s after every worker's /readyz "
            "counted the pods (target 250 MB per replica):",
            "",
            report.table(
                [
                    "serve",
                    "RSS MB, master + workers",
                    "RSS total MB",
                    "PSS MB (shared pages counted once), master + workers",
                    "PSS total MB",
                    "synced after s",
                ],
                [
                    [
                        r.label,
                        " + ".join(f"{v:.0f}" for v in r.memory.rss_mb.values()),
                        f"{sum(r.memory.rss_mb.values()):.0f}",
                        " + ".join(f"{v:.0f}" for v in r.memory.pss_mb.values()),
                        f"**{sum(r.memory.pss_mb.values()):.0f}**",
                        f"{r.memory.sync_seconds:.0f}",
                    ]
                    for r in mems
                ],
            ),
            "",
        ]
    costs = [r for r in runs if r.cost]
    if costs:
        c0 = costs[0].cost
        lines += [
            f"One replica's cost, measured on the last try's cluster with the load processes "
            f"stopped: {c0.rounds} rounds of {c0.pods:,} pods created and bound through "
            "webhook + extender (the machine-catalog kube-scheduler); serve's CPU is its "
            "whole process tree (master + workers, user + system, from /proc) per 1,000 pods "
            "bound; watches are the API server's `apiserver_longrunning_requests{verb=WATCH}` "
            "with serve running minus the same gauge with serve stopped; RSS of each "
            "process of serve's tree with 1,000 nodes cached:",
            "",
        ]
        rows = []
        for r in costs:
            c = r.cost
            rows.append(
                [
                    r.label,
                    f"{fmt(statistics.median(c.serve_cpu_per_1000), 2)} "
                    f"({fmt(min(c.serve_cpu_per_1000), 2)} – "
                    f"{fmt(max(c.serve_cpu_per_1000), 2)})",
                    f"{sum(c.bound):,}/{c.rounds * c.pods:,}",
                    f"{c.watches.get('pods', 0):g} / {c.watches.get('nodes', 0):g}",
                    " + ".join(f"{v:.0f}" for v in c.rss_mb.values())
                    + f" = {sum(c.rss_mb.values()):.0f}",
                    fmt(c.create_p50_ms, 1),
                ]
            )
        lines.append(
            report.table(
                [
                    "serve",
                    "serve CPU s per 1,000 pods, median (min – max)",
                    "bound",
                    "watches of pods / nodes",
                    "RSS MB, master + workers",
                    "create p50 ms",
                ],
                rows,
            )
        )
        if len(costs) == 2:
            a, b = (statistics.median(r.cost.serve_cpu_per_1000) for r in costs)
            lines += [
                "",
                f"CPU ratio {costs[1].label} / {costs[0].label}: **{b / a:.2f}** "
                "(a ratio of CPU seconds, not of latency).",
            ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--label", default="this tree")
    p.add_argument("--tries", type=int, default=6)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--bursts", type=int, default=6)
    p.add_argument("--burst", type=int, default=100, help="concurrent creates per burst")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--load", type=int, default=1, help="busy-loop processes during the tries")
    p.add_argument("--dump-after", type=float, default=2.0)
    p.add_argument("--cost-rounds", type=int, default=4)
    p.add_argument("--cost-pods", type=int, default=500)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument(
        "--memory",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=None,
        help="NODES,PODS_PER_NODE: serve's RSS fed that fleet by the fake API (e.g. 5000,10)",
    )
    p.add_argument("--out", type=Path, default=None, help="dumps and logs (default: a tmp dir)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--render", type=Path, nargs="+", default=None, help="runs to compare")
    p.add_argument("--readme", type=Path, default=report.README)
    return p.parse_args(argv)


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        body = render([load_run(p) for p in args.render])
        print(body)
        report.replace_section(args.readme, "webhook_stall", body)
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="mc-stall-out-"))
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "stamp": report.stamp(),
        "machine": report.machine(),
        "load_before": loadavg(),
        "command": "python benchmarks/webhook_stall.py " + " ".join(sys.argv[1:]),
        **{k: getattr(args, k) for k in ("nodes", "bursts", "burst", "clients", "load")},
        "dump_after": args.dump_after,
    }
    tries, cost, memory = [], None, None
    if args.memory:
        memory = measure_memory(*args.memory, args.seed, out)
        print(f"memory: {memory}", flush=True)
    for i in range(args.tries):
        t, c = one_try(args, i, out, lambda s: print(s, flush=True))
        tries.append(t)
        cost = c or cost
    meta["load_after"] = loadavg()
    run = Run(args.label, meta, tries, cost, memory)
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=1))
    print(render([run]))
    print(f"dumps and logs: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
