"""``machine-catalog serve``: the app under gunicorn, one process that owns the state.

One replica is one process: a gunicorn master that supervises exactly one ``gthread``
worker, and that worker owns the catalog, the cluster cache and its watch, the usage feed,
the reservation ledger and (while it holds the Lease) the loops that write to the cluster.
Requests are served by its threads from that one state. Several workers per replica were
several complete copies of the controller: two admissions a millisecond apart landed on
different copies and the second ignored the first's reservation, and every copy paid for
every watch event (docs/design.md has the measurement behind this choice).

What happens where:

- ``serve`` validates everything once before any worker exists (the catalog, the
  snapshot or kubeconfig, TLS files, ports) so a bad flag or file exits 1 with every
  error instead of a crash loop, and persists the last good catalog to the state
  directory; then it ``exec``s the **master** (:mod:`extender.server.master`), a fresh
  process that imports gunicorn only and so holds none of the validation's memory;
- the **worker** builds the Runtime in gunicorn's ``load()`` (:func:`worker_app`), right
  after the fork (``preload_app`` is off): catalog watcher, cluster cache, snapshot or
  API watcher, usage feed, leader election. Threads and sockets never cross a fork. A
  worker that (re)starts while the catalog file is invalid boots on the last good catalog
  from the state directory.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from extender.loops.leadership import LeaseSettings, default_identity
from extender.server import master, memory
from extender.state.cluster import ClusterState
from extender.state.runtime import DEFAULT_MAX_BODY, DEFAULT_MAX_CACHE_AGE, Runtime, Settings
from machine_catalog.loading import DEMO_SNAPSHOT, CatalogSource, packaged_file
from machine_catalog.resources import DEFAULT_RESIZE_RULE, RESIZE_RULES
from machine_catalog.validation import CatalogInvalid

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
FAMILY_CHOICES = ("most-free", "spread")
DEFAULT_LEASE_NAMESPACE = "machine-catalog-system"
#: Where a pod's service account token mounts tell it its namespace.
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Allocations between young collections (CPython's default is 700); see :func:`_tune_gc`.
GC_GEN0_THRESHOLD = 20_000


class ServeError(Exception):
    """A configuration the server cannot start with; the message says what to fix."""


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``machine-catalog serve`` takes; the CLI maps its flags 1:1 onto this."""

    catalog: str | None = None  # None: the packaged default catalog
    #: A MachineCatalog to watch instead of a file (needs a cluster source).
    catalog_resource: str | None = None
    snapshot: str | None = None
    #: A NodeMetricsList file for ``loadAware`` (hot-reloaded); without it, an API source
    #: polls metrics.k8s.io.
    node_metrics: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    bind: str = "127.0.0.1:8080"
    threads: int = 4
    certfile: str | None = None
    keyfile: str | None = None
    scheduler_name: str | None = None
    state_dir: str | None = None  # None: a fresh temporary directory per serve run
    max_body: int | None = DEFAULT_MAX_BODY  # None: the default
    max_cache_age: float = DEFAULT_MAX_CACHE_AGE
    #: Longest pause in sending a request body. kube-scheduler and the API server send
    #: whole bodies at once; without a bound, a client that stalls mid-body holds one of the
    #: worker's few threads forever (gthread has no such timeout of its own).
    body_timeout: float = 10.0
    reload_interval: float = 1.0
    log_level: str = "info"
    access_log: bool = False
    #: Seconds a pod pinned to a full family may stay Pending before it is deleted for its
    #: controller to re-create (:mod:`extender.loops.recreation`); None: never (the default).
    recreate_stranded_after: float | None = None
    recreate_max_per_cycle: int = 5
    #: The Lease that decides which replica runs the loops that write to the cluster.
    lease_name: str = "machine-catalog"
    #: None: $POD_NAMESPACE, the pod's own namespace, else the manifests' namespace.
    lease_namespace: str | None = None
    family_choice: str = "most-free"
    #: How a pod mid-resize counts: as the kube-scheduler the cluster runs counts it
    #: (:data:`machine_catalog.resources.RESIZE_RULES`; per-container up to 1.34, aggregate
    #: in 1.37).
    resize_accounting: str = DEFAULT_RESIZE_RULE
    #: ``HOST:PORT`` on loopback: the extender's routes also in plain HTTP there, for a
    #: kube-scheduler in the same pod (:mod:`extender.server.loopback`).
    extender_bind: str | None = None

    def __post_init__(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise ServeError("certfile and keyfile go together (TLS needs both)")
        if self.threads < 1:
            raise ServeError("threads must be at least 1")
        if self.catalog_resource is not None and self.catalog is not None:
            raise ServeError("catalog and catalog_resource are alternatives: give one")
        if self.catalog_resource is not None and self.snapshot is not None:
            raise ServeError("catalog_resource needs a cluster source, not a snapshot")
        if self.max_body is not None and self.max_body < 1:
            raise ServeError("max_body must be a positive number of bytes")
        if not min(self.max_cache_age, self.reload_interval, self.body_timeout) > 0:
            raise ServeError("max_cache_age, reload_interval and body_timeout must be positive")
        if self.recreate_stranded_after is not None and not self.recreate_stranded_after > 0:
            raise ServeError("recreate_stranded_after must be a positive number of seconds")
        if self.recreate_max_per_cycle < 1:
            raise ServeError("recreate_max_per_cycle must be at least 1")
        if self.family_choice not in FAMILY_CHOICES:
            raise ServeError(f"family_choice must be one of {', '.join(FAMILY_CHOICES)}")
        if self.resize_accounting not in RESIZE_RULES:
            raise ServeError(f"resize_accounting must be one of {', '.join(RESIZE_RULES)}")
        if self.extender_bind is not None:
            from extender.server.loopback import LoopbackError, loopback_address

            try:
                loopback_address(self.extender_bind)
            except LoopbackError as exc:
                raise ServeError(str(exc)) from None
        if self.log_level.lower() not in LOG_LEVELS:
            raise ServeError(f"log_level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def settings(self) -> Settings:
        return Settings(
            scheduler_name=self.scheduler_name,
            max_body=self.max_body if self.max_body is not None else DEFAULT_MAX_BODY,
            max_cache_age=self.max_cache_age,
            family_choice=self.family_choice,
        )

    def lease(self) -> LeaseSettings:
        namespace = self.lease_namespace or os.environ.get("POD_NAMESPACE")
        if not namespace and os.path.isfile(NAMESPACE_FILE):
            with open(NAMESPACE_FILE) as f:
                namespace = f.read().strip()
        return LeaseSettings(
            name=self.lease_name,
            namespace=namespace or DEFAULT_LEASE_NAMESPACE,
            identity=default_identity(),
        )


@dataclass(frozen=True)
class CacheSource:
    """Where the cluster cache comes from: ``snapshot`` (a file) or ``api`` (list+watch)."""

    kind: str  # "snapshot" | "api"
    path: str | None  # the snapshot file or the kubeconfig; None for in-cluster config
    in_cluster: bool = False

    def describe(self) -> str:
        if self.kind == "snapshot":
            return f"snapshot {self.path}"
        return "api (in-cluster config)" if self.in_cluster else f"api (kubeconfig {self.path})"


def cache_source(config: ServeConfig) -> CacheSource:
    """``--snapshot`` > ``--kubeconfig`` > ``--in-cluster`` > in-cluster when running in a
    pod (``KUBERNETES_SERVICE_HOST``) > the packaged demo snapshot (runs with no cluster)."""
    if config.snapshot:
        return CacheSource("snapshot", str(config.snapshot))
    if config.kubeconfig:
        return CacheSource("api", str(config.kubeconfig))
    if config.in_cluster or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return CacheSource("api", None, in_cluster=True)
    return CacheSource("snapshot", str(packaged_file(DEMO_SNAPSHOT)))


# -- one worker's runtime -------------------------------------------------------------------

#: Stop functions of the runtimes this process built (``shutdown_runtime`` runs them).
_STOPPERS: dict[int, list[Callable[[], None]]] = {}
#: The API watcher feeding a ClusterState (by id), for the worker's GC tuning.
_WATCHERS: dict[int, Any] = {}


def build_runtime(config: ServeConfig, *, start: bool = True) -> Runtime:
    """The catalog, cluster cache and settings of one worker process.

    With ``start`` the catalog file watcher and (for an API source) the cluster watcher run
    in daemon threads; :func:`shutdown_runtime` stops them. Raises :class:`CatalogInvalid`
    for a catalog with no last good fallback, and the snapshot loader's error for a bad
    snapshot file.
    """
    source = cache_source(config)
    client = None
    if source.kind == "api":
        from extender.feeds.watching import load_api_client

        client = load_api_client(source.path, in_cluster=source.in_cluster)
    if config.catalog_resource is not None:
        from extender.feeds.catalog_resource import ResourceCatalogSource

        catalogs: CatalogSource = ResourceCatalogSource(
            client, config.catalog_resource, state_dir=config.state_dir
        )
    else:
        catalogs = CatalogSource(config.catalog, state_dir=config.state_dir)
    cluster = ClusterState(catalogs.current, config.resize_accounting)
    catalogs.on_reload(cluster.set_catalog)
    stoppers: list[Callable[[], None]] = []
    runtime = Runtime(catalogs=catalogs, cluster=cluster, settings=config.settings)
    if source.kind == "snapshot":
        from extender.feeds.snapshot import feed_snapshot

        feed_snapshot(cluster, source.path)
        cluster.source = source.describe()
        if config.recreate_stranded_after is not None:
            log.warning("--recreate-stranded-after ignored: a snapshot has no pods to delete")
    else:
        from extender.feeds.watching import ClusterWatcher

        runtime.leadership, runtime.identity = _elector(config, client, start, stoppers)
        watcher = ClusterWatcher(cluster, client)
        cluster.source = source.describe()
        _WATCHERS[id(cluster)] = watcher
        if start:
            watcher.start()
            stoppers.append(watcher.stop)
        if start:
            stoppers.append(_start_labeller(cluster, client, runtime.leadership))
        if start and config.catalog_resource is not None:
            stoppers.append(_start_status_writer(catalogs, cluster, runtime.leadership))
        if start and config.recreate_stranded_after is not None:
            stoppers.append(_start_recreator(config, cluster, client, runtime.leadership))
        if not config.node_metrics:
            from extender.feeds.nodemetrics import NodeMetricsPoller

            poller = NodeMetricsPoller(cluster, client)
            if start:
                poller.start()
                stoppers.append(poller.stop)
    if config.node_metrics:
        from extender.feeds.nodemetrics import NodeMetricsFile

        usage_file = NodeMetricsFile(config.node_metrics, cluster)
        if start:
            usage_file.start(config.reload_interval)
            stoppers.append(usage_file.stop)
    if start:
        catalogs.start(config.reload_interval)
        stoppers.append(catalogs.stop)
    _STOPPERS[id(runtime)] = stoppers
    return runtime


def _elector(
    config: ServeConfig, client: Any, start: bool, stoppers: list[Callable[[], None]]
) -> tuple[Any, str]:
    """This replica's part in the Lease election; stopped (and the Lease released) first."""
    from extender.loops.leadership import Elector, KubernetesLeaseStore

    settings = config.lease()
    elector = Elector(KubernetesLeaseStore(client, settings), settings)
    if start:
        elector.start()
        # Runs first at shutdown: the Lease is released while the others still serve.
        stoppers.insert(0, elector.stop)
    return elector, settings.identity


def _start_labeller(cluster: ClusterState, client: Any, leadership: Any) -> Callable[[], None]:
    """The family labels on nodes, kept while we lead; its stop."""
    from extender.loops.labelling import Labeller

    labeller = Labeller(cluster, client, leader=leadership.is_leader)
    labeller.start()
    return labeller.stop


def _start_status_writer(
    catalogs: Any, cluster: ClusterState, leadership: Any
) -> Callable[[], None]:
    """The MachineCatalog's status, written while we lead; its stop."""
    from extender.loops.catalog_status import StatusWriter

    writer = StatusWriter(catalogs, cluster, leader=leadership.is_leader)
    writer.start()
    return writer.stop


def _start_recreator(
    config: ServeConfig, cluster: ClusterState, client: Any, leadership: Any
) -> Callable[[], None]:
    """The stranded-pod loop (``--recreate-stranded-after``), acting while we lead; its stop."""
    from extender.loops.recreation import Recreator
    from extender.loops.stranding import Settings as RecreateSettings

    recreator = Recreator(
        cluster,
        client,
        RecreateSettings(
            after=config.recreate_stranded_after,
            max_per_cycle=config.recreate_max_per_cycle,
        ),
        leader=leadership.is_leader,
    )
    recreator.start()
    return recreator.stop


def shutdown_runtime(runtime: Runtime) -> None:
    """Stop the threads :func:`build_runtime` started (idempotent)."""
    _WATCHERS.pop(id(runtime.cluster), None)
    for stop in _STOPPERS.pop(id(runtime), []):
        try:
            stop()
        except Exception:
            log.exception("error while stopping %r", stop)


# -- the master's checks ----------------------------------------------------------------------


def _preflight_catalog(config: ServeConfig) -> CatalogSource:
    """The catalog source the worker will build, not started (the resource read once)."""
    if config.catalog_resource is None:
        return CatalogSource(config.catalog, state_dir=config.state_dir)
    from extender.feeds.catalog_resource import ResourceCatalogSource
    from extender.feeds.watching import load_api_client

    source = cache_source(config)
    try:
        client = load_api_client(source.path, in_cluster=source.in_cluster)
        return ResourceCatalogSource(client, config.catalog_resource, state_dir=config.state_dir)
    except CatalogInvalid:
        raise
    except Exception as exc:  # the API server unreachable, RBAC, the CRD not installed
        raise ServeError(f"cannot read machinecatalog/{config.catalog_resource}: {exc}") from None


def preflight(config: ServeConfig) -> CatalogSource:
    """Validate the catalog and the cache source once, before any worker exists.

    Returns the CatalogSource used for the check (not started); it has persisted the last
    good catalog to ``config.state_dir`` so workers can boot on it. Raises
    :class:`ServeError` with a message per problem.
    """
    try:
        catalogs = _preflight_catalog(config)
    except CatalogInvalid as exc:
        lines = [f"catalog {exc.source or config.catalog or 'default'} is invalid:"]
        lines += [f"  {error}" for error in exc.errors]
        raise ServeError("\n".join(lines)) from None
    if catalogs.last_failure is not None:
        log.error(
            "catalog %s is invalid; serving the last good catalog %s from %s",
            catalogs.path,
            catalogs.current.version,
            config.state_dir,
        )
    source = cache_source(config)
    if source.kind == "snapshot":
        from extender.feeds.snapshot import SnapshotError, load_snapshot

        try:
            load_snapshot(source.path)
        except SnapshotError as exc:
            raise ServeError(str(exc)) from None
    else:
        from extender.feeds.watching import load_api_client

        try:
            load_api_client(source.path, in_cluster=source.in_cluster)
        except Exception as exc:  # the kubernetes client raises several unrelated types
            raise ServeError(f"cannot configure the Kubernetes client: {exc}") from None
    if config.node_metrics:
        from extender.feeds.nodemetrics import load_node_metrics
        from extender.state.usage import MetricsError

        try:
            load_node_metrics(config.node_metrics)
        except MetricsError as exc:
            raise ServeError(f"node metrics file {exc}") from None
    for path in (config.certfile, config.keyfile):
        if path and not os.access(path, os.R_OK):
            raise ServeError(f"cannot read TLS file {path}")
    check_bind(config.bind)
    from extender.server.worker import check_supported

    try:
        check_supported()
    except RuntimeError as exc:
        raise ServeError(str(exc)) from None
    if config.extender_bind is not None:
        check_bind(config.extender_bind)
    return catalogs


def check_bind(bind: str) -> None:
    """Fail at once when ``HOST:PORT`` cannot be bound (another process listens there).

    gunicorn binds only after ``serve`` has logged "serving on", and on EADDRINUSE it
    retries five times a second apart before giving up: a port in use looked like a
    server starting, then 5 s of retries. The probe binds as gunicorn will
    (``SO_REUSEADDR``, so a port in TIME_WAIT is not refused) and closes at once. Unix
    sockets are left to gunicorn, which replaces a stale socket file itself.
    """
    if bind.startswith(("unix:", "fd://")):
        return
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise ServeError(f"cannot listen on {bind}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ServeError(f"cannot listen on {bind}: {exc.strerror or exc}") from None


# -- the worker's application ----------------------------------------------------------------


def worker_app(config: ServeConfig) -> tuple[Any, Runtime]:
    """The WSGI app and the Runtime behind it, built in the worker right after the fork
    (:mod:`extender.server.master` calls it from gunicorn's ``load``)."""
    from extender.server.app import create_app

    memory.limit_malloc_arenas()  # before build_runtime starts the watcher threads
    runtime = build_runtime(config)
    if config.extender_bind is not None:
        from extender.server.loopback import ExtenderListener

        listener = ExtenderListener(runtime, config.extender_bind).start()
        _STOPPERS.setdefault(id(runtime), []).insert(0, listener.stop)
    app = create_app(runtime)
    _tune_gc(runtime)
    return app, runtime


def _tune_gc(runtime: Runtime) -> None:
    """Keep the cyclic GC off the cache: freeze it once it is loaded.

    A worker holds the whole cluster (~97,000 objects the collector tracks at 5,000 nodes
    and 50,000 pods, even built from compact copies: a full collection of them takes
    12-19 ms), and a request with full Node objects allocates a hundred thousand more that
    live until it is answered. Those survivors trigger full collections, and each full
    collection walks the entire cache: measured in-process on a 5,000-node cache, a
    500-node full-Nodes filter took 66 ms, and 27 ms with the cache frozen.
    ``gc.freeze()`` moves everything alive into a permanent generation the collector
    skips; refcounting still frees it when replaced. A larger young-generation threshold
    cuts the collections a big JSON parse triggers.
    """
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    watcher = _WATCHERS.get(id(runtime.cluster))
    if watcher is None:
        gc.freeze()  # a snapshot is loaded already
        return

    def freeze_when_synced() -> None:
        if watcher.wait_synced(None):
            gc.freeze()

    threading.Thread(target=freeze_when_synced, name="gc-freeze", daemon=True).start()


def serve(config: ServeConfig) -> int:
    """Validate, then become the replica's gunicorn master (:mod:`extender.server.master`,
    by ``exec``: same pid, none of this process's imports). Returns only on a bad
    configuration (exit code 1), with every problem logged."""
    master.configure_logging(config.log_level)
    cleanup: list[str] = []
    if config.state_dir is None:
        state_dir = tempfile.mkdtemp(prefix="machine-catalog-state-")
        cleanup.append(state_dir)
        config = replace(config, state_dir=state_dir)
    try:
        catalogs = preflight(config)
    except ServeError as exc:
        for line in str(exc).splitlines():
            log.error("%s", line)
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
        return 1

    source = cache_source(config)
    tls = "on (TLS >= 1.2)" if config.certfile else "off"
    if config.extender_bind is not None:
        log.info("extender routes also on %s (plain HTTP, loopback)", config.extender_bind)
    log.info(
        "machine-catalog serving on %s: one process x %d threads, tls %s, catalog %s (%s),"
        " cache %s",
        config.bind,
        config.threads,
        tls,
        catalogs.current.version,
        catalogs.path,
        source.describe(),
    )
    argv = master.command(asdict(config), cleanup)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    raise AssertionError("unreachable: exec does not return")  # pragma: no cover
