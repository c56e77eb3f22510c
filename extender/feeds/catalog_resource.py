"""The catalog from a MachineCatalog resource (``serve --catalog-resource NAME``), watched.

The same keep-last-good rules as the catalog file (:class:`CatalogSource`, whose swap this
reuses): the API server already refuses most bad catalogs at ``kubectl apply`` (the CRD's
schema and CEL rules), and what only the server can check (every rule of
:mod:`machine_catalog.validation`) is refused here, recorded, and shown in ``/readyz``,
the reload-failure metric and the object's status, while the last good catalog keeps
serving. A deleted object is a failure too: the server never drops to no catalog.

Every replica watches the object (one LIST with a field selector on the name, then a
WATCH from its resourceVersion; a ``410 Gone`` relists); the leader writes its status
(:mod:`extender.loops.catalog_status`), from :attr:`ResourceCatalogSource.object`.

At start the object is read once. If it is missing or invalid the server starts on the
last good catalog persisted in the state directory, like a restarted pod with a bad
ConfigMap; with neither, ``serve`` exits with every error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from machine_catalog.catalog import Catalog
from machine_catalog.loading import CatalogSource, load_catalog
from machine_catalog.resource import catalog_from_resource
from machine_catalog.validation import CatalogError, CatalogInvalid

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "machine-catalog.io", "v1alpha1", "machinecatalogs"
WATCH_TIMEOUT = 300  # seconds the API server keeps one watch open before we resume it
REQUEST_TIMEOUT = (5.0, 30.0)
MAX_BACKOFF = 30.0


def read_object(api_client: Any, name: str) -> dict[str, Any] | None:
    """The MachineCatalog ``name`` as the API returns it (raw JSON), or None if absent."""
    import orjson
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api_client)
    try:
        response = custom.get_cluster_custom_object(
            GROUP, VERSION, PLURAL, name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    try:
        return orjson.loads(response.data)
    finally:
        response.release_conn()


def _deleted(name: str) -> CatalogInvalid:
    message = "the object does not exist (deleted?); serving the last good catalog"
    return CatalogInvalid([CatalogError("", message)], source=f"machinecatalog/{name}")


def boot_catalog(
    api_client: Any, name: str, state_dir: str | os.PathLike[str] | None
) -> tuple[Catalog, dict[str, Any] | None, CatalogInvalid | None]:
    """The catalog to start on: the object's if valid, else the persisted last good one.

    Returns it with the object read (None if absent) and the reason the object was not
    used (None if it was). Raises :class:`CatalogInvalid` when neither can be had.
    """
    obj = read_object(api_client, name)
    problem: CatalogInvalid
    if obj is not None:
        try:
            return catalog_from_resource(obj), obj, None
        except CatalogInvalid as exc:
            problem = exc
    else:
        problem = _deleted(name)
    fallback = Path(state_dir) / "last-good-catalog.json" if state_dir else None
    if fallback is None or not fallback.exists():
        raise problem
    log.error("machinecatalog/%s unusable; starting on the last good catalog %s", name, fallback)
    return load_catalog(fallback), obj, problem


class ResourceCatalogSource(CatalogSource):
    """A :class:`CatalogSource` fed by a watch of one MachineCatalog instead of a file."""

    _watcher_name = "catalog-resource-watcher"

    def __init__(
        self,
        api_client: Any,
        name: str,
        *,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.api_client = api_client
        catalog, obj, problem = boot_catalog(api_client, name, state_dir)
        super().__init__(Path(f"machinecatalog/{name}"), state_dir=state_dir, initial=catalog)
        #: The object as last seen (None while it does not exist): the status writer's input.
        self.object: dict[str, Any] | None = obj
        self._object_lock = threading.Lock()
        if problem is not None:
            self._record_failure(problem)
        else:
            self._persist(catalog)

    # -- events ------------------------------------------------------------------------

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> bool:
        """One watch event (or a listed object); True when the served catalog changed."""
        with self._object_lock:
            self.object = None if event_type == "DELETED" else dict(obj)
        if event_type == "DELETED":
            self._record_failure(_deleted(self.name))
            return False
        return self.swap(lambda: catalog_from_resource(obj))

    # -- the watch -------------------------------------------------------------------

    def poll(self) -> bool:  # the file poller's hook: a resource is watched instead
        return False

    def start(self, interval: float = 1.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._watcher_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._list_and_watch()
                backoff = 0.5
            except Exception as exc:  # the API server down, RBAC, a cut stream: retry
                log.warning(
                    "machinecatalog/%s watch: %s; retrying in %.1fs", self.name, exc, backoff
                )
                if self._stop.wait(backoff):
                    return
                backoff = min(MAX_BACKOFF, backoff * 2)

    def _list_and_watch(self) -> None:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.api_client)
        selector = f"metadata.name={self.name}"
        listing = custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, field_selector=selector, _request_timeout=REQUEST_TIMEOUT
        )
        items = listing.get("items") or []
        if items:
            self.apply("MODIFIED", items[0])
        elif self.object is not None:
            self.apply("DELETED", self.object)
        version = (listing.get("metadata") or {}).get("resourceVersion")
        while not self._stop.is_set():
            stream = watch.Watch()
            started = time.monotonic()
            for event in stream.stream(
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                field_selector=selector,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT,
                allow_watch_bookmarks=True,
            ):
                if self._stop.is_set():
                    stream.stop()
                    return
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    return  # 410 Gone and friends: relist
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.apply(kind, obj)
            if time.monotonic() - started < 1:  # a stream that ends at once: relist, later
                return
