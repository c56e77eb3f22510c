"""``POST /scheduler/filter`` and ``POST /scheduler/prioritize``: the extender's routes.

Each request takes one :class:`~extender.cluster.NodeView` from the cache, and with it one
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
from typing import TYPE_CHECKING, Any

import numpy as np
from flask import request

from extender import metrics
from extender.cluster import ABSENT, NodeView
from extender.filtering import (
    PodError,
    complete_view,
    filter_nodes,
    pinned_family,
    pod_request_millis,
)
from extender.responses import json_error, json_response
from extender.scoring import load_aware_scores, node_scores
from extender.usage import node_factors, node_load, scoring_fractions, to_scu
from extender.wire import (
    ExtenderArgs,
    WireError,
    decode_extender_args,
    encode_filter_error,
    encode_filter_result,
    encode_host_priorities,
)
from machine_catalog.catalog import Catalog
from machine_catalog.quantities import physical_to_scu_millis

if TYPE_CHECKING:
    from flask import Flask

    from extender.runtime import Runtime

log = logging.getLogger(__name__)

NOT_SYNCED = "cluster cache not synced"


def _read_args() -> ExtenderArgs:
    # get_data goes through werkzeug's stream, bounded by MAX_CONTENT_LENGTH (413 beyond).
    return decode_extender_args(request.get_data(cache=False))


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
    metrics.count_rejections(outcome.rejections)
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
    """:func:`~extender.scoring.load_aware_scores` for a view read with its usage.

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


def register(app: Flask, runtime: Runtime) -> None:
    @app.post("/scheduler/filter")
    def scheduler_filter() -> Any:
        try:
            args = _read_args()
            pod_millis = pod_request_millis(args.pod)
            pinned = pinned_family(args.pod)
        except (WireError, PodError) as exc:
            return json_error(400, str(exc))
        try:
            return json_response(filter_response(runtime, args, pod_millis, pinned))
        except Exception:
            log.exception("filter failed for pod %s", _pod_name(args))
            return json_response(
                encode_filter_error("machine-catalog extender internal error (see its log)")
            )

    @app.post("/scheduler/prioritize")
    def scheduler_prioritize() -> Any:
        try:
            args = _read_args()
            pod_millis = pod_request_millis(args.pod)
            pinned = pinned_family(args.pod)  # same validation as filter: one verdict
        except (WireError, PodError) as exc:
            return json_error(400, str(exc))
        if not runtime.cluster.synced:
            return json_error(503, NOT_SYNCED)
        try:
            return json_response(
                encode_host_priorities(args.names, priorities(runtime, args, pod_millis, pinned))
            )
        except Exception:
            log.exception("prioritize failed for pod %s", _pod_name(args))
            return json_error(500, "machine-catalog extender internal error (see its log)")


def _pod_name(args: ExtenderArgs) -> str:
    meta = args.pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name') or meta.get('generateName', '')}"
