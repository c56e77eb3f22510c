"""Feeding node usage into the cluster cache: ``metrics.k8s.io`` polled live, or a file.

- **Live** (``serve --kubeconfig`` / ``--in-cluster``): :class:`NodeMetricsPoller` lists
  ``NodeMetrics`` (``GET /apis/metrics.k8s.io/v1beta1/nodes``, through the ``kubernetes``
  client's ``CustomObjectsApi``) every ``spec.scoring.sampleIntervalSeconds``, while the
  catalog's strategy is ``loadAware``. Polled, not watched: the metrics API serves no
  watch, and its answer is already an average over a window.
- **File** (``serve --node-metrics FILE``): :class:`NodeMetricsFile`, a
  ``NodeMetricsList`` as ``kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes`` prints
  it, re-read when it changes by the catalog's own polling mechanism
  (:class:`~machine_catalog.loading.PolledFile`).

A missing or failing metrics API never fails a scheduling request: the last samples stay
until they are older than ``maxSampleAgeSeconds``, then those nodes are scored on their
requests (:mod:`extender.state.usage`). Each change in the set of nodes without a fresh sample is
logged once (:class:`UsageHealth`), and ``machine_catalog_usage_nodes{state}`` shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from extender.feeds.kubefiles import KubeFileError, read_metrics_list
from extender.state.cluster import ClusterState
from extender.state.usage import MetricsError, parse_node_metrics
from machine_catalog.loading import PolledFile, file_signature

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "metrics.k8s.io", "v1beta1", "nodes"
REQUEST_TIMEOUT = (5.0, 20.0)  # connect, read (seconds)
#: How often the feeds re-check which nodes went stale (O(nodes), off the request path).
HEALTH_INTERVAL = 5.0
#: How often the poller re-reads the catalog's strategy and interval (seconds).
CATALOG_RECHECK = 1.0


class UsageHealth:
    """Logs each change of the nodes scored on requests for want of a fresh sample."""

    def __init__(self, cluster: ClusterState) -> None:
        self.cluster = cluster
        self._last: tuple[int, int] | None = None
        self._checked = 0.0

    def check(self, force: bool = False) -> dict[str, list[str]] | None:
        now = time.monotonic()
        if not force and now - self._checked < HEALTH_INTERVAL:
            return None
        self._checked = now
        status = self.cluster.usage_status()
        counts = (len(status["stale"]), len(status["missing"]))
        if counts != self._last:
            self._last = counts
            total = sum(len(v) for v in status.values())
            if counts == (0, 0):
                log.info("node usage: every node (%d) has a fresh sample", total)
            else:
                log.warning(
                    "node usage: %d of %d nodes have no fresh sample and are scored on their"
                    " requests (stale: %d%s; missing: %d%s)",
                    counts[0] + counts[1],
                    total,
                    counts[0],
                    _some(status["stale"]),
                    counts[1],
                    _some(status["missing"]),
                )
        return status


def _some(names: list[str], limit: int = 5) -> str:
    if not names:
        return ""
    shown = ", ".join(sorted(names)[:limit])
    return f" e.g. {shown}" + (" ..." if len(names) > limit else "")


def _poll_counter(outcome: str) -> None:
    from extender import telemetry  # in the worker, after serve() set the multiprocess dir

    telemetry.NODE_METRICS_POLLS.labels(outcome=outcome).inc()


class NodeMetricsFile(PolledFile):
    """Node usage from a NodeMetricsList file, re-read whenever the file changes.

    A file that cannot be read or parsed keeps the samples of the last good one (they go
    stale in time), logged; it never stops the server.
    """

    _watcher_name = "node-metrics-watcher"

    def __init__(self, path: str, cluster: ClusterState) -> None:
        self.path = Path(path)
        self.cluster = cluster
        self.health = UsageHealth(cluster)
        self._signature = None
        self._stop = threading.Event()
        self._thread = None
        self.last_error: str | None = None
        self.reload()

    def reload(self) -> bool:
        self._signature = file_signature(self.path)
        try:
            samples, skipped = load_node_metrics(self.path)
        except MetricsError as exc:
            self.last_error = str(exc)
            log.error("node metrics file refused, keeping the last samples: %s", exc)
            _poll_counter("error")
            return False
        self.last_error = None
        for message in skipped[:5]:
            log.warning("node metrics file %s: skipped %s", self.path, message)
        self.cluster.set_usage(samples, replace=True)
        _poll_counter("ok")
        log.info("node usage loaded from %s: %d nodes", self.path, len(samples))
        self.health.check(force=True)
        return True

    def poll(self) -> bool:
        changed = super().poll()
        self.health.check()
        return changed


def load_node_metrics(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(samples, skipped items) of a NodeMetricsList file (JSON or YAML), read by
    :func:`extender.feeds.kubefiles.read_metrics_list`.

    Raises :class:`~extender.state.usage.MetricsError` for a file that cannot be used at all.
    """
    try:
        items = read_metrics_list(path, "NodeMetrics")
    except KubeFileError as exc:
        raise MetricsError(str(exc)) from exc
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        mtime = time.time()
    return parse_node_metrics(items, default_at=mtime)


class NodeMetricsPoller:
    """Polls ``metrics.k8s.io`` NodeMetrics into the cache while the strategy is loadAware."""

    def __init__(self, cluster: ClusterState, api_client: Any) -> None:
        from kubernetes import client

        self.cluster = cluster
        self.api = client.CustomObjectsApi(api_client)
        self.health = UsageHealth(cluster)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_outcome: str | None = None
        self.polls = 0

    def poll_once(self) -> str:
        """One list of NodeMetrics into the cache; returns the outcome (ok/unavailable/error)."""
        from kubernetes.client.exceptions import ApiException

        try:
            document = self.api.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=REQUEST_TIMEOUT
            )
            samples, skipped = parse_node_metrics(document, default_at=time.time())
        except ApiException as exc:
            outcome, detail = "unavailable", f"HTTP {exc.status} {exc.reason}"
        except Exception as exc:  # connection errors, timeouts, a malformed answer
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"
        else:
            outcome, detail = "ok", f"{len(samples)} nodes"
            for message in skipped[:5]:
                log.warning("NodeMetrics: skipped %s", message)
            self.cluster.set_usage(samples)
        self.polls += 1
        if outcome != self.last_outcome:
            level = logging.INFO if outcome == "ok" else logging.WARNING
            log.log(
                level,
                "metrics.k8s.io NodeMetrics: %s (%s)%s",
                outcome,
                detail,
                "" if outcome == "ok" else "; nodes are scored on requests once samples age",
            )
            self.last_outcome = outcome
        _poll_counter(outcome)
        self.health.check(force=True)
        return outcome

    def start(self) -> None:
        """Poll every ``sampleIntervalSeconds`` while the strategy is loadAware.

        The catalog is re-read every :data:`CATALOG_RECHECK` seconds, not only after a
        poll: a hot reload to ``loadAware`` (or to a shorter interval) takes effect at
        once instead of after the previous catalog's interval (30 s by default), during
        which every node would be scored on its requests and none judged a hot spot.
        """
        if self._thread is not None:
            return

        def run() -> None:
            last: float | None = None  # time.monotonic() of the last poll
            while not self._stop.is_set():
                scoring = self.cluster.catalog.scoring
                wait = CATALOG_RECHECK
                if scoring.strategy == "loadAware":
                    interval = scoring.sample_interval_seconds
                    if last is None or time.monotonic() - last >= interval:
                        last = time.monotonic()
                        try:
                            self.poll_once()
                        except Exception:
                            log.exception("node metrics poller error")
                    wait = min(wait, max(0.0, last + interval - time.monotonic()))
                self._stop.wait(wait)

        self._thread = threading.Thread(target=run, name="node-metrics-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = [
    "NodeMetricsFile",
    "NodeMetricsPoller",
    "UsageHealth",
    "load_node_metrics",
]
