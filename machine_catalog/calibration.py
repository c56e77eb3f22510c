"""Each family's speed relative to the baseline, estimated from the fleet's own CPU usage.

The replicas of one workload (the pods of one controller, behind one Service) do the same
work; what differs is the hardware. A replica on a family of speed ``s`` uses ``work / s``
CPU for the same work, so over the replicas ``r`` of workloads ``w``::

    log(usage_r) = a_w - log(s_family(r)) + e_r        with s_baseline = 1

``a_w`` is the workload's own level (its work per replica) and ``e_r`` the noise (uneven
load balancing, the moment of the sample). The fit is ordinary least squares with the
workload effects absorbed (every row minus its workload's mean: the Frisch-Waugh-Lovell
"within" estimator, so the system has one unknown per family, not one per workload). Only
workloads with usable replicas on at least two families say anything about speeds; the
others are counted and left out. A family is estimated only if workloads connect it to the
baseline (family A - workload - family B - ... - baseline); otherwise its estimate is null.

The 95% interval comes from the larger of two standard errors per family: the classical one
(residual variance times ``(X'X)^-1``) and a workload-clustered one (sandwich with the
residuals of each workload summed, scaled by ``G / (G - 1)``), because replicas of one
workload share their errors (a workload that gains more than average from new hardware
moves all its replicas on that family together). The quantile is Student's t with
``min(G - 1, N - W - K)`` degrees of freedom (G clustered workloads, N replicas, W workload
effects, K estimated families). The interval on the speed is ``exp`` of the interval on the
log scale, so it is not symmetric around the estimate.

Which replicas are left out, and how each is detected (:func:`observe`):

- ``not running``: phase is not Running, or no ``spec.nodeName``;
- ``no controller``: no ``ownerReference`` with ``controller: true`` (a bare pod is not a
  workload with replicas);
- ``no family``: its node is missing from the snapshot or matches no family or several;
- ``no metrics``: no PodMetrics sample names the pod;
- ``not warm``: every sample's window starts less than ``warmup`` seconds after the pod's
  last container start (``containerStatuses[].state.running.startedAt``, else
  ``status.startTime``); JIT compilers, caches and connection pools make the first minutes
  unrepresentative. Samples from before warm-up are dropped one by one;
- ``idle``: mean usage under ``idle_millis`` (default 10m): such a replica's usage is its
  runtime's background work (GC, health checks), not in proportion to the work served;
- ``at limit``: some sample at or above ``limit_share`` (default 90%) of a CPU limit that
  binds it: one running container's own limit (app containers and native sidecars, that
  is restartable init containers, which run beside them), or the pod's bound, which is
  the pod-level ``spec.resources.limits.cpu`` when set, and the sum of the running
  containers' limits when every one has one (the smaller of the two when both). Each
  container is compared with its own limit because CFS throttles per container: an app
  at its 500m limit is throttled even if a sidecar leaves the pod's sum far below the sum
  of limits. Regular init containers have finished by the time a replica is warm.
  metrics.k8s.io reports usage, not CFS throttling; a replica near its limit is probably
  throttled, and throttled usage says how much CPU it was allowed, not how much the work
  needed.

Per workload, the residuals (observed minus fitted log usage) are reported; a workload whose
root-mean-square residual exceeds ``flag_factor`` (default 2.5) times the pooled residual
standard deviation breaks the equal-work assumption (sticky sessions, sharded work, a
leader doing more than its followers) and is flagged. Flagged workloads stay in the fit:
the report says which ones to look at, and the clustered standard error already widens the
interval they disturb.

**With a work signal** (a per-pod work rate ``q_r``, requests per second or any unit of
work, from :mod:`machine_catalog.work_rates`), a workload's rows are CPU per unit of work
instead of CPU per replica::

    log(usage_r / q_r) = b_w - log(s_family(r)) + e_r

The same fit follows, so the two kinds of workload mix in one estimate (each has its own
effect). This no longer assumes equal work per replica: it holds under least-request or
latency-aware balancing, which sends more work to faster replicas. A workload has a signal
when any of its pods has a rate; its pods without one, or with a rate of 0 (CPU per unit of
work is then undefined), are left out as ``no work rate``. Workloads without a signal keep
the usage model above.

**When usage cannot be trusted.** Under usage-evening balancing, per-replica usage is the
same on every family while the work (and, after the webhook's rewrite, the CPU requests)
differ, and the usage model returns speeds near 1.0 with a tight interval. Two checks look
for it (:func:`balance_checks`):

- *evenness*, over the workloads fitted from usage alone: the slope ``lambda`` of the
  fitted log speeds on the catalog's log factors (weighted by ``1 / se^2``, through the
  origin) says what share of the catalog's differences the usage shows; round-robin
  balancing and a fair catalog give about 1, fully evened usage about 0. When the catalog's
  factors differ by 5% or more and the 95% interval of ``lambda`` lies below 0.5, a warning
  says so with the interval: either the balancer evens usage or the catalog overstates the
  differences, and only a work signal tells which;
- *work shares*, over the replicas with a work rate: the same within-workload fit of
  ``log(q_r)`` gives each family's work per replica relative to the baseline. Round-robin
  gives 1; an interval that excludes 1 by 5% or more means the work metric disagrees with
  the equal-work assumption. That is a warning when some workloads were fitted from usage
  alone (their estimates are biased toward 1.0), and a note otherwise.

The module is pure: it takes parsed objects (nodes, pods, PodMetricsList documents, work
rates) and returns numbers. Reading files and the API lives in the CLI and in ``extender``.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from machine_catalog.catalog import Catalog
from machine_catalog.durations import parse_duration
from machine_catalog.quantities import QuantityError, parse_quantity

#: Why a replica was left out, in the order the rules are checked.
EXCLUSIONS = (
    "not running",
    "no controller",
    "no family",
    "no metrics",
    "not warm",
    "idle",
    "at limit",
    "no work rate",
)


@dataclass(frozen=True, slots=True)
class Rules:
    """Which replicas count, how confident the interval is, and when an estimate is applied."""

    warmup_seconds: float = 300.0
    idle_millis: float = 10.0
    limit_share: float = 0.9
    confidence: float = 0.95
    flag_factor: float = 2.5
    #: ``--write`` applies an estimate when the interval's half-width, (high - low) / 2, is
    #: at most this share of the estimate: 5%, half the +-10% the packaged factors claim.
    max_halfwidth: float = 0.05


@dataclass(frozen=True, slots=True)
class Observation:
    """One replica's evidence: its mean CPU usage on one family, or why it is left out."""

    namespace: str
    pod: str
    workload: str | None  # "namespace/Kind/name" of the controller owner
    family: str | None
    usage_millis: float | None  # mean over the warm samples
    samples: int
    excluded: str | None = None  # one of EXCLUSIONS, or None when used
    work_rate: float | None = None  # units of work per second, when its workload has a signal

    @property
    def value(self) -> float | None:
        """What the fit explains: CPU per unit of work with a work rate, else CPU."""
        if self.usage_millis is None or self.work_rate is None:
            return self.usage_millis
        return self.usage_millis / self.work_rate


@dataclass(frozen=True, slots=True)
class FamilyEstimate:
    name: str
    scu_per_core: Decimal  # the catalog's current value
    estimate: float | None
    low: float | None
    high: float | None
    workloads: int  # workloads in the fit with a replica on this family
    pods: int

    @property
    def relative_error(self) -> float | None:
        """(current - estimate) / estimate: how far the catalog is from the measurement."""
        if self.estimate is None:
            return None
        return (float(self.scu_per_core) - self.estimate) / self.estimate

    @property
    def halfwidth(self) -> float | None:
        """The interval's half-width as a share of the estimate."""
        if self.estimate is None or self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2 / self.estimate


@dataclass(frozen=True, slots=True)
class WorkloadResidual:
    workload: str
    pods: int
    families: tuple[str, ...]
    rms: float  # root mean square of its replicas' log residuals
    by_family: dict[str, float]  # mean log residual per family (+: uses more than fitted)
    flagged: bool


@dataclass(frozen=True, slots=True)
class Interval:
    """A value with its 95% interval (``low`` and ``high`` None when there is no spread)."""

    value: float
    low: float | None
    high: float | None


@dataclass(slots=True)
class Calibration:
    baseline: str
    families: list[FamilyEstimate]
    workloads: list[WorkloadResidual] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    single_family_workloads: int = 0
    unlinked_workloads: int = 0  # on two families or more, none linked to the baseline
    sigma: float | None = None  # pooled residual standard deviation (log scale)
    dof: int = 0
    work_workloads: int = 0  # fitted workloads whose rows are CPU per unit of work
    #: Share of the catalog's log differences that usage alone shows (see module docstring).
    evenness: Interval | None = None
    #: Family -> work per replica relative to the baseline's, from the work rates.
    work_shares: dict[str, Interval] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def family(self, name: str) -> FamilyEstimate:
        return next(f for f in self.families if f.name == name)


# -- reading objects -------------------------------------------------------------------


def _get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a level is missing or not an object.

    Snapshots and metrics come from files a user made; one odd object must give "left out"
    or a clear error, never an AttributeError.
    """
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _each(value: Any) -> list[Any]:
    """The mappings of a list field; anything else is no items."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(value: Any) -> float:
    """A metrics ``window`` (Go duration such as ``30s``, ``1m0s``, ``15.012s``) in seconds;
    0 when it is missing or not a duration (the sample then covers no time before it)."""
    try:
        return parse_duration(value)
    except ValueError:
        return 0.0


def _cpu_millis(value: Any) -> float | None:
    try:
        return float(parse_quantity(value)) * 1000.0
    except (QuantityError, TypeError, ValueError):
        return None


def _controller(pod: Mapping[str, Any]) -> str | None:
    namespace = _get(pod, "metadata", "namespace") or "default"
    for ref in _each(_get(pod, "metadata", "ownerReferences")):
        if ref.get("controller") is True and ref.get("kind"):
            return f"{namespace}/{ref['kind']}/{ref.get('name', '')}"
    return None


def _started(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod last (re)started a container; ``status.startTime`` if none says."""
    starts = [
        _time(_get(cs, "state", "running", "startedAt"))
        for cs in _each(_get(pod, "status", "containerStatuses"))
    ]
    known = [s for s in starts if s is not None]
    return max(known) if known else _time(_get(pod, "status", "startTime"))


@dataclass(frozen=True, slots=True)
class _Limits:
    """The CPU limits that bind a running pod (see ``at limit`` in the module docstring)."""

    containers: Mapping[str, float]  # running container name -> its limit, when it has one
    pod: float | None  # the pod's bound; None: unbounded


def _limits(pod: Mapping[str, Any]) -> _Limits:
    """App containers and native sidecars (``restartPolicy: Always`` init containers), each
    with its limit, and the pod's bound: the pod-level limit, the sum of the running
    containers' limits when all have one, or the smaller of both."""
    running = [
        *_each(_get(pod, "spec", "containers")),
        *(
            c
            for c in _each(_get(pod, "spec", "initContainers"))
            if c.get("restartPolicy") == "Always"
        ),
    ]
    per: dict[str, float] = {}
    total: float | None = 0.0 if running else None
    for c in running:
        limit = _get(c, "resources", "limits", "cpu")
        millis = _cpu_millis(limit) if limit is not None else None
        if millis is None:
            total = None
            continue
        per[str(c.get("name") or "")] = millis
        total = None if total is None else total + millis
    pod_limit = _get(pod, "spec", "resources", "limits", "cpu")
    pod_millis = _cpu_millis(pod_limit) if pod_limit is not None else None
    if pod_millis is not None:
        total = pod_millis if total is None else min(total, pod_millis)
    return _Limits(containers=per, pod=total)


def _at_limit(sample: _Sample, limits: _Limits, share: float) -> bool:
    """The sample reaches ``share`` of the pod's bound or of one container's own limit."""
    if limits.pod is not None and sample.millis >= share * limits.pod:
        return True
    return any(
        sample.containers.get(name, 0.0) >= share * limit
        for name, limit in limits.containers.items()
    )


@dataclass(frozen=True, slots=True)
class _Sample:
    start: float | None  # the window's start (timestamp - window), POSIX seconds
    millis: float
    #: The same usage per container name (for the per-container ``at limit`` rule).
    containers: Mapping[str, float] = field(default_factory=dict)


def _samples(metrics: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[_Sample]]:
    """(namespace, pod) -> its samples, summed over containers, from PodMetricsList documents."""
    out: dict[tuple[str, str], list[_Sample]] = defaultdict(list)
    seen: set[tuple[str, str, Any]] = set()
    for document in metrics:
        for item in _each(_get(document, "items")):
            total = 0.0
            per: dict[str, float] = {}
            for c in _each(item.get("containers")):
                millis = _cpu_millis(_get(c, "usage", "cpu"))
                if millis is None:
                    break
                total += millis
                name = str(c.get("name") or "")
                per[name] = per.get(name, 0.0) + millis
            else:
                stamp = _time(item.get("timestamp"))
                window = _seconds(item.get("window"))
                start = None if stamp is None else stamp.timestamp() - window
                key = (
                    str(_get(item, "metadata", "namespace") or "default"),
                    str(_get(item, "metadata", "name") or ""),
                )
                # metrics-server refreshes every 15 s by default: two samples taken closer
                # together return the same window, which must count once.
                if stamp is not None and (*key, stamp) in seen:
                    continue
                seen.add((*key, stamp))
                out[key].append(_Sample(start, total, per))
    return out


def observe(
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    metrics: Iterable[Mapping[str, Any]],
    rules: Rules = Rules(),
    work: Mapping[tuple[str, str], float] | None = None,
) -> list[Observation]:
    """Every pod's evidence, with the rule that left it out (see the module's docstring).

    ``work`` maps (namespace, pod) to a work rate; a workload with any rate in it is fitted
    as CPU per unit of work, and its pods without a positive rate are left out.
    """
    node_family: dict[str, str | None] = {}
    for node in nodes:
        labels = _get(node, "metadata", "labels")
        labels = {
            k: v
            for k, v in (labels.items() if isinstance(labels, Mapping) else ())
            if isinstance(k, str) and isinstance(v, str)
        }
        matched = catalog.match(labels)
        node_family[str(_get(node, "metadata", "name") or "")] = (
            matched.family.name if matched.family is not None else None
        )
    samples = _samples(metrics)
    out = []
    for pod in pods:
        ns = str(_get(pod, "metadata", "namespace") or "default")
        name = str(_get(pod, "metadata", "name") or "")
        workload = _controller(pod)
        node = _get(pod, "spec", "nodeName")
        family = node_family.get(node) if isinstance(node, str) and node else None
        reason, usage, count = _judge(pod, workload, family, samples.get((ns, name), []), rules)
        out.append(Observation(ns, name, workload, family, usage, count, reason))
    return _with_work(out, work) if work else out


def _with_work(
    observations: list[Observation], work: Mapping[tuple[str, str], float]
) -> list[Observation]:
    """Attach work rates; in a workload with a signal, a pod without a positive rate is out."""
    signalled = {o.workload for o in observations if (o.namespace, o.pod) in work}
    out = []
    for o in observations:
        if o.workload not in signalled or o.workload is None:
            out.append(o)
            continue
        rate = work.get((o.namespace, o.pod))
        if o.excluded is None and not (rate is not None and rate > 0):
            out.append(replace(o, excluded="no work rate"))
        else:
            out.append(replace(o, work_rate=rate))
    return out


def _judge(
    pod: Mapping[str, Any],
    workload: str | None,
    family: str | None,
    seen: Sequence[_Sample],
    rules: Rules,
) -> tuple[str | None, float | None, int]:
    """(reason it is left out or None, mean warm usage, warm samples): the rules in order."""
    node = _get(pod, "spec", "nodeName")
    if _get(pod, "status", "phase") != "Running" or not isinstance(node, str) or not node:
        return "not running", None, 0
    if workload is None:
        return "no controller", None, 0
    if family is None:
        return "no family", None, 0
    if not seen:
        return "no metrics", None, 0
    started = _started(pod)
    warm = [
        s
        for s in seen
        if started is not None
        and s.start is not None
        and s.start - started.timestamp() >= rules.warmup_seconds
    ]
    if not warm:
        return "not warm", None, 0
    usage = sum(s.millis for s in warm) / len(warm)
    if usage < rules.idle_millis:
        return "idle", usage, len(warm)
    limits = _limits(pod)
    if any(_at_limit(s, limits, rules.limit_share) for s in warm):
        return "at limit", usage, len(warm)
    return None, usage, len(warm)


# -- the fit ---------------------------------------------------------------------------


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion; within 0.2% of exact for dof >= 3).

    For 1 and 2 degrees of freedom the closed forms are used.
    """
    if dof <= 0:
        return math.inf
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        a = 4 * p * (1 - p)
        return (2 * p - 1) * math.sqrt(2 / a)
    z = _normal_quantile(p)
    n = float(dof)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / n + g2 / n**2 + g3 / n**3 + g4 / n**4


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF by bisection on ``math.erf`` (exact to 1e-12)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _linked(baseline: str, by_workload: Mapping[str, set[str]]) -> set[str]:
    """Families reachable from the baseline through workloads that span two families."""
    reach, frontier = {baseline}, [baseline]
    members: dict[str, list[str]] = defaultdict(list)
    for workload, families in by_workload.items():
        for f in families:
            members[f].append(workload)
    seen_workloads: set[str] = set()
    while frontier:
        family = frontier.pop()
        for workload in members[family]:
            if workload in seen_workloads:
                continue
            seen_workloads.add(workload)
            for other in by_workload[workload]:
                if other not in reach:
                    reach.add(other)
                    frontier.append(other)
    return reach


@dataclass(slots=True)
class _Regression:
    """One within-workload least-squares fit: coefficients per column, their standard errors
    (NaN without degrees of freedom), the residuals in row order."""

    beta: Any
    se: Any
    residual: Any
    dof: int = 0
    sigma: float | None = None


def _regress(y: Any, workload_of: Any, column_of: Sequence[int | None], g: int, k: int) -> Any:
    """``y = a_workload + x @ beta`` by least squares with the workload effects absorbed.

    ``column_of[r]`` is row r's family column (None for the baseline). The standard error is
    the larger of the classical and the workload-clustered one (see the module docstring).
    """
    import numpy as np

    n = len(y)
    x = np.zeros((n, k))
    for r, c in enumerate(column_of):
        if c is not None:
            x[r, c] = 1.0
    counts = np.bincount(workload_of, minlength=g).astype(float)

    def within(a: np.ndarray) -> np.ndarray:
        sums = np.zeros((g, *a.shape[1:]))
        np.add.at(sums, workload_of, a)
        return a - (sums / counts.reshape(-1, *([1] * (a.ndim - 1))))[workload_of]

    yt, xt = within(y), within(x)
    beta, *_ = np.linalg.lstsq(xt, yt, rcond=None)
    out = _Regression(beta=beta, se=np.full(k, np.nan), residual=yt - xt @ beta)
    dof = n - g - k
    out.dof = dof
    if dof > 0:
        sigma2 = float(out.residual @ out.residual) / dof
        out.sigma = math.sqrt(sigma2)
        bread = np.linalg.pinv(xt.T @ xt)
        classical = sigma2 * np.diag(bread)
        scores = np.zeros((g, k))
        np.add.at(scores, workload_of, xt * out.residual[:, None])
        clustered = np.diag(bread @ (scores.T @ scores) @ bread) * (g / max(g - 1, 1))
        out.se = np.sqrt(np.maximum(classical, clustered))
        out.dof = min(g - 1, dof)
    return out


def _design(
    rows: Sequence[Observation], columns: Sequence[str]
) -> tuple[list[str], Any, list[int | None]]:
    """The workloads of ``rows`` (sorted), each row's workload index and family column."""
    import numpy as np

    workloads = sorted({str(o.workload) for o in rows})
    widx = {w: i for i, w in enumerate(workloads)}
    col = {name: i for i, name in enumerate(columns)}
    return (
        workloads,
        np.array([widx[str(o.workload)] for o in rows], dtype=int),
        [col.get(str(o.family)) for o in rows],
    )


def _fitted_rows(
    baseline: str, used: Sequence[Observation]
) -> tuple[list[Observation], set[str], int, int]:
    """The rows that say something about speeds: workloads on two or more families, linked
    to the baseline; with the linked families and the two counts of workloads left out."""
    by_workload: dict[str, set[str]] = defaultdict(set)
    for o in used:
        by_workload[str(o.workload)].add(str(o.family))
    multi = {w: fams for w, fams in by_workload.items() if len(fams) >= 2}
    linked = _linked(baseline, multi)
    fitted = {w for w, fams in multi.items() if fams & linked}
    rows = [o for o in used if str(o.workload) in fitted]
    return rows, linked, len(by_workload) - len(multi), len(multi) - len(fitted)


def fit(
    catalog: Catalog, observations: Sequence[Observation], rules: Rules = Rules()
) -> Calibration:
    """Least-squares speeds per family from the used observations (see the module docstring)."""
    # numpy only here: the CLI's parser imports this module for its defaults, and
    # `machine-catalog validate` must not pay for numpy.
    import numpy as np

    baseline = catalog.baseline.name
    excluded = Counter(o.excluded for o in observations if o.excluded is not None)
    used = [o for o in observations if o.excluded is None]
    rows, linked, single, unlinked = _fitted_rows(baseline, used)
    result = Calibration(
        baseline=baseline,
        families=[],
        excluded=excluded,
        single_family_workloads=single,
        unlinked_workloads=unlinked,
    )
    columns = [f.name for f in catalog.families if f.name in linked and f.name != baseline]
    col = {name: i for i, name in enumerate(columns)}
    fitted_workloads, w_of, column_of = _design(rows, columns)
    result.work_workloads = len({o.workload for o in rows if o.work_rate is not None})
    k = len(columns)

    beta = np.zeros(k)
    se = np.full(k, np.nan)
    if rows and k:
        y = np.log(np.array([o.value for o in rows], dtype=float))
        reg = _regress(y, w_of, column_of, len(fitted_workloads), k)
        beta, se, residual = reg.beta, reg.se, reg.residual
        result.dof, result.sigma = reg.dof, reg.sigma
        # The residuals per workload, for the equal-work diagnostic.
        per: dict[str, list[int]] = defaultdict(list)
        for r, o in enumerate(rows):
            per[str(o.workload)].append(r)
        for workload in fitted_workloads:
            idx = per[workload]
            res = residual[idx]
            fams: dict[str, list[float]] = defaultdict(list)
            for r in idx:
                fams[str(rows[r].family)].append(float(residual[r]))
            rms = float(np.sqrt(np.mean(res**2)))
            flagged = (
                result.sigma is not None
                and len(idx) >= 3
                and rms > rules.flag_factor * result.sigma
            )
            result.workloads.append(
                WorkloadResidual(
                    workload=workload,
                    pods=len(idx),
                    families=tuple(sorted(fams)),
                    rms=rms,
                    by_family={f: float(np.mean(v)) for f, v in sorted(fams.items())},
                    flagged=bool(flagged),
                )
            )
        result.workloads.sort(key=lambda w: -w.rms)

    t = t_quantile(0.5 + rules.confidence / 2, result.dof)
    for family in catalog.families:
        contributing = [o for o in rows if o.family == family.name]
        workloads = len({o.workload for o in contributing})
        estimate = low = high = None
        if family.name == baseline and rows:
            estimate = low = high = 1.0
        elif family.name in col:
            b = float(beta[col[family.name]])
            estimate = math.exp(-b)
            s = float(se[col[family.name]])
            if math.isfinite(s) and math.isfinite(t):
                low, high = math.exp(-b - t * s), math.exp(-b + t * s)
        result.families.append(
            FamilyEstimate(
                name=family.name,
                scu_per_core=family.scu_per_core,
                estimate=estimate,
                low=low,
                high=high,
                workloads=workloads,
                pods=len(contributing),
            )
        )
    balance_checks(catalog, rows, result, rules)
    return result


# -- is the balancing what the usage model assumes? ------------------------------------

#: A difference the checks below call material: 5%, half the packaged factors' +-10%.
MATERIAL = 0.05
#: The evenness warning fires when lambda's 95% interval lies below this.
EVENNESS_WARN = 0.5


def _pct(share: float) -> str:
    return f"{share:+.0%}"


def balance_checks(
    catalog: Catalog, rows: Sequence[Observation], result: Calibration, rules: Rules = Rules()
) -> None:
    """Fill ``result.evenness``, ``work_shares``, ``warnings`` and ``notes`` from the fitted
    ``rows`` (the two checks of the module docstring)."""
    import numpy as np

    baseline = catalog.baseline.name
    t_level = 0.5 + rules.confidence / 2

    def regress(subset: Sequence[Observation], y: Any) -> tuple[list[str], Any, float]:
        columns = sorted({str(o.family) for o in subset} - {baseline})
        workloads, w_of, column_of = _design(subset, columns)
        reg = _regress(y, w_of, column_of, len(workloads), len(columns))
        return columns, reg, t_quantile(t_level, reg.dof)

    # Evenness: the usage-model workloads' log speeds against the catalog's log factors.
    usage_rows, _, _, _ = _fitted_rows(baseline, [o for o in rows if o.work_rate is None])
    if usage_rows:
        y = np.log(np.array([o.usage_millis for o in usage_rows], dtype=float))
        columns, reg, t = regress(usage_rows, y)
        factor = {f.name: math.log(float(f.scu_per_core)) for f in catalog.families}
        c = np.array([factor[name] for name in columns])
        speed = -np.asarray(reg.beta, dtype=float)
        weight = 1 / np.asarray(reg.se, dtype=float) ** 2
        spread = float(np.max(np.abs(c))) if len(c) else 0.0
        information = float(np.sum(weight * c**2)) if len(c) else 0.0
        measurable = math.isfinite(information) and information > 0 and math.isfinite(t)
        if spread >= math.log1p(MATERIAL) and measurable:
            lam = float(np.sum(weight * c * speed)) / information
            half = t * math.sqrt(1 / information)
            result.evenness = Interval(lam, lam - half, lam + half)
            if lam + half < EVENNESS_WARN:
                widest = columns[int(np.argmax(np.abs(c)))]
                result.warnings.append(
                    f"usage per replica hardly differs across families that the catalog "
                    f"says differ by up to {_pct(math.exp(factor[widest]) - 1)} ({widest}): "
                    f"the fitted speed differences are {lam:.0%} (95% interval "
                    f"{lam - half:.0%} to {lam + half:.0%}) of the catalog's "
                    f"({len({o.workload for o in usage_rows})} workloads fitted from usage "
                    "alone). Least-request or latency-aware load balancing (Envoy, Istio, "
                    "Linkerd) does this: it sends more work to faster replicas until their "
                    "CPU use evens out, and usage then says nothing about speed. Give a work "
                    "signal (--work-metrics, or --prometheus with --work-query); if the "
                    "balancing is round-robin, the catalog overstates the differences."
                )

    # Work shares: each family's work per replica against the baseline's.
    work_rows, _, _, _ = _fitted_rows(baseline, [o for o in rows if o.work_rate is not None])
    if work_rows:
        y = np.log(np.array([o.work_rate for o in work_rows], dtype=float))
        columns, reg, t = regress(work_rows, y)
        disagree = []
        for i, name in enumerate(columns):
            b, s = float(reg.beta[i]), float(reg.se[i])
            low = high = None
            if math.isfinite(s) and math.isfinite(t):
                low, high = math.exp(b - t * s), math.exp(b + t * s)
            share = Interval(math.exp(b), low, high)
            result.work_shares[name] = share
            excludes_one = low is not None and high is not None and (low > 1 or high < 1)
            if excludes_one and abs(share.value - 1) >= MATERIAL:
                disagree.append(
                    f"{name} {_pct(share.value - 1)} (95% interval {_pct(low - 1)} to "
                    f"{_pct(high - 1)})"
                )
        if disagree:
            usage_only = result.workloads and len(result.workloads) - result.work_workloads
            text = (
                "the work signal disagrees with equal work per replica: per replica, "
                f"against {baseline}, {'; '.join(disagree)}. The balancing is not "
                "round-robin, so usage alone would misread these speeds"
            )
            if usage_only:
                result.warnings.append(
                    f"{text}; {usage_only} workloads without a work signal were fitted from "
                    "usage alone and pull the estimates toward 1.0: give them a work rate "
                    "too, or read their estimates as lower bounds of the differences."
                )
            else:
                result.notes.append(f"{text}; every fitted workload here uses its work rate.")


def calibrate(
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    metrics: Iterable[Mapping[str, Any]],
    rules: Rules = Rules(),
    work: Mapping[tuple[str, str], float] | None = None,
) -> Calibration:
    """:func:`observe` then :func:`fit`: the whole estimate from parsed objects."""
    return fit(catalog, observe(catalog, nodes, pods, metrics, rules, work), rules)


# -- the proposed catalog --------------------------------------------------------------

#: Decimal places of a proposed ``scuPerCore``: 0.1%, finer than any interval seen in
#: practice and well inside the model's 6-place limit.
PROPOSED_DECIMALS = 3


def tight(estimate: FamilyEstimate, rules: Rules = Rules()) -> bool:
    """True when ``estimate`` is tight enough to replace the catalog's value."""
    hw = estimate.halfwidth
    return hw is not None and hw <= rules.max_halfwidth


def propose(
    document: Mapping[str, Any], calibration: Calibration, rules: Rules = Rules()
) -> tuple[dict[str, Any], list[str]]:
    """A copy of the catalog ``document`` with tight estimates applied; and what changed.

    The baseline is never touched (it is 1.0 by definition). Families whose interval is
    wider than ``rules.max_halfwidth`` of the estimate keep their value.
    """
    data = copy.deepcopy(dict(document))
    changed = []
    by_name = {f.name: f for f in calibration.families}
    for family in (data.get("spec") or {}).get("families") or ():
        estimate = by_name.get(family.get("name"))
        if estimate is None or estimate.name == calibration.baseline or not tight(estimate, rules):
            continue
        value = round(float(estimate.estimate or 0.0), PROPOSED_DECIMALS)
        if value <= 0 or Decimal(str(value)) == estimate.scu_per_core:
            continue
        family["scuPerCore"] = value
        changed.append(estimate.name)
    return data, changed
