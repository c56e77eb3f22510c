"""Which nodes can take a pod, and why the others cannot: the ``/scheduler/filter`` logic.

Pure: a :class:`~extender.state.cluster.NodeView` (one catalog version, the node facts of one
request) in, a :class:`FilterOutcome` out. The verdict for every node is one numpy
expression; text is built only for the rejected nodes, because a request may carry
15,000 names and most of them usually pass.

Where a rejection lands decides what kube-scheduler does next:

- ``FailedAndUnresolvableNodes``: every rejection. Preemption cannot help with any of
  them: the node is of the wrong family, retired, unknown to the catalog, ambiguous or
  unknown to the cache; it lacks free SCU by the cache's count; or (``loadAware``) its
  measured load is above ``hotSpotUsage``.
- ``FailedNodes``: never. kube-scheduler's preemption dry run (``DryRunPreemption``)
  re-runs only the in-tree filters on a ``FailedNodes`` node (the extender has no
  ``preemptVerb``). The extender only ever sees nodes that passed those filters, so the
  dry run finds the pod fits with no victim and fails the whole preemption with
  ``expected at least one victim pod on node`` (kubernetes#139270; ``preemption.go`` in
  1.34.0 and 1.37.2) instead of dropping the node: one hot spot, or a cache that counts
  one pod more, would then block preemption on every other node too.

Reasons name no node (the maps are keyed by node name already): kube-scheduler counts
identical reasons into the pod's FailedScheduling event, so "4000 instance type m5.large
matches no family of catalog prod@ab12" stays one line instead of 4000.

Cordoned nodes are not judged here: kube-scheduler's own NodeUnschedulable filter runs
first and knows the pod's tolerations; the extender only adds what the catalog knows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from extender.scheduler.wire import ReasonMap
from extender.state.cluster import ABSENT, AMBIGUOUS, MAX_CPU_MILLIS, UNKNOWN, NodeView
from extender.state.usage import scoring_fractions, to_scu
from machine_catalog.annotations import FAMILY_ANNOTATION
from machine_catalog.catalog import Catalog
from machine_catalog.matching import instance_type_of
from machine_catalog.quantities import QuantityError, format_scu, physical_to_scu_millis
from machine_catalog.resources import node_allocatable_millis, pod_cpu_request_millis

#: Rejection reasons, the ``reason`` label of ``machine_catalog_filter_rejections_total``.
#: The position in this tuple is the verdict code (0 = passes).
REASONS = (
    "not_in_cache",
    "unknown_node",
    "ambiguous_node",
    "retired_family",
    "family_mismatch",
    "insufficient_scu",
    "pod_family_unknown",
    "hot_spot",
)
_NOT_IN_CACHE, _UNKNOWN, _AMBIGUOUS, _RETIRED, _MISMATCH, _INSUFFICIENT = range(1, 7)
_HOT_SPOT = 8  # after pod_family_unknown (7), which is decided before any per-node verdict
#: Verdicts that preemption can resolve: none (see the module docstring). Kept as a set so
#: the split stays in one place should the extender ever implement ``preemptVerb``.
_RESOLVABLE: frozenset[int] = frozenset()


class PodError(ValueError):
    """The pod in the request carries something the extender cannot read."""


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    """The verdict on one request's nodes.

    ``passing`` holds positions into the request's nodes, or None when every node passed
    (so the encoder can echo the input without touching each node).
    """

    passing: list[int] | None
    #: node name -> reason (a :class:`~.wire.ReasonMap` when any node is rejected).
    failed: Mapping[str, str]
    unresolvable: Mapping[str, str]
    #: reason -> number of nodes rejected for it, for the metrics.
    rejections: dict[str, int]


def pinned_family(pod: Mapping[str, Any]) -> str | None:
    """The family the webhook pinned the pod to (``machine-catalog.io/family``), if any."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if not isinstance(annotations, dict):
        raise PodError("Pod.metadata.annotations must be an object")
    family = annotations.get(FAMILY_ANNOTATION)
    if family is None:
        return None
    if not isinstance(family, str):
        raise PodError(f"annotation {FAMILY_ANNOTATION} must be a string")
    return family.strip() or None


def pod_request_millis(pod: Mapping[str, Any]) -> int:
    """The pod's effective CPU request, or :class:`PodError` for an unreadable quantity.

    Bounded like the cache's values (:data:`extender.state.cluster.MAX_CPU_MILLIS`): a pod asking
    ``cpu: "1e16"`` fits no node either way, and the int64 score arithmetic stays exact.
    """
    try:
        return min(pod_cpu_request_millis(pod), MAX_CPU_MILLIS)
    except (QuantityError, AttributeError, TypeError) as exc:
        raise PodError(f"cannot read the pod's CPU request: {exc}") from None


def _request_node_allocatable(node: Mapping[str, Any]) -> int:
    """A node object's allocatable CPU; 0 when the request's object is unreadable.

    The request is untrusted input (unlike the API server's objects in the cache), so any
    shape problem means "no capacity" rather than an exception.
    """
    try:
        return node_allocatable_millis(node)
    except (QuantityError, AttributeError, TypeError):
        return 0


def complete_view(
    view: NodeView, nodes: Sequence[Mapping[str, Any]]
) -> tuple[NodeView, np.ndarray]:
    """Fill in, from the node objects of a full-``Nodes`` request, the nodes the cache lacks.

    The cache still decides for the nodes it knows (it alone knows what their pods
    request). A node it does not know yet (a watch event in flight) is judged from the
    object kube-scheduler sent: its labels and allocatable, with nothing requested.
    Returns the completed view and a mask of the positions judged that way.
    """
    from_request = view.family == ABSENT
    if not from_request.any():
        return view, from_request
    catalog = view.catalog
    family = view.family.copy()
    allocatable = view.allocatable.copy()
    unmatched = dict(view.unmatched_labels)
    instance_type = view.instance_type.copy()
    instance_types = list(view.instance_types)  # the cache's table is shared: extend a copy
    codes = {value: code for code, value in enumerate(instance_types)}
    for i in np.flatnonzero(from_request).tolist():
        node = nodes[i]
        labels = (node.get("metadata") or {}).get("labels") or {}
        if not isinstance(labels, dict):
            labels = {}
        labels = {k: v for k, v in labels.items() if isinstance(v, str)}
        match = catalog.match(labels)
        if match.status == "matched":
            family[i] = catalog.family_index[match.families[0].name]
        else:
            family[i] = UNKNOWN if match.status == "unknown" else AMBIGUOUS
            unmatched[i] = labels
        allocatable[i] = _request_node_allocatable(node)
        value = instance_type_of(labels) or None
        code = codes.get(value)
        if code is None:
            code = codes[value] = len(instance_types)
            instance_types.append(value)
        instance_type[i] = code
    completed = replace(
        view,
        family=family,
        allocatable=allocatable,
        unmatched_labels=unmatched,
        instance_type=instance_type,
        instance_types=instance_types,
    )
    return completed, from_request


def _all_unresolvable(names: Sequence[str], reason: str, code: str) -> FilterOutcome:
    return FilterOutcome(
        passing=[],
        failed={},
        unresolvable=dict.fromkeys(names, reason),
        rejections={code: len(names)} if names else {},
    )


def _pick(items: Sequence[Any], positions: np.ndarray) -> list[Any]:
    """``[items[i] for i in positions]``, with the loop in C."""
    if positions.size == 0:
        return []
    return list(map(items.__getitem__, positions.tolist()))


def filter_nodes(
    view: NodeView,
    pod_millis: int,
    pinned: str | None,
    *,
    cache_age: float | None = None,
    from_request: np.ndarray | None = None,
    now: float | None = None,
) -> FilterOutcome:
    """Judge every node of ``view`` for a pod requesting ``pod_millis`` physical millicores.

    ``from_request`` marks nodes judged from the request's object rather than the cache
    (see :func:`complete_view`), whose reasons then say so. With ``view.usage`` (the
    ``loadAware`` strategy with a ``hotSpotUsage``) a node whose load is above that
    fraction of its SCU is rejected, see :func:`hot_spots`; ``now`` is the wall-clock time
    its samples' age is measured at.
    """
    catalog = view.catalog
    names = view.names
    hot = hot_spots(view, now) if view.usage is not None else None
    if pinned is not None and pinned not in catalog.by_name:
        reason = (
            f"pod is pinned to family {pinned} which the catalog ({catalog.version}) does not have"
        )
        return _all_unresolvable(names, reason, "pod_family_unknown")

    family = view.family
    free = view.allocatable - view.requested
    if pinned is not None and catalog.by_name[pinned].schedulable:
        # The common case, a pod the webhook pinned, judged in two array expressions; the
        # verdict per node below is only worked out when some node is rejected.
        passes = family == catalog.family_index[pinned]
        if pod_millis > 0:
            passes &= free >= pod_millis
        if hot is not None:
            passes &= ~hot
        if passes.all():
            return FilterOutcome(passing=None, failed={}, unresolvable={}, rejections={})
    known = family >= 0
    safe = np.where(known, family, 0)
    retired_by_index = np.array([not f.schedulable for f in catalog.families], dtype=bool)
    unknown = family == UNKNOWN
    allow_unknown = catalog.unknown_nodes == "allow" and pinned is None
    conditions = [
        family == ABSENT,
        unknown if not allow_unknown else np.zeros(len(names), dtype=bool),
        family == AMBIGUOUS,
        known & retired_by_index[safe],
        known & (family != catalog.family_index[pinned]) if pinned is not None else known & False,
        # kube-scheduler's resource fit skips a resource the pod does not request at all.
        (free < pod_millis) if pod_millis > 0 else np.zeros(len(names), dtype=bool),
    ]
    choices = list(range(1, len(conditions) + 1))
    if hot is not None:
        conditions.append(hot)
        choices.append(_HOT_SPOT)
    verdict = np.select(conditions, choices, default=0)
    rejected = np.flatnonzero(verdict)
    if rejected.size == 0:
        return FilterOutcome(passing=None, failed={}, unresolvable={}, rejections={})

    codes = verdict[rejected]
    suffixed = None if from_request is None else from_request[rejected]
    group, texts = _Reasons(view, pod_millis, pinned, cache_age).grouped(rejected, codes, suffixed)
    resolvable = np.isin(codes, list(_RESOLVABLE))
    if resolvable.any():
        failed_at, unresolvable_at = np.flatnonzero(resolvable), np.flatnonzero(~resolvable)
        failed = ReasonMap(_pick(names, rejected[failed_at]), group[failed_at], texts)
        unresolvable = ReasonMap(
            _pick(names, rejected[unresolvable_at]), group[unresolvable_at], texts
        )
    else:
        failed, unresolvable = (
            ReasonMap([], group[:0], texts),
            ReasonMap(_pick(names, rejected), group, texts),
        )
    counts = np.bincount(codes, minlength=len(REASONS) + 1)
    rejections = {REASONS[c - 1]: int(counts[c]) for c in range(1, len(counts)) if counts[c]}
    return FilterOutcome(
        passing=np.flatnonzero(verdict == 0).tolist(),
        failed=failed,
        unresolvable=unresolvable,
        rejections=rejections,
    )


def hot_spots(view: NodeView, now: float | None) -> np.ndarray | None:
    """Nodes whose load is above ``hotSpotUsage`` of their SCU: ``L * b > a * C``.

    ``L`` is the load (usage plus pods bound since the sample) and ``C`` the allocatable,
    both in SCU millis of the node's family; ``hotSpotUsage = a/b`` exactly. Only nodes
    with a fresh sample are judged: without one there is no evidence of heat, and a node
    is never rejected on its requests alone (a dead metrics API must not cap every node
    at ``hotSpotUsage`` of its requests). None when the catalog has no ``hotSpotUsage``.
    """
    usage = view.usage
    threshold = scoring_fractions(view.catalog)[1]
    if usage is None or threshold is None:
        return None
    catalog = view.catalog
    a, b = threshold.numerator, threshold.denominator
    capacity = to_scu(view.allocatable, view.family, catalog)
    max_age = float(catalog.scoring.max_sample_age_seconds)
    # Only fresh nodes are judged, so their load is usage + unseen: node_load's fallback to
    # requests would be computed for nothing.
    fresh = (usage.usage_scu >= 0) & (
        usage.sample_at >= (time.time() if now is None else now) - max_age
    )
    load = usage.usage_scu + usage.unseen_scu
    return fresh & (view.family >= 0) & (load * b > capacity * a)


class _Reasons:
    """The text for each rejected node, formatted once per group of nodes that share it.

    A request with thousands of rejected nodes has only a handful of distinct reasons (per
    verdict, family and instance type, or per capacity figures), so the nodes are grouped
    with numpy and each group's text is built once.
    """

    def __init__(
        self, view: NodeView, pod_millis: int, pinned: str | None, cache_age: float | None
    ) -> None:
        self.view = view
        self.catalog: Catalog = view.catalog
        self.pod_millis = pod_millis
        self.pinned = pinned
        self.cache_age = cache_age
        self._factors: dict[str, Fraction] = {}

    def grouped(
        self, positions: np.ndarray, codes: np.ndarray, from_request: np.ndarray | None
    ) -> tuple[np.ndarray, list[str]]:
        """(group per node at ``positions``, text per group) for the verdicts ``codes``.

        ``from_request`` marks the nodes judged from the request's object, whose reasons
        say so.
        """
        view = self.view
        family = view.family[positions].astype(np.int64)
        flag = (
            np.zeros(len(positions), dtype=np.int64)
            if from_request is None
            else from_request.astype(np.int64)
        )
        group = np.empty(len(positions), dtype=np.int64)
        texts: list[str] = []
        # What a text depends on: everything but the ambiguous (all its labels: rare, one
        # text per node) and the insufficient (capacity figures) verdicts depends on the
        # verdict, the family and the instance type only.
        by_capacity = (codes == _INSUFFICIENT) | (codes == _AMBIGUOUS) | (codes == _HOT_SPOT)
        simple = np.flatnonzero(~by_capacity)
        if simple.size:
            instance_type = view.instance_type[positions[simple]].astype(np.int64)
            key = (
                (codes[simple] << 50)
                | ((family[simple] + 8) << 33)
                | (instance_type << 1)
                | flag[simple]
            )
            # Grouped by sorting (np.unique with indexes costs 3x as much at 3,333 nodes).
            ordered = np.sort(key)
            keys = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
            inverse = np.searchsorted(keys, key)
            first = np.empty(len(keys), dtype=np.int64)
            first[inverse] = np.arange(len(key))  # one member of each group: any will do
            texts = [
                self._suffixed(
                    self._text(int(positions[simple[j]]), int(codes[simple[j]]), 0, 0),
                    bool(flag[simple[j]]),
                )
                for j in first.tolist()
            ]
            group[simple] = inverse
        other = np.flatnonzero(by_capacity)
        if other.size:
            memo: dict[tuple[int, ...], int] = {}
            columns = (
                other.tolist(),
                positions[other].tolist(),
                codes[other].tolist(),
                view.allocatable[positions[other]].tolist(),
                view.requested[positions[other]].tolist(),
                flag[other].tolist(),
            )
            for k, i, code, allocatable, requested, suffixed in zip(*columns, strict=True):
                if code == _AMBIGUOUS:
                    key_: tuple[int, ...] = (code, i)
                elif code == _HOT_SPOT:  # one text per family, capacity and load figures
                    usage = view.usage
                    assert usage is not None
                    key_ = (
                        code,
                        int(family[k]),
                        allocatable,
                        int(usage.usage_scu[i]),
                        int(usage.unseen_scu[i]),
                        suffixed,
                    )
                else:
                    key_ = (code, int(family[k]), allocatable, requested, suffixed)
                index = memo.get(key_)
                if index is None:
                    index = memo[key_] = len(texts)
                    text = self._text(i, code, allocatable, requested)
                    texts.append(self._suffixed(text, bool(suffixed)))
                group[k] = index
        return group, texts

    @staticmethod
    def _suffixed(text: str, from_request: bool) -> str:
        if from_request:
            return text + "; node not in the extender's cache yet, its pods' CPU counted as 0"
        return text

    def _instance_type(self, i: int) -> str:
        view = self.view
        value = view.instance_types[int(view.instance_type[i])]
        return f"instance type {value}" if value else "no instance-type label"

    def _text(self, i: int, code: int, allocatable: int, requested: int) -> str:
        catalog = self.catalog
        fam = int(self.view.family[i])
        if code == _NOT_IN_CACHE:
            age = "never synced" if self.cache_age is None else f"cache age {self.cache_age:.1f}s"
            return f"node is not in the extender's cluster cache ({age})"
        if code == _UNKNOWN:
            text = f"{self._instance_type(i)} matches no family of catalog {catalog.version}"
            if catalog.unknown_nodes == "allow":
                text += (
                    f" (unknownNodes: allow admits only pods not pinned to a family;"
                    f" this pod is pinned to {self.pinned})"
                )
            return text
        if code == _AMBIGUOUS:
            match = self.view.match(i)
            families = ", ".join(f.name for f in match.families) if match else "several"
            return (
                f"{self._instance_type(i)} matches several families of catalog"
                f" {catalog.version} ({families}); the catalog must say which"
            )
        family = catalog.families[fam] if fam >= 0 else catalog.baseline
        if code == _RETIRED:
            return f"family {family.name} is retired (schedulable: false)"
        if code == _MISMATCH:
            return (
                f"node is family {family.name} ({self._instance_type(i)}),"
                f" pod is pinned to family {self.pinned}"
            )
        if code == _HOT_SPOT:
            return self._hot_spot_text(i, family)
        factor: Fraction = family.factor
        if fam >= 0:
            where = f"on family {family.name} at {family.scu_per_core} SCU/core"
        else:
            where = f"on a node of no family, counted as baseline {family.name} at 1 SCU/core"
        free = max(0, allocatable - requested)
        need = format_scu(physical_to_scu_millis(self.pod_millis, factor))
        have = format_scu(physical_to_scu_millis(free, factor))
        total = format_scu(physical_to_scu_millis(allocatable, factor))
        return f"needs {need} ({self.pod_millis}m {where}), {have} free of {total}"

    def _hot_spot_text(self, i: int, family: Any) -> str:
        """``usage 7.2 SCU (90%) of 8 SCU on family ...`` with where the load comes from."""
        usage = self.view.usage
        assert usage is not None
        factor = self._factors.get(family.name)
        if factor is None:
            factor = self._factors[family.name] = family.factor
        capacity = physical_to_scu_millis(int(self.view.allocatable[i]), factor)
        measured, unseen = int(usage.usage_scu[i]), int(usage.unseen_scu[i])
        load = measured + unseen
        percent = f"{100 * load / capacity:.0f}%" if capacity > 0 else "n/a"
        limit = self.catalog.scoring.hot_spot_usage
        text = (
            f"hot spot: usage {format_scu(load)} ({percent}) of {format_scu(capacity)}"
            f" on family {family.name}, above hotSpotUsage {limit}"
        )
        if unseen:
            text += (
                f" ({format_scu(measured)} measured + {format_scu(unseen)} requested by pods"
                " bound since the sample)"
            )
        return text
