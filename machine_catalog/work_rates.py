"""A per-pod work rate (requests, messages, rows per second) from a Prometheus instant query.

``calibrate`` divides each replica's CPU use by the work it served, so that it measures
CPU-seconds per unit of work and no longer assumes that every replica of a workload gets
the same work (least-request and latency-aware balancers send more to faster replicas). The
input is the body of Prometheus's HTTP API ``GET /api/v1/query`` (an instant query)::

    {"status": "success",
     "data": {"resultType": "vector",
              "result": [{"metric": {"namespace": "shop", "pod": "web-7d9f-abcde"},
                          "value": [1764417600.0, "12.5"]}]}}

The query must give one series per pod, labelled ``namespace`` and ``pod``, for example
``sum by (namespace, pod) (rate(http_requests_total[5m]))``. Anything else is refused with a
message that says what was wrong, because a work signal that is silently half-read gives
factors that look measured and are not: an error status, a result that is not a vector
(a range query's matrix, a scalar), a series without the two labels, two series for one
pod, a value that is not a finite number >= 0 (Prometheus writes ``"NaN"`` for 0/0, as in a
ratio of rates with no traffic), or no series at all.

The module is pure: it takes the decoded JSON document. Fetching it is the CLI's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The labels a series must carry to name its pod.
POD_LABELS = ("namespace", "pod")

#: Added to every error about the series' shape: the query that gives the right one.
QUERY_HINT = "aggregate by pod, e.g. sum by (namespace, pod) (rate(http_requests_total[5m]))"


class WorkSignalError(ValueError):
    """The work signal cannot be used; the message names the source and what was wrong."""


def parse_vector(document: Any, source: str) -> dict[tuple[str, str], float]:
    """(namespace, pod) -> work rate, from a decoded instant-query response (see module)."""
    if not isinstance(document, Mapping):
        raise WorkSignalError(f"{source}: not a Prometheus API response (a JSON object)")
    status = document.get("status")
    if status == "error":
        kind = document.get("errorType") or "error"
        raise WorkSignalError(f"{source}: Prometheus answered {kind}: {document.get('error')}")
    if status != "success":
        raise WorkSignalError(f"{source}: status is {status!r}, not 'success'")
    data = document.get("data")
    kind = data.get("resultType") if isinstance(data, Mapping) else None
    if kind != "vector":
        raise WorkSignalError(
            f"{source}: resultType is {kind!r}, not 'vector': give an instant query "
            "(/api/v1/query) whose result is one value per pod"
        )
    result = data.get("result")
    if not isinstance(result, list):
        raise WorkSignalError(f"{source}: data.result is not a list")
    if not result:
        raise WorkSignalError(f"{source}: the query matched no series")
    rates: dict[tuple[str, str], float] = {}
    for i, series in enumerate(result):
        where = f"{source}: result[{i}]"
        metric = series.get("metric") if isinstance(series, Mapping) else None
        if not isinstance(metric, Mapping):
            raise WorkSignalError(f"{where}: no 'metric' labels")
        missing = [label for label in POD_LABELS if not isinstance(metric.get(label), str)]
        if missing:
            raise WorkSignalError(
                f"{where}: labels {dict(metric)} lack {', '.join(missing)}; {QUERY_HINT}"
            )
        key = (metric["namespace"], metric["pod"])
        value = series.get("value")
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)):
            raise WorkSignalError(f"{where}: 'value' is not [timestamp, \"number\"]")
        try:
            rate = float(value[1])
        except ValueError:
            raise WorkSignalError(f"{where}: value {value[1]!r} is not a number") from None
        if not math.isfinite(rate) or rate < 0:
            raise WorkSignalError(
                f"{where} ({key[0]}/{key[1]}): value {value[1]} is not a finite rate >= 0"
            )
        if key in rates:
            raise WorkSignalError(f"{where}: a second series for {key[0]}/{key[1]}; {QUERY_HINT}")
        rates[key] = rate
    return rates
