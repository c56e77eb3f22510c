"""Node scores for ``/scheduler/prioritize``: 0..10 (``MaxExtenderPriority``).

``balanced`` (the default) = ``floor(10 * free SCU after placing the pod / node SCU
capacity)``: spread load so every family keeps headroom. ``binpack`` = ``10 - balanced``:
fill nodes so whole nodes can be drained or scaled down.

A node's SCU figures are its physical millicores times its family's ``scuPerCore``, and
the pod's SCU on that node is its physical request times the same factor; the factor
appears in numerator and denominator alike, so the score is computed exactly in integer
physical millicores. Vectorised: one numpy expression over all nodes of the request.
"""

from __future__ import annotations

import numpy as np

MIN_SCORE = 0
MAX_SCORE = 10
STRATEGIES = ("balanced", "binpack")


def balanced_scores(allocatable: np.ndarray, requested: np.ndarray, pod_millis: int) -> np.ndarray:
    """``floor(10 * free_after / capacity)`` clipped to 0..10; nodes with no capacity get 0.

    Computed in place in one array: each numpy call costs a few µs when the caches are
    cold, as they are between two requests (17 against 29 µs for 500 nodes).
    """
    allocatable = np.asarray(allocatable, dtype=np.int64)
    scores = allocatable - np.asarray(requested, dtype=np.int64)
    scores -= pod_millis
    scores *= MAX_SCORE
    scores //= np.maximum(allocatable, 1)
    np.maximum(scores, MIN_SCORE, out=scores)
    np.minimum(scores, MAX_SCORE, out=scores)
    scores[allocatable <= 0] = MIN_SCORE
    return scores


def node_scores(
    strategy: str, allocatable: np.ndarray, requested: np.ndarray, pod_millis: int
) -> np.ndarray:
    """Scores for one pod on each node, by the catalog's ``spec.scoring.strategy``."""
    balanced = balanced_scores(allocatable, requested, pod_millis)
    if strategy == "balanced":
        return balanced
    if strategy == "binpack":
        return MAX_SCORE - balanced
    raise ValueError(f"unknown scoring strategy {strategy!r}")
