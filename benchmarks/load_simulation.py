"""Load simulation: request-based ``balanced`` against ``loadAware`` on a mixed fleet.

One command (``python benchmarks/load_simulation.py``) runs the same seeded fleet, the same
Deployments and the same churn twice per seed, once per strategy, for several seeds, and
measures what usage-aware placement is for: hot-spot node-minutes (a node's CPU usage above
80% of its allocatable), the spread of node usage, and the pods placed on a node that was
above the threshold at that moment.

Every scheduling decision goes through the project's own code: the cache
(:class:`extender.state.cluster.ClusterState`, fed pod objects as the watch would and usage samples
as the metrics poller would, :meth:`~extender.state.cluster.ClusterState.set_usage`), the filter
(:func:`extender.scheduler.filtering.filter_nodes`, with its hot-spot rule under ``loadAware``) and
the scores (:func:`extender.scheduler.scoring.node_scores` for ``balanced``,
:func:`extender.scheduler.verbs.load_aware_view_scores` for ``loadAware``), added to
NodeResourcesFit LeastAllocated as kube-scheduler adds an extender's score. The only model
code here is the workload (how much CPU each replica uses, minute by minute), the churn,
the metrics pipeline's delay and the measurements. Every assumption is in ``README.md``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import fleets, report
from extender.scheduler.filtering import filter_nodes
from extender.scheduler.scoring import node_scores
from extender.scheduler.verbs import load_aware_view_scores
from extender.state.cluster import FAMILY_ANNOTATION, ClusterState
from extender.state.usage import UsageSample
from machine_catalog.catalog import Catalog
from machine_catalog.quantities import scu_to_physical_millis

STRATEGIES = ("balanced", "loadAware")
HOT = 0.8  # a node above this share of its allocatable CPU is a hot spot
EXTENDER_WEIGHT = 5  # manifests/base/scheduler-config.yaml; score * weight * 10
NODE_SIZE = ("4xlarge", 16, 15890)
SIZES_SCU = (250, 500, 500, 1000, 1000, 2000)
SAMPLE_EVERY = 60.0  # seconds between two NodeMetrics samples
WINDOW = 30.0  # seconds a sample averages over; a pod younger than this is not in it yet
DIURNAL_MINUTES = 180.0


def catalog_for(strategy: str, **scoring: Any) -> Catalog:
    """The bench catalog; ``loadAware`` with the catalog defaults unless ``scoring`` says."""
    document = fleets.catalog_document("balanced")
    if strategy == "loadAware":
        document["spec"]["scoring"] = {
            "strategy": "loadAware",
            "sampleIntervalSeconds": int(SAMPLE_EVERY),
            **{k: v for k, v in scoring.items() if v is not None},
        }
    return Catalog.from_data(document, source="benchmarks/load_simulation.py")


# -- the world ------------------------------------------------------------------------------


@dataclass(slots=True)
class World:
    """Everything both strategies share for one seed: fleet, Deployments, churn, load."""

    nodes: list[dict[str, Any]]
    names: list[str]
    family: np.ndarray  # family index per node
    factor: np.ndarray  # float scuPerCore per node
    allocatable: np.ndarray  # millicores per node
    dep_ratio: np.ndarray  # per Deployment: mean usage / request
    dep_phase: np.ndarray  # per Deployment: phase of its daily curve
    dep_size: list[int]  # per Deployment: request per replica, SCU millis
    dep_family: list[int]  # per Deployment: the family its pods are pinned to
    replicas: list[int]  # per Deployment
    churn: list[list[tuple[float, int]]]  # per minute: (second, Deployment) restarts
    noise: np.ndarray  # [minute, Deployment] multiplicative noise
    replica_seed: int


def build_world(args: argparse.Namespace, seed: int, catalog: Catalog) -> World:
    rng = random.Random(seed)
    names_iter = fleets.node_names(rng)
    nodes = [
        fleets.make_node(rng, next(names_iter), spec, NODE_SIZE, fleets.ZONES[i % 3])
        for spec in fleets.FAMILIES
        for i in range(args.nodes_per_family)
    ]
    family = np.array(
        [catalog.family_index[catalog.match(n["metadata"]["labels"]).family.name] for n in nodes]
    )
    factor = np.array([float(catalog.families[f].scu_per_core) for f in family])
    allocatable = np.array([fleets.node_allocatable_millis(n) for n in nodes], dtype=np.int64)
    # Deployments until the requests reach the fill: each pinned to a family in proportion
    # to the family's SCU (the webhook spreads families by free SCU: same result, no state).
    fam_scu = np.bincount(family, weights=allocatable * factor)
    fam_phys = np.bincount(family, weights=allocatable)
    target = args.fill * fam_phys
    requested = np.zeros(len(catalog.families))
    dep_size, dep_family, replicas = [], [], []
    while (requested < target).any():
        f = rng.choices(range(len(fam_scu)), weights=fam_scu)[0]
        if requested[f] >= target[f]:
            continue
        size = rng.choice(SIZES_SCU)
        count = max(2, int(rng.lognormvariate(1.8, 0.8)))
        phys = scu_to_physical_millis(size, catalog.families[f].factor)
        count = min(count, max(1, int((target[f] - requested[f]) // phys) + 1))
        dep_size.append(size)
        dep_family.append(f)
        replicas.append(count)
        requested[f] += phys * count
    deps = len(dep_size)
    dep_ratio = np.array([rng.uniform(args.ratio_low, args.ratio_high) for _ in range(deps)])
    dep_phase = np.array([rng.random() for _ in range(deps)])
    noise = np.exp(
        np.random.default_rng(seed).normal(0.0, args.noise, size=(args.minutes + 1, deps))
    )
    total = sum(replicas)
    churn = []
    for _ in range(args.minutes):
        k = np.random.default_rng(rng.randrange(2**32)).poisson(args.churn * total)
        events = sorted(
            (rng.uniform(0, SAMPLE_EVERY), rng.choices(range(deps), weights=replicas)[0])
            for _ in range(int(k))
        )
        churn.append(events)
    return World(
        nodes=nodes,
        names=[n["metadata"]["name"] for n in nodes],
        family=family,
        factor=factor,
        allocatable=allocatable,
        dep_ratio=dep_ratio,
        dep_phase=dep_phase,
        dep_size=dep_size,
        dep_family=dep_family,
        replicas=replicas,
        churn=churn,
        noise=noise,
        replica_seed=rng.randrange(2**32),
    )


@dataclass(slots=True)
class Pod:
    obj: dict[str, Any]
    dep: int
    request: int  # physical millicores (the webhook's rewrite for its family)
    skew: float  # this replica's usage / its Deployment's mean (hot shards, cold caches)
    node: int = -1
    bound_at: float = 0.0


# -- one run --------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    strategy: str
    seed: int
    hot_node_minutes: int
    node_minutes: int
    usage_std: float  # mean over minutes of the standard deviation of node usage
    usage_p99: float  # mean over minutes of the 99th percentile of node usage
    mean_usage: float  # fleet CPU usage / allocatable, mean over minutes
    mean_requested: float
    placed: int
    placed_on_hot: int
    pending_pod_minutes: int
    decision_seconds: float  # CPU time in the project's functions


class Run:
    """One strategy over one world, minute by minute."""

    def __init__(
        self, strategy: str, world: World, seed: int, scoring: dict[str, Any] | None = None
    ) -> None:
        self.strategy = strategy
        self.world = world
        self.catalog = catalog_for(strategy, **(scoring or {}))
        self.state = ClusterState(self.catalog)
        self.state.replace(world.nodes, [])
        self.now = 1_800_000_000.0  # the simulated wall clock
        self.state.usage_clock = lambda: self.now
        self.tie_rng = random.Random(seed * 7 + 1)
        self.replica_rng = random.Random(world.replica_seed)  # the same skews on both sides
        self.pods: list[Pod] = []
        self.pending: list[Pod] = []
        self.serial = 0
        self.family_nodes = [
            [n for n, f in zip(world.names, world.family, strict=True) if f == i]
            for i in range(len(self.catalog.families))
        ]
        self.position = {n: i for i, n in enumerate(world.names)}
        self.placed = self.placed_on_hot = 0
        self.decision_seconds = 0.0

    def new_pod(self, dep: int) -> Pod:
        world = self.world
        self.serial += 1
        fam = self.catalog.families[world.dep_family[dep]]
        request = scu_to_physical_millis(world.dep_size[dep], fam.factor)
        obj = {
            "metadata": {
                "name": f"d{dep}-{self.serial}",
                "namespace": "sim",
                "uid": f"uid-{self.serial}",
                "annotations": {FAMILY_ANNOTATION: fam.name},
            },
            "spec": {
                "containers": [{"name": "app", "resources": {"requests": {"cpu": f"{request}m"}}}]
            },
            "status": {"phase": "Pending"},
        }
        skew = self.replica_rng.lognormvariate(0.0, 0.35)
        pod = Pod(obj=obj, dep=dep, request=request, skew=skew)
        self.state.apply("Pod", "ADDED", obj)
        return pod

    # usage ---------------------------------------------------------------------------------

    def pod_usage(self, minute: int, pods: Sequence[Pod]) -> np.ndarray:
        """Physical millicores each pod uses now: its SCU use / its node's factor."""
        world = self.world
        deps = np.array([p.dep for p in pods], dtype=np.int64)
        t = minute / DIURNAL_MINUTES
        curve = 1.0 + 0.3 * np.sin(2 * math.pi * (t + world.dep_phase[deps]))
        scu = (
            np.array([world.dep_size[d] for d in deps.tolist()], dtype=float)
            * world.dep_ratio[deps]
            * curve
            * world.noise[minute, deps]
            * np.array([p.skew for p in pods])
        )
        return scu / world.factor[np.array([p.node for p in pods])]

    def node_usage(self, minute: int, pods: Sequence[Pod] | None = None) -> np.ndarray:
        pods = self.pods if pods is None else pods
        usage = np.zeros(len(self.world.names))
        if pods:
            np.add.at(usage, [p.node for p in pods], self.pod_usage(minute, pods))
        return usage

    def sample(self, minute: int) -> None:
        """NodeMetrics at ``now``: pods bound within the last WINDOW seconds are not in it."""
        seen = [p for p in self.pods if p.bound_at <= self.now - WINDOW]
        usage = self.node_usage(minute, seen)
        self.state.set_usage(
            {
                name: UsageSample(int(usage[i]), self.now, WINDOW)
                for i, name in enumerate(self.world.names)
            }
        )

    # scheduling ------------------------------------------------------------------------

    def schedule(self, pod: Pod, minute: int) -> bool:
        world = self.world
        fam_index = world.dep_family[pod.dep]
        family = self.catalog.families[fam_index].name
        started = time.process_time()
        members = self.family_nodes[fam_index]
        in_tree = self.state.view(members)  # kube-scheduler's own fit filter
        fits = np.flatnonzero(in_tree.allocatable - in_tree.requested >= pod.request)
        if fits.size == 0:
            self.decision_seconds += time.process_time() - started
            return False
        names = [members[i] for i in fits.tolist()]
        load_aware = self.strategy == "loadAware"
        view = self.state.view(names, usage=load_aware)
        outcome = filter_nodes(view, pod.request, family, now=self.now)
        passing = np.arange(len(names)) if outcome.passing is None else outcome.passing
        passing = np.asarray(passing, dtype=np.int64)
        if passing.size == 0:
            self.decision_seconds += time.process_time() - started
            return False
        if load_aware:
            extender = load_aware_view_scores(view, pod.request, family, self.now)[passing]
        else:
            extender = node_scores(
                "balanced", view.allocatable[passing], view.requested[passing], pod.request
            )
        alloc = np.maximum(view.allocatable[passing], 1)
        least = (alloc - view.requested[passing] - pod.request) * 100 // alloc
        scores = least + extender * EXTENDER_WEIGHT * 10
        best = np.flatnonzero(scores == scores.max())
        node = names[int(passing[best[self.tie_rng.randrange(best.size)]])]
        self.decision_seconds += time.process_time() - started
        position = self.position[node]
        if self.current_usage is not None:
            hot = self.current_usage[position] > HOT * world.allocatable[position]
            self.placed_on_hot += int(hot)
        self.placed += 1
        pod.node, pod.bound_at = position, self.now
        pod.obj["spec"]["nodeName"] = node
        pod.obj["status"]["phase"] = "Running"
        self.state.apply("Pod", "MODIFIED", pod.obj)
        self.pods.append(pod)
        if self.current_usage is not None:
            self.current_usage[position] += self.pod_usage(minute, [pod])[0]
        return True

    current_usage: np.ndarray | None = None

    def run(self, minutes: int) -> Result:
        world = self.world
        start = self.now
        # Minute 0: the whole workload arrives in one burst before any sample exists.
        self.current_usage = np.zeros(len(world.names))
        for dep, count in enumerate(world.replicas):
            for _ in range(count):
                pod = self.new_pod(dep)
                self.now = start + self.tie_rng.uniform(0, 1)
                if not self.schedule(pod, 0):
                    self.pending.append(pod)
        hot_minutes = node_minutes = pending_minutes = 0
        stds, p99s, means, reqs = [], [], [], []
        alloc = world.allocatable.astype(float)
        for minute in range(minutes):
            self.now = start + minute * SAMPLE_EVERY
            self.sample(minute)
            self.current_usage = self.node_usage(minute)
            for pod in list(self.pending):
                if self.schedule(pod, minute):
                    self.pending.remove(pod)
            for second, dep in world.churn[minute]:
                self.now = start + minute * SAMPLE_EVERY + second
                victims = [i for i, p in enumerate(self.pods) if p.dep == dep]
                if not victims:
                    continue
                old = self.pods.pop(victims[self.replica_rng.randrange(len(victims))])
                self.state.apply("Pod", "DELETED", old.obj)
                self.current_usage[old.node] -= self.pod_usage(minute, [old])[0]
                pod = self.new_pod(dep)
                if not self.schedule(pod, minute):
                    self.pending.append(pod)
            share = self.node_usage(minute) / alloc
            hot_minutes += int((share > HOT).sum())
            node_minutes += len(share)
            pending_minutes += len(self.pending)
            stds.append(float(share.std()))
            p99s.append(float(np.percentile(share, 99)))
            means.append(float(share.mean()))
            reqs.append(float(self.state.view(world.names).requested.sum() / alloc.sum()))
        return Result(
            strategy=self.strategy,
            seed=0,
            hot_node_minutes=hot_minutes,
            node_minutes=node_minutes,
            usage_std=statistics.fmean(stds),
            usage_p99=statistics.fmean(p99s),
            mean_usage=statistics.fmean(means),
            mean_requested=statistics.fmean(reqs),
            placed=self.placed,
            placed_on_hot=self.placed_on_hot,
            pending_pod_minutes=pending_minutes,
            decision_seconds=self.decision_seconds,
        )


def simulate(args: argparse.Namespace) -> list[Result]:
    results = []
    for seed in args.seeds:
        world = build_world(args, seed, catalog_for("balanced"))
        for strategy in STRATEGIES:
            scoring = {"requestWeight": args.request_weight, "hotSpotUsage": args.hot_spot_usage}
            result = Run(strategy, world, seed, scoring).run(args.minutes)
            result.seed = seed
            results.append(result)
    return results


# -- output ---------------------------------------------------------------------------------


def _interval(values: Sequence[float]) -> str:
    """mean, and min-max over the seeds."""
    mean = statistics.fmean(values)
    return f"{mean:.3g} ({min(values):.3g}-{max(values):.3g})"


def reduction(results: Sequence[Result]) -> list[float]:
    """Per seed: 1 - loadAware's hot-spot node-minutes / balanced's."""
    by = {s: [r for r in results if r.strategy == s] for s in STRATEGIES}
    return [
        1 - lw.hot_node_minutes / max(1, b.hot_node_minutes)
        for b, lw in zip(by["balanced"], by["loadAware"], strict=True)
    ]


def sweep(args: argparse.Namespace) -> str:
    """The reduction where churn and the usage level differ from the main run's."""
    rows = []
    for churn in args.sweep_churn:
        for high in args.sweep_ratio_high:
            sub = argparse.Namespace(**{**vars(args), "churn": churn, "ratio_high": high})
            sub.seeds = args.sweep_seeds
            results = simulate(sub)
            cut = reduction(results)
            usage = statistics.fmean(r.mean_usage for r in results)
            hot = {
                s: statistics.fmean(r.hot_node_minutes for r in results if r.strategy == s)
                for s in STRATEGIES
            }
            rows.append(
                [
                    f"{100 * churn:g}%",
                    f"{args.ratio_low:g}-{high:g}",
                    f"{100 * usage:.1f}%",
                    f"{hot['balanced']:.0f}",
                    f"{hot['loadAware']:.0f}",
                    f"{100 * statistics.fmean(cut):.0f}%"
                    f" ({100 * min(cut):.0f}-{100 * max(cut):.0f}%)",
                ]
            )
    weights = []
    for weight in args.sweep_request_weight:
        sub = argparse.Namespace(
            **{**vars(args), "ratio_high": max(args.sweep_ratio_high), "request_weight": weight}
        )
        sub.seeds = args.sweep_seeds
        results = simulate(sub)
        cut = reduction(results)
        std = statistics.fmean(r.usage_std for r in results if r.strategy == "loadAware")
        weights.append(
            [
                f"{weight}" + (" (default)" if weight == "0.2" else ""),
                f"{100 * statistics.fmean(cut):.0f}% ({100 * min(cut):.0f}-{100 * max(cut):.0f}%)",
                f"{100 * std:.1f} pp",
            ]
        )
    seeds = ", ".join(str(s) for s in args.sweep_seeds)
    return "\n".join(
        [
            f"Sensitivity (seeds {seeds}; the rest as above):",
            "",
            report.table(
                [
                    "churn / minute",
                    "usage / request per Deployment",
                    "CPU usage",
                    "hot node-minutes `balanced`",
                    "hot node-minutes `loadAware`",
                    "reduction (min-max)",
                ],
                rows,
            ),
            "",
            f"`requestWeight` (the hotter mix, usage/request up to {max(args.sweep_ratio_high):g},"
            f" churn {100 * args.churn:g}%; the default 0.2 was set before any run):",
            "",
            report.table(
                ["requestWeight", "hot-spot reduction (min-max)", "`loadAware` node usage std"],
                weights,
            ),
        ]
    )


def render(results: Sequence[Result], args: argparse.Namespace) -> str:
    by = {s: [r for r in results if r.strategy == s] for s in STRATEGIES}
    rows = []
    for strategy in STRATEGIES:
        rs = by[strategy]
        rows.append(
            [
                f"`{strategy}`",
                _interval([100 * r.mean_requested for r in rs]) + "%",
                _interval([100 * r.mean_usage for r in rs]) + "%",
                _interval([r.hot_node_minutes for r in rs]),
                _interval([100 * r.usage_std for r in rs]) + " pp",
                _interval([100 * r.usage_p99 for r in rs]) + "%",
                _interval([100 * r.placed_on_hot / max(1, r.placed) for r in rs]) + "%",
                _interval([r.pending_pod_minutes for r in rs]),
                _interval([1e6 * r.decision_seconds / max(1, r.placed) for r in rs]) + " µs",
            ]
        )
    ratios = [1 - cut for cut in reduction(results)]
    seeds = ", ".join(str(s) for s in args.seeds)
    nodes = args.nodes_per_family * len(fleets.FAMILIES)
    return "\n".join(
        [
            f"Run {report.stamp()} on {report.machine()}.",
            "",
            f"{nodes} nodes (m4 0.8, m5 1.0, m7i 1.35 SCU/core, 16 vCPU each), "
            f"{args.minutes} simulated minutes, churn {100 * args.churn:g}% of the pods a "
            f"minute, requests filled to {100 * args.fill:g}% per family; seeds {seeds}. "
            "Cells: mean over the seeds (min-max).",
            "",
            report.table(
                [
                    "strategy",
                    "requested",
                    "CPU usage",
                    "hot-spot node-minutes (>80%)",
                    "node usage std",
                    "node usage p99",
                    "pods placed on a hot node",
                    "pending pod-minutes",
                    "decision CPU / pod",
                ],
                rows,
            ),
            "",
            "Hot-spot node-minutes, `loadAware` / `balanced` per seed: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f" (mean {statistics.fmean(ratios):.2f}, i.e. a "
            f"{100 * (1 - statistics.fmean(ratios)):.0f}% reduction; range "
            f"{100 * (1 - max(ratios)):.0f}-{100 * (1 - min(ratios)):.0f}%).",
        ]
    )


def summary(results: Sequence[Result]) -> str:
    """The key ratios, for the README's closing note."""
    by = {s: [r for r in results if r.strategy == s] for s in STRATEGIES}
    cut = reduction(results)
    std = {s: statistics.fmean(r.usage_std for r in by[s]) for s in STRATEGIES}
    usage = statistics.fmean(r.mean_usage for r in results)
    requested = statistics.fmean(r.mean_requested for r in results)
    on_hot = {
        s: 100 * sum(r.placed_on_hot for r in by[s]) / max(1, sum(r.placed for r in by[s]))
        for s in STRATEGIES
    }
    return "\n".join(
        [
            f"- **Hot-spot node-minutes (>80% CPU), `loadAware` against `balanced`: "
            f"-{100 * statistics.fmean(cut):.0f}% (per seed {100 * min(cut):.0f} to "
            f"{100 * max(cut):.0f}%, {len(cut)} seeds)** at {100 * requested:.0f}% requested,"
            f" {100 * usage:.0f}% used.",
            f"- Spread of node usage (std): {100 * std['balanced']:.1f} -> "
            f"{100 * std['loadAware']:.1f} pp; pods placed on a node above 80%: "
            f"{on_hot['balanced']:.2f}% -> {on_hot['loadAware']:.2f}%.",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3, 4, 5]
    )
    p.add_argument("--readme", type=Path, default=report.README, help="README to update")
    p.add_argument("--no-readme", action="store_true", help="print the table only")
    p.add_argument("--nodes-per-family", type=int, default=40)
    p.add_argument("--minutes", type=int, default=360)
    p.add_argument("--fill", type=float, default=0.8, help="requested share of each family")
    p.add_argument("--churn", type=float, default=0.01, help="pods restarted per minute")
    p.add_argument("--ratio-low", type=float, default=0.3, help="lowest mean usage/request")
    p.add_argument("--ratio-high", type=float, default=1.0, help="highest mean usage/request")
    p.add_argument("--noise", type=float, default=0.1, help="sigma of per-minute noise")
    p.add_argument("--request-weight", default=None, help="loadAware requestWeight")
    p.add_argument("--hot-spot-usage", default=None, help="loadAware hotSpotUsage")
    p.add_argument("--no-sweep", action="store_true", help="skip the sensitivity table")
    p.add_argument(
        "--sweep-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3]
    )
    p.add_argument(
        "--sweep-churn",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.005, 0.01, 0.02],
    )
    p.add_argument(
        "--sweep-request-weight",
        type=lambda s: s.split(","),
        default=["0", "0.1", "0.2", "0.5"],
    )
    p.add_argument(
        "--sweep-ratio-high",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[1.0, 1.2],
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = simulate(args)
    text = render(results, args)
    if not args.no_sweep:
        text += "\n\n" + sweep(args)
    print(text)
    closing = summary(results)
    print(closing)
    if not args.no_readme:
        report.replace_section(args.readme, "load_simulation", text)
        report.replace_section(args.readme, "load_simulation_summary", closing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
