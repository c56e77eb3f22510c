"""``POST /scheduler/filter`` and ``POST /scheduler/prioritize``: the extender's routes.

Each request takes one :class:`~extender.state.cluster.NodeView` from the cache, and with it one
catalog version (``view.catalog``): a reload between two lines of a request cannot mix two
catalogs in one answer.

What each failure becomes, given how kube-scheduler reacts (see the wire-protocol notes):

- a body that is not an ``ExtenderArgs`` -> HTTP 400 ``{"error": ...}``. The scheduler
  counts any non-200 as the extender failing; a malformed request is its bug, not a
  scheduling decision, and a 400 shows up as such in our request metrics.
- filter while the cache is not synced -> HTTP 200 with ``Error: "cluster cache not
  synced"`` and null lists. The scheduler fails the cycle (or skips the extender if
  ``ignorable``) and retries the pod with backoff; it does not mark nodes unschedulable
  or preempt on the strength of data the extender does not have. The message reaches the
  pod's events, which a bare 503 would not (the scheduler does not read a non-200 body).
- prioritize while the cache is not synced -> HTTP 503. The scheduler ignores every
  prioritize error (the extender just adds no score), so the code is for our metrics.
- an unexpected exception -> logged with its traceback; filter answers 200 with a short
  ``Error``, prioritize answers 500 JSON. Never a traceback to the caller.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from extender import telemetry
from extender.errors import error_body
from extender.scheduler.filtering import (
    REASONS,
    PodError,
    complete_view,
    filter_nodes,
    pinned_family,
    pod_request_millis,
)
from extender.scheduler.scoring import load_aware_scores, node_scores
from extender.scheduler.wire import (
    ExtenderArgs,
    WireError,
    decode_extender_args,
    encode_filter_error,
    encode_filter_result,
    encode_host_priorities,
)
from extender.state.cluster import ABSENT, NodeView
from extender.state.usage import node_factors, node_load, scoring_fractions, to_scu
from machine_catalog.catalog import Catalog
from machine_catalog.quantities import physical_to_scu_millis

if TYPE_CHECKING:
    from extender.state.runtime import Runtime

log = logging.getLogger(__name__)

NOT_SYNCED = "cluster cache not synced"

# Children created up front: every reason exists from the first scrape (0), so rate() and
# alerts work before the first rejection; and the hot path skips labels().
_REJECTION_CHILDREN = {
    reason: telemetry.FILTER_REJECTIONS.labels(reason=reason) for reason in REASONS
}


def count_rejections(rejections: dict[str, int]) -> None:
    for reason, count in rejections.items():
        _REJECTION_CHILDREN[reason].inc(count)


def filter_response(
    runtime: Runtime, args: ExtenderArgs, pod_millis: int, pinned: str | None
) -> bytes:
    """The ``ExtenderFilterResult`` bytes for one decoded request."""
    cluster = runtime.cluster
    if not cluster.synced:
        return encode_filter_error(NOT_SYNCED)
    if _hot_spot_filter(cluster.catalog):
        view = cluster.view(args.names, usage=True)
    else:
        view = cluster.view(args.names)
    from_request = None
    if args.nodes is not None:
        view, from_request = complete_view(view, args.nodes)
    outcome = filter_nodes(
        view, pod_millis, pinned, cache_age=cluster.age(), from_request=from_request
    )
    count_rejections(outcome.rejections)
    return encode_filter_result(args, outcome.passing, outcome.failed, outcome.unresolvable)


def _hot_spot_filter(catalog: Catalog) -> bool:
    scoring = catalog.scoring
    return scoring.strategy == "loadAware" and scoring.hot_spot_usage is not None


def priorities(
    runtime: Runtime, args: ExtenderArgs, pod_millis: int, pinned: str | None = None
) -> np.ndarray:
    """One score 0..10 per requested node, in order; 0 for nodes the cache does not know."""
    cluster = runtime.cluster
    if cluster.catalog.strategy == "loadAware":
        view = cluster.view(args.names, usage=True)
        scores = load_aware_view_scores(view, pod_millis, pinned, time.time())
    else:
        view = cluster.view(args.names)
        scores = node_scores(view.catalog.strategy, view.allocatable, view.requested, pod_millis)
    scores[view.family == ABSENT] = 0
    return scores


def load_aware_view_scores(
    view: NodeView, pod_millis: int, pinned: str | None, now: float
) -> np.ndarray:
    """:func:`~extender.scheduler.scoring.load_aware_scores` for a view read with its usage.

    The pod's expected load ``p`` is its SCU: its physical request times the factor of the
    family it is pinned to (the baseline's, 1 SCU/core, for a pod pinned to none), the same
    on every node. Its request ``q`` on a node is the physical request times that node's
    factor, as kube-scheduler reserves it.
    """
    catalog = view.catalog
    assert view.usage is not None
    family = catalog.by_name.get(pinned) if pinned is not None else None
    pod_load = physical_to_scu_millis(pod_millis, (family or catalog.baseline).factor)
    factors = node_factors(view.family, catalog)
    capacity = to_scu(view.allocatable, view.family, catalog, factors)
    requested = to_scu(view.requested, view.family, catalog, factors)
    pod_request = to_scu(pod_millis, view.family, catalog, factors)
    max_age = float(catalog.scoring.max_sample_age_seconds)
    load, _fresh = node_load(view.usage, requested, now, max_age)
    weight, _hot = scoring_fractions(catalog)
    return load_aware_scores(capacity, requested, load, pod_load, pod_request, weight)


def filter_verb(runtime: Runtime, body: bytes) -> tuple[int, bytes]:
    """HTTP status and body of ``POST /scheduler/filter`` for one request body."""
    try:
        args = decode_extender_args(body)
        pod_millis = pod_request_millis(args.pod)
        pinned = pinned_family(args.pod)
    except (WireError, PodError) as exc:
        return 400, error_body(str(exc))
    runtime.calls.seen("filter", runtime.cluster.scheduled_bindings)
    try:
        return 200, filter_response(runtime, args, pod_millis, pinned)
    except Exception:
        log.exception("filter failed for pod %s", _pod_name(args))
        return 200, encode_filter_error("machine-catalog extender internal error (see its log)")


def prioritize_verb(runtime: Runtime, body: bytes) -> tuple[int, bytes]:
    """HTTP status and body of ``POST /scheduler/prioritize`` for one request body."""
    try:
        args = decode_extender_args(body)
        pod_millis = pod_request_millis(args.pod)
        pinned = pinned_family(args.pod)  # same validation as filter: one verdict
    except (WireError, PodError) as exc:
        return 400, error_body(str(exc))
    runtime.calls.seen("prioritize", runtime.cluster.scheduled_bindings)
    if not runtime.cluster.synced:
        return 503, error_body(NOT_SYNCED)
    try:
        scores = priorities(runtime, args, pod_millis, pinned)
        return 200, encode_host_priorities(args.names, scores)
    except Exception:
        log.exception("prioritize failed for pod %s", _pod_name(args))
        return 500, error_body("machine-catalog extender internal error (see its log)")


def _pod_name(args: ExtenderArgs) -> str:
    meta = args.pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name') or meta.get('generateName', '')}"
