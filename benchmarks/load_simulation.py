"""Load simulation: request-based ``balanced`` against ``loadAware`` on a mixed fleet.

One command (``python benchmarks/load_simulation.py``) runs the same seeded fleet, the same
Deployments and the same churn three times per seed and churn level: ``balanced``,
``loadAware``, and ``balanced`` again with kube-scheduler's random tie-breaks drawn from
another seed (the noise floor: what chance alone moves). It measures what usage-aware
placement is for: hot-spot node-minutes (a node's CPU usage above 70% and above 90% of its
allocatable; neither is the filter's own ``hotSpotUsage``), the spread of node usage, and
the pods placed on a node that was hot at that moment, per seed.

Every scheduling decision goes through the project's own code: the cache
(:class:`~extender.state.cluster.ClusterState`, fed pod objects as the watch would and usage samples
as the metrics poller would, :meth:`~extender.state.cluster.ClusterState.set_usage`), the filter
(:func:`extender.scheduler.filtering.filter_nodes`, with its hot-spot rule under ``loadAware``) and
the scores (:func:`extender.scheduler.scoring.node_scores` for ``balanced``,
:func:`extender.scheduler.verbs.load_aware_view_scores` for ``loadAware``). kube-scheduler's
sum of scores is that of the configuration shipped for each strategy (``--scores
shipped``, :func:`shipped_scores`): ``balanced`` is the base configuration, no extender,
NodeResourcesFit LeastAllocated on cpu at weight 5 plus NodeResourcesBalancedAllocation;
``loadAware`` is ``components/scheduler-load-aware``, the extender's 0..10 score x 10 x
its weight 5 with the in-tree request scorers off. ``--scores extender`` is the
configuration that calls the extender for every strategy and keeps kube-scheduler's
default scorers (NodeResourcesFit LeastAllocated on cpu and memory and
NodeResourcesBalancedAllocation, 0..100 each, weight 1: :func:`in_tree_scores`), so pods
carry a memory request and nodes their memory. The only model code here is
the workload (how much CPU each replica uses, minute by minute), the churn, the metrics
pipeline's delay, the in-tree scores and the measurements. Every assumption is in
``README.md``.
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
#: Hot-spot measures: a node above this share of its allocatable CPU at the end of a minute.
#: Neither is the filter's own threshold (``hotSpotUsage``, 0.8 by default): a measure equal
#: to the rule that acts on it flatters the rule.
HOT_LEVELS = (0.7, 0.9)
HOT = HOT_LEVELS[0]  # for "pods placed on a hot node"
EXTENDER_WEIGHT = 5  # manifests/components/scheduler-*; score * weight * 10
#: NodeResourcesFit's weight in the base configuration (balanced, in-tree).
FIT_WEIGHT = 5
#: How kube-scheduler sums scores (see the module docstring).
SCORES = ("shipped", "extender", "cpu-only")
#: kube-scheduler's MaxNodeScore / MaxExtenderPriority: an extender's 0..10 becomes 0..100.
EXTENDER_SCALE = 10
MEMORY_PER_CORE = 4 * 1024  # MiB per vCPU of the nodes (m-family: 4 GiB per vCPU)
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
    dep_memory: list[int]  # per Deployment: memory request per replica, MiB
    memory: np.ndarray  # MiB allocatable per node
    replicas: list[int]  # per Deployment
    churn: list[list[tuple[float, int]]]  # per minute: (second, Deployment) restarts
    noise: np.ndarray  # [minute, Deployment] multiplicative noise
    replica_seed: int


def build_world(
    args: argparse.Namespace, seed: int, catalog: Catalog, churn: float | None = None
) -> World:
    """The fleet, Deployments, usage and churn of one seed; ``churn`` pods restarted a
    minute (the first of ``--churn`` unless given)."""
    rate = args.churn[0] if churn is None else churn
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
    # Memory: MiB per SCU-core of request lognormal with mean 3/4 of the nodes' 4 GiB per
    # vCPU (memory fills to ~60% when CPU fills to 80%), sigma 0.5: some Deployments are
    # memory-heavy, some CPU-heavy, which is what NodeResourcesBalancedAllocation scores.
    mem_rng = random.Random(seed + 17)
    dep_memory = [
        max(64, int(size / 1000 * MEMORY_PER_CORE * mem_rng.lognormvariate(-0.41, 0.5)))
        for size in dep_size
    ]
    memory = np.array(
        [_memory_mib(n["status"]["allocatable"]["memory"]) for n in nodes], dtype=np.int64
    )
    dep_phase = np.array([rng.random() for _ in range(deps)])
    noise = np.exp(
        np.random.default_rng(seed).normal(0.0, args.noise, size=(args.minutes + 1, deps))
    )
    total = sum(replicas)
    churn = []
    for _ in range(args.minutes):
        k = np.random.default_rng(rng.randrange(2**32)).poisson(rate * total)
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
        dep_memory=dep_memory,
        memory=memory,
        replicas=replicas,
        churn=churn,
        noise=noise,
        replica_seed=rng.randrange(2**32),
    )


def _memory_mib(quantity: str) -> int:
    return int(quantity.removesuffix("Ki")) // 1024


def least_allocated(alloc: np.ndarray, requested: np.ndarray, pod: int) -> np.ndarray:
    """NodeResourcesFit ``LeastAllocated`` for one resource, 0..100:
    ``(allocatable - requested - pod) * 100 // allocatable`` (``least_allocated.go``)."""
    alloc = np.maximum(alloc, 1)
    return np.maximum(alloc - requested - pod, 0) * 100 // alloc


def balanced_allocation(
    cpu_alloc: np.ndarray,
    cpu_after: np.ndarray,
    mem_alloc: np.ndarray,
    mem_after: np.ndarray,
) -> np.ndarray:
    """NodeResourcesBalancedAllocation, 0..100: ``(1 - std) * 100`` of the two requested
    fractions after the pod, each capped at 1; for two resources the standard deviation is
    half their difference (``balanced_allocation.go``)."""
    cpu = np.minimum(cpu_after / np.maximum(cpu_alloc, 1), 1.0)
    mem = np.minimum(mem_after / np.maximum(mem_alloc, 1), 1.0)
    return ((1 - np.abs(cpu - mem) / 2) * 100).astype(np.int64)


def in_tree_scores(
    cpu_alloc: np.ndarray,
    cpu_requested: np.ndarray,
    cpu_pod: int,
    mem_alloc: np.ndarray,
    mem_requested: np.ndarray,
    mem_pod: int,
) -> np.ndarray:
    """kube-scheduler's default scores for the pod on each node, summed (weight 1 each):
    NodeResourcesFit ``LeastAllocated`` on cpu and memory, averaged, and
    NodeResourcesBalancedAllocation. 0..200."""
    least = (
        least_allocated(cpu_alloc, cpu_requested, cpu_pod)
        + least_allocated(mem_alloc, mem_requested, mem_pod)
    ) // 2
    return least + balanced_allocation(
        cpu_alloc, cpu_requested + cpu_pod, mem_alloc, mem_requested + mem_pod
    )


def shipped_scores(
    load_aware: bool,
    extender: np.ndarray,
    cpu_alloc: np.ndarray,
    cpu_requested: np.ndarray,
    cpu_pod: int,
    mem_alloc: np.ndarray,
    mem_requested: np.ndarray,
    mem_pod: int,
) -> np.ndarray:
    """kube-scheduler's sum under the configuration shipped for the strategy.

    ``loadAware`` (components/scheduler-load-aware): the extender's score x 10 x 5, the
    request scorers off. ``balanced`` (the base): no extender; NodeResourcesFit
    LeastAllocated on cpu alone at weight 5, ``(allocatable - requested - pod) * 100 //
    allocatable``, plus NodeResourcesBalancedAllocation (cpu and memory) at weight 1.
    """
    if load_aware:
        return extender * EXTENDER_WEIGHT * EXTENDER_SCALE
    return FIT_WEIGHT * least_allocated(cpu_alloc, cpu_requested, cpu_pod) + balanced_allocation(
        cpu_alloc, cpu_requested + cpu_pod, mem_alloc, mem_requested + mem_pod
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
    hot_node_minutes: dict[float, int]  # per HOT_LEVELS
    node_minutes: int
    usage_std: float  # mean over minutes of the standard deviation of node usage
    usage_p99: float  # mean over minutes of the 99th percentile of node usage
    mean_usage: float  # fleet CPU usage / allocatable, mean over minutes
    mean_requested: float
    placed: int
    placed_on_hot: int
    pending_pod_minutes: int
    decision_seconds: float  # CPU time in the project's functions
    variant: str = ""  # the strategy, or NOISE_FLOOR for balanced with other tie-breaks
    churn: float = 0.0


class Run:
    """One strategy over one world, minute by minute."""

    def __init__(
        self,
        strategy: str,
        world: World,
        seed: int,
        scoring: dict[str, Any] | None = None,
        *,
        scores: str = "shipped",
    ) -> None:
        self.strategy = strategy
        self.world = world
        self.scores = scores
        self.mem_requested = np.zeros(len(world.names), dtype=np.int64)
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
        in_tree = self.state.view(members)  # kube-scheduler's own fit filter (cpu, memory)
        slots = np.array([self.position[n] for n in members])
        memory = world.dep_memory[pod.dep]
        fits = np.flatnonzero(
            (in_tree.allocatable - in_tree.requested >= pod.request)
            & (world.memory[slots] - self.mem_requested[slots] >= memory)
        )
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
        at = slots[fits[passing]]
        resources = (
            view.allocatable[passing],
            view.requested[passing],
            pod.request,
            world.memory[at],
            self.mem_requested[at],
            memory,
        )
        if self.scores == "shipped":
            scores = shipped_scores(load_aware, extender, *resources)
        elif self.scores == "extender":
            scores = in_tree_scores(*resources) + extender * EXTENDER_WEIGHT * EXTENDER_SCALE
        else:  # the earlier harness: LeastAllocated on CPU alone, plus the extender
            alloc = np.maximum(view.allocatable[passing], 1)
            default = (alloc - view.requested[passing] - pod.request) * 100 // alloc
            scores = default + extender * EXTENDER_WEIGHT * EXTENDER_SCALE
        best = np.flatnonzero(scores == scores.max())
        node = names[int(passing[best[self.tie_rng.randrange(best.size)]])]
        self.decision_seconds += time.process_time() - started
        position = self.position[node]
        if self.current_usage is not None:
            hot = self.current_usage[position] > HOT * world.allocatable[position]
            self.placed_on_hot += int(hot)
        self.placed += 1
        pod.node, pod.bound_at = position, self.now
        self.mem_requested[position] += memory
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
        hot_minutes = dict.fromkeys(HOT_LEVELS, 0)
        node_minutes = pending_minutes = 0
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
                self.mem_requested[old.node] -= world.dep_memory[old.dep]
                self.current_usage[old.node] -= self.pod_usage(minute, [old])[0]
                pod = self.new_pod(dep)
                if not self.schedule(pod, minute):
                    self.pending.append(pod)
            share = self.node_usage(minute) / alloc
            for level in HOT_LEVELS:
                hot_minutes[level] += int((share > level).sum())
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


#: The noise floor: ``balanced`` again on the same world, only kube-scheduler's random
#: tie-breaks drawn from another seed. Any difference between it and ``balanced`` is chance.
NOISE_FLOOR = "balanced, other tie-breaks"
VARIANTS = ("balanced", "loadAware", NOISE_FLOOR)


def simulate(args: argparse.Namespace, log: Any = None) -> list[Result]:
    """Every churn level x seed: ``balanced``, ``loadAware`` and the noise floor."""
    results = []
    scoring = {"requestWeight": args.request_weight, "hotSpotUsage": args.hot_spot_usage}
    for churn in args.churn:
        started = time.perf_counter()
        for seed in args.seeds:
            world = build_world(args, seed, catalog_for("balanced"), churn)
            for variant in VARIANTS:
                strategy = "balanced" if variant == NOISE_FLOOR else variant
                tie_seed = seed + 1000 if variant == NOISE_FLOOR else seed
                result = Run(strategy, world, tie_seed, scoring, scores=args.scores).run(
                    args.minutes
                )
                result.seed, result.variant, result.churn = seed, variant, churn
                results.append(result)
        if log:
            log(f"  churn {100 * churn:g}%: {time.perf_counter() - started:.0f} s")
    return results


# -- output ---------------------------------------------------------------------------------


def _num(x: float) -> str:
    """Three significant digits, without an exponent (counts run into thousands)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _interval(values: Sequence[float]) -> str:
    """mean, and min-max over the seeds."""
    mean = statistics.fmean(values)
    return f"{_num(mean)} ({_num(min(values))}-{_num(max(values))})"


def _of(results: Sequence[Result], variant: str, churn: float) -> list[Result]:
    return sorted(
        (r for r in results if r.variant == variant and r.churn == churn), key=lambda r: r.seed
    )


def change(results: Sequence[Result], churn: float, level: float, variant: str) -> list[float]:
    """Per seed: ``variant``'s hot-spot node-minutes / ``balanced``'s - 1 (None-safe: a
    seed where ``balanced`` has none is left out)."""
    base = _of(results, "balanced", churn)
    other = _of(results, variant, churn)
    return [
        o.hot_node_minutes[level] / b.hot_node_minutes[level] - 1
        for b, o in zip(base, other, strict=True)
        if b.hot_node_minutes[level]
    ]


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return (
        f"{100 * statistics.fmean(values):+.0f}% ({100 * min(values):+.0f} to "
        f"{100 * max(values):+.0f}%)"
    )


def verdict(results: Sequence[Result], churn: float, level: float) -> str:
    """Is loadAware's change outside what balanced-vs-balanced shows on the same seeds?"""
    effect = change(results, churn, level, "loadAware")
    floor = change(results, churn, level, NOISE_FLOOR)
    if not effect or not floor:
        return "not measurable (no hot node-minutes under `balanced`)"
    worst_floor = max(abs(f) for f in floor)
    beyond = sum(1 for e in effect if e < -worst_floor)
    return f"{beyond} of {len(effect)} seeds cut more than the largest noise-floor change"


def render(results: Sequence[Result], args: argparse.Namespace) -> str:
    seeds = ", ".join(str(s) for s in args.seeds)
    nodes = args.nodes_per_family * len(fleets.FAMILIES)
    scores = {
        "shipped": "the configuration shipped for each strategy: `balanced` scored in-tree "
        f"(no extender; NodeResourcesFit LeastAllocated on cpu x {FIT_WEIGHT} + "
        "NodeResourcesBalancedAllocation x 1), `loadAware` by the extender alone "
        f"(0..10 x {EXTENDER_SCALE} x weight {EXTENDER_WEIGHT}, the in-tree request scorers "
        "off)",
        "extender": "kube-scheduler's default scorers (NodeResourcesFit LeastAllocated on cpu "
        "and memory + NodeResourcesBalancedAllocation, 0..100 each, weight 1) plus the "
        f"extender's 0..10 x {EXTENDER_SCALE} x weight {EXTENDER_WEIGHT} for both strategies",
        "cpu-only": "LeastAllocated on CPU alone plus the extender's 0..10 x "
        f"{EXTENDER_SCALE} x weight {EXTENDER_WEIGHT}",
    }[args.scores]
    lines = [
        f"Run {report.stamp()} on {report.machine()}: `python benchmarks/load_simulation.py"
        + ("" if args.scores == "shipped" else f" --scores {args.scores}")
        + f"` ({args.seconds:.0f} s).",
        "",
        f"{nodes} nodes (m4 0.8, m5 1.0, m7i 1.35 SCU/core, 16 vCPU each), "
        f"{args.minutes} simulated minutes, requests filled to {100 * args.fill:g}% per "
        f"family, usage/request per Deployment {args.ratio_low:g}-{args.ratio_high:g}; seeds "
        f"{seeds}. kube-scheduler's sum of scores: {scores}. Hot-spot "
        "node-minutes count nodes above "
        + " and ".join(f"{level:.0%}" for level in HOT_LEVELS)
        + " of allocatable CPU at the end of a minute (the filter's own `hotSpotUsage` is "
        f"{float(catalog_for('loadAware').scoring.hot_spot_usage or 0):.0%}: not a measure). "
        f"`{NOISE_FLOOR}` is `balanced` again with kube-scheduler's random tie-breaks from "
        "another seed: the noise floor. Cells: mean over the seeds (min-max).",
        "",
    ]
    header = [
        "churn / min",
        "run",
        *[f"hot node-min >{level:.0%}" for level in HOT_LEVELS],
        "node usage std",
        "node usage p99",
        f"placed on a node >{HOT:.0%}",
        "pending pod-min",
        "decision CPU / pod",
    ]
    rows = []
    for churn in args.churn:
        for variant in VARIANTS:
            rs = _of(results, variant, churn)
            rows.append(
                [
                    f"{100 * churn:g}%",
                    f"`{variant}`",
                    *[_interval([r.hot_node_minutes[level] for r in rs]) for level in HOT_LEVELS],
                    _interval([100 * r.usage_std for r in rs]) + " pp",
                    _interval([100 * r.usage_p99 for r in rs]) + "%",
                    _interval([100 * r.placed_on_hot / max(1, r.placed) for r in rs]) + "%",
                    _interval([r.pending_pod_minutes for r in rs]),
                    _interval([1e6 * r.decision_seconds / max(1, r.placed) for r in rs]) + " µs",
                ]
            )
    lines += [report.table(header, rows), ""]
    usage = statistics.fmean(r.mean_usage for r in results)
    requested = statistics.fmean(r.mean_requested for r in results)
    lines += [
        f"Fleet: {100 * requested:.0f}% requested, {100 * usage:.0f}% CPU used on average. "
        "Hot-spot node-minutes against `balanced` on the same seed, per seed "
        f"(seeds {seeds}), `loadAware` beside the noise floor:",
        "",
    ]
    per_seed = []
    for churn in args.churn:
        for level in HOT_LEVELS:
            effect = change(results, churn, level, "loadAware")
            floor = change(results, churn, level, NOISE_FLOOR)
            per_seed.append(
                [
                    f"{100 * churn:g}%",
                    f">{level:.0%}",
                    ", ".join(f"{100 * e:+.0f}%" for e in effect) or "-",
                    _pct(effect),
                    ", ".join(f"{100 * f:+.0f}%" for f in floor) or "-",
                    verdict(results, churn, level),
                ]
            )
    lines.append(
        report.table(
            [
                "churn / min",
                "hot-spot measure",
                "`loadAware` per seed",
                "`loadAware` mean (range)",
                "noise floor per seed",
                "beyond the noise floor",
            ],
            per_seed,
        )
    )
    return "\n".join(lines)


def summary(results: Sequence[Result], args: argparse.Namespace) -> str:
    """The key numbers, for the README's closing note: every churn level and measure."""
    lines = []
    for churn in args.churn:
        parts = []
        for level in HOT_LEVELS:
            effect = change(results, churn, level, "loadAware")
            floor = change(results, churn, level, NOISE_FLOOR)
            parts.append(
                f">{level:.0%}: {_pct(effect)}, noise floor "
                f"{_pct(floor)}, {verdict(results, churn, level)}"
            )
        lines.append(
            f"- **`loadAware` against `balanced`, hot-spot node-minutes at {100 * churn:g}% "
            f"churn a minute** ({len(args.seeds)} seeds): " + "; ".join(parts) + "."
        )
    return "\n".join(lines)


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
    p.add_argument(
        "--churn",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.001, 0.003, 0.01],
        help="pods restarted per minute, one run per value",
    )
    p.add_argument("--ratio-low", type=float, default=0.3, help="lowest mean usage/request")
    p.add_argument("--ratio-high", type=float, default=1.0, help="highest mean usage/request")
    p.add_argument("--noise", type=float, default=0.1, help="sigma of per-minute noise")
    p.add_argument("--request-weight", default=None, help="loadAware requestWeight")
    p.add_argument("--hot-spot-usage", default=None, help="loadAware hotSpotUsage")
    p.add_argument(
        "--scores",
        choices=SCORES,
        default="shipped",
        help="kube-scheduler's sum: the shipped configuration per strategy (default), the "
        "extender on every pod beside the default scorers, or LeastAllocated on CPU alone",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results = simulate(args, log=lambda m: print(m, file=sys.stderr))
    args.seconds = time.perf_counter() - started
    text = render(results, args)
    print(text)
    closing = summary(results, args)
    print(closing)
    if not args.no_readme:
        report.replace_section(args.readme, "load_simulation", text)
        report.replace_section(args.readme, "load_simulation_summary", closing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
