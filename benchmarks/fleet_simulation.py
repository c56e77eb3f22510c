"""Fleet simulation: the product's modes against the best a team can do without it.

One command (``python benchmarks/fleet_simulation.py``) runs five modes over the same
seeded fleets and Deployments, in several scenarios, and reports for each mode the highest
HPA target it can afford (at most 1% of replicas hot after a traffic surge) and the fleet
CPU use that target gives when the fleet is 75% and 90% requested.

- ``raw``: the requests the teams wrote (``cpu: 500m``) are vCPUs on whatever node the pod
  lands; placement is default-scheduler-like (CPU fit + LeastAllocated on CPU).
- ``pinned``: the alternative without this product. Each Deployment is pinned (a
  nodeSelector) to one family's node pool, and the pools are balanced by *observed usage*:
  the platform team moves Deployments until every pool's CPU use is the same share of its
  cores. Requests are vCPUs, as in ``raw``; a Deployment's replicas all run on one family,
  so the HPA never sees skew between them.
- ``packaged``: the same numbers are SCU, normalized with the packaged catalog's factors:
  the webhook's family choice (:func:`extender.admission.placement.choose_family`) pins each pod and
  rewrites its request to ``ceil(scu / scuPerCore)`` millicores
  (:func:`machine_catalog.quantities.scu_to_physical_millis`); the extender's filter
  (:func:`extender.scheduler.filtering.filter_nodes`) and balanced score
  (:func:`extender.scheduler.scoring.node_scores`, added to LeastAllocated as kube-scheduler adds an
  extender's, ``score * weight * 10``) place it.
- ``calibrated``: as ``packaged``, with the catalog ``machine-catalog calibrate --write``
  proposes, *out of sample*: a ``packaged`` run of a different set of Deployments on the
  same fleet is turned into pods, nodes and three PodMetricsList samples and goes through
  :func:`machine_catalog.calibration.calibrate` and
  :func:`~machine_catalog.calibration.propose`, the functions the command runs; the scored
  Deployments never took part in the calibration.
- ``aware``: a simulated product mode, ``packaged`` with a workload-aware family choice: a
  pod goes to the family that already holds most of its Deployment's replicas while a
  node of that family has room for it, and to ``choose_family``'s pick otherwise (the
  first replica, and the spill-over). It tells whether keeping a workload together is
  what wins.

What the simulation does *not* take from the catalog: the hardware's true speed. Each
non-baseline family's true speed is its packaged factor times ``(1 - bias) * (1 + U(-e,
e))``, and each Deployment gains ``true_speed ** k`` from a family, ``k`` uniform in
``[0.6, 1.4]`` (memory-bound work gains less from a faster core than compute-bound work),
so one factor per family is an approximation even when it is exact on average. A Service
spreads a Deployment's work round-robin (equal work per replica) or least-request (work in
proportion to what a replica can serve, so every replica's CPU use per request is the
same). The only model code here is that workload, the HPA's formula (``wire-protocol.md``
§7), the platform team's pool balancing and the measurements; placement, admission and
per-node accounting are the project's own functions. Every assumption is listed in
``README.md`` with the side it favours.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import fleets, metrics_fleet, report
from extender.admission.placement import NodeConstraints, Placement, choose_family, family_capacity
from extender.scheduler.filtering import filter_nodes
from extender.scheduler.scoring import node_scores
from extender.state.cluster import ClusterState, NodeView
from machine_catalog.annotations import FAMILY_ANNOTATION
from machine_catalog.calibration import Calibration, calibrate, propose, t_quantile
from machine_catalog.catalog import Catalog
from machine_catalog.loading import default_catalog_path, load_catalog, parse_document
from machine_catalog.quantities import scu_to_physical_millis

MODES = ("raw", "pinned", "packaged", "calibrated", "aware")
#: The modes that need the product (webhook + extender); ``raw`` and ``pinned`` do not.
PRODUCT = ("packaged", "calibrated", "aware")
NORMALIZED = PRODUCT
BALANCING = ("round-robin", "least-request")
#: kube-scheduler adds an extender's 0..10 score as ``score * weight * 10``
#: (``MaxNodeScore / MaxExtenderPriority``); weight 5 as in manifests/base/scheduler-config.yaml.
EXTENDER_WEIGHT = 5
HPA_TARGET = 60  # percent: sizes the workload (start_fill) and the extender-weight check
HPA_TOLERANCE = 0.1
MIN_REPLICAS = 2
MAX_REPLICAS = 1000
MAX_HPA_ROUNDS = 25
HOT_SHARE = 0.9  # a replica above 90% of its limit, or on a node above 90% of allocatable
SAFE_HOT = 0.01  # "safe": at most 1% of replicas hot after the surge
FILL_LEVELS = (0.75, 0.90)  # fleet requested, where fleet CPU use is read
NODE_SIZE = ("4xlarge", 16, 15890)  # every node: 16 vCPU, 15,890m allocatable (EKS reserves)
#: Three schedulable generations of the packaged catalog, as the node groups of one EKS
#: cluster migrating from m5 to m7i; equal node counts.
FAMILY_PREFIXES = {"aws-m5": "m5", "aws-m6i": "m6i", "aws-m7i": "m7i"}
CALIBRATION_SAMPLES = 3
CALIBRATION_NOISE = 0.2  # per replica and sample, uniform +-20%
#: calibrate runs on Deployments drawn from ``seed + CALIBRATION_SET``, scored ones from
#: ``seed + 1``: out of sample.
CALIBRATION_SET = 1001


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the world is like: the catalog's error, CPU limits, the load balancer."""

    name: str
    error: float  # true speed = factor x (1 - bias) x (1 + U(-error, error))
    bias: float = 0.0  # vendor optimism on every non-baseline family
    limit_ratio: float | None = 1.0  # CPU limit / request; None = no CPU limit
    balancing: str = "round-robin"
    drift: float = 0.0  # sigma of each Deployment's lognormal change since pools were balanced
    realistic: bool = False  # stated before the run: the goal is judged on these

    def describe(self) -> str:
        limit = "no CPU limit" if self.limit_ratio is None else f"limit {self.limit_ratio:g}x"
        truth = (
            f"claims {self.bias:.0%} optimistic" + (f" ±{self.error:.0%}" if self.error else "")
            if self.bias
            else f"±{self.error:.0%}"
        )
        text = f"{truth}, {limit}, {self.balancing}"
        return text + (f", usage drift {self.drift:.0%}" if self.drift else "")


#: Decided before any run. "Realistic" are the scenarios whose assumptions are not the
#: product's best case: vendor factors that are optimistic, Burstable pods (limits above
#: requests, or none) and a mesh's least-request balancing.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("unbiased", 0.10),
    Scenario("biased", 0.0, bias=0.08, realistic=True),
    Scenario("wide", 0.20),
    Scenario("limit-1.5", 0.10, limit_ratio=1.5, realistic=True),
    Scenario("no-limit", 0.10, limit_ratio=None, realistic=True),
    Scenario("least-request", 0.10, balancing="least-request", realistic=True),
    Scenario(
        "mesh-burstable",
        0.0,
        bias=0.08,
        limit_ratio=None,
        balancing="least-request",
        realistic=True,
    ),
    Scenario("drift", 0.10, drift=0.25),
)
BY_NAME = {s.name: s for s in SCENARIOS}


# -- the world ---------------------------------------------------------------------------


@dataclass(slots=True)
class Replica:
    pod: dict[str, Any]
    request: int  # physical millicores (what the pod object asks)
    limit: float  # physical millicores; inf without a CPU limit
    node: int = -1  # position in Fleet.names; -1 while Pending
    family: int = -1  # catalog index of the node (raw) or of the pinned family


@dataclass(slots=True)
class Deployment:
    name: str
    cpu: int  # the request the team wrote, millis: vCPU in raw/pinned, SCU in product modes
    work: float  # baseline-vCPU-millis of work per second at load 1.0, whatever the replicas
    sensitivity: float = 1.0  # k: speed on a family = true_speed ** k
    observed: float = 0.0  # the work when the pools were balanced (before any drift)
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


def true_speeds(catalog: Catalog, error: float, seed: int, bias: float = 0.0) -> dict[str, float]:
    """Each family's true speed: factor x ``(1 - bias) x (1 + U(-error, error))``; baseline 1."""
    speeds = metrics_fleet.speeds_with_error(catalog, list(FAMILY_PREFIXES), error, seed)
    return {
        name: s if name == catalog.baseline.name else s * (1 - bias) for name, s in speeds.items()
    }


def build_fleet(
    catalog: Catalog,
    nodes_per_family: int,
    seed: int,
    catalog_error: float = 0.0,
    bias: float = 0.0,
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
    truth = true_speeds(catalog, catalog_error, seed + 100, bias)
    speed = np.array([truth[catalog.families[f].name] for f in family])
    allocatable = np.array([fleets.node_allocatable_millis(n) for n in nodes], dtype=np.int64)
    return Fleet(
        nodes, [n["metadata"]["name"] for n in nodes], family, factor, speed, allocatable, truth
    )


def build_deployments(
    count: int,
    fleet: Fleet,
    start_fill: float,
    seed: int,
    spread: float = 0.4,
    drift: float = 0.0,
) -> list[Deployment]:
    """Deployments with typical requests; total work sized to ``start_fill`` of the fleet.

    At load 1.0 the HPA at HPA_TARGET requests about ``start_fill`` of the fleet's SCU.
    ``spread``: the sensitivity ``k`` is uniform in ``[1 - spread, 1 + spread]``. ``drift``:
    each Deployment's work has changed by a lognormal factor (sigma ``drift``) since the
    platform team last balanced its pools (``observed`` is the work they balanced on).
    """
    rng = random.Random(seed)
    drift_rng = random.Random(seed + 7919)
    sizes = (250, 500, 500, 1000, 1000, 2000)
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    capacity_scu = float(np.sum(fleet.allocatable * fleet.speed))
    total_work = start_fill * capacity_scu * HPA_TARGET / 100
    scale = total_work / sum(weights)
    deployments = []
    for i, w in enumerate(weights):
        cpu = rng.choice(sizes)
        k = 1.0 + rng.uniform(-spread, spread)
        change = drift_rng.lognormvariate(0.0, drift) if drift else 1.0
        deployments.append(Deployment(f"svc-{i:03d}", cpu, w * scale * change, k, w * scale))
    return deployments


def balance_pools(fleet: Fleet, deployments: Sequence[Deployment]) -> dict[str, int]:
    """The platform team's pools: each Deployment to one family, by observed usage.

    Largest Deployment first, each to the pool whose CPU use (cores used by the Deployments
    already there, as monitoring shows them: work / true speed ** k) would be the smallest
    share of its cores. The team sees true usage, so the pools are as level as greedy
    packing makes them, at the load they were balanced on.
    """
    families = np.unique(fleet.family)
    cores = {int(f): float(fleet.allocatable[fleet.family == f].sum()) for f in families}
    speed = {int(f): float(fleet.speed[fleet.family == f][0]) for f in families}
    used = dict.fromkeys(cores, 0.0)
    pools = {}
    for dep in sorted(deployments, key=lambda d: -d.observed):
        cost = {f: dep.observed / speed[f] ** dep.sensitivity for f in cores}
        best = min(cores, key=lambda f: ((used[f] + cost[f]) / cores[f], f))
        used[best] += cost[best]
        pools[dep.name] = best
    return pools


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
        limit_ratio: float | None = 1.0,
        balancing: str = "round-robin",
        pools: dict[str, int] | None = None,
        seed: int = 0,
        extender_weight: int = EXTENDER_WEIGHT,
    ) -> None:
        if mode not in MODES or balancing not in BALANCING:
            raise ValueError(f"unknown mode {mode!r} or balancing {balancing!r}")
        if mode == "pinned" and pools is None:
            raise ValueError("pinned needs the pools (balance_pools)")
        self.mode = mode
        self.target = target
        self.catalog = catalog
        self.fleet = fleet
        self.limit_ratio = limit_ratio
        self.balancing = balancing
        self.pools = pools or {}
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

    def _limit(self, request: int) -> float:
        return math.inf if self.limit_ratio is None else math.ceil(request * self.limit_ratio)

    def _sticky_family(self, dep: Deployment, scu: int) -> int | None:
        """``aware``: the family holding most of the Deployment's replicas, if it has room.

        Room = some node of the family can hold the rewritten request now (its free
        allocatable after the pods bound there and those pinned to it and still Pending).
        """
        counts = Counter(r.family for r in dep.replicas if r.family >= 0)
        if not counts:
            return None
        family = max(counts, key=lambda f: (counts[f], -f))
        request = scu_to_physical_millis(scu, self.catalog.families[family].factor)
        members = self.family_names[family]
        view = self.state.view(members)
        pending = self.state.pending_millis().get(self.catalog.families[family].name, 0)
        free = view.allocatable - view.requested
        if (free >= request).any() and int(np.maximum(free, 0).sum()) - pending >= request:
            return family
        return None

    def create(self, dep: Deployment) -> Replica:
        """Admission: the webhook (product modes) picks a family and rewrites the request."""
        family_name = None
        request = dep.cpu
        family = -1
        if self.mode == "pinned":
            family = self.pools[dep.name]
        elif self.mode in PRODUCT:
            sticky = self._sticky_family(dep, dep.cpu) if self.mode == "aware" else None
            if sticky is None:
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
                sticky = self.catalog.family_index[decision.family.name]
            chosen = self.catalog.families[sticky]
            family_name, family = chosen.name, sticky
            request = scu_to_physical_millis(dep.cpu, chosen.factor)
        limit = self._limit(request)
        replica = Replica(self._pod(dep, request, family_name), request, limit, family=family)
        self.state.apply("Pod", "ADDED", replica.pod)
        dep.replicas.append(replica)
        return replica

    def schedule(self, replica: Replica) -> bool:
        """One scheduling cycle; False when no node fits (the pod stays Pending).

        kube-scheduler runs its own filters before calling an extender, so the extender
        is sent only the nodes that passed them: here NodeResourcesFit (the physical
        request fits) and NodeAffinity (the webhook's required affinity = the family).
        ``raw`` and ``pinned`` have no extender: fit (and the pool's nodeSelector), then
        LeastAllocated.
        """
        if self.mode in ("raw", "pinned"):
            names = self.fleet.names if self.mode == "raw" else self.family_names[replica.family]
            view = self.state.view(names)
            fits = np.flatnonzero(view.allocatable - view.requested >= replica.request)
            if fits.size == 0:
                return False
            scores = _least_allocated(view, replica.request)[fits]
            node = names[int(fits[_pick_index(scores, self.rng)])]
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
        """Physical millicores each running replica needs for the work it is sent.

        Round-robin: equal work per replica, so a replica needs its share / true speed ** k.
        Least-request: work in proportion to what a replica serves (its request x its
        speed), so every replica needs the same CPU per millicore requested.
        """
        running = dep.running()
        if not running:
            return running, np.zeros(0)
        speeds = self.fleet.speed[[r.node for r in running]] ** dep.sensitivity
        work = dep.work * load
        if self.balancing == "least-request":
            requests = np.array([r.request for r in running], dtype=float)
            return running, work * requests / float((requests * speeds).sum())
        return running, work / len(running) / speeds

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
    fleet_util: float  # sum of min(node usage, allocatable) / sum of allocatable
    requested: float  # sum of requests / sum of allocatable
    max_node: float  # highest node usage / allocatable
    pending: int
    demand: np.ndarray  # per running replica: CPU its work needs, physical millis
    limit: np.ndarray  # per running replica (inf: none)
    node: np.ndarray  # per running replica: node position
    allocatable: np.ndarray  # per node
    replica_family: np.ndarray  # catalog family index per running replica
    relative: np.ndarray  # per replica: its demand/request over its Deployment's average

    def hot_share(self, surge: float = 0.0) -> float:
        """Running replicas that are hot after a ``surge`` of traffic the HPA has not met.

        Hot: above 90% of its CPU limit (throttled soon), or on a node whose usage is above
        90% of its allocatable (CPU contention: every pod there slows down). Usage is
        capped by the limit, as the kernel caps it.
        """
        if not self.demand.size:
            return 0.0
        need = self.demand * (1 + surge)
        usage = np.minimum(need, self.limit)
        node = np.bincount(self.node, weights=usage, minlength=self.allocatable.size)
        crowded = (node / self.allocatable > HOT_SHARE)[self.node]
        throttled = need > HOT_SHARE * self.limit
        return float((crowded | throttled).mean())

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
    demand: list[np.ndarray] = []
    limit: list[float] = []
    node: list[int] = []
    relative: list[np.ndarray] = []
    families: list[int] = []
    for dep in deployments:
        running, need = sim.demand(dep, load)
        if running:
            requests = np.array([r.request for r in running], dtype=float)
            demand.append(need)
            limit += [r.limit for r in running]
            node += [r.node for r in running]
            relative.append((need / requests) / (need.sum() / requests.sum()))
            families += [r.family for r in running]
    view = sim.state.view(fleet.names)
    alloc = fleet.allocatable.astype(float)
    need = np.concatenate(demand) if demand else np.zeros(0)
    limits = np.array(limit, dtype=float)
    nodes = np.array(node, dtype=np.int64)
    usage = np.bincount(nodes, weights=np.minimum(need, limits), minlength=alloc.size)
    return Step(
        load=load,
        fleet_util=float(np.minimum(usage, alloc).sum() / alloc.sum()),
        requested=float(view.requested.sum() / alloc.sum()),
        max_node=float((usage / alloc).max()),
        pending=sum(1 for d in deployments for r in d.replicas if r.node < 0),
        demand=need,
        limit=limits,
        node=nodes,
        allocatable=alloc,
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
    stopped_by: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Setup:
    """One scenario x seed: the fleet and the Deployments every mode runs on."""

    scenario: Scenario
    seed: int
    fleet: Fleet
    pools: dict[str, int]


def setup(args: argparse.Namespace, scenario: Scenario, seed: int) -> Setup:
    fleet = build_fleet(
        packaged_catalog(), args.nodes_per_family, seed, scenario.error, scenario.bias
    )
    deployments = _deployments(args, fleet, seed + 1, scenario.drift)
    return Setup(scenario, seed, fleet, balance_pools(fleet, deployments))


def _deployments(
    args: argparse.Namespace, fleet: Fleet, seed: int, drift: float = 0.0
) -> list[Deployment]:
    return build_deployments(
        args.deployments, fleet, args.start_fill, seed, args.sensitivity, drift
    )


def run(
    mode: str,
    args: argparse.Namespace,
    catalog: Catalog,
    target: int,
    world: Setup,
    extender_weight: int = EXTENDER_WEIGHT,
) -> Run:
    """Ramp the load from 1.0 until a pod pends or a node saturates.

    ``catalog`` is what the webhook and extender use (the packaged one, or calibrate's
    proposal); the fleet's true speeds never come from it.
    """
    started = time.perf_counter()
    scenario = world.scenario
    deployments = _deployments(args, world.fleet, world.seed + 1, scenario.drift)
    sim = Simulation(
        mode,
        catalog,
        world.fleet,
        target=target,
        limit_ratio=scenario.limit_ratio,
        balancing=scenario.balancing,
        pools=world.pools,
        seed=world.seed + 2,
        extender_weight=extender_weight,
    )
    steps: list[Step] = []
    # Start where the fleet is ``ramp_from`` requested at this target: the Deployments
    # request ``start_fill`` at load 1 and HPA_TARGET, and a higher target asks less.
    load = args.ramp_from / args.start_fill * target / HPA_TARGET
    stopped_by = f"load cap {args.max_load:g}x"
    while load <= args.max_load:
        sim.converge(deployments, load)
        step = measure(sim, deployments, load)
        if step.max_node >= 1.0:
            stopped_by = "first node saturated"
            break
        steps.append(step)
        if step.pending:
            stopped_by = "first Pending pod"
            steps += _refine(sim, deployments, load / (1 + args.step), load, args.refine)
            break
        load *= 1 + args.step
    if not steps:
        raise SystemExit(f"{mode}: a node is saturated at the starting load; lower --start-fill")
    healthy = [s for s in steps if s.pending == 0]
    healthy.sort(key=lambda s: s.load)
    return Run(
        mode=mode,
        target=target,
        seed=world.seed,
        steps=steps,
        operating=healthy[-1] if healthy else steps[0],
        stopped_by=stopped_by,
        seconds=time.perf_counter() - started,
    )


def _refine(
    sim: Simulation, deployments: Sequence[Deployment], healthy: float, pending: float, times: int
) -> list[Step]:
    """Bisect the load between the last healthy step and the first with a Pending pod.

    A load step of 3% moves the fleet's fill by about 3 points, more than the difference
    between two modes; each halving here lowers or raises the load (the HPAs scale down,
    and the ReplicaSet deletes Pending pods first) and measures again.
    """
    steps = []
    for _ in range(times):
        load = math.sqrt(healthy * pending)
        sim.converge(deployments, load)
        step = measure(sim, deployments, load)
        if step.max_node >= 1.0:
            break
        steps.append(step)
        if step.pending:
            pending = load
        else:
            healthy = load
    return steps


R = TypeVar("R")


def safe(r: Run, surge: float) -> bool:
    return r.operating.pending == 0 and r.operating.hot_share(surge) <= SAFE_HOT


def safest_run(
    targets: Sequence[int], attempt: Callable[[int], R], is_safe: Callable[[R], bool], start: int
) -> tuple[R | None, int]:
    """The run at the highest safe target on the grid, and the number of runs it took.

    A galloping search from ``targets[start]`` (4 grid steps at a time until one target is
    safe and one above it is not), then bisection between them. It assumes the hot share
    grows with the target (it does, up to the noise of one placement); a full scan of the
    grid would cost ten times as many runs.
    """
    runs: dict[int, R] = {}

    def ok(i: int) -> bool:
        if i not in runs:
            runs[i] = attempt(targets[i])
        return is_safe(runs[i])

    start = min(max(start, 0), len(targets) - 1)
    if ok(start):
        low, high = start, start + 4
        while high < len(targets) and ok(high):
            low, high = high, high + 4
        high = min(high, len(targets))
    else:
        low, high = start - 4, start
        while low >= 0 and not ok(low):
            low, high = low - 4, low
        low = max(low, -1)
    while high - low > 1:  # targets[low] is safe (or low is -1), targets[high] is not
        mid = (low + high) // 2
        if ok(mid):
            low = mid
        else:
            high = mid
    return (runs[low] if low >= 0 else None), len(runs)


# -- calibrate, through the command's own functions -----------------------------------


@dataclass(slots=True)
class Calibrated:
    seed: int
    catalog: Catalog
    result: Calibration
    applied: list[str]
    truth: dict[str, float]


def calibrate_fleet(args: argparse.Namespace, packaged: Catalog, world: Setup) -> Calibrated:
    """Run ``packaged`` at load 1 on *other* Deployments, read their usage, calibrate.

    The pods (with ``ownerReferences``, a start an hour ago, bound and Running) and nodes
    are the objects the simulation placed; each replica's usage in each of three samples is
    its demand (capped by its limit, as the kernel would) x ``1 + U(-20%, +20%)``, under the
    scenario's load balancing.
    """
    seed, scenario = world.seed, world.scenario
    deployments = _deployments(args, world.fleet, seed + CALIBRATION_SET)
    sim = Simulation(
        "packaged",
        packaged,
        world.fleet,
        limit_ratio=scenario.limit_ratio,
        balancing=scenario.balancing,
        seed=seed + 2,
    )
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
            resources: dict[str, Any] = {"requests": {"cpu": f"{r.request}m"}}
            if math.isfinite(r.limit):
                resources["limits"] = {"cpu": f"{int(r.limit)}m"}
            pod["spec"]["containers"] = [{"name": "app", "resources": resources}]
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
    result = calibrate(packaged, world.fleet.nodes, pods, samples)
    document = parse_document(default_catalog_path().read_bytes())
    data, applied = propose(document, result)
    catalog = Catalog.from_data(data, source=f"calibrate (seed {seed})")
    return Calibrated(seed, catalog, result, applied, world.fleet.true_speed)


# -- statistics over seeds ------------------------------------------------------------


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): a 95% t-interval of the mean over seeds."""
    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if a.size < 2:
        return mean, mean, mean
    half = t_quantile(0.975, a.size - 1) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return mean, mean - half, mean + half


def _ci(values: Sequence[float], scale: float = 100, unit: str = "", digits: int = 1) -> str:
    """``mean [low, high]``, or ``-`` without values."""
    if not values:
        return "-"
    mean, low, high = interval(values)
    f = f"{{:.{digits}f}}"
    return f"{f.format(scale * mean)}{unit} [{f.format(scale * low)}, {f.format(scale * high)}]"


# -- the whole experiment -------------------------------------------------------------


@dataclass(slots=True)
class Cell:
    """One scenario x mode x seed: the run at the highest safe target."""

    scenario: str
    mode: str
    seed: int
    best: Run | None
    runs: int

    @property
    def target(self) -> float | None:
        return None if self.best is None else self.best.target / 100

    @property
    def fill(self) -> float | None:
        """How full the fleet is by requests at the operating point."""
        return None if self.best is None else self.best.operating.requested

    @property
    def used(self) -> float | None:
        """Fleet CPU use at the operating point: what the fleet does at its safe fullest."""
        return None if self.best is None else self.best.operating.fleet_util

    def util(self, requested: float) -> float | None:
        """Fleet CPU use were the fleet ``requested`` full: that x CPU use per request."""
        if self.best is None:
            return None
        op = self.best.operating
        return requested * op.fleet_util / op.requested

    def bias(self) -> float | None:
        return None if self.best is None else self.best.operating.worst_bias()


@dataclass(slots=True)
class Results:
    seeds: list[int]
    scenarios: list[Scenario]
    cells: list[Cell]
    calibrations: dict[str, list[Calibrated]]  # scenario -> per seed
    weight_check: bool  # extender weight 0 gave the same operating point as 5
    seconds: float
    surge: float = 0.25

    def cell(self, scenario: str, mode: str, seed: int) -> Cell:
        return next(c for c in self.cells if (c.scenario, c.mode, c.seed) == (scenario, mode, seed))

    def values(self, scenario: str, mode: str, metric: Callable[[Cell], float | None]) -> list:
        out = [metric(self.cell(scenario, mode, s)) for s in self.seeds]
        return [v for v in out if v is not None]

    def paired(
        self, scenario: str, mode: str, metric: Callable[[Cell], float | None], base: str
    ) -> list[float]:
        """Per seed: ``mode`` minus ``base`` on the same fleet and Deployments."""
        out = []
        for s in self.seeds:
            a, b = metric(self.cell(scenario, mode, s)), metric(self.cell(scenario, base, s))
            if a is not None and b is not None:
                out.append(a - b)
        return out


METRICS: dict[str, Callable[[Cell], float | None]] = {
    "used": lambda c: c.used,
    "target": lambda c: c.target,
    "fill": lambda c: c.fill,
    "util75": lambda c: c.util(FILL_LEVELS[0]),
    "util90": lambda c: c.util(FILL_LEVELS[1]),
}


def experiment(args: argparse.Namespace, log: Callable[[str], None] = print) -> Results:
    started = time.perf_counter()
    packaged = packaged_catalog()
    seeds = [args.seed + i for i in range(args.seeds)]
    scenarios = [BY_NAME[n] for n in args.scenarios]
    cells: list[Cell] = []
    calibrations: dict[str, list[Calibrated]] = {}
    weight_check = True
    for scenario in scenarios:
        t0 = time.perf_counter()
        calibrations[scenario.name] = []
        for seed in seeds:
            world = setup(args, scenario, seed)
            calibrated = calibrate_fleet(args, packaged, world)
            calibrations[scenario.name].append(calibrated)
            start = _nearest(args.targets, args.first_guess)
            for mode in args.modes:
                catalog = calibrated.catalog if mode == "calibrated" else packaged

                def attempt(
                    target: int, mode: str = mode, catalog: Catalog = catalog, world: Setup = world
                ) -> Run:
                    return run(mode, args, catalog, target, world)

                best, runs = safest_run(args.targets, attempt, lambda r: safe(r, args.surge), start)
                cells.append(Cell(scenario.name, mode, seed, best, runs))
                if best is not None:  # the next mode's search starts at this one's answer
                    start = args.targets.index(best.target)
            if scenario is scenarios[0] and seed == seeds[0] and "packaged" in args.modes:
                base = run("packaged", args, packaged, HPA_TARGET, world)
                zero = run("packaged", args, packaged, HPA_TARGET, world, extender_weight=0)
                weight_check = _same(base, zero)
        log(f"  {scenario.name}: {time.perf_counter() - t0:.0f} s")
    return Results(
        seeds,
        scenarios,
        cells,
        calibrations,
        weight_check,
        time.perf_counter() - started,
        args.surge,
    )


def _nearest(targets: Sequence[int], value: int) -> int:
    return min(range(len(targets)), key=lambda i: abs(targets[i] - value))


def _same(a: Run, b: Run) -> bool:
    return (
        a.operating.load == b.operating.load
        and np.array_equal(a.operating.node, b.operating.node)
        and a.operating.demand.size == b.operating.demand.size
    )


# -- output ------------------------------------------------------------------------------


def _pp(values: Sequence[float]) -> str:
    """A paired difference in points: ``+1.2 [-0.3, +2.7]``."""
    if not values:
        return "-"
    mean, low, high = interval(values)
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One scenario: the product's best mode against ``pinned``, paired over seeds."""

    scenario: Scenario
    best: str  # the product mode with the highest mean fleet CPU use at the operating point
    diff: dict[str, tuple[float, float, float]]  # metric -> (mean, low, high) of best - pinned

    def outcome(self, metric: str = "used") -> str:
        _, low, high = self.diff[metric]
        if low > 0:
            return "beats"
        if high < 0:
            return "loses to"
        return "ties with"


def verdicts(res: Results) -> list[Verdict]:
    """Per scenario, the product mode that uses the fleet best, against ``pinned``."""
    modes = [m for m in PRODUCT if any(c.mode == m for c in res.cells)]
    if not modes or not any(c.mode == "pinned" for c in res.cells):
        return []
    out = []
    for scenario in res.scenarios:

        def mean_used(m: str, name: str = scenario.name) -> float:
            vals = res.values(name, m, METRICS["used"])
            return float(np.mean(vals)) if vals else -1.0

        best = max(modes, key=mean_used)
        diff = {}
        for key, metric in METRICS.items():
            d = res.paired(scenario.name, best, metric, "pinned")
            diff[key] = interval(d) if d else (math.nan, math.nan, math.nan)
        out.append(Verdict(scenario, best, diff))
    return out


def _pts(diff: tuple[float, float, float]) -> str:
    m, lo, hi = diff
    return f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def headline(res: Results) -> str:
    """The first paragraph: the goal stated in advance, and what the run says about it."""
    vs = verdicts(res)
    if not vs:
        return "No product mode and `pinned` in the same run: nothing to compare."
    realistic = [v for v in vs if v.scenario.realistic]
    beats = [v for v in realistic if v.outcome() == "beats"]
    loses = [v for v in realistic if v.outcome() == "loses to"]
    if realistic and len(beats) == len(realistic):
        goal = "**Goal met**"
    elif beats:
        goal = f"**Goal met in {len(beats)} of {len(realistic)} realistic scenarios only**"
    else:
        goal = "**Goal not met**"
    lines = [
        "Goal, stated before the run: the product's best mode beats hand-pinned pools "
        "balanced by observed usage (`pinned`, what a platform team does without this "
        "product) at the operating point, i.e. uses more of the fleet's CPU when every "
        "replica runs at the highest HPA target that is safe, in the realistic scenarios "
        f"({', '.join(f'`{v.scenario.name}`' for v in realistic)}). {goal}: the best product "
        f"mode's fleet CPU use is above `pinned`'s with a paired 95% interval above zero in "
        f"{len(beats)} of {len(realistic)} realistic scenarios, below zero in {len(loses)}, "
        f"and the interval includes zero in {len(realistic) - len(beats) - len(loses)} "
        f"({len(res.seeds)} seeds, each mode on the same fleet and Deployments). On the safe "
        f"HPA target alone the best product mode is above `pinned` (interval above zero) in "
        f"{sum(v.outcome('target') == 'beats' for v in realistic)}, below in "
        f"{sum(v.outcome('target') == 'loses to' for v in realistic)} of the "
        f"{len(realistic)}. The best mode is picked per scenario on the same seeds it is "
        "scored on, which flatters it. Best product mode minus `pinned`, in points:",
        "",
        *[
            f"- `{v.scenario.name}`{' (realistic)' if v.scenario.realistic else ''}, "
            f"{v.scenario.describe()}: `{v.best}` {v.outcome()} `pinned`: fleet CPU use at the "
            f"operating point {_pts(v.diff['used'])}, safe HPA target "
            f"{_pts(v.diff['target'])}, fleet requested there {_pts(v.diff['fill'])}."
            for v in vs
        ],
    ]
    lines += ["", _why(res)]
    aware = _aware_effect(res)
    if aware:
        lines += ["", aware]
    return "\n".join(lines)


def _why(res: Results) -> str:
    """Where the difference comes from, from the same cells: skew costs target, pools cost
    fill. Every number is a mean over the run's seeds and scenarios."""
    modes = [m for m in MODES if any(c.mode == m for c in res.cells)]

    def avg(mode: str, metric: Callable[[Cell], float | None]) -> float:
        vals = [v for s in res.scenarios for v in res.values(s.name, mode, metric)]
        return float(np.mean(vals)) if vals else math.nan

    ceiling = HOT_SHARE / ((1 + res.surge) * (1 + HPA_TOLERANCE))
    parts = [
        f"`{m}` target {100 * avg(m, METRICS['target']):.1f}%, fill "
        f"{100 * avg(m, METRICS['fill']):.1f}%, worst family skew "
        f"{100 * avg(m, lambda c: c.bias()):.1f}%"
        for m in modes
    ]
    text = (
        "Why, averaged over all scenarios and seeds: "
        + "; ".join(parts)
        + ". A Deployment whose replicas all run on one family shows its HPA no skew, so its "
        f"safe target is capped only by the HPA's tolerance: {HOT_SHARE:.0%} / ((1 + "
        f"{res.surge:.0%} surge) x (1 + {HPA_TOLERANCE:g})) = {100 * ceiling:.1f}% with CPU "
        "limit = request."
    )
    if "pinned" in modes:
        product = [m for m in PRODUCT if m in modes]
        fills = {m: avg(m, METRICS["fill"]) for m in product}
        targets = {m: avg(m, METRICS["target"]) for m in product}
        pinned_fill, pinned_target = (
            avg("pinned", METRICS["fill"]),
            avg("pinned", METRICS["target"]),
        )
        fuller = [m for m in product if fills[m] > pinned_fill]
        higher = [m for m in product if targets[m] > pinned_target]
        text += (
            f" The product's modes reach a higher safe target than `pinned` on average: "
            f"{', '.join(f'`{m}`' for m in higher) or 'none'}; a fuller fleet at the operating "
            f"point: {', '.join(f'`{m}`' for m in fuller) or 'none'}."
        )
    return text


def _aware_effect(res: Results) -> str:
    """Does keeping a workload together win? ``aware`` against ``packaged``, per scenario."""
    if not {"aware", "packaged"} <= {c.mode for c in res.cells}:
        return ""
    parts = []
    up = down = 0
    for scenario in res.scenarios:
        used = res.paired(scenario.name, "aware", METRICS["used"], "packaged")
        target = res.paired(scenario.name, "aware", METRICS["target"], "packaged")
        if used and target:
            u, t = interval(used), interval(target)
            up += u[1] > 0
            down += u[2] < 0
            parts.append(f"`{scenario.name}` {_pts(u)} ({_pts(t)})")
    return (
        "Keeping a workload together (`aware` minus `packaged`, paired, points of fleet CPU "
        f"use at the operating point (of safe HPA target)): {'; '.join(parts)}. The "
        f"interval is above zero in {up} of {len(parts)} scenarios and below zero in {down}."
    )


def render(res: Results, args: argparse.Namespace) -> str:
    packaged = packaged_catalog()
    families = list(FAMILY_PREFIXES)
    modes = [m for m in MODES if any(c.mode == m for c in res.cells)]
    lines = [
        f"Run {report.stamp()} on {report.machine()}: `python benchmarks/fleet_simulation.py"
        f" --seed {args.seed} --seeds {args.seeds}` ({res.seconds:.0f} s, "
        f"{sum(c.runs for c in res.cells)} ramps).",
        "",
        f"Fleet per seed: {3 * args.nodes_per_family} nodes of 16 vCPU (15,890m "
        f"allocatable), {args.nodes_per_family} per family of the packaged catalog: "
        + ", ".join(f"{n} ({packaged.by_name[n].scu_per_core})" for n in families)
        + f". {args.deployments} Deployments, sensitivity k ~ U({1 - args.sensitivity:.1f}, "
        f"{1 + args.sensitivity:.1f}), HPA tolerance {HPA_TOLERANCE}. {len(res.seeds)} seeds "
        f"({res.seeds[0]}–{res.seeds[-1]}); a cell is the mean over seeds with its 95% "
        "t-interval [low, high]; a difference is paired (same seed: same fleet, true "
        "speeds and Deployments).",
        "",
        headline(res),
        "",
        f"**Per mode** at its safe HPA target (the highest on the grid {args.targets[0]}–"
        f"{args.targets[-1]}%, at most {SAFE_HOT:.0%} of replicas hot after a "
        f"+{args.surge:.0%} surge: above {HOT_SHARE:.0%} of their CPU limit or on a node "
        f"above {HOT_SHARE:.0%} of its allocatable), at the operating point (the highest load "
        f"with every replica running: {args.step:.0%} steps, then {args.refine} halvings); "
        "fleet CPU use at "
        f"{FILL_LEVELS[0]:.0%} / {FILL_LEVELS[1]:.0%} requested = that fill x the CPU use per "
        "requested core at the operating point; all in %, differences in points:",
        "",
    ]
    rows = []
    for scenario in res.scenarios:
        for mode in modes:
            vals = {k: res.values(scenario.name, mode, m) for k, m in METRICS.items()}
            found = len(vals["target"])

            def vs_pinned(key: str, name: str = scenario.name, mode: str = mode) -> str:
                if mode == "pinned":
                    return "-"
                return _pp(res.paired(name, mode, METRICS[key], "pinned"))

            rows.append(
                [
                    f"`{scenario.name}`" + (" *" if scenario.realistic else ""),
                    f"`{mode}`",
                    _ci(vals["target"]) + ("" if found == len(res.seeds) else f" ({found})"),
                    _ci(vals["fill"]),
                    _ci(vals["used"]),
                    _ci(vals["util75"]),
                    _ci(vals["util90"]),
                    _ci(res.values(scenario.name, mode, lambda c: c.bias())),
                    vs_pinned("target"),
                    vs_pinned("used"),
                ]
            )
    lines += [
        report.table(
            [
                "scenario",
                "mode",
                "safe HPA target",
                "fleet requested at the op. point",
                "fleet CPU use at the op. point",
                f"fleet CPU at {FILL_LEVELS[0]:.0%} req.",
                f"fleet CPU at {FILL_LEVELS[1]:.0%} req.",
                "worst family skew",
                "target − `pinned`",
                "CPU use at op. point − `pinned`",
            ],
            rows,
        ),
        "",
        "Scenarios (* = realistic, decided before the run): "
        + "; ".join(f"`{s.name}` {s.describe()}" for s in res.scenarios)
        + '. (n) after a target: only n seeds had a safe target on the grid. "Worst family '
        "skew\" = the largest |mean over a family's replicas of (replica CPU / request) / "
        "(its Deployment's CPU / request) - 1| at the operating point: what the HPA's "
        "average does not see.",
        "",
        _calibration_table(res, packaged),
        "",
        f"Extender weight 0 instead of {EXTENDER_WEIGHT} (`packaged`, `{res.scenarios[0].name}`"
        f", seed {res.seeds[0]}, target {HPA_TARGET}%): "
        f"{'identical' if res.weight_check else 'different'} operating point.",
        "",
        "![fleet simulation](results/fleet_simulation.png)",
    ]
    return "\n".join(lines)


def _calibration_table(res: Results, packaged: Catalog) -> str:
    rows = []
    for scenario in res.scenarios:
        cals = res.calibrations.get(scenario.name, [])
        if not cals:
            continue
        for name in list(FAMILY_PREFIXES)[1:]:
            est = [c.result.family(name).estimate for c in cals]
            truth = [c.truth[name] for c in cals]
            err_packaged = [float(packaged.by_name[name].scu_per_core) / t - 1 for t in truth]
            err_cal = [
                float(c.catalog.by_name[name].scu_per_core) / c.truth[name] - 1 for c in cals
            ]
            err_est = [e / t - 1 for e, t in zip(est, truth, strict=True) if e is not None]
            applied = sum(1 for c in cals if name in c.applied)
            rows.append(
                [
                    f"`{scenario.name}`",
                    name,
                    f"{min(truth):.3f}–{max(truth):.3f}",
                    f"{100 * max(abs(e) for e in err_packaged):.1f}%",
                    f"{100 * max(abs(e) for e in err_est):.1f}%" if err_est else "-",
                    f"{100 * max(abs(e) for e in err_cal):.1f}%",
                    f"{applied} of {len(cals)}",
                ]
            )
    return "\n".join(
        [
            f"**Calibration, out of sample** (other Deployments on the same fleet, "
            f"{CALIBRATION_SAMPLES} samples, ±{CALIBRATION_NOISE:.0%} noise per replica and "
            "sample, the `packaged` run at load 1 under the scenario's limits and balancing; "
            "worst over seeds):",
            "",
            report.table(
                [
                    "scenario",
                    "family",
                    "true speed over seeds",
                    "packaged vs truth",
                    "estimate vs truth",
                    "calibrated catalog vs truth",
                    "estimate applied",
                ],
                rows,
            ),
        ]
    )


def summary(res: Results) -> str:
    """The closing note: the verdict per scenario, with the numbers."""
    lines = []
    for v in verdicts(res):
        name = v.scenario.name
        row = {mode: res.values(name, mode, METRICS["used"]) for mode in ("pinned", v.best)}
        lines.append(
            f"- `{name}`{' (realistic)' if v.scenario.realistic else ''}: fleet CPU use at the "
            f"operating point, best product mode `{v.best}` {_ci(row[v.best])}% against "
            f"`pinned` {_ci(row['pinned'])}%: {v.outcome()} it ({_pts(v.diff['used'])} "
            f"points, paired; safe HPA target {_pts(v.diff['target'])})."
        )
    aware = _aware_effect(res)
    if aware:
        lines.append(f"- {aware}")
    return "\n".join(lines)


COLORS = {
    "raw": "tab:red",
    "pinned": "tab:green",
    "packaged": "tab:orange",
    "calibrated": "tab:blue",
    "aware": "tab:purple",
}


def plot(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(c.mode == m for c in res.cells)]
    fig, axes = plt.subplots(2, 1, figsize=(14, 9))
    names = [s.name for s in res.scenarios]
    width = 0.8 / max(1, len(modes))
    for ax, (key, title) in zip(
        axes,
        (
            ("target", "highest safe HPA target, %"),
            ("used", "fleet CPU use at the operating point, %"),
        ),
        strict=True,
    ):
        for j, mode in enumerate(modes):
            means, errs, xs = [], [], []
            for i, name in enumerate(names):
                vals = res.values(name, mode, METRICS[key])
                if not vals:
                    continue
                m, _, hi = interval(vals)
                xs.append(i + (j - (len(modes) - 1) / 2) * width)
                means.append(100 * m)
                errs.append(100 * (hi - m))
            ax.bar(xs, means, width, yerr=errs, color=COLORS[mode], label=mode, capsize=2)
        ax.set_xticks(range(len(names)), names)
        ax.set(ylabel="%", title=title + " (95% interval over seeds)")
        lows = [100 * v for c in res.cells if (v := METRICS[key](c)) is not None]
        if lows:
            ax.set_ylim(max(0, min(lows) - 5), max(lows) + 3)
        ax.legend(ncol=len(modes), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _targets(text: str) -> list[int]:
    if ":" in text:  # start:stop:step, stop included
        a, b, c = (int(x) for x in text.split(":"))
        return list(range(a, b + 1, c))
    return [int(x) for x in text.split(",")]


def _names(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x for x in text.split(",") if x]
        unknown = set(names) - set(choices)
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}")
        return names

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seed", type=int, default=7, help="first seed")
    p.add_argument("--seeds", type=int, default=4, help="seeds per scenario")
    p.add_argument("--out", type=Path, default=report.RESULTS, help="directory for the plot")
    p.add_argument("--readme", type=Path, default=report.README, help="README to update")
    p.add_argument("--no-readme", action="store_true", help="print the tables only")
    p.add_argument("--nodes-per-family", type=int, default=15)
    p.add_argument("--deployments", type=int, default=50)
    p.add_argument("--start-fill", type=float, default=0.5, help="fleet requested at load 1")
    p.add_argument("--ramp-from", type=float, default=0.7, help="fleet requested at the start")
    p.add_argument("--step", type=float, default=0.03, help="load growth per step")
    p.add_argument("--refine", type=int, default=3, help="halvings after the first Pending pod")
    p.add_argument("--max-load", type=float, default=20.0)
    p.add_argument("--surge", type=float, default=0.25, help="traffic surge before the HPA acts")
    p.add_argument("--sensitivity", type=float, default=0.4, help="k of a Deployment in 1 +- this")
    p.add_argument("--targets", type=_targets, default=_targets("40:90:1"), help="50,60 or 40:90:1")
    p.add_argument("--first-guess", type=int, default=62, help="where the search starts")
    p.add_argument(
        "--scenarios",
        type=_names([s.name for s in SCENARIOS]),
        default=[s.name for s in SCENARIOS],
        help="comma-separated: " + ", ".join(s.name for s in SCENARIOS),
    )
    p.add_argument("--modes", type=_names(MODES), default=list(MODES), help=", ".join(MODES))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    res = experiment(args, log=lambda s: print(s, file=sys.stderr))
    text = render(res, args)
    plot(res, args.out / "fleet_simulation.png")
    closing = summary(res)
    print(text)
    print(closing)
    if not args.no_readme:
        report.replace_section(args.readme, "fleet_simulation", text)
        report.replace_section(args.readme, "fleet_simulation_headline", headline(res))
        report.replace_section(args.readme, "fleet_simulation_summary", closing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
