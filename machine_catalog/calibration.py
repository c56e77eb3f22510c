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
- ``at limit``: some sample at or above ``limit_share`` (default 90%) of the pod's CPU limit
  (sum over containers, when every container has one). metrics.k8s.io reports usage, not
  CFS throttling; a replica near its limit is probably throttled, and throttled usage says
  how much CPU it was allowed, not how much the work needed.

Per workload, the residuals (observed minus fitted log usage) are reported; a workload whose
root-mean-square residual exceeds ``flag_factor`` (default 2.5) times the pooled residual
standard deviation breaks the equal-work assumption (sticky sessions, sharded work, a
leader doing more than its followers) and is flagged. Flagged workloads stay in the fit:
the report says which ones to look at, and the clustered standard error already widens the
interval they disturb.

The module is pure: it takes parsed objects (nodes, pods, PodMetricsList documents) and
returns numbers. Reading files and the API lives in the CLI and in ``extender``.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


def _limit_millis(pod: Mapping[str, Any]) -> float | None:
    """The pod's CPU limit, or None when a container has none (the pod is then unbounded)."""
    total = 0.0
    containers = _each(_get(pod, "spec", "containers"))
    for c in containers:
        limit = _get(c, "resources", "limits", "cpu")
        millis = _cpu_millis(limit) if limit is not None else None
        if millis is None:
            return None
        total += millis
    return total if containers else None


@dataclass(frozen=True, slots=True)
class _Sample:
    start: float | None  # the window's start (timestamp - window), POSIX seconds
    millis: float


def _samples(metrics: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[_Sample]]:
    """(namespace, pod) -> its samples, summed over containers, from PodMetricsList documents."""
    out: dict[tuple[str, str], list[_Sample]] = defaultdict(list)
    seen: set[tuple[str, str, Any]] = set()
    for document in metrics:
        for item in _each(_get(document, "items")):
            total = 0.0
            for c in _each(item.get("containers")):
                millis = _cpu_millis(_get(c, "usage", "cpu"))
                if millis is None:
                    break
                total += millis
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
                out[key].append(_Sample(start, total))
    return out


def observe(
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    metrics: Iterable[Mapping[str, Any]],
    rules: Rules = Rules(),
) -> list[Observation]:
    """Every pod's evidence, with the rule that left it out (see the module's docstring)."""
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
    limit = _limit_millis(pod)
    if usage < rules.idle_millis:
        return "idle", usage, len(warm)
    if limit is not None and max(s.millis for s in warm) >= rules.limit_share * limit:
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
    by_workload: dict[str, set[str]] = defaultdict(set)
    for o in used:
        by_workload[str(o.workload)].add(str(o.family))
    multi = {w: fams for w, fams in by_workload.items() if len(fams) >= 2}
    linked = _linked(baseline, multi)
    fitted_workloads = sorted(w for w, fams in multi.items() if fams & linked)
    result = Calibration(
        baseline=baseline,
        families=[],
        excluded=excluded,
        single_family_workloads=len(by_workload) - len(multi),
        unlinked_workloads=len(multi) - len(fitted_workloads),
    )
    columns = [f.name for f in catalog.families if f.name in linked and f.name != baseline]
    col = {name: i for i, name in enumerate(columns)}
    widx = {w: i for i, w in enumerate(fitted_workloads)}
    rows = [o for o in used if str(o.workload) in widx]
    n, g, k = len(rows), len(fitted_workloads), len(columns)

    beta = np.zeros(k)
    se = np.full(k, np.nan)
    residual = np.zeros(n)
    if n and k:
        w_of = np.array([widx[str(o.workload)] for o in rows])
        y = np.log(np.array([o.usage_millis for o in rows], dtype=float))
        x = np.zeros((n, k))
        for r, o in enumerate(rows):
            if o.family in col:
                x[r, col[str(o.family)]] = 1.0
        counts = np.bincount(w_of, minlength=g).astype(float)

        def within(a: np.ndarray) -> np.ndarray:
            sums = np.zeros((g, *a.shape[1:]))
            np.add.at(sums, w_of, a)
            return a - (sums / counts.reshape(-1, *([1] * (a.ndim - 1))))[w_of]

        yt, xt = within(y), within(x)
        beta, *_ = np.linalg.lstsq(xt, yt, rcond=None)
        residual = yt - xt @ beta
        dof = n - g - k
        result.dof = dof
        if dof > 0:
            sigma2 = float(residual @ residual) / dof
            result.sigma = math.sqrt(sigma2)
            bread = np.linalg.pinv(xt.T @ xt)
            classical = sigma2 * np.diag(bread)
            scores = np.zeros((g, k))
            np.add.at(scores, w_of, xt * residual[:, None])
            clustered = np.diag(bread @ (scores.T @ scores) @ bread) * (g / max(g - 1, 1))
            se = np.sqrt(np.maximum(classical, clustered))
            result.dof = min(g - 1, dof)
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
    return result


def calibrate(
    catalog: Catalog,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    metrics: Iterable[Mapping[str, Any]],
    rules: Rules = Rules(),
) -> Calibration:
    """:func:`observe` then :func:`fit`: the whole estimate from parsed objects."""
    return fit(catalog, observe(catalog, nodes, pods, metrics, rules), rules)


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
