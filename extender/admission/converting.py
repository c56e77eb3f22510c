"""SCU -> physical millicores for all CPU values of one pod at once: pure, no I/O.

Each value on its own is ``ceil(scu_millis / scuPerCore)``
(:func:`machine_catalog.quantities.scu_to_physical_millis`). Converting the values one by
one is not enough, because the API server validates them *together*
(``pkg/apis/core/validation``: ``validateResourceRequirements`` and
``validatePodResourceConsistency``) and a rounded sum is not the sum of the roundings:
three containers of 1 SCU on a 1.18 family become 848m each (2544m), while a pod-level
3 SCU becomes 2543m, and the create fails with ``must be greater than or equal to
aggregate container requests``. So the values are computed containers first, then the
pod level, under one rule: **every inequality the API server checks that held between
the SCU values still holds between the physical ones, and every strict one stays strict**
(one that did not hold is left alone: the API server rejects that pod with its own message)
(a request below its limit stays below it, so no Burstable pod turns Guaranteed). In
formulas, with ``c(x) = ceil(x / f)``:

- container request ``r' = c(r)`` (or whole cores, below);
- container limit ``l' = max(c(l), r' + [r < l])`` (when ``r <= l``);
- pod-level request ``R' = max(c(R), A')`` (when ``R >= A``; a resize that cannot change
  ``R'`` instead trims the container requests it sets by 1m, down to ``floor(r / f)``,
  until ``A' <= R'``), where ``A'`` is the
  aggregate of the containers' physical requests (app containers plus sidecars, or the
  peak of an init container, whichever is larger:
  :func:`machine_catalog.resources.aggregate_container_requests`);
- pod-level limit ``L' = max(c(L), max of l' over containers with l <= L)``, then
  ``L' = max(L', R' + 1)`` when ``R < L``, and ``R' = L' = max(R', L')`` when ``R = L``.

Each result is at least ``c(x)``: nobody gets less than they asked for (the one
exception, the resize trim above, keeps the pod's own request, which the containers
share). The rules checked (Kubernetes 1.34/1.35): a request never above its limit, in
every container and at pod level; a pod-level request at least the containers'
aggregate request; no container limit above the pod-level limit.

**Static CPU manager.** The kubelet's ``static`` policy gives exclusive cores to a
container only if its pod is Guaranteed and its CPU request is a whole number. ``cpu: 2``
becoming ``1695m`` silently loses them, so in a Guaranteed pod a container whose SCU
request is whole gets ``ceil(c(r) / 1000)`` whole cores (request and limit alike, so the
pod stays Guaranteed). Pods with pod-level CPU are left exact: the static policy does not
give them exclusive cores. The annotation ``machine-catalog.io/cpu-conversion: exact``
opts a pod out (exact conversion, for clusters without the static policy, where whole
cores only waste capacity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from machine_catalog.quantities import QuantityError, scu_to_physical_millis, to_millis
from machine_catalog.resources import aggregate_container_requests, pod_qos

#: Per-pod opt-out of whole-core rounding: ``exact`` converts Guaranteed pods exactly too.
CPU_CONVERSION_ANNOTATION = "machine-catalog.io/cpu-conversion"
EXACT = "exact"


@dataclass(frozen=True, slots=True)
class CpuValue:
    """One CPU request or limit the user wrote, in SCU millis, and where it lives."""

    section: str  # "containers", "initContainers" or "pod"
    container: str | None  # None for pod-level resources
    kind: str  # "requests" or "limits"
    pointer: str
    scu_millis: int
    index: int = 0  # position in its container list (spec order matters for init containers)
    sidecar: bool = False  # a restartable init container


def keeps_whole_cores(pod: Mapping[str, Any]) -> bool:
    """Whole SCU requests of this pod become whole cores (static CPU manager rules)."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    annotations = (
        metadata.get("annotations") if isinstance(metadata.get("annotations"), dict) else {}
    )
    if str(annotations.get(CPU_CONVERSION_ANNOTATION, "")).strip().lower() == EXACT:
        return False
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    pod_level = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
    if any("cpu" in (pod_level.get(kind) or {}) for kind in ("requests", "limits")):
        return False
    try:
        return pod_qos(pod) == "Guaranteed"
    except QuantityError:  # a bad memory value: the API server rejects the pod anyway
        return False


def convert(
    values: Sequence[CpuValue],
    factor: Fraction,
    *,
    whole_cores: bool = False,
    fixed: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Physical millicores for every value, by JSON pointer (see the module docstring).

    ``values`` are SCU. ``fixed`` maps pointers whose physical value must stay as it is
    (a resize keeps what it did not change); their ``scu_millis`` is still read, as the
    SCU value they stand for, to decide which inequalities held.
    """
    fixed = fixed or {}
    out: dict[str, int] = {}

    def physical(scu: int) -> int:
        return scu_to_physical_millis(scu, factor)

    def whole(scu: int) -> int:
        millis = physical(scu)
        if whole_cores and scu % 1000 == 0:
            return -(-millis // 1000) * 1000
        return millis

    # Group by container (spec order) and kind.
    containers: dict[tuple[str, int], dict[str, CpuValue]] = {}
    pod_level: dict[str, CpuValue] = {}
    for v in values:
        if v.section == "pod":
            pod_level[v.kind] = v
        else:
            containers.setdefault((v.section, v.index), {})[v.kind] = v

    app: list[int] = []  # physical, and the same in SCU below
    init: list[tuple[int, bool]] = []
    app_scu: list[int] = []
    init_scu: list[tuple[int, bool]] = []
    limits: list[tuple[int, int]] = []  # (scu, physical) of every container limit
    # Container requests this call sets (not fixed), with their slot in app / init: the
    # ones a fixed pod-level request may trim (below).
    trimmable: list[tuple[bool, int, CpuValue]] = []
    for (section, _), kinds in sorted(
        containers.items(), key=lambda kv: (kv[0][0] != "containers", kv[0][1])
    ):
        req, lim = kinds.get("requests"), kinds.get("limits")
        req_p = None
        if req is not None:
            req_p = fixed.get(req.pointer, whole(req.scu_millis))
            out[req.pointer] = req_p
        lim_p = None
        if lim is not None:
            lim_p = fixed.get(lim.pointer)
            if lim_p is None:
                lim_p = whole(lim.scu_millis)
                if req is not None and req_p is not None and req.scu_millis <= lim.scu_millis:
                    lim_p = max(lim_p, req_p + (req.scu_millis < lim.scu_millis))
            out[lim.pointer] = lim_p
            limits.append((lim.scu_millis, lim_p))
        # A container without a request is counted at its limit (API server defaulting).
        effective = req_p if req_p is not None else (lim_p or 0)
        effective_scu = (req or lim).scu_millis  # type: ignore[union-attr]
        sidecar = (req or lim).sidecar  # type: ignore[union-attr]
        if req is not None and req.pointer not in fixed:
            slot = len(app) if section == "containers" else len(init)
            trimmable.append((section == "containers", slot, req))
        if section == "containers":
            app.append(effective)
            app_scu.append(effective_scu)
        else:
            init.append((effective, sidecar))
            init_scu.append((effective_scu, sidecar))

    req, lim = pod_level.get("requests"), pod_level.get("limits")
    req_p = lim_p = None
    if req is not None:
        req_p = fixed.get(req.pointer)
        if req_p is None:
            req_p = physical(req.scu_millis)
            if req.scu_millis >= aggregate_container_requests(app_scu, init_scu):
                req_p = max(req_p, aggregate_container_requests(app, init))
        elif req.scu_millis >= aggregate_container_requests(app_scu, init_scu):
            # A resize of containers under a pod-level request it cannot change: the
            # containers' rounded-up sum may pass it by a millicore or so, which the API
            # server refuses. Take 1m off the requests this call set (last first), never
            # below floor(r / f), until the aggregate fits: the pod keeps its request.
            _trim(trimmable, app, init, out, req_p, factor)
    if lim is not None:
        lim_p = fixed.get(lim.pointer)
        if lim_p is None:
            lim_p = physical(lim.scu_millis)
            for scu, phys in limits:
                if scu <= lim.scu_millis:
                    lim_p = max(lim_p, phys)
            if req is not None and req_p is not None and req.scu_millis < lim.scu_millis:
                lim_p = max(lim_p, req_p + 1)
    if req is not None and lim is not None and req.scu_millis == lim.scu_millis:
        # Equal in SCU, equal after (a Guaranteed pod stays Guaranteed): the larger of
        # the two lower bounds, unless the other one is fixed by a resize.
        if lim.pointer in fixed:
            req_p = lim_p if req.pointer not in fixed else req_p
        elif req.pointer in fixed:
            lim_p = req_p
        else:
            req_p = lim_p = max(req_p or 0, lim_p or 0)
    if req is not None:
        out[req.pointer] = req_p  # type: ignore[assignment]
    if lim is not None:
        out[lim.pointer] = lim_p  # type: ignore[assignment]
    return out


def _trim(
    trimmable: Sequence[tuple[bool, int, CpuValue]],
    app: list[int],
    init: list[tuple[int, bool]],
    out: dict[str, int],
    ceiling: int,
    factor: Fraction,
) -> None:
    """Lower the ``trimmable`` requests (in ``out`` and in ``app`` / ``init``) by at most
    1m each, down to ``floor(scu / f)``, until the containers' aggregate is at most
    ``ceiling``. Each value is ``ceil(scu / f)``, at most 1m above the exact share, so
    one pass is all there is to take."""
    for is_app, slot, v in reversed(trimmable):
        if aggregate_container_requests(app, init) <= ceiling:
            return
        floor = v.scu_millis * factor.denominator // factor.numerator
        if out[v.pointer] <= floor:
            continue
        out[v.pointer] -= 1
        if is_app:
            app[slot] -= 1
        else:
            init[slot] = (init[slot][0] - 1, init[slot][1])


def effective_request(values: Sequence[CpuValue], millis: Mapping[str, int]) -> int:
    """The pod's CPU request as kube-scheduler counts it (without overhead), with each
    value's millis taken from ``millis`` by pointer: the pod-level request when there is
    one, else the containers' aggregate (a container without a request at its limit)."""
    per_container: dict[tuple[str, int], dict[str, CpuValue]] = {}
    for v in values:
        if v.section == "pod":
            if v.kind == "requests":
                return millis[v.pointer]
        else:
            per_container.setdefault((v.section, v.index), {})[v.kind] = v
    app: list[int] = []
    init: list[tuple[int, bool]] = []
    for (section, _), kinds in sorted(per_container.items(), key=lambda kv: kv[0][1]):
        v = kinds.get("requests") or kinds["limits"]
        if section == "containers":
            app.append(millis[v.pointer])
        else:
            init.append((millis[v.pointer], v.sidecar))
    return aggregate_container_requests(app, init)


def physical_requests(
    values: Sequence[CpuValue], factors: Sequence[Fraction], *, whole_cores: bool
) -> list[int]:
    """Per factor, the physical CPU request the patch gives the pod on a family of that
    factor (:func:`convert`, then :func:`effective_request`): what the family must have room
    for. ``ceil(scu / f)`` of the SCU request is not it: whole cores (2 SCU on a 1.3 family
    is ``2``, not ``1539m``) and per-container rounding (three 1-SCU containers on 1.18 take
    2544m, not 2543m) both take more. Computed once per distinct factor."""
    if not values:
        return [0] * len(factors)
    first = values[0]
    if all(v.section == first.section != "pod" and v.index == first.index for v in values):
        # One container (most pods): its request, or its limit without one, is the pod's,
        # converted on its own, so convert() reduces to this (the webhook answers for
        # every pod; tens of families times convert() would cost it a millisecond).
        scu = next((v for v in values if v.kind == "requests"), first).scu_millis
        whole = whole_cores and scu % 1000 == 0
        out = []
        for factor in factors:
            millis = -(-scu * factor.denominator // factor.numerator)
            out.append(-(-millis // 1000) * 1000 if whole else millis)
        return out
    # Keyed by (numerator, denominator): hashing a Fraction costs more than converting.
    by_factor: dict[tuple[int, int], int] = {}
    out = []
    for factor in factors:
        key = (factor.numerator, factor.denominator)
        need = by_factor.get(key)
        if need is None:
            need = effective_request(values, convert(values, factor, whole_cores=whole_cores))
            by_factor[key] = need
        out.append(need)
    return out


def overhead_millis(pod: Mapping[str, Any]) -> int:
    """``spec.overhead.cpu`` (RuntimeClass) in millicores: physical, never converted."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    overhead = spec.get("overhead") if isinstance(spec.get("overhead"), dict) else {}
    return to_millis(overhead.get("cpu", 0))


def pod_physical_requests(
    pod: Mapping[str, Any], values: Sequence[CpuValue], factors: Sequence[Fraction]
) -> list[int]:
    """:func:`physical_requests` for ``pod`` as the patch converts it (whole cores when
    :func:`keeps_whole_cores`), plus ``spec.overhead.cpu``, which is physical already and
    never converted. ``values`` are the pod's CPU values in SCU. Raises
    :class:`~machine_catalog.quantities.QuantityError` on an overhead that is not one."""
    extra = overhead_millis(pod)
    needs = physical_requests(values, factors, whole_cores=keeps_whole_cores(pod))
    return [need + extra for need in needs]
