"""Node CPU usage for ``loadAware``: reading NodeMetrics, and usage in SCU.

Pure: a ``NodeMetricsList`` (``metrics.k8s.io/v1beta1``, as
``kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes`` prints it) in, one
:class:`UsageSample` per node out; a view's usage arrays and catalog in, each node's load in
SCU out. The polling and the file watching live in :mod:`extender.feeds.nodemetrics`.

Usage is converted to SCU with the node's family factor, the same exact integer arithmetic
as requests (:func:`machine_catalog.quantities.physical_to_scu_millis`): 4 cores busy on a
family of ``scuPerCore`` 1.5 are 6 SCU of work, 4 cores on the baseline are 4. The peers
that score on usage (Crane, Trimaran, Koordinator) count raw cores, so a pod's expected
load is the same number of cores on every node; here it is the same number of SCU.

A node's **load** is its measured usage plus the requests of the pods bound to it since the
sample was taken (they do not show in it yet: without them a burst of pods scored between
two samples would all land on the node that looked idlest). A node with no sample, or one
older than ``maxSampleAgeSeconds``, has its requests as its load: ``loadAware`` then ranks
it as ``balanced`` does (in SCU), and the hot-spot filter leaves it alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from machine_catalog.catalog import Catalog
from machine_catalog.durations import parse_duration
from machine_catalog.quantities import QuantityError, to_millis


@dataclass(frozen=True, slots=True)
class UsageSample:
    """One node's measured CPU, in physical millicores, and when it was measured."""

    millis: int
    at: float  # wall-clock seconds (time.time()) at the end of the measurement window
    window: float = 0.0  # seconds the usage is averaged over, ending at ``at``

    def covers(self, bound_at: float) -> bool:
        """True when a pod bound at ``bound_at`` ran through the whole window of the sample."""
        return bound_at <= self.at - self.window


@dataclass(frozen=True, slots=True)
class UsageView:
    """The usage facts of one request's nodes, copied out of the cache with the NodeView.

    In SCU millis of each node's family (``-1`` in ``usage_scu`` when the node has no
    sample); ``sample_at`` is ``-inf`` without a sample.
    """

    usage_scu: np.ndarray  # int64
    unseen_scu: np.ndarray  # int64: requests of pods bound since the sample
    sample_at: np.ndarray  # float64 wall-clock seconds


class MetricsError(ValueError):
    """A NodeMetricsList that cannot be used at all (not one bad item: those are skipped)."""


def parse_timestamp(text: str) -> float:
    """An RFC 3339 time (``2026-11-29T21:00:00Z``) as wall-clock seconds."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a timestamp")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value.timestamp()


def parse_node_metrics(
    document: Any, *, default_at: float | None = None
) -> tuple[dict[str, UsageSample], list[str]]:
    """(node name -> sample, one message per item skipped) of a ``NodeMetricsList``.

    Each item's ``timestamp`` and ``window`` say when it was measured, whether it came from
    the API or from a file (a file ages like the API's answer it is a copy of);
    ``default_at`` stands in for an item without a timestamp. One bad item is skipped with
    a message and never stops the others.
    """
    if isinstance(document, Mapping) and isinstance(document.get("items"), list):
        items = document["items"]
    elif isinstance(document, list):
        items = document
    else:
        raise MetricsError(
            "not a NodeMetricsList (expected an object with 'items', as "
            "'kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes' prints it)"
        )
    samples: dict[str, UsageSample] = {}
    skipped: list[str] = []
    for i, item in enumerate(items):
        try:
            name = item["metadata"]["name"]
            if not isinstance(name, str) or not name:
                raise ValueError("metadata.name is not a name")
            millis = to_millis(item["usage"]["cpu"])
            if item.get("timestamp") is None and default_at is not None:
                at = default_at
            else:
                at = parse_timestamp(item["timestamp"])
            window = parse_duration(item.get("window") or "0s")
        except (KeyError, TypeError, ValueError, QuantityError) as exc:
            skipped.append(f"items[{i}]: {type(exc).__name__}: {exc}")
            continue
        samples[name] = UsageSample(millis=millis, at=at, window=window)
    return samples, skipped


@lru_cache(maxsize=8)
def factor_table(catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """(numerators, denominators) of ``scuPerCore`` per family index, the baseline's last.

    A node of no family (unknown, ambiguous, absent) is counted at the baseline factor, as
    the filter's reasons count it. Catalogs are immutable, so the table is built once each.
    """
    factors: list[Fraction] = [f.factor for f in catalog.families] + [catalog.baseline.factor]
    num = np.array([f.numerator for f in factors], dtype=np.int64)
    den = np.array([f.denominator for f in factors], dtype=np.int64)
    return num, den


@lru_cache(maxsize=8)
def scoring_fractions(catalog: Catalog) -> tuple[Fraction, Fraction | None]:
    """(``requestWeight``, ``hotSpotUsage`` or None) as exact fractions, once per catalog."""
    scoring = catalog.scoring
    hot = scoring.hot_spot_usage
    return Fraction(scoring.request_weight), None if hot is None else Fraction(hot)


def node_factors(family: np.ndarray, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """(numerator, denominator) of each node's ``scuPerCore``, for :func:`to_scu`."""
    num, den = factor_table(catalog)
    index = np.where(family >= 0, family, len(num) - 1)
    return num[index], den[index]


def to_scu(
    physical: np.ndarray | int,
    family: np.ndarray,
    catalog: Catalog,
    factors: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``floor(physical * scuPerCore)`` per node, exactly (integers, as
    :func:`~machine_catalog.quantities.physical_to_scu_millis`). ``factors`` (from
    :func:`node_factors`) saves looking them up again for the same nodes."""
    num, den = node_factors(family, catalog) if factors is None else factors
    out = np.asarray(physical, dtype=np.int64) * num
    out //= den
    return out


def unseen_millis(bound_at: float, request_millis: int, sample: UsageSample | None) -> int:
    """Anti-herding: the part of a pod's CPU request a node's usage sample does not hold yet.

    A pod bound after the sample's window ended counts by its whole request; one bound
    inside the window ran for part of it, and the sample, an average over the window,
    already holds that part of its usage: only the share of the window it was *not* yet
    running counts, ``ceil(request * (bound_at - window_start) / window)``. Counting it
    whole would add what the sample already shows (a pod bound half-way through a 30 s
    window and using its request showed up as 1.5 requests). A sample with no window
    (a file without one) holds none of it.
    """
    if sample is None or bound_at >= sample.at or sample.window <= 0:
        return request_millis
    start = sample.at - sample.window
    if bound_at <= start:
        return 0
    return math.ceil(request_millis * (bound_at - start) / sample.window)


def node_load(
    usage: UsageView, requested_scu: np.ndarray, now: float, max_age: float
) -> tuple[np.ndarray, np.ndarray]:
    """(load in SCU millis, fresh mask) per node.

    ``load = usage + unseen`` for a node whose sample is at most ``max_age`` seconds old,
    ``load = requested`` otherwise (no sample, or a stale one).
    """
    fresh = (usage.usage_scu >= 0) & (usage.sample_at >= now - max_age)
    load = np.where(fresh, usage.usage_scu + usage.unseen_scu, requested_scu)
    return load, fresh


__all__ = [
    "MetricsError",
    "UsageSample",
    "UsageView",
    "factor_table",
    "node_factors",
    "node_load",
    "parse_duration",
    "parse_node_metrics",
    "parse_timestamp",
    "scoring_fractions",
    "to_scu",
    "unseen_millis",
]
