"""Reading catalog files, and keeping the running catalog current when the file changes.

The file is watched by polling its *resolved* path and stat, because a Kubernetes
ConfigMap volume never rewrites the file: the kubelet writes a new timestamped directory
and swaps the ``..data`` symlink, so inotify on the file sees nothing while ``realpath``
changes. A new version that fails validation never replaces the running one; the last
good catalog is also written to a state directory so that a worker process that
(re)starts while the file is invalid still boots on it instead of crashing the server.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml

from machine_catalog.catalog import Catalog
from machine_catalog.validation import CatalogError, CatalogInvalid

log = logging.getLogger(__name__)

DEFAULT_CATALOG = "default-catalog.yaml"
DEMO_SNAPSHOT = "demo-snapshot.json"


def packaged_file(name: str) -> Path:
    """A data file shipped inside the package (the default catalog, the demo snapshot)."""
    return Path(str(resources.files("machine_catalog") / "data" / name))


def default_catalog_path() -> Path:
    return packaged_file(DEFAULT_CATALOG)


def parse_document(text: bytes | str, source: str = "") -> Any:
    """YAML or JSON (JSON is YAML) into plain data. Only ``safe_load``: never build objects."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise CatalogInvalid([CatalogError("", f"not UTF-8 text: {exc}")], source) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogInvalid(
            [CatalogError("", f"not valid YAML/JSON{where}: {problem}")], source
        ) from exc


def parse_catalog(text: bytes | str, source: str = "") -> Catalog:
    return Catalog.from_data(parse_document(text, source), source)


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate a catalog file (the packaged default when ``path`` is None)."""
    path = Path(path) if path is not None else default_catalog_path()
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise CatalogInvalid(
            [CatalogError("", f"cannot read: {exc.strerror or exc}")], str(path)
        ) from exc
    return parse_catalog(text, str(path))


@dataclass(frozen=True, slots=True)
class ReloadFailure:
    """The last attempt to load a new catalog version that was refused."""

    source: str
    errors: tuple[CatalogError, ...]
    at: float  # time.time()

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "at": self.at, "errors": [str(e) for e in self.errors]}


def _signature(path: Path) -> tuple[str, int, int, int] | None:
    """What changes when the file's content may have changed, including a symlink swap."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_size, st.st_mtime_ns)


def file_signature(path: str | os.PathLike[str]) -> tuple[str, int, int, int] | None:
    """(resolved path, inode, size, mtime): what :class:`PolledFile` compares between polls."""
    return _signature(Path(path))


class PolledFile:
    """A file re-read when its resolved path or stat changes, by a polling daemon thread.

    The mechanism of :class:`CatalogSource`, shared with every other hot-reloaded file (the
    node metrics file of ``serve --node-metrics``): a subclass sets :attr:`path`,
    :attr:`_signature` (``None`` at first), :attr:`_stop` and :attr:`_thread` and implements
    :meth:`reload`.
    """

    path: Path
    _signature: tuple[str, int, int, int] | None
    _stop: threading.Event
    _thread: threading.Thread | None
    _watcher_name = "file-watcher"

    def reload(self) -> bool:
        raise NotImplementedError

    def poll(self) -> bool:
        """Reload if the file (or the symlink it resolves through) changed since last look."""
        if _signature(self.path) == self._signature:
            return False
        return self.reload()

    def start(self, interval: float = 1.0) -> None:
        """Poll in a daemon thread; cheap (one realpath + stat) so 1 s keeps workers in step."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:
                    log.exception("%s error", self._watcher_name)

        self._thread = threading.Thread(target=run, name=self._watcher_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class CatalogSource(PolledFile):
    """The running catalog of one process, and the watcher that keeps it current.

    Readers call :attr:`current` once per request and use that object throughout.
    Listeners (the cluster cache re-matching nodes, metrics) run on the watcher thread
    after each swap.
    """

    _watcher_name = "catalog-watcher"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        initial: Catalog | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_catalog_path()
        self.state_dir = Path(state_dir) if state_dir else None
        self.last_failure: ReloadFailure | None = None
        self.reload_failures = 0
        self.reloads = 0
        self._listeners: list[Callable[[Catalog], None]] = []
        self._failure_listeners: list[Callable[[ReloadFailure], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature = _signature(self.path)
        self._current = initial if initial is not None else self._boot()

    # -- reading -----------------------------------------------------------------------

    @property
    def current(self) -> Catalog:
        return self._current

    def on_reload(self, listener: Callable[[Catalog], None]) -> None:
        self._listeners.append(listener)

    def on_failure(self, listener: Callable[[ReloadFailure], None]) -> None:
        self._failure_listeners.append(listener)

    # -- loading -----------------------------------------------------------------------

    def _last_good_path(self) -> Path | None:
        return self.state_dir / "last-good-catalog.json" if self.state_dir else None

    def _boot(self) -> Catalog:
        """The configured file if valid, else the persisted last good catalog, else raise."""
        try:
            catalog = load_catalog(self.path)
        except CatalogInvalid as exc:
            fallback = self._last_good_path()
            if fallback is None or not fallback.exists():
                raise
            self._record_failure(exc)
            log.error(
                "catalog %s is invalid; starting on the last good catalog %s", self.path, fallback
            )
            catalog = load_catalog(fallback)
            return catalog
        self._persist(catalog)
        return catalog

    def _persist(self, catalog: Catalog) -> None:
        target = self._last_good_path()
        if target is None:
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            data = orjson.dumps(catalog.document.model_dump(mode="json", by_alias=True))
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".last-good-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)  # atomic: another worker never reads half a file
        except OSError as exc:
            log.warning("cannot persist the last good catalog to %s: %s", target, exc)

    def _record_failure(self, exc: CatalogInvalid) -> None:
        import time

        failure = ReloadFailure(
            source=exc.source or str(self.path), errors=exc.errors, at=time.time()
        )
        self.last_failure = failure
        self.reload_failures += 1
        for err in exc.errors:
            log.error("catalog %s rejected: %s", failure.source, err)
        for listener in self._failure_listeners:
            listener(failure)

    def reload(self) -> bool:
        """Load the file now; swap when valid and different. Returns True on a swap."""
        with self._lock:
            self._signature = _signature(self.path)
        return self.swap(lambda: load_catalog(self.path))

    def swap(self, load: Callable[[], Catalog]) -> bool:
        """Keep-last-good: ``load()`` the next catalog; on :class:`CatalogInvalid` record the
        failure and keep serving; swap (persist, notify listeners) when valid and different.
        Returns True on a swap. Other sources (a watched MachineCatalog) feed it too."""
        with self._lock:
            try:
                catalog = load()
            except CatalogInvalid as exc:
                self._record_failure(exc)
                return False
            self.last_failure = None
            if catalog.hash == self._current.hash:
                return False
            previous, self._current = self._current, catalog
            self.reloads += 1
            self._persist(catalog)
        log.info("catalog reloaded: %s -> %s", previous.version, catalog.version)
        for listener in self._listeners:
            try:
                listener(catalog)
            except Exception:  # a listener bug must not stop the watcher
                log.exception("catalog reload listener failed")
        return True
