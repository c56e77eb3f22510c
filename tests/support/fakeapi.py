"""A loopback fake of the Kubernetes API server's node and pod endpoints, for watcher tests.

It is a real HTTP/1.1 server on 127.0.0.1 (``http.server``, one thread per connection,
keep-alive), so the official ``kubernetes`` client talks to it through its real stack
(urllib3 pool, query serialization, chunked decoding, ``Watch.stream``) and the watcher is
tested against bytes on a socket, not against mocks.

What it reproduces of the real API server:

- ``GET /api/v1/nodes`` and ``GET /api/v1/pods`` (all namespaces) as ``NodeList`` /
  ``PodList`` with ``metadata.resourceVersion``; items carry no ``kind``/``apiVersion``, as
  in real list responses. The same for ``/api/v1/namespaces`` and metrics-server's
  ``/apis/metrics.k8s.io/v1beta1/nodes`` and ``/pods`` (``NodeMetricsList``,
  ``PodMetricsList``), for ``machine-catalog report``.
- Paginated lists: ``limit`` and ``continue``. The first page takes a consistent snapshot
  and later pages are served from it (objects changed meanwhile are not seen), pages carry
  ``metadata.continue`` and ``remainingItemCount``; an unknown or expired token gets
  ``410 Expired`` with a ``Status`` body, as after an etcd compaction.
- Watches: ``watch=true`` (or ``1``) with ``resourceVersion``, ``allowWatchBookmarks``,
  ``timeoutSeconds``: a ``Transfer-Encoding: chunked`` stream of newline-delimited JSON
  events ``{"type": ..., "object": ...}``. Events after the requested resourceVersion are
  replayed from a history log, then new ones stream live. A resourceVersion older than the
  compacted history gets an ``ERROR`` event carrying a ``410 Expired`` ``Status`` ("too old
  resource version") and the stream ends, as the watch cache does. ``BOOKMARK`` events carry
  only kind/apiVersion/metadata.resourceVersion. ``resourceVersion`` unset or ``"0"``
  starts with synthetic ``ADDED`` events for every current object. The stream ends
  normally (terminating chunk) after ``timeoutSeconds``.
- One resourceVersion counter shared by all kinds (like etcd's revision), so a node change
  advances the resourceVersion a pod bookmark reports.
- ``Status`` bodies for errors (404 for other paths, scripted 5xx/429 with Retry-After).
- ``GET /apis/metrics.k8s.io/v1beta1/nodes``: a ``NodeMetricsList`` of
  :attr:`FakeApiServer.node_metrics` (404 while it is None, as without metrics-server).

Scriptable faults: force a 410 on the next watch (as an ``ERROR`` event or as an HTTP 410),
compact the history, expire continue tokens, fail the next N requests with a status, cut
the next event of a watch in half and drop the connection, drop every open connection,
refuse connections for N seconds (the listening socket is closed and reopened on the same
port), and delay every response and every event. Every request is recorded (path, query).

What it does not reproduce: authentication/authorization (any or no credentials pass),
TLS, HTTP/2, protobuf or table output, namespaced lists (``/api/v1/namespaces/x/pods``),
single-object GETs (but for :attr:`FakeApiServer.static` objects: a catalog published with
:meth:`FakeApiServer.publish_catalog`) and every write verb but three (the store is changed
through Python methods; a pod DELETE with uid/resourceVersion preconditions, an Event POST
and a node labels PATCH are served), label selectors (field selectors are: ``=``, ``==``,
``!=``),
``resourceVersionMatch``, ``sendInitialEvents`` (streaming lists), the watch cache's
time-based window (history is kept until
:meth:`FakeApiServer.compact`), periodic bookmarks (they are sent when a test calls
:meth:`FakeApiServer.bookmark`), admission, defaulting and validation of objects (they are
stored as given, plus uid/resourceVersion/creationTimestamp), generation/finalizers/
graceful deletion, API discovery and OpenAPI, and priority and fairness.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import yaml

RESOURCES = {
    "/api/v1/nodes": "nodes",
    "/api/v1/pods": "pods",
    "/api/v1/namespaces": "namespaces",
    "/apis/metrics.k8s.io/v1beta1/nodes": "nodemetrics",
    "/apis/metrics.k8s.io/v1beta1/pods": "podmetrics",
}
KINDS = {
    "nodes": "Node",
    "pods": "Pod",
    "namespaces": "Namespace",
    "nodemetrics": "NodeMetrics",
    "podmetrics": "PodMetrics",
}
API_VERSIONS = {"nodemetrics": "metrics.k8s.io/v1beta1", "podmetrics": "metrics.k8s.io/v1beta1"}
NAMESPACED = ("pods", "podmetrics")
#: Served only once a test adds objects to them (else 404, no metrics-server installed).
METRICS = ("nodemetrics", "podmetrics")
#: metrics.k8s.io lists served from a callable or list set on the fake (``pod_metrics``,
#: ``node_metrics``) before the stored objects above are looked at.
POD_METRICS_PATH = "/apis/metrics.k8s.io/v1beta1/pods"
NODE_METRICS_PATH = "/apis/metrics.k8s.io/v1beta1/nodes"


@dataclass(frozen=True)
class Request:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    resource: str | None
    watch: bool
    at: float  # time.monotonic()


@dataclass
class _Failure:
    status: int
    remaining: int
    resource: str | None
    match: Callable[[Request], bool] | None
    retry_after: int | None = None


@dataclass(eq=False)  # hashed by identity: kept in a set of open connections
class _Stream:
    """One open connection handled by the fake, so faults can break it from outside."""

    sock: socket.socket
    aborted: bool = False


@dataclass
class _Event:
    rv: int
    type: str
    obj: dict[str, Any]


def _status(code: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": extra,
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _key(resource: str, obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    if resource in NAMESPACED:
        return f"{meta.get('namespace', 'default')}/{meta['name']}"
    return meta["name"]


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _field_selector(selector: str) -> Callable[[Mapping[str, Any]], bool]:
    """``a.b=x,c.d!=y`` (``=``, ``==``, ``!=``; a missing field reads as ``""``), as the
    API server's field selectors on pods (``status.phase``, ``spec.nodeName``)."""
    rules = []
    for part in filter(None, selector.split(",")):
        if "!=" in part:
            key, value = part.split("!=", 1)
            rules.append((key, value, False))
        else:
            key, value = part.replace("==", "=", 1).split("=", 1)
            rules.append((key, value, True))
    return lambda obj: all((_field_value(obj, k) == v) == eq for k, v, eq in rules)


def _namespaced(path: str) -> tuple[str, str, str | None] | None:
    """``/api/v1/namespaces/{ns}/{resource}[/{name}]`` -> (ns, resource, name)."""
    parts = path.strip("/").split("/")
    if len(parts) in (5, 6) and parts[:3] == ["api", "v1", "namespaces"]:
        return parts[3], parts[4], parts[5] if len(parts) == 6 else None
    return None


def _read_body(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    length = int(handler.headers.get("Content-Length") or 0)
    data = handler.rfile.read(length) if length else b""
    body = orjson.loads(data) if data else {}
    return body if isinstance(body, dict) else {}


class FakeApiServer:
    """A scriptable fake API server; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rv = 1
        self._objects: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in KINDS}
        self._history: dict[str, list[_Event]] = {r: [] for r in KINDS}
        self._compacted = 0  # watches from a resourceVersion below this get 410
        self._bookmarks = dict.fromkeys(KINDS, 0)
        self._snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._expire_watch: dict[str, str | None] = dict.fromkeys(KINDS)
        self._cut_next: dict[str, str | None] = dict.fromkeys(KINDS)
        self._failures: list[_Failure] = []
        self._streams: set[_Stream] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._reopen_timer: threading.Timer | None = None
        self._stopped = False
        self.port = 0
        self.delay = 0.0
        self.requests: list[Request] = []
        self.default_watch_timeout = 1800
        #: PodMetrics items for ``GET /apis/metrics.k8s.io/v1beta1/pods``, called on each
        #: request (so a test can change usage between samples); None answers 404, as an
        #: API server without metrics-server does.
        self.pod_metrics: Callable[[], list[dict[str, Any]]] | None = None
        #: Events POSTed to ``/api/v1/namespaces/{ns}/events``, as received.
        self.events: list[dict[str, Any]] = []
        #: NodeMetrics items served at ``/apis/metrics.k8s.io/v1beta1/nodes`` (a plain
        #: NodeMetricsList, no watch), or a function making them per request (fresh
        #: timestamps, as metrics-server's); None: the metrics API is not installed (404).
        self.node_metrics: list[dict[str, Any]] | Callable[[], list[dict]] | None = None
        #: Objects answered as they are to a GET of their exact path (no list semantics,
        #: no watch): MachineCatalogs and ConfigMaps (see :meth:`publish_catalog`).
        self.static: dict[str, dict[str, Any]] = {}

    def publish_catalog(
        self, document: Mapping[str, Any], as_: str = "resource", **meta: Any
    ) -> dict[str, Any]:
        """Serve a catalog document as the CLI looks for it: a MachineCatalog (list and
        object) or the server's ConfigMap (``as_="configmap"``). Returns the object."""
        if as_ == "configmap":
            obj = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "machine-catalog",
                    "namespace": "machine-catalog-system",
                    "resourceVersion": str(self._rv),
                    **meta,
                },
                "data": {"catalog.yaml": yaml.safe_dump(dict(document), sort_keys=False)},
            }
            path = "/api/v1/namespaces/machine-catalog-system/configmaps/machine-catalog"
            self.static[path] = obj
            return obj
        obj = copy.deepcopy(dict(document))
        obj["metadata"] = {
            **obj.get("metadata", {}),
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self._rv),
            "generation": 1,
            **meta,
        }
        base = "/apis/machine-catalog.io/v1alpha1/machinecatalogs"
        listing = self.static.setdefault(
            base,
            {
                "apiVersion": "machine-catalog.io/v1alpha1",
                "kind": "MachineCatalogList",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": [],
            },
        )
        listing["items"].append(obj)
        self.static[f"{base}/{obj['metadata']['name']}"] = obj
        return obj

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped = True
        if self._reopen_timer is not None:
            self._reopen_timer.cancel()
        self.drop_connections()
        self._close_listener()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        with self._listener_lock:
            if self._stopped or self._httpd is not None:
                return
            httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
            httpd.fake = self
            self.port = httpd.server_address[1]
            self._httpd = httpd
            self._serve_thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            self._serve_thread.start()

    def _close_listener(self) -> None:
        with self._listener_lock:
            httpd, self._httpd = self._httpd, None
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()

    # -- the store ---------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    def _emit(self, resource: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Bump the resourceVersion, stamp ``obj`` with it, log the event; lock held."""
        self._rv += 1
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._rv)
        obj.setdefault("kind", KINDS[resource])
        obj.setdefault("apiVersion", "v1")
        self._history[resource].append(_Event(self._rv, event_type, obj))
        self._cond.notify_all()
        return obj

    def add(self, resource: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create (ADDED) an object in ``"nodes"`` or ``"pods"``; returns it as stored."""
        obj = copy.deepcopy(dict(obj))
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        if resource == "pods":
            meta.setdefault("namespace", "default")
        with self._cond:
            key = _key(resource, obj)
            if key in self._objects[resource]:
                raise KeyError(f"{resource} {key} already exists")
            stored = self._emit(resource, "ADDED", obj)
            self._objects[resource][key] = stored
            return copy.deepcopy(stored)

    def load(self, resource: str, objects: Iterable[dict[str, Any]]) -> int:
        """Store objects that existed before any watch began: no events, no copies.

        For fleets of benchmark size: :meth:`add` copies each object and logs an event, which
        for 150,000 pods costs seconds and a second copy of every pod. Loaded objects become
        the fake's own (their metadata is stamped in place, with one resourceVersion for the
        batch); a LIST serves them and a watch from that LIST's resourceVersion sees only
        later changes. Returns how many were stored; a duplicate key raises KeyError.
        """
        with self._cond:
            self._rv += 1
            rv = str(self._rv)
            store = self._objects[resource]
            count = 0
            for obj in objects:
                meta = obj.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
                if resource == "pods":
                    meta.setdefault("namespace", "default")
                meta["resourceVersion"] = rv
                obj.setdefault("kind", KINDS[resource])
                obj.setdefault("apiVersion", "v1")
                key = _key(resource, obj)
                if key in store:
                    raise KeyError(f"{resource} {key} already exists")
                store[key] = obj
                count += 1
            return count

    def modify(
        self, resource: str, key: str, change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """MODIFIED: ``change`` edits a copy of the stored object in place."""
        with self._cond:
            obj = copy.deepcopy(self._objects[resource][key])
            change(obj)
            stored = self._emit(resource, "MODIFIED", obj)
            self._objects[resource][key] = stored
            return copy.deepcopy(stored)

    def delete(self, resource: str, key: str) -> dict[str, Any]:
        """DELETED: the event carries the last state of the object, as the API server's does."""
        with self._cond:
            obj = self._objects[resource].pop(key)
            return copy.deepcopy(self._emit(resource, "DELETED", obj))

    def objects(self, resource: str) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(list(self._objects[resource].values()))

    # -- faults and scripting ----------------------------------------------------------

    def bookmark(self, resource: str) -> None:
        """Open watches of ``resource`` that allow bookmarks get one at the current version."""
        with self._cond:
            self._bookmarks[resource] += 1
            self._cond.notify_all()

    def compact(self) -> None:
        """Forget the event history and continue tokens, as an etcd compaction does."""
        with self._cond:
            self._compacted = self._rv
            for events in self._history.values():
                events.clear()
            self._snapshots.clear()

    def expire_continue_tokens(self) -> None:
        with self._cond:
            self._snapshots.clear()

    def expire_next_watch(self, resource: str, how: str = "event") -> None:
        """The next watch of ``resource`` gets 410: an ``ERROR`` event, or an HTTP 410."""
        assert how in ("event", "status")
        with self._cond:
            self._expire_watch[resource] = how

    def cut_next_event(self, resource: str, how: str = "cut") -> None:
        """Break the next event sent on a watch of ``resource``: ``"cut"`` writes half of it
        and drops the TCP connection without the terminating chunk (a proxy or server
        dying); ``"garbage"`` sends a line that is not JSON before it (a corrupting proxy)."""
        assert how in ("cut", "garbage")
        with self._cond:
            self._cut_next[resource] = how

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        resource: str | None = None,
        match: Callable[[Request], bool] | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next ``count`` matching requests get ``status`` with a Status body."""
        with self._cond:
            self._failures.append(_Failure(status, count, resource, match, retry_after))

    def clear_failures(self) -> None:
        with self._cond:
            self._failures.clear()

    def missed_while_disconnected(self, change: Callable[[FakeApiServer], None]) -> None:
        """A long disconnection: drop every connection, make ``change`` (its events reach no
        open watch), then compact, so a client resuming from before it gets 410 Gone."""
        with self._cond:  # reentrant: add/modify/delete inside ``change`` take it again
            self.drop_connections()
            change(self)
            self.compact()

    def drop_connections(self) -> None:
        """Reset every open connection (watch streams included)."""
        with self._cond:
            streams = list(self._streams)
            for stream in streams:
                stream.aborted = True
            self._cond.notify_all()
        for stream in streams:
            with contextlib.suppress(OSError):
                stream.sock.shutdown(socket.SHUT_RDWR)

    def refuse_connections(self, seconds: float) -> None:
        """Drop open connections and close the listening socket; reopen it on the same port
        after ``seconds`` (connections meanwhile get ECONNREFUSED)."""
        self._close_listener()
        self.drop_connections()
        self._reopen_timer = threading.Timer(seconds, self._listen)
        self._reopen_timer.daemon = True
        self._reopen_timer.start()

    @property
    def listening(self) -> bool:
        return self._httpd is not None

    def watch_requests(self, resource: str) -> list[Request]:
        return [r for r in list(self.requests) if r.resource == resource and r.watch]

    def list_requests(self, resource: str) -> list[Request]:
        return [r for r in list(self.requests) if r.resource == resource and not r.watch]

    # -- serving (called from handler threads) -----------------------------------------

    def _take_failure(self, request: Request) -> _Failure | None:
        with self._cond:
            for failure in self._failures:
                if failure.resource not in (None, request.resource):
                    continue
                if failure.match is not None and not failure.match(request):
                    continue
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _list(self, resource: str, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self._cond:
            if token:
                try:
                    info = orjson.loads(base64.urlsafe_b64decode(token.encode()))
                    snapshot_id = str(info["id"])
                    rv, items = self._snapshots[snapshot_id]
                    start = int(info["start"])
                except (ValueError, KeyError, TypeError):
                    return 410, _status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
            else:
                rv = self._rv
                selected = _field_selector(query.get("fieldSelector") or "")
                items = [
                    self._list_item(o)
                    for _, o in sorted(self._objects[resource].items())
                    if selected(o)
                ]
                start = 0
                snapshot_id = uuid.uuid4().hex
            end = start + limit if limit else len(items)
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if end < len(items):
                self._snapshots[snapshot_id] = (rv, items)
                meta["continue"] = base64.urlsafe_b64encode(
                    orjson.dumps({"id": snapshot_id, "start": end, "rv": rv})
                ).decode()
                meta["remainingItemCount"] = len(items) - end
            body = {
                "kind": f"{KINDS[resource]}List",
                "apiVersion": API_VERSIONS.get(resource, "v1"),
                "metadata": meta,
                "items": items[start:end],
            }
        return 200, body

    @staticmethod
    def _list_item(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections reset by a fault or by the client are routine here: stay quiet about
        those, and print anything else (a bug in the fake must not pass silently)."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet in test output
        pass

    def setup(self) -> None:
        super().setup()
        # Go's net/http (the real API server) disables Nagle; without this, a response
        # written as headers + body stalls ~40 ms on delayed ACKs and skews every timing.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake = self.server.fake
        self.stream = _Stream(self.connection)
        with self.fake._cond:
            self.fake._streams.add(self.stream)

    def finish(self) -> None:
        with self.fake._cond:
            self.fake._streams.discard(self.stream)
        with contextlib.suppress(OSError):
            super().finish()

    # -- plumbing ----------------------------------------------------------------------

    def _send_json(
        self, code: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = orjson.dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _abort(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        resource = RESOURCES.get(url.path)
        watch = query.get("watch", "").lower() in ("true", "1")
        request = Request("GET", url.path, query, resource, watch, time.monotonic())
        fake.requests.append(request)
        if fake.delay:
            time.sleep(fake.delay)
        if url.path == POD_METRICS_PATH and fake.pod_metrics is not None:
            body = {
                "kind": "PodMetricsList",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": fake.pod_metrics(),
            }
            self._send_json(200, body)
            return
        if url.path == NODE_METRICS_PATH and fake.node_metrics is not None:
            failure = fake._take_failure(request)
            if failure is not None:
                self._send_json(failure.status, _status(failure.status, "Error", "scripted"))
                return
            self._send_json(
                200,
                {
                    "kind": "NodeMetricsList",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {},
                    "items": (
                        fake.node_metrics()
                        if callable(fake.node_metrics)
                        else list(fake.node_metrics)
                    ),
                },
            )
            return
        if url.path in fake.static:  # no scripted faults: they are for lists and watches
            self._send_json(200, fake.static[url.path])
            return
        if resource is None or (resource in METRICS and not fake._objects[resource]):
            # A metrics list with nothing added is an API server without metrics-server.
            self._send_json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            return
        failure = fake._take_failure(request)
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            reason = {410: "Expired", 429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
                failure.status, "InternalError"
            )
            self._send_json(
                failure.status, _status(failure.status, reason, "scripted failure"), headers
            )
            return
        if watch:
            self._watch(resource, query)
        else:
            self._send_json(*fake._list(resource, query))

    def _watch(self, resource: str, query: Mapping[str, str]) -> None:
        fake = self.fake
        rv_param = query.get("resourceVersion") or ""
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or fake.default_watch_timeout)
        deadline = time.monotonic() + timeout
        with fake._cond:
            expire, fake._expire_watch[resource] = fake._expire_watch[resource], None
            too_old = rv_param not in ("", "0") and int(rv_param) < fake._compacted
            if expire is None and too_old:
                expire = "event"
            current = fake._rv
        if expire == "status":
            self._send_json(410, _status(410, "Expired", f"too old resource version: {rv_param}"))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if expire == "event":
                status = _status(
                    410, "Expired", f"too old resource version: {rv_param} ({current})"
                )
                self._chunk(orjson.dumps({"type": "ERROR", "object": status}) + b"\n")
            else:
                self._stream_events(resource, rv_param, bookmarks, deadline)
                if self.stream.aborted:
                    return
            self._chunk(b"")  # the terminating chunk: a normal end of the stream
        except OSError:
            self._abort()

    def _stream_events(
        self, resource: str, rv_param: str, bookmarks: bool, deadline: float
    ) -> None:
        fake = self.fake
        with fake._cond:
            history = fake._history[resource]
            if rv_param in ("", "0"):
                pending = [
                    {"type": "ADDED", "object": obj} for obj in fake._objects[resource].values()
                ]
                position = len(history)
            else:
                since = int(rv_param)
                position = next((i for i, e in enumerate(history) if e.rv > since), len(history))
                pending = []
            seen_bookmarks = fake._bookmarks[resource]
        for event in pending:
            self._send_event(resource, event)
        while not self.stream.aborted:
            with fake._cond:
                while True:
                    if self.stream.aborted:
                        return
                    history = fake._history[resource]  # compact() clears it in place
                    position = min(position, len(history))
                    new = [{"type": e.type, "object": e.obj} for e in history[position:]]
                    bookmark_due = bookmarks and fake._bookmarks[resource] != seen_bookmarks
                    remaining = deadline - time.monotonic()
                    if new or bookmark_due or remaining <= 0:
                        break
                    fake._cond.wait(min(remaining, 0.5))
                position += len(new)
                seen_bookmarks = fake._bookmarks[resource]
                rv = fake._rv
            for event in new:
                if not self._send_event(resource, event):
                    return
            if bookmark_due:
                bookmark = {
                    "kind": KINDS[resource],
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(rv)},
                }
                self._send_event(resource, {"type": "BOOKMARK", "object": bookmark})
            if time.monotonic() >= deadline:
                return

    def _send_event(self, resource: str, event: Mapping[str, Any]) -> bool:
        """Write one event line; False when the connection was (deliberately) broken."""
        fake = self.fake
        if fake.delay:
            time.sleep(fake.delay)
        line = orjson.dumps(event) + b"\n"
        with fake._cond:
            cut, fake._cut_next[resource] = fake._cut_next[resource], None
        if cut == "garbage":
            self._chunk(b'{"type": "ADDED", "object": {"kind": \n')
        elif cut == "cut":
            self._chunk(line[: len(line) // 2])
            self.wfile.flush()
            self.stream.aborted = True
            self._abort()
            return False
        self._chunk(line)
        return True

    # -- writes: DELETE of a pod with preconditions, POST of an Event ---------------

    def do_DELETE(self) -> None:
        """Delete a pod at once (no graceful deletion); ``preconditions`` on uid and
        resourceVersion are checked as the API server does (409 Conflict on a mismatch)."""
        fake = self.fake
        url = urlsplit(self.path)
        fake.requests.append(Request("DELETE", url.path, {}, "pods", False, time.monotonic()))
        where = _namespaced(url.path)
        body = _read_body(self)
        if where is None or where[1] != "pods" or where[2] is None:
            self._send_json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            return
        namespace, _, name = where
        key = f"{namespace}/{name}"
        preconditions = body.get("preconditions") or {}
        with fake._cond:
            obj = fake._objects["pods"].get(key)
            meta = obj["metadata"] if obj is not None else {}
            conflict = next(
                (
                    f"Precondition failed: {field} in precondition: {preconditions[field]}, "
                    f"{field} in object meta: {meta.get(field)}"
                    for field in ("uid", "resourceVersion")
                    if preconditions.get(field) is not None
                    and preconditions[field] != meta.get(field)
                ),
                None,
            )
            if obj is not None and conflict is None:
                gone = fake.delete("pods", key)
        if obj is None:
            self._send_json(404, _status(404, "NotFound", f'pods "{name}" not found'))
        elif conflict is not None:
            self._send_json(409, _status(409, "Conflict", conflict))
        else:
            self._send_json(200, gone)

    def do_PATCH(self) -> None:
        """A node's labels by strategic merge patch (``null`` removes a label), as the
        family labeller sends it; a MODIFIED event follows, as from the API server."""
        fake = self.fake
        url = urlsplit(self.path)
        fake.requests.append(Request("PATCH", url.path, {}, "nodes", False, time.monotonic()))
        body = _read_body(self)
        prefix = "/api/v1/nodes/"
        name = url.path[len(prefix) :] if url.path.startswith(prefix) else ""
        labels = (body.get("metadata") or {}).get("labels")
        if not name or "/" in name or not isinstance(labels, dict) or set(body) != {"metadata"}:
            self._send_json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            return
        with fake._cond:
            if name not in fake._objects["nodes"]:
                self._send_json(404, _status(404, "NotFound", f'nodes "{name}" not found'))
                return

            def change(obj: dict[str, Any]) -> None:
                current = obj.setdefault("metadata", {}).setdefault("labels", {})
                for key, value in labels.items():
                    if value is None:
                        current.pop(key, None)
                    else:
                        current[key] = value

            stored = fake.modify("nodes", name, change)
        self._send_json(200, stored)

    def do_POST(self) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        fake.requests.append(Request("POST", url.path, {}, None, False, time.monotonic()))
        where = _namespaced(url.path)
        body = _read_body(self)
        if where is None or where[1] != "events" or where[2] is not None:
            self._send_json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            return
        with fake._cond:
            fake.events.append(body)
        self._send_json(201, body)


_counter = itertools.count(1)


def make_node(
    name: str,
    cpu: str = "8",
    instance_type: str = "m5.2xlarge",
    labels: Mapping[str, str] | None = None,
) -> dict:
    """A minimal Node as the API server would store it (labels, allocatable)."""
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": instance_type,
                **(labels or {}),
            },
        },
        "spec": {},
        "status": {"capacity": {"cpu": cpu}, "allocatable": {"cpu": cpu}},
    }


def make_node_metrics(name: str, cpu: str, at: float | None = None, window: str = "20s") -> dict:
    """One NodeMetrics item as metrics-server serves it (``at``: wall-clock seconds)."""
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window": window,
        "usage": {"cpu": cpu, "memory": "1Gi"},
    }


def make_pod(
    name: str | None = None,
    cpu: str = "500m",
    node: str | None = None,
    phase: str = "Running",
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
) -> dict:
    """A minimal Pod with one container requesting ``cpu``, bound to ``node`` if given."""
    name = name or f"pod-{next(_counter)}"
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": cpu}}}]
    }
    if node:
        spec["nodeName"] = node
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def write_kubeconfig(path: Path, server: str) -> str:
    """A kubeconfig for the fake at ``server`` (a token it does not check); returns the path."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
                "current-context": "fake",
            }
        )
    )
    return str(path)


__all__ = [
    "FakeApiServer",
    "Request",
    "make_node",
    "make_node_metrics",
    "make_pod",
    "write_kubeconfig",
]
