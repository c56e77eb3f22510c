"""The ``/metrics`` scrape: the events every layer counted, and the state read at scrape time.

One process serves a replica, so the ordinary in-memory registry holds every counter
(:mod:`extender.telemetry` defines them). Two kinds of values:

- events (requests, rejections, admissions, reloads, recreations) are counters and
  histograms, incremented where they happen;
- state (cache age and size, per-family pools, whether the last reload worked, the
  leader) is read at scrape time from the runtime by a custom collector: no request pays
  for it, and nothing stale is kept between scrapes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from extender.admission.pools import family_pools
from extender.state.cluster import NodeView
from extender.telemetry import (
    CATALOG_INFO,
    CATALOG_RELOAD_FAILURES,
    CATALOG_RELOADS,
    HTTP_DURATION,
    HTTP_REQUESTS,
    PREFIX,
)
from machine_catalog.catalog import Catalog

if TYPE_CHECKING:
    from flask import Flask

    from extender.state.runtime import Runtime
    from machine_catalog.loading import ReloadFailure

# -- catalog events ------------------------------------------------------------------------


class _CatalogMetrics:
    """Keeps ``catalog_info`` and the reload counters in step with one CatalogSource."""

    def __init__(self, catalog: Catalog) -> None:
        self._lock = threading.Lock()
        self._shown: Catalog = catalog
        CATALOG_INFO.labels(name=catalog.name, hash=catalog.hash).set(1)

    def reloaded(self, catalog: Catalog) -> None:
        with self._lock:
            old, self._shown = self._shown, catalog
            # A gauge cannot be deleted from another process's view; 0 says "no longer".
            CATALOG_INFO.labels(name=old.name, hash=old.hash).set(0)
            CATALOG_INFO.labels(name=catalog.name, hash=catalog.hash).set(1)
        CATALOG_RELOADS.inc()

    def failed(self, failure: ReloadFailure) -> None:
        CATALOG_RELOAD_FAILURES.inc()


# -- state read at scrape time -------------------------------------------------------------


class RuntimeCollector(Collector):
    """Cache and capacity gauges computed when scraped, from this worker's runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        runtime = self.runtime
        cluster = runtime.cluster
        failure = runtime.catalogs.last_failure
        yield _gauge(
            "catalog_last_reload_success",
            "1 if the last attempt to load the catalog file succeeded, else 0.",
            0.0 if failure is not None else 1.0,
        )
        age = cluster.age()
        yield _gauge(
            "cache_age_seconds",
            "Seconds since the cluster cache last heard from its source (-1: never synced).",
            -1.0 if age is None else age,
        )
        yield _gauge("cache_synced", "1 once the cluster cache holds a full list.", cluster.synced)
        yield _gauge(
            "leader",
            "1 while this replica holds the Lease and runs the loops that write to the cluster.",
            runtime.leadership.is_leader(),
        )
        counts = cluster.counts()
        yield _gauge("cache_nodes", "Nodes in the cluster cache.", counts["nodes"])
        yield _gauge("cache_pods", "Pods the cluster cache accounts for.", counts["pods"])

        usage = GaugeMetricFamily(
            PREFIX + "usage_nodes",
            "Nodes by usage sample (loadAware): fresh, stale (older than maxSampleAgeSeconds)"
            " or missing; stale and missing nodes are scored on their requests.",
            labels=["state"],
        )
        for state, names in cluster.usage_status().items():
            usage.add_metric([state], len(names))
        yield usage
        yield from family_gauges(cluster.all_nodes(), cluster.pending_millis())
        pairing = runtime.pairing()
        since = GaugeMetricFamily(
            PREFIX + "extender_bindings_since_call",
            "Pinned pods seen bound since this replica's last call of the verb (or since the"
            " catalog's strategy changed). With loadAware, a count that grows on every replica"
            " means kube-scheduler does not call the verb.",
            labels=["verb"],
        )
        for verb, count in pairing["bindingsSinceCall"].items():
            since.add_metric([verb], count)
        yield since
        yield _gauge(
            "extender_calls_missing",
            "1 when the catalog's strategy needs an extender verb this replica has not been"
            " called for in 20 bindings (see /readyz scheduling).",
            pairing["state"] == "missing",
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=float(value))


#: Per-family gauges: (name suffix, help, FamilyPool field, whether it is SCU millis). The
#: counting rules are :mod:`extender.admission.pools`'s, the same as ``machine-catalog report``'s.
FAMILY_GAUGES = (
    ("family_nodes", "Nodes of the family, cordoned ones included.", "nodes", False),
    ("family_cordoned_nodes", "Cordoned nodes of the family.", "cordoned", False),
    (
        "family_capacity_scu",
        "Allocatable CPU of the family's uncordoned nodes, in SCU.",
        "capacity_scu",
        True,
    ),
    (
        "family_requested_scu",
        "CPU requested by bound pods on the family's uncordoned nodes, in SCU.",
        "requested_scu",
        True,
    ),
    (
        "family_free_scu",
        "Free CPU of the family's uncordoned nodes (an overcommitted node counts 0), in SCU.",
        "free_scu",
        True,
    ),
    (
        "family_largest_free_scu",
        "Most free CPU on one uncordoned node of the family, in SCU: the largest pod it takes.",
        "largest_free_scu",
        True,
    ),
    (
        "family_pending_scu",
        "CPU requested by pods pinned to the family and not yet bound, in SCU.",
        "pending_scu",
        True,
    ),
)


def family_gauges(view: NodeView, pending_physical: Mapping[str, int]) -> Iterator[Any]:
    """The per-family gauges, and each matched node's factor for usage joins.

    ``node_scu_per_core{node, family}`` (one series per matched node) turns any per-node
    CPU usage metric into SCU of a family: ``sum by (family) (usage * on (node)
    group_left (family) machine_catalog_node_scu_per_core)``.
    """
    pools = family_pools(view, pending_physical)
    for suffix, documentation, field, scu in FAMILY_GAUGES:
        gauge = GaugeMetricFamily(PREFIX + suffix, documentation, labels=["family"])
        for pool in pools:
            value = getattr(pool, field)
            gauge.add_metric([pool.name], value / 1000 if scu else value)
        yield gauge
    per_node = GaugeMetricFamily(
        PREFIX + "node_scu_per_core",
        "scuPerCore of the family each matched node belongs to (labels: node, family).",
        labels=["node", "family"],
    )
    families = view.catalog.families
    family = np.asarray(view.family)
    for position in np.flatnonzero(family >= 0).tolist():
        fam = families[int(family[position])]
        per_node.add_metric([view.names[position], fam.name], float(fam.scu_per_core))
    yield per_node


class _Chain(Collector):
    """Several collectors exposed as one registry (the process-wide one plus the runtime's)."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = tuple(collectors)

    def collect(self) -> Iterator[Any]:
        for collector in self.collectors:
            yield from collector.collect()


def scrape_registry(runtime: Runtime) -> CollectorRegistry:
    """What one scrape exposes: the process's events and the runtime's state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Chain((REGISTRY, RuntimeCollector(runtime))))
    return registry


# -- request instrumentation ---------------------------------------------------------------


def instrument(app: Flask) -> None:
    """Count and time every request in a WSGI wrapper: one dict lookup and two clock reads.

    The route label comes from the path (a fixed set: the app's static routes, else
    ``other``), never from the raw URL, so a scanner cannot explode the label cardinality.
    """
    routes = {rule.rule for rule in app.url_map.iter_rules() if "<" not in rule.rule}
    children: dict[tuple[str, str], tuple[Any, Any]] = {}
    lock = threading.Lock()
    inner: Callable[..., Iterable[bytes]] = app.wsgi_app

    def child(route: str, code: str) -> tuple[Any, Any]:
        key = (route, code)
        pair = children.get(key)
        if pair is None:
            with lock:
                pair = children.setdefault(
                    key, (HTTP_REQUESTS.labels(route, code), HTTP_DURATION.labels(route))
                )
        return pair

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        route = path if path in routes else "other"
        status = ["500"]

        def recording_start_response(status_line: str, headers: Any, *exc: Any) -> Any:
            status[0] = status_line[:3]
            return start_response(status_line, headers, *exc)

        try:
            return inner(environ, recording_start_response)
        finally:
            counter, histogram = child(route, status[0])
            counter.inc()
            histogram.observe(time.perf_counter() - start)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]


def register(app: Flask, runtime: Runtime) -> None:
    """``GET /metrics``, and the catalog reload/failure listeners of this runtime."""
    catalog_metrics = _CatalogMetrics(runtime.catalogs.current)
    runtime.catalogs.on_reload(catalog_metrics.reloaded)
    runtime.catalogs.on_failure(catalog_metrics.failed)
    if runtime.catalogs.reload_failures:  # refused at boot, before these listeners existed
        CATALOG_RELOAD_FAILURES.inc(runtime.catalogs.reload_failures)

    @app.get("/metrics")
    def metrics() -> Any:
        body = generate_latest(scrape_registry(runtime))
        return app.response_class(body, content_type=CONTENT_TYPE_LATEST)
