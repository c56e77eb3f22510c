"""Fleet simulation: where vCPU requests and SCU-normalized requests take a mixed fleet.

One command (``python benchmarks/fleet_simulation.py``) runs two modes over the same seeded
fleet and the same Deployments, and ramps the load until the first node saturates:

- ``raw``: the requests the teams wrote (``cpu: 500m``) are vCPUs on whatever node the pod
  lands; placement is default-scheduler-like (CPU fit + LeastAllocated on CPU).
- ``normalized``: the same numbers are SCU; the webhook's family choice
  (:func:`extender.placement.choose_family`) pins each pod to a family and rewrites its
  request to ``ceil(scu / scuPerCore)`` millicores
  (:func:`machine_catalog.quantities.scu_to_physical_millis`); the extender's filter
  (:func:`extender.filtering.filter_nodes`) and balanced scoring
  (:func:`extender.scoring.node_scores`, added to LeastAllocated as kube-scheduler adds an
  extender's score, ``score * weight * 10``) place it.

Per-node totals come from :class:`extender.cluster.ClusterState`, fed with pod objects as
the watch would. The only model code here is the workload (a Deployment's work is fixed in
SCU-seconds per second and a Service spreads it evenly over the running replicas) and the
HPA's formula (``wire-protocol.md`` §7). Every assumption is listed in ``README.md``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import fleets, report
from extender.cluster import ClusterState, NodeView
from extender.filtering import filter_nodes
from extender.placement import NodeConstraints, Placement, choose_family, family_capacity
from extender.scoring import node_scores
from machine_catalog.annotations import FAMILY_ANNOTATION
from machine_catalog.catalog import Catalog
from machine_catalog.quantities import scu_to_physical_millis

MODES = ("raw", "normalized")
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
    cpu: int  # the request the team wrote, millis: vCPU in raw mode, SCU in normalized mode
    work: float  # SCU-millis of work per second at load 1.0, whatever the replica count
    replicas: list[Replica] = field(default_factory=list)

    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.node >= 0]


@dataclass(frozen=True, slots=True)
class Fleet:
    nodes: list[dict[str, Any]]
    names: list[str]
    family: np.ndarray  # catalog family index per node
    factor: np.ndarray  # float scuPerCore per node
    allocatable: np.ndarray  # int64 physical millicores


def build_fleet(catalog: Catalog, nodes_per_family: int, seed: int) -> Fleet:
    rng = random.Random(seed)
    names = fleets.node_names(rng)
    nodes = [
        fleets.make_node(rng, next(names), spec, NODE_SIZE, fleets.ZONES[i % 3])
        for spec in fleets.FAMILIES
        for i in range(nodes_per_family)
    ]
    family = np.array(
        [catalog.family_index[catalog.match(n["metadata"]["labels"]).family.name] for n in nodes]
    )
    factor = np.array([float(catalog.families[f].scu_per_core) for f in family])
    allocatable = np.array([fleets.node_allocatable_millis(n) for n in nodes], dtype=np.int64)
    return Fleet(nodes, [n["metadata"]["name"] for n in nodes], family, factor, allocatable)


def build_deployments(count: int, fleet: Fleet, start_fill: float, seed: int) -> list[Deployment]:
    """Deployments with typical requests; total work sized to ``start_fill`` of the fleet.

    At load 1.0 the HPA at its target requests about ``start_fill`` of the fleet's SCU.
    """
    rng = random.Random(seed)
    sizes = (250, 500, 500, 1000, 1000, 2000)
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    capacity_scu = float(np.sum(fleet.allocatable * fleet.factor))
    total_work = start_fill * capacity_scu * HPA_TARGET / 100
    scale = total_work / sum(weights)
    return [
        Deployment(name=f"svc-{i:03d}", cpu=rng.choice(sizes), work=w * scale)
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
    ) -> None:
        self.mode = mode
        self.target = target
        self.catalog = catalog
        self.fleet = fleet
        self.limit_ratio = limit_ratio
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
        if self.mode == "normalized":
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
                _least_allocated(view, replica.request)[passing] + extender * EXTENDER_WEIGHT * 10
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
        """Physical millicores each running replica needs: its share of the work / factor."""
        running = dep.running()
        if not running:
            return running, np.zeros(0)
        share = dep.work * load / len(running)
        factors = self.fleet.factor[[r.node for r in running]]
        return running, share / factors

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
    asked_needed: list[tuple[int, int]]  # per Deployment
    hottest: np.ndarray  # per Deployment: its hottest replica's demand / request

    def hot_share(self, surge: float = 0.0) -> float:
        """Running replicas above 90% of their limit (after a ``surge`` of traffic)."""
        utils = self.replica_util * (1 + surge)
        return float((utils > HOT_SHARE_OF_LIMIT).mean()) if utils.size else 0.0


def measure(sim: Simulation, deployments: Sequence[Deployment], load: float) -> Step:
    fleet = sim.fleet
    node_demand = np.zeros(len(fleet.names))
    replica_util: list[np.ndarray] = []
    asked_needed = []
    hottest = []
    for dep in deployments:
        running, demand = sim.demand(dep, load)
        if running:
            np.add.at(node_demand, [r.node for r in running], demand)
            replica_util.append(demand / np.array([r.limit for r in running]))
            hottest.append(float((demand / np.array([r.request for r in running])).max()))
            # The hottest replica sits at the target when every replica gets what the one
            # with the least SCU behind its request gets: n = work / (target * min SCU).
            scu = min(float(fleet.factor[r.node]) * r.request for r in running)
        else:
            scu = float(dep.cpu)
        needed = max(MIN_REPLICAS, math.ceil(dep.work * load / (sim.target / 100 * scu)))
        asked_needed.append((len(dep.replicas), needed))
    view = sim.state.view(fleet.names)
    alloc = fleet.allocatable.astype(float)
    return Step(
        load=load,
        fleet_util=float(np.minimum(node_demand, alloc).sum() / alloc.sum()),
        requested=float(view.requested.sum() / alloc.sum()),
        max_node=float((node_demand / alloc).max()),
        pending=sum(1 for d in deployments for r in d.replicas if r.node < 0),
        replicas=sum(a for a, _ in asked_needed),
        needed=sum(n for _, n in asked_needed),
        node_util=node_demand / alloc,
        replica_util=np.concatenate(replica_util) if replica_util else np.zeros(0),
        asked_needed=asked_needed,
        hottest=np.array(hottest),
    )


@dataclass(slots=True)
class Run:
    mode: str
    target: int
    steps: list[Step]
    operating: Step  # fullest step with every replica running and no node saturated
    ceiling: Step  # last step before the first node saturated (or before the stop)
    stopped_by: str
    seconds: float


def run(
    mode: str, args: argparse.Namespace, catalog: Catalog, target: int, until_pending: bool
) -> Run:
    """Ramp the load from 1.0 until a node saturates (or, ``until_pending``, a pod pends)."""
    started = time.perf_counter()
    fleet = build_fleet(catalog, args.nodes_per_family, args.seed)
    deployments = build_deployments(args.deployments, fleet, args.start_fill, args.seed + 1)
    sim = Simulation(
        mode, catalog, fleet, target=target, limit_ratio=args.limit_ratio, seed=args.seed + 2
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
        steps=steps,
        operating=healthy[-1] if healthy else steps[0],
        ceiling=steps[-1],
        stopped_by=stopped_by,
        seconds=time.perf_counter() - started,
    )


# -- output ------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(main: list[Run], sweep: list[Run], args: argparse.Namespace, catalog: Catalog) -> str:
    fleet = build_fleet(catalog, args.nodes_per_family, args.seed)
    families = ", ".join(f"{f.name} ({f.scu_per_core} SCU/core)" for f in catalog.families)
    band = HPA_TARGET / 100 * (1 + HPA_TOLERANCE)
    rows = []
    for r in main:
        op, util = r.operating, r.operating.node_util
        per_family = " / ".join(
            f"{f.name} {_pct(util[fleet.family == i].mean())}"
            for i, f in enumerate(catalog.families)
        )
        rows.append(
            [
                f"`{r.mode}`",
                f"**{_pct(r.ceiling.fleet_util)}**",
                f"{_pct(op.fleet_util)} ({_pct(op.requested)} requested)",
                f"{100 * util.std():.1f} pp ({_pct(util.min())} – {_pct(util.max())})",
                per_family,
                f"{_pct(op.hot_share())} / {_pct(op.hot_share(args.surge))}",
                f"{op.replicas} / {op.needed} (**{op.replicas / op.needed:.2f}**)",
                f"{int((op.hottest > band).sum())} of {len(op.hottest)}",
            ]
        )
    header = [
        "mode",
        "fleet CPU util. before the first node saturates",
        "fleet CPU util. at the operating point",
        "node usage spread (std, min – max)",
        "mean node usage per family",
        f"replicas > 90% of limit: at target / +{args.surge:.0%} surge",
        "replicas: HPA asks / work needs",
        f"Deployments with a replica above {band:.0%} of request",
    ]
    sweep_rows = []
    targets = sorted({r.target for r in sweep})
    for target in targets:
        row: list[object] = [f"{target}%"]
        for mode in MODES:
            r = next(x for x in sweep if x.target == target and x.mode == mode)
            op = r.operating
            row += [
                _pct(op.fleet_util),
                f"{_pct(op.hot_share())} / {_pct(op.hot_share(args.surge))}",
            ]
        sweep_rows.append(row)
    sweep_header = ["HPA target"]
    for mode in MODES:
        sweep_header += [
            f"`{mode}` fleet util.",
            f"`{mode}` replicas > 90% of limit (at target / +{args.surge:.0%})",
        ]
    seconds = sum(r.seconds for r in main + sweep)
    lines = [
        f"Run {report.stamp()} on {report.machine()}: "
        f"`python benchmarks/fleet_simulation.py --seed {args.seed}` ({seconds:.0f} s).",
        "",
        f"Fleet: {3 * args.nodes_per_family} nodes of 16 vCPU (15,890m allocatable), "
        f"{args.nodes_per_family} per family: {families}. {args.deployments} Deployments, "
        f"HPA target {HPA_TARGET}% (tolerance {HPA_TOLERANCE}), CPU limit = "
        f"{args.limit_ratio:g} x request. The load ramps by {args.step:.0%} per step from "
        f"{args.start_fill:.0%} of the fleet requested, the HPAs converging at every step, "
        f"until a node saturates (stopped by: "
        f"{', '.join(f'{r.mode}: {r.stopped_by} at load {r.ceiling.load:.2f}x' for r in main)}"
        ").",
        "",
        report.table(header, rows),
        "",
        "Column 2 is the last step before any node's CPU demand reaches its allocatable "
        "cores. Columns 3–8 are at the *operating point*: the highest load at which the "
        "HPAs hold their target with every replica running (the step before the first "
        'Pending pod, i.e. the fleet full by requests). "Work needs" = replicas for the '
        "hottest replica of each Deployment to sit at the target.",
        "",
        "The same fleet at other HPA targets (each ramped to its operating point):",
        "",
        report.table(sweep_header, sweep_rows),
        "",
        "![fleet simulation](results/fleet_simulation.png)",
    ]
    return "\n".join(lines)


def safest(sweep: list[Run], mode: str, surge: float) -> Run | None:
    """The highest HPA target at which at most 1% of replicas run above 90% of their limit."""
    ok = [r for r in sweep if r.mode == mode and r.operating.hot_share(surge) <= 0.01]
    return max(ok, key=lambda r: r.target) if ok else None


def summary(main: list[Run], sweep: list[Run], args: argparse.Namespace, catalog: Catalog) -> str:
    """The key ratios, for the README's closing note."""
    fleet = build_fleet(catalog, args.nodes_per_family, args.seed)
    by = {r.mode: r for r in main}
    raw, norm = by["raw"], by["normalized"]
    slow, fast = catalog.families[0], catalog.families[-1]

    def fam(run: Run, family: Any) -> str:
        util = run.operating.node_util[fleet.family == catalog.family_index[family.name]]
        return _pct(float(util.mean()))

    lines = [
        f"- **Fleet utilisation before the first node saturates: {_pct(raw.ceiling.fleet_util)} "
        f"raw -> {_pct(norm.ceiling.fleet_util)} normalized "
        f"({norm.ceiling.fleet_util / raw.ceiling.fleet_util:.2f}x).** With vCPU requests "
        f"the {slow.name} nodes ({slow.scu_per_core} SCU/core) run at {fam(raw, slow)} while "
        f"the {fast.name} nodes ({fast.scu_per_core}) run at {fam(raw, fast)} for the same "
        f"requests; normalized: {fam(norm, slow)} vs {fam(norm, fast)} (node spread "
        f"{100 * raw.operating.node_util.std():.1f} -> "
        f"{100 * norm.operating.node_util.std():.1f} pp).",
        f"- **The HPA at 60% asks for {raw.operating.replicas / raw.operating.needed:.2f} of "
        f"the replicas the work needs with vCPU requests, "
        f"{norm.operating.replicas / norm.operating.needed:.2f} normalized**; after a "
        f"+{args.surge:.0%} surge {_pct(raw.operating.hot_share(args.surge))} of raw replicas "
        f"run above 90% of their limit, {_pct(norm.operating.hot_share(args.surge))} "
        "normalized.",
    ]
    r, n = safest(sweep, "raw", args.surge), safest(sweep, "normalized", args.surge)
    if r and n:
        lines.append(
            f"- At equal safety (at most 1% of replicas above 90% of their limit after a "
            f"+{args.surge:.0%} surge) raw must keep its HPA target at {r.target}% "
            f"({_pct(r.operating.fleet_util)} fleet utilisation), normalized can run "
            f"{n.target}% ({_pct(n.operating.fleet_util)})."
        )
    r, n = safest(sweep, "raw", 0.0), safest(sweep, "normalized", 0.0)
    if r and n:
        lines.append(
            f"- Without a surge, the highest target with at most 1% hot replicas is "
            f"{r.target}% raw ({_pct(r.operating.fleet_util)} fleet utilisation) and "
            f"{n.target}% normalized ({_pct(n.operating.fleet_util)})."
        )
    return "\n".join(lines)


def plot(
    main: list[Run], sweep: list[Run], args: argparse.Namespace, catalog: Catalog, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fleet = build_fleet(catalog, args.nodes_per_family, args.seed)
    colors = {"raw": "tab:red", "normalized": "tab:blue"}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))

    ax = axes[0][0]
    for r in main:
        loads = [s.load for s in r.steps]
        ax.plot(loads, [100 * s.fleet_util for s in r.steps], color=colors[r.mode], label=r.mode)
        ax.plot(loads, [100 * s.max_node for s in r.steps], color=colors[r.mode], ls="--")
        ax.axvline(r.operating.load, color=colors[r.mode], ls=":", lw=1)
    ax.axhline(100, color="grey", lw=0.5)
    ax.set(
        xlabel="load (x start)",
        ylabel="% of allocatable CPU",
        title="fleet utilisation (solid), hottest node (dashed)\n"
        "dotted: operating point (fleet full at HPA target 60%)",
    )
    ax.legend()

    ax = axes[0][1]
    positions, data, modes = [], [], []
    for m, r in enumerate(main):
        for i in range(len(catalog.families)):
            positions.append(i * 3 + m)
            data.append(100 * r.operating.node_util[fleet.family == i])
            modes.append(r.mode)
    parts = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True)
    for patch, mode in zip(parts["boxes"], modes, strict=True):
        patch.set_facecolor(colors[mode])
    ax.set_xticks(
        [i * 3 + 0.5 for i in range(len(catalog.families))],
        [f"{f.name} ({f.scu_per_core})" for f in catalog.families],
    )
    ax.set(ylabel="node CPU usage, % of allocatable", title="node usage per family (red: raw)")

    ax = axes[0][2]
    bins = np.linspace(0, 120, 49)
    for r in main:
        ax.hist(
            100 * np.minimum(r.operating.replica_util, 1.2),
            bins=bins,
            alpha=0.5,
            color=colors[r.mode],
            label=f"{r.mode}: {_pct(r.operating.hot_share())} above 90%",
        )
    ax.axvline(90, color="black", lw=1)
    ax.set(xlabel="replica CPU demand, % of its limit", ylabel="replicas", title="replica heat")
    ax.legend()

    ax = axes[1][0]
    top = 0
    for r in main:
        asked = np.array([a for a, _ in r.operating.asked_needed])
        needed = np.array([n for _, n in r.operating.asked_needed])
        top = max(top, int(asked.max()), int(needed.max()))
        ax.scatter(needed, asked, s=12, alpha=0.6, color=colors[r.mode], label=r.mode)
    ax.plot([1, top], [1, top], color="grey", lw=0.5)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="replicas the work needs (hottest replica at target)",
        ylabel="replicas the HPA asks",
        title="HPA vs need, per Deployment",
    )
    ax.legend()

    ax = axes[1][1]
    for mode in MODES:
        runs = sorted((r for r in sweep if r.mode == mode), key=lambda r: r.target)
        targets = [r.target for r in runs]
        ax.plot(
            targets,
            [100 * r.operating.fleet_util for r in runs],
            "o-",
            color=colors[mode],
            label=f"{mode}: fleet utilisation",
        )
        ax.plot(
            targets,
            [100 * r.operating.hot_share(args.surge) for r in runs],
            "s--",
            color=colors[mode],
            label=f"{mode}: hot replicas after surge",
        )
    ax.legend(fontsize=8)
    ax.set(
        xlabel="HPA target utilisation, %",
        ylabel="%",
        title=f"fleet utilisation at the operating point (solid)\n"
        f"replicas > 90% of limit after a +{args.surge:.0%} surge (dashed)",
    )

    ax = axes[1][2]
    for r in main:
        ax.hist(100 * r.operating.hottest, bins=40, alpha=0.5, color=colors[r.mode], label=r.mode)
    ax.axvline(HPA_TARGET * (1 + HPA_TOLERANCE), color="black", lw=1)
    ax.set(
        xlabel="hottest replica of each Deployment, % of request",
        ylabel="Deployments",
        title="what the HPA's average hides",
    )
    ax.legend()

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=report.RESULTS, help="directory for the plot")
    p.add_argument("--readme", type=Path, default=report.README, help="README to update")
    p.add_argument("--no-readme", action="store_true", help="print the tables only")
    p.add_argument("--nodes-per-family", type=int, default=40)
    p.add_argument("--deployments", type=int, default=120)
    p.add_argument("--start-fill", type=float, default=0.3, help="fleet requested at load 1")
    p.add_argument("--step", type=float, default=0.02, help="load growth per step")
    p.add_argument("--max-load", type=float, default=20.0)
    p.add_argument("--limit-ratio", type=float, default=1.0, help="CPU limit / request")
    p.add_argument("--surge", type=float, default=0.25, help="traffic surge before the HPA acts")
    p.add_argument(
        "--targets", type=lambda s: [int(x) for x in s.split(",")], default=[50, 60, 70, 80]
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    catalog = fleets.bench_catalog()
    runs = [run(mode, args, catalog, HPA_TARGET, until_pending=False) for mode in MODES]
    sweep = [
        run(mode, args, catalog, target, until_pending=True)
        for target in args.targets
        for mode in MODES
    ]
    text = render(runs, sweep, args, catalog)
    plot(runs, sweep, args, catalog, args.out / "fleet_simulation.png")
    print(text)
    print(summary(runs, sweep, args, catalog))
    if not args.no_readme:
        report.replace_section(args.readme, "fleet_simulation", text)
        report.replace_section(
            args.readme, "fleet_simulation_summary", summary(runs, sweep, args, catalog)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
