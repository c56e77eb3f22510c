"""Fleet simulation: raw vCPU requests, SCU with the packaged factors, SCU after calibrate.

One command (``python benchmarks/fleet_simulation.py``) runs three modes over the same
seeded fleets and Deployments and reports them at the *operating point*: the highest load
at which every replica runs and the HPAs hold their target.

- ``raw``: the requests the teams wrote (``cpu: 500m``) are vCPUs on whatever node the pod
  lands; placement is default-scheduler-like (CPU fit + LeastAllocated on CPU).
- ``packaged``: the same numbers are SCU, normalized with the packaged catalog's factors:
  the webhook's family choice (:func:`extender.admission.placement.choose_family`) pins each pod and
  rewrites its request to ``ceil(scu / scuPerCore)`` millicores
  (:func:`machine_catalog.quantities.scu_to_physical_millis`); the extender's filter
  (:func:`extender.scheduler.filtering.filter_nodes`) and balanced score
  (:func:`extender.scheduler.scoring.node_scores`, added to LeastAllocated as kube-scheduler adds an
  extender's, ``score * weight * 10``) place it.
- ``calibrated``: as ``packaged``, with the catalog ``machine-catalog calibrate --write``
  proposes from this fleet's own usage: the ``packaged`` run's pods and nodes and three
  PodMetricsList samples of their usage go through
  :func:`machine_catalog.calibration.calibrate` and :func:`~machine_catalog.calibration.propose`,
  the functions the command runs.

What the simulation does *not* take from the catalog: the hardware's true speed. Each
non-baseline family's true speed is its packaged factor times ``1 + U(-e, e)`` (``e`` =
10% by default, the accuracy the catalog's own comments claim), and each Deployment gains
``true_speed ** k`` from a family, ``k`` uniform in ``[0.6, 1.4]`` (memory-bound work gains
less from a faster core than compute-bound work), so one factor per family is an
approximation even when it is exact on average. The only model code here is that workload,
the HPA's formula (``wire-protocol.md`` §7) and the measurements; placement, admission and
per-node accounting are the project's own functions. Every assumption is listed in
``README.md`` with the mode it favours.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import fleets, metrics_fleet, report
from extender.admission.placement import NodeConstraints, Placement, choose_family, family_capacity
from extender.scheduler.filtering import filter_nodes
from extender.scheduler.scoring import node_scores
from extender.state.cluster import ClusterState, NodeView
from machine_catalog.annotations import FAMILY_ANNOTATION
from machine_catalog.calibration import Calibration, calibrate, propose
from machine_catalog.catalog import Catalog
from machine_catalog.loading import default_catalog_path, load_catalog, parse_document
from machine_catalog.quantities import scu_to_physical_millis

MODES = ("raw", "packaged", "calibrated")
NORMALIZED = ("packaged", "calibrated")
#: kube-scheduler adds an extender's 0..10 score as ``score * weight * 10``
#: (``MaxNodeScore / MaxExtenderPriority``); weight 5 as in manifests/base/scheduler-config.yaml.
EXTENDER_WEIGHT = 5
HPA_TARGET = 60  # percent
HPA_TOLERANCE = 0.1
MIN_REPLICAS = 2
MAX_REPLICAS = 1000
MAX_HPA_ROUNDS = 25
HOT_SHARE_OF_LIMIT = 0.9
NODE_SIZE = ("4xlarge", 16, 15890)  # every node: 16 vCPU, 15,890m allocatable (EKS reserves)
#: Three schedulable generations of the packaged catalog, as the node groups of one EKS
#: cluster migrating from m5 to m7i; equal node counts.
FAMILY_PREFIXES = {"aws-m5": "m5", "aws-m6i": "m6i", "aws-m7i": "m7i"}
CALIBRATION_SAMPLES = 3
CALIBRATION_NOISE = 0.2  # per replica and sample, uniform +-20%


# -- the world ---------------------------------------------------------------------------


@dataclass(slots=True)
class Replica:
    pod: dict[str, Any]
    request: int  # physical millicores (what the pod object asks)
    limit: int  # physical millicores
    node: int = -1  # position in Fleet.names; -1 while Pending
    family: int = -1  # catalog index of the node (raw) or of the pinned family (normalized)


@dataclass(slots=True)
class Deployment:
    name: str
    cpu: int  # the request the team wrote, millis: vCPU in raw mode, SCU in normalized modes
    work: float  # baseline-vCPU-millis of work per second at load 1.0, whatever the replicas
    sensitivity: float = 1.0  # k: speed on a family = true_speed ** k
    replicas: list[Replica] = field(default_factory=list)

    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.node >= 0]


@dataclass(frozen=True, slots=True)
class Fleet:
    nodes: list[dict[str, Any]]
    names: list[str]
    family: np.ndarray  # catalog family index per node
    factor: np.ndarray  # float packaged scuPerCore per node
    speed: np.ndarray  # float true speed per node (the catalog's factor x its error)
    allocatable: np.ndarray  # int64 physical millicores
    true_speed: dict[str, float]  # per family


def packaged_catalog() -> Catalog:
    return load_catalog()


def true_speeds(catalog: Catalog, error: float, seed: int) -> dict[str, float]:
    """Each family's true speed: its packaged factor x ``1 + U(-error, error)``; baseline 1."""
    return metrics_fleet.speeds_with_error(catalog, list(FAMILY_PREFIXES), error, seed)


def build_fleet(
    catalog: Catalog, nodes_per_family: int, seed: int, catalog_error: float = 0.0
) -> Fleet:
    rng = random.Random(seed)
    names = fleets.node_names(rng)
    specs = [
        fleets.FamilySpec(
            name, str(catalog.by_name[name].scu_per_core), "", prefix, "6", "0", i + 5
        )
        for i, (name, prefix) in enumerate(FAMILY_PREFIXES.items())
    ]
    nodes = [
        fleets.make_node(rng, next(names), spec, NODE_SIZE, fleets.ZONES[i % 3])
        for spec in specs
        for i in range(nodes_per_family)
    ]
    family = np.array(
        [catalog.family_index[catalog.match(n["metadata"]["labels"]).family.name] for n in nodes]
    )
    factor = np.array([float(catalog.families[f].scu_per_core) for f in family])
    truth = true_speeds(catalog, catalog_error, seed + 100)
    speed = np.array([truth[catalog.families[f].name] for f in family])
    allocatable = np.array([fleets.node_allocatable_millis(n) for n in nodes], dtype=np.int64)
    return Fleet(
        nodes, [n["metadata"]["name"] for n in nodes], family, factor, speed, allocatable, truth
    )


def build_deployments(
    count: int, fleet: Fleet, start_fill: float, seed: int, spread: float = 0.4
) -> list[Deployment]:
    """Deployments with typical requests; total work sized to ``start_fill`` of the fleet.

    At load 1.0 the HPA at its target requests about ``start_fill`` of the fleet's SCU.
    ``spread``: the sensitivity ``k`` is uniform in ``[1 - spread, 1 + spread]``.
    """
    rng = random.Random(seed)
    sizes = (250, 500, 500, 1000, 1000, 2000)
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    capacity_scu = float(np.sum(fleet.allocatable * fleet.speed))
    total_work = start_fill * capacity_scu * HPA_TARGET / 100
    scale = total_work / sum(weights)
    return [
        Deployment(
            name=f"svc-{i:03d}",
            cpu=rng.choice(sizes),
            work=w * scale,
            sensitivity=1.0 + rng.uniform(-spread, spread),
        )
        for i, w in enumerate(weights)
    ]


# -- placement ---------------------------------------------------------------------------


def _least_allocated(view: NodeView, pod_millis: int) -> np.ndarray:
    """kube-scheduler's NodeResourcesFit LeastAllocated score on CPU, 0..100."""
    alloc = np.maximum(view.allocatable, 1)
    return (alloc - view.requested - pod_millis) * 100 // alloc


class Simulation:
    """One mode over one fleet: the cluster cache, the admission + scheduling path, the HPA."""

    def __init__(
        self,
        mode: str,
        catalog: Catalog,
        fleet: Fleet,
        *,
        target: int = HPA_TARGET,
        limit_ratio: float = 1.0,
        seed: int = 0,
        extender_weight: int = EXTENDER_WEIGHT,
    ) -> None:
        self.mode = mode
        self.target = target
        self.catalog = catalog
        self.fleet = fleet
        self.limit_ratio = limit_ratio
        self.extender_weight = extender_weight
        self.rng = random.Random(seed)
        self.state = ClusterState(catalog)
        self.state.replace(fleet.nodes, [])
        self._serial = 0
        self.position = {name: i for i, name in enumerate(fleet.names)}
        self.family_names = [
            [n for n, f in zip(fleet.names, fleet.family, strict=True) if f == i]
            for i in range(len(catalog.families))
        ]

    # pods as the watch would deliver them ------------------------------------------------

    def _pod(self, dep: Deployment, request: int, family: str | None) -> dict[str, Any]:
        self._serial += 1
        annotations = {FAMILY_ANNOTATION: family} if family else {}
        return {
            "metadata": {
                "name": f"{dep.name}-{self._serial}",
                "namespace": "bench",
                "uid": f"uid-{self._serial}",
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": dep.name,
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "containers": [{"name": "app", "resources": {"requests": {"cpu": f"{request}m"}}}]
            },
            "status": {"phase": "Pending"},
        }

    def create(self, dep: Deployment) -> Replica:
        """Admission: the webhook (normalized mode) picks a family and rewrites the request."""
        family_name = None
        request = dep.cpu
        limit = math.ceil(dep.cpu * self.limit_ratio)
        family = -1
        if self.mode in NORMALIZED:
            view = self.state.all_nodes()
            decision = choose_family(
                view,
                family_capacity(self.catalog, view, None, fixed=False),
                constraints=NodeConstraints(),
                allowed_nodes=None,
                requested=None,
                pending_physical=self.state.pending_millis(),
                reserved_scu={},
                pod_scu=dep.cpu,
            )
            assert isinstance(decision, Placement), decision
            chosen = decision.family
            family_name, family = chosen.name, self.catalog.family_index[chosen.name]
            request = scu_to_physical_millis(dep.cpu, chosen.factor)
            limit = scu_to_physical_millis(limit, chosen.factor)
        replica = Replica(self._pod(dep, request, family_name), request, limit, family=family)
        self.state.apply("Pod", "ADDED", replica.pod)
        dep.replicas.append(replica)
        return replica

    def schedule(self, replica: Replica) -> bool:
        """One scheduling cycle; False when no node fits (the pod stays Pending).

        kube-scheduler runs its own filters before calling an extender, so the extender
        is sent only the nodes that passed them: here NodeResourcesFit (the physical
        request fits) and NodeAffinity (the webhook's required affinity = the family).
        """
        if self.mode == "raw":
            view = self.state.view(self.fleet.names)
            fits = np.flatnonzero(view.allocatable - view.requested >= replica.request)
            if fits.size == 0:
                return False
            scores = _least_allocated(view, replica.request)[fits]
            node = self.fleet.names[int(fits[_pick_index(scores, self.rng)])]
        else:
            family = self.catalog.families[replica.family].name
            members = self.family_names[replica.family]
            in_tree = self.state.view(members)
            fits = np.flatnonzero(in_tree.allocatable - in_tree.requested >= replica.request)
            if fits.size == 0:
                return False
            names = [members[i] for i in fits.tolist()]
            view = self.state.view(names)  # what the extender sees for NodeNames
            outcome = filter_nodes(view, replica.request, family)
            passing = np.arange(len(names)) if outcome.passing is None else outcome.passing
            passing = np.asarray(passing, dtype=np.int64)
            if passing.size == 0:
                return False
            extender = node_scores(
                self.catalog.strategy,
                view.allocatable[passing],
                view.requested[passing],
                replica.request,
            )
            scores = (
                _least_allocated(view, replica.request)[passing]
                + extender * self.extender_weight * 10
            )
            node = names[int(passing[_pick_index(scores, self.rng)])]
        position = self.position[node]
        replica.node = position
        replica.family = int(self.fleet.family[position])
        replica.pod["spec"]["nodeName"] = node
        replica.pod["status"]["phase"] = "Running"
        self.state.apply("Pod", "MODIFIED", replica.pod)
        return True

    def delete(self, dep: Deployment, replica: Replica) -> None:
        dep.replicas.remove(replica)
        self.state.apply("Pod", "DELETED", replica.pod)

    # the workload and the HPA ---------------------------------------------------------

    def demand(self, dep: Deployment, load: float) -> tuple[list[Replica], np.ndarray]:
        """Physical millicores each running replica needs: its share / true speed ** k."""
        running = dep.running()
        if not running:
            return running, np.zeros(0)
        share = dep.work * load / len(running)
        speeds = self.fleet.speed[[r.node for r in running]] ** dep.sensitivity
        return running, share / speeds

    def hpa_desired(self, dep: Deployment, load: float) -> int:
        """The HPA's replica count for a CPU ``Utilization`` target (replica_calculator.go)."""
        current = len(dep.replicas)
        running, demand = self.demand(dep, load)
        if not running:
            return max(current, MIN_REPLICAS)
        limits = np.array([r.limit for r in running])
        usage = np.minimum(demand, limits)  # metrics-server sees throttled usage
        requests = sum(r.request for r in running)
        utilization = int(usage.sum() * 100 // requests)
        ratio = utilization / self.target
        unready = current - len(running)
        if unready and ratio > 1.0:
            # Scale-up with Pending pods: they count as using 0, and the ratio is redone.
            requests_all = requests + sum(r.request for r in dep.replicas if r.node < 0)
            new_ratio = int(usage.sum() * 100 // requests_all) / self.target
            if abs(new_ratio - 1.0) <= HPA_TOLERANCE or new_ratio < 1.0:
                desired = current
            else:
                desired = math.ceil(new_ratio * current)
        elif abs(ratio - 1.0) <= HPA_TOLERANCE:
            desired = current
        else:
            desired = math.ceil(ratio * len(running))
        return min(MAX_REPLICAS, max(MIN_REPLICAS, desired))

    def converge(self, deployments: Sequence[Deployment], load: float) -> int:
        """HPA rounds until no Deployment changes; returns the rounds it took."""
        for rounds in range(1, MAX_HPA_ROUNDS + 1):
            changed = False
            for dep in deployments:
                for replica in [r for r in dep.replicas if r.node < 0]:
                    changed |= self.schedule(replica)
                desired = self.hpa_desired(dep, load)
                while len(dep.replicas) < desired:
                    self.schedule(self.create(dep))
                    changed = True
                while len(dep.replicas) > desired:
                    # The ReplicaSet removes Pending pods first, then the newest.
                    pending = [r for r in dep.replicas if r.node < 0]
                    self.delete(dep, pending[-1] if pending else dep.replicas[-1])
                    changed = True
            if not changed:
                return rounds
        return MAX_HPA_ROUNDS


def _pick_index(scores: np.ndarray, rng: random.Random) -> int:
    """The best score's position; ties broken at random, as kube-scheduler's selectHost does."""
    best = np.flatnonzero(scores == scores.max())
    return int(best[rng.randrange(best.size)])


# -- measuring ---------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    load: float
    fleet_util: float  # sum of min(node demand, allocatable) / sum of allocatable
    requested: float  # sum of requests / sum of allocatable
    max_node: float  # highest node demand / allocatable
    pending: int
    replicas: int  # what the HPAs ask (spec.replicas), Pending included
    needed: int  # replicas for the hottest replica of each Deployment to sit at the target
    node_util: np.ndarray  # demand / allocatable per node
    replica_util: np.ndarray  # demand / limit per running replica
    replica_family: np.ndarray  # catalog family index per running replica
    relative: np.ndarray  # per replica: its demand/request over its Deployment's average

    def hot_share(self, surge: float = 0.0) -> float:
        """Running replicas above 90% of their limit (after a ``surge`` of traffic)."""
        utils = self.replica_util * (1 + surge)
        return float((utils > HOT_SHARE_OF_LIMIT).mean()) if utils.size else 0.0

    def family_bias(self) -> dict[int, float]:
        """Per family: mean of (replica utilisation / its Deployment's) - 1.

        What the HPA does not see: 0 when a replica's share of its request is the same on
        every family; +10% on a family whose replicas run 10% hotter than the HPA's average.
        """
        return {
            int(f): float(self.relative[self.replica_family == f].mean() - 1)
            for f in np.unique(self.replica_family)
        }

    def worst_bias(self) -> float:
        bias = self.family_bias()
        return max((abs(b) for b in bias.values()), default=0.0)


def measure(sim: Simulation, deployments: Sequence[Deployment], load: float) -> Step:
    fleet = sim.fleet
    node_demand = np.zeros(len(fleet.names))
    replica_util: list[np.ndarray] = []
    relative: list[np.ndarray] = []
    families: list[int] = []
    replicas = needed = 0
    for dep in deployments:
        running, demand = sim.demand(dep, load)
        if running:
            requests = np.array([r.request for r in running], dtype=float)
            np.add.at(node_demand, [r.node for r in running], demand)
            replica_util.append(demand / np.array([r.limit for r in running]))
            relative.append((demand / requests) / (demand.sum() / requests.sum()))
            families += [r.family for r in running]
            # The hottest replica sits at the target when every replica gets what the one
            # with the least work capacity behind its request gets.
            capacity = min(
                float(fleet.speed[r.node] ** dep.sensitivity) * r.request for r in running
            )
        else:
            capacity = float(dep.cpu)
        needed += max(MIN_REPLICAS, math.ceil(dep.work * load / (sim.target / 100 * capacity)))
        replicas += len(dep.replicas)
    view = sim.state.view(fleet.names)
    alloc = fleet.allocatable.astype(float)
    return Step(
        load=load,
        fleet_util=float(np.minimum(node_demand, alloc).sum() / alloc.sum()),
        requested=float(view.requested.sum() / alloc.sum()),
        max_node=float((node_demand / alloc).max()),
        pending=sum(1 for d in deployments for r in d.replicas if r.node < 0),
        replicas=replicas,
        needed=needed,
        node_util=node_demand / alloc,
        replica_util=np.concatenate(replica_util) if replica_util else np.zeros(0),
        replica_family=np.array(families, dtype=np.int64),
        relative=np.concatenate(relative) if relative else np.zeros(0),
    )


@dataclass(slots=True)
class Run:
    mode: str
    target: int
    seed: int
    steps: list[Step]
    operating: Step  # fullest step with every replica running
    ceiling: Step  # last step before the first node saturated (or before the stop)
    stopped_by: str
    seconds: float


def run(
    mode: str,
    args: argparse.Namespace,
    catalog: Catalog,
    target: int,
    until_pending: bool,
    seed: int | None = None,
    extender_weight: int = EXTENDER_WEIGHT,
) -> Run:
    """Ramp the load from 1.0 until a node saturates (or, ``until_pending``, a pod pends).

    ``catalog`` is what the webhook and extender use (the packaged one, or calibrate's
    proposal); the fleet's true speeds never come from it.
    """
    seed = args.seed if seed is None else seed
    started = time.perf_counter()
    fleet = build_fleet(packaged_catalog(), args.nodes_per_family, seed, args.catalog_error)
    deployments = build_deployments(
        args.deployments, fleet, args.start_fill, seed + 1, args.sensitivity
    )
    sim = Simulation(
        mode,
        catalog,
        fleet,
        target=target,
        limit_ratio=args.limit_ratio,
        seed=seed + 2,
        extender_weight=extender_weight,
    )
    steps: list[Step] = []
    load = 1.0
    stopped_by = f"load cap {args.max_load:g}x"
    while load <= args.max_load:
        sim.converge(deployments, load)
        step = measure(sim, deployments, load)
        if step.max_node >= 1.0:
            stopped_by = "first node saturated"
            break
        steps.append(step)
        if until_pending and step.pending:
            stopped_by = "first Pending pod"
            break
        load *= 1 + args.step
    if not steps:
        raise SystemExit(f"{mode}: a node is saturated at the starting load; lower --start-fill")
    healthy = [s for s in steps if s.pending == 0]
    return Run(
        mode=mode,
        target=target,
        seed=seed,
        steps=steps,
        operating=healthy[-1] if healthy else steps[0],
        ceiling=steps[-1],
        stopped_by=stopped_by,
        seconds=time.perf_counter() - started,
    )


# -- calibrate, through the command's own functions -----------------------------------


@dataclass(slots=True)
class Calibrated:
    seed: int
    catalog: Catalog
    result: Calibration
    applied: list[str]
    truth: dict[str, float]


def calibrate_fleet(args: argparse.Namespace, packaged: Catalog, seed: int) -> Calibrated:
    """Run ``packaged`` at load 1, read its usage as metrics-server would, calibrate.

    The pods (with ``ownerReferences``, a start an hour ago, bound and Running) and nodes
    are the objects the simulation placed; each replica's usage in each of three samples is
    its demand (capped by its limit, as the kernel would) x ``1 + U(-20%, +20%)``.
    """
    fleet = build_fleet(packaged, args.nodes_per_family, seed, args.catalog_error)
    deployments = build_deployments(
        args.deployments, fleet, args.start_fill, seed + 1, args.sensitivity
    )
    sim = Simulation("packaged", packaged, fleet, limit_ratio=args.limit_ratio, seed=seed + 2)
    sim.converge(deployments, 1.0)
    started = metrics_fleet.START - timedelta(hours=1)
    pods = []
    for dep in deployments:
        for r in dep.running():
            pod = {**r.pod, "spec": {**r.pod["spec"]}, "status": dict(r.pod["status"])}
            stamp = started.strftime("%Y-%m-%dT%H:%M:%SZ")
            pod["status"]["containerStatuses"] = [
                {"name": "app", "state": {"running": {"startedAt": stamp}}}
            ]
            pod["spec"]["containers"] = [
                {
                    "name": "app",
                    "resources": {
                        "requests": {"cpu": f"{r.request}m"},
                        "limits": {"cpu": f"{r.limit}m"},
                    },
                }
            ]
            pods.append(pod)
    rng = random.Random(seed + 3)
    samples = []
    for s in range(CALIBRATION_SAMPLES):
        usage = {}
        for dep in deployments:
            running, demand = sim.demand(dep, 1.0)
            for r, d in zip(running, demand, strict=True):
                used = min(float(d), r.limit) * (
                    1 + rng.uniform(-CALIBRATION_NOISE, CALIBRATION_NOISE)
                )
                usage[("bench", r.pod["metadata"]["name"])] = used
        samples.append(
            metrics_fleet.pod_metrics(usage, metrics_fleet.START + s * metrics_fleet.SAMPLE_EVERY)
        )
    result = calibrate(packaged, fleet.nodes, pods, samples)
    document = parse_document(default_catalog_path().read_bytes())
    data, applied = propose(document, result)
    catalog = Catalog.from_data(data, source=f"calibrate (seed {seed})")
    return Calibrated(seed, catalog, result, applied, fleet.true_speed)


# -- statistics over seeds ------------------------------------------------------------


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): a 95% t-interval of the mean over seeds."""
    from machine_catalog.calibration import t_quantile

    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if a.size < 2:
        return mean, mean, mean
    half = t_quantile(0.975, a.size - 1) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return mean, mean - half, mean + half


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(values: Sequence[float], scale: float = 100, unit: str = "%", digits: int = 1) -> str:
    """``mean [low, high]``; a share's interval is clipped at 0 (a share is never negative)."""
    mean, low, high = interval(values)
    if min(values, default=0.0) >= 0:
        low = max(low, 0.0)
    f = f"{{:.{digits}f}}"
    return f"{f.format(scale * mean)}{unit} [{f.format(scale * low)}, {f.format(scale * high)}]"


def safest_target(runs: Sequence[Run], surge: float) -> Run | None:
    """The highest HPA target whose operating point has at most 1% hot replicas."""
    ok = [r for r in runs if r.operating.hot_share(surge) <= 0.01]
    return max(ok, key=lambda r: r.target) if ok else None


# -- the whole experiment -------------------------------------------------------------


@dataclass(slots=True)
class Results:
    seeds: list[int]
    main: list[Run]  # every mode x seed at HPA_TARGET, ramped to the first saturated node
    sweep: list[Run]  # every mode x seed x target, ramped to the first Pending pod
    calibrations: list[Calibrated]
    weight_check: dict[str, bool]  # mode -> weight 0 gave the same operating point
    seconds: float

    def of(self, mode: str, runs: str = "main") -> list[Run]:
        return [r for r in getattr(self, runs) if r.mode == mode]


def _same(a: Run, b: Run) -> bool:
    return (
        a.operating.load == b.operating.load
        and np.array_equal(a.operating.node_util, b.operating.node_util)
        and a.operating.replicas == b.operating.replicas
    )


def experiment(args: argparse.Namespace) -> Results:
    started = time.perf_counter()
    packaged = packaged_catalog()
    seeds = [args.seed + i for i in range(args.seeds)]
    calibrations = [calibrate_fleet(args, packaged, seed) for seed in seeds]
    catalogs = {
        seed: {"raw": packaged, "packaged": packaged, "calibrated": c.catalog}
        for seed, c in zip(seeds, calibrations, strict=True)
    }
    main = [
        run(mode, args, catalogs[seed][mode], HPA_TARGET, until_pending=False, seed=seed)
        for seed in seeds
        for mode in MODES
    ]
    sweep = [
        run(mode, args, catalogs[seed][mode], target, until_pending=True, seed=seed)
        for seed in seeds[: args.sweep_seeds]
        for target in args.targets
        for mode in MODES
    ]
    weight_check = {}
    for mode in NORMALIZED:
        base = next(r for r in main if r.mode == mode and r.seed == seeds[0])
        zero = run(
            mode, args, catalogs[seeds[0]][mode], HPA_TARGET, False, seeds[0], extender_weight=0
        )
        weight_check[mode] = _same(base, zero)
    return Results(seeds, main, sweep, calibrations, weight_check, time.perf_counter() - started)


# -- output ------------------------------------------------------------------------------


def render(res: Results, args: argparse.Namespace) -> str:
    packaged = packaged_catalog()
    families = list(FAMILY_PREFIXES)
    rows = []
    for mode in MODES:
        runs = res.of(mode)
        rows.append(
            [
                f"`{mode}`",
                _ci([r.operating.fleet_util for r in runs]),
                _ci([r.operating.hot_share() for r in runs]),
                _ci([r.operating.hot_share(args.surge) for r in runs]),
                _ci([r.operating.replicas / r.operating.needed for r in runs], 1, "", 2),
                _ci([r.operating.worst_bias() for r in runs]),
                _ci([r.ceiling.fleet_util for r in runs]),
            ]
        )
    header = [
        "mode",
        "fleet CPU util. at the operating point",
        "replicas > 90% of limit, at target",
        f"… after a +{args.surge:.0%} surge",
        "replicas: HPA asks / work needs",
        "worst family: replica util. vs its Deployment's",
        "overload: fleet util. when the first node saturates",
    ]
    safe_rows = []
    for mode in MODES:
        picks = []
        for seed in res.seeds[: args.sweep_seeds]:
            runs = [r for r in res.sweep if r.mode == mode and r.seed == seed]
            best = safest_target(runs, args.surge)
            picks.append(best)
        ok = [p for p in picks if p is not None]
        safe_rows.append(
            [
                f"`{mode}`",
                _ci([p.target / 100 for p in ok], 100, "%", 1) if ok else "none",
                _ci([p.operating.fleet_util for p in ok]) if ok else "-",
                f"{len(ok)} of {len(picks)}",
            ]
        )
    cal_rows = []
    for name in families:
        est = [c.result.family(name).estimate for c in res.calibrations]
        truth = [c.truth[name] for c in res.calibrations]
        err_packaged = [float(packaged.by_name[name].scu_per_core) / t - 1 for t in truth]
        err_cal = [
            (float(c.catalog.by_name[name].scu_per_core) / c.truth[name] - 1)
            for c in res.calibrations
        ]
        err_est = [e / t - 1 for e, t in zip(est, truth, strict=True) if e is not None]
        applied = sum(1 for c in res.calibrations if name in c.applied)
        cal_rows.append(
            [
                name,
                str(packaged.by_name[name].scu_per_core),
                " / ".join(f"{t:.3f}" for t in truth),
                f"{100 * max(abs(e) for e in err_packaged):.1f}%",
                f"{100 * max(abs(e) for e in err_est):.1f}%" if err_est else "-",
                f"{100 * max(abs(e) for e in err_cal):.1f}%",
                f"{applied} of {len(res.calibrations)}",
            ]
        )
    grid = args.targets
    weight = ", ".join(
        f"`{m}` {'identical' if same else 'different'}" for m, same in res.weight_check.items()
    )
    lines = [
        f"Run {report.stamp()} on {report.machine()}: `python benchmarks/fleet_simulation.py"
        f" --seed {args.seed} --seeds {args.seeds}` ({res.seconds:.0f} s).",
        "",
        f"Fleet per seed: {3 * args.nodes_per_family} nodes of 16 vCPU (15,890m allocatable), "
        f"{args.nodes_per_family} per family of the packaged catalog: "
        + ", ".join(f"{n} ({packaged.by_name[n].scu_per_core})" for n in families)
        + f". True speed = packaged factor x (1 + U(-{args.catalog_error:.0%}, "
        f"+{args.catalog_error:.0%})) per family and seed (baseline 1); Deployment sensitivity "
        f"k ~ U({1 - args.sensitivity:.1f}, {1 + args.sensitivity:.1f}). {args.deployments} "
        f"Deployments, CPU limit = {args.limit_ratio:g} x request, HPA tolerance "
        f"{HPA_TOLERANCE}. {len(res.seeds)} seeds ({res.seeds[0]}–{res.seeds[-1]}); every "
        "cell is the mean over seeds with its 95% t-interval [low, high].",
        "",
        f"**At the operating point** (HPA target {HPA_TARGET}%, the highest load at which every "
        "replica runs):",
        "",
        report.table(header, rows),
        "",
        '"Work needs" = replicas for the hottest replica of each Deployment to sit at the '
        'target. "Worst family" = the largest |mean over a family\'s replicas of (replica '
        "CPU / request) / (its Deployment's CPU / request) - 1|: what the HPA's average "
        "does not see. The last column is the overload region (hundreds of Pending pods), "
        "shown for comparison with the old headline, not an operating point.",
        "",
        f"**The target you can afford**: the highest HPA target (grid {grid[0]}–{grid[-1]}% in "
        f"steps of {grid[1] - grid[0] if len(grid) > 1 else 0} points, {args.sweep_seeds} "
        f"seeds) at which at most 1% of replicas exceed 90% of their limit after a "
        f"+{args.surge:.0%} surge, and the fleet CPU utilisation there:",
        "",
        report.table(
            ["mode", "highest safe HPA target", "fleet CPU util. there", "seeds with one"],
            safe_rows,
        ),
        "",
        f"**Calibration inside the simulation** ({CALIBRATION_SAMPLES} samples, ±"
        f"{CALIBRATION_NOISE:.0%} noise per replica and sample, the `packaged` run at load 1; "
        "worst over seeds):",
        "",
        report.table(
            [
                "family",
                "packaged",
                "true speed per seed",
                "packaged vs truth",
                "estimate vs truth",
                "calibrated catalog vs truth",
                "estimate applied",
            ],
            cal_rows,
        ),
        "",
        f"Extender weight 0 instead of {EXTENDER_WEIGHT} (seed {res.seeds[0]}, target "
        f"{HPA_TARGET}%): {weight} operating point.",
        "",
        "![fleet simulation](results/fleet_simulation.png)",
    ]
    return "\n".join(lines)


def summary(res: Results, args: argparse.Namespace) -> str:
    """The closing note: each mode's headline numbers with intervals."""
    lines = []
    for mode in MODES:
        runs = res.of(mode)
        picks = []
        for seed in res.seeds[: args.sweep_seeds]:
            best = safest_target(
                [r for r in res.sweep if r.mode == mode and r.seed == seed], args.surge
            )
            if best is not None:
                picks.append(best)
        safe = (
            f"highest safe target {_ci([p.target / 100 for p in picks])} "
            f"(fleet util. {_ci([p.operating.fleet_util for p in picks])})"
            if picks
            else "no safe target on the grid"
        )
        lines.append(
            f"- **`{mode}`** at HPA {HPA_TARGET}%: fleet CPU util. "
            f"{_ci([r.operating.fleet_util for r in runs])}, replicas > 90% of limit after a "
            f"+{args.surge:.0%} surge {_ci([r.operating.hot_share(args.surge) for r in runs])}, "
            f"HPA asks / work needs "
            f"{_ci([r.operating.replicas / r.operating.needed for r in runs], 1, '', 2)}, "
            f"worst family bias {_ci([r.operating.worst_bias() for r in runs])}; {safe}."
        )
    worst = max(
        abs(c.result.family(n).estimate / c.truth[n] - 1)
        for c in res.calibrations
        for n in FAMILY_PREFIXES
    )
    lines.append(
        f"- Calibration inside the simulation: every estimate within {100 * worst:.1f}% of the "
        f"true mean speed over {len(res.calibrations)} seeds (catalog error up to "
        f"±{args.catalog_error:.0%}, sensitivity k ±{args.sensitivity:g}). Extender weight 0: "
        + ", ".join(f"{m} {'identical' if s else 'different'}" for m, s in res.weight_check.items())
        + "."
    )
    return "\n".join(lines)


COLORS = {"raw": "tab:red", "packaged": "tab:orange", "calibrated": "tab:blue"}


def plot(res: Results, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    seed = res.seeds[0]

    ax = axes[0][0]
    for mode in MODES:
        r = next(x for x in res.main if x.mode == mode and x.seed == seed)
        loads = [s.load for s in r.steps]
        ax.plot(loads, [100 * s.fleet_util for s in r.steps], color=COLORS[mode], label=mode)
        ax.plot(loads, [100 * s.max_node for s in r.steps], color=COLORS[mode], ls="--")
        ax.axvspan(r.operating.load, r.ceiling.load, color=COLORS[mode], alpha=0.08)
        ax.axvline(r.operating.load, color=COLORS[mode], ls=":", lw=1)
    ax.axhline(100, color="grey", lw=0.5)
    ax.set(
        xlabel="load (x start)",
        ylabel="% of allocatable CPU",
        title=f"seed {seed}: fleet utilisation (solid), hottest node (dashed)\n"
        "dotted: operating point; shaded: overload (Pending pods) until a node saturates",
    )
    ax.legend()

    targets = sorted(set(args.targets))
    for ax, (metric, title) in zip(
        (axes[0][1], axes[1][0]),
        (
            (lambda s: s.fleet_util, "fleet CPU utilisation at the operating point"),
            (
                lambda s: s.hot_share(args.surge),
                f"replicas > 90% of limit after a +{args.surge:.0%} surge",
            ),
        ),
        strict=True,
    ):
        for mode in MODES:
            means, lows, highs = [], [], []
            for t in targets:
                vals = [metric(r.operating) for r in res.sweep if r.mode == mode and r.target == t]
                m, lo, hi = interval(vals)
                means.append(100 * m)
                lows.append(100 * max(lo, 0.0))
                highs.append(100 * hi)
            ax.plot(targets, means, "o-", ms=3, color=COLORS[mode], label=mode)
            ax.fill_between(targets, lows, highs, color=COLORS[mode], alpha=0.2)
        ax.set(xlabel="HPA target utilisation, %", ylabel="%", title=title + " (95% band)")
        ax.legend()

    ax = axes[1][1]
    names = list(FAMILY_PREFIXES)
    packaged = packaged_catalog()
    for m, mode in enumerate(MODES):
        data = []
        for i in range(len(names)):
            fam = packaged.family_index[names[i]]
            data.append([100 * r.operating.family_bias().get(fam, 0.0) for r in res.of(mode)])
        parts = ax.boxplot(
            data, positions=[i * 4 + m for i in range(len(names))], widths=0.8, patch_artist=True
        )
        for patch in parts["boxes"]:
            patch.set_facecolor(COLORS[mode])
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks([i * 4 + 1 for i in range(len(names))], names)
    ax.set(
        ylabel="replica CPU/request vs its Deployment's, % (over seeds)",
        title="what the HPA does not see, per family\n(red raw, orange packaged, blue calibrated)",
    )

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _targets(text: str) -> list[int]:
    if ":" in text:  # start:stop:step, stop included
        a, b, c = (int(x) for x in text.split(":"))
        return list(range(a, b + 1, c))
    return [int(x) for x in text.split(",")]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seed", type=int, default=7, help="first seed")
    p.add_argument("--seeds", type=int, default=5, help="seeds at the main target")
    p.add_argument("--sweep-seeds", type=int, default=5, help="seeds of the target sweep")
    p.add_argument("--out", type=Path, default=report.RESULTS, help="directory for the plot")
    p.add_argument("--readme", type=Path, default=report.README, help="README to update")
    p.add_argument("--no-readme", action="store_true", help="print the tables only")
    p.add_argument("--nodes-per-family", type=int, default=30)
    p.add_argument("--deployments", type=int, default=100)
    p.add_argument("--start-fill", type=float, default=0.3, help="fleet requested at load 1")
    p.add_argument("--step", type=float, default=0.03, help="load growth per step")
    p.add_argument("--max-load", type=float, default=20.0)
    p.add_argument("--limit-ratio", type=float, default=1.0, help="CPU limit / request")
    p.add_argument("--surge", type=float, default=0.25, help="traffic surge before the HPA acts")
    p.add_argument(
        "--catalog-error", type=float, default=0.10, help="true speed = factor x (1 +- this)"
    )
    p.add_argument("--sensitivity", type=float, default=0.4, help="k of a Deployment in 1 +- this")
    p.add_argument("--targets", type=_targets, default=_targets("50:80:2"), help="50,60 or 50:80:2")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = experiment(args)
    text = render(res, args)
    plot(res, args, args.out / "fleet_simulation.png")
    closing = summary(res, args)
    print(text)
    print(closing)
    if not args.no_readme:
        report.replace_section(args.readme, "fleet_simulation", text)
        report.replace_section(args.readme, "fleet_simulation_summary", closing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
