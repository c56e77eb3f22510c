"""``serve --extender-bind 127.0.0.1:PORT``: the extender's two routes in plain HTTP on
loopback, for a kube-scheduler in the same pod.

HAMi's pattern: kube-scheduler and its extender run as two containers of one pod and talk
over ``127.0.0.1`` without TLS. Traffic that never leaves the pod's network namespace
gains nothing from TLS and pays for it on every call (the handshake when a connection is
new, the record layer always, on both sides); the Service hop and kube-proxy go too. The
main bind keeps TLS for the webhook (the API server requires it) and for extenders that
call from elsewhere.

Only ``POST /scheduler/filter`` and ``/scheduler/prioritize`` are served here, by the same
verbs (bytes in, status and bytes out) from the same runtime as the main bind, so the two
answer alike. Only loopback addresses are accepted: a plain-HTTP extender reachable from
the network would let anyone who can reach it steer placements. The listener is the
standard library's threading HTTP/1.1 server (keep-alive, as kube-scheduler's client
expects), in the worker process that owns the state.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from extender import telemetry
from extender.errors import error_body
from extender.scheduler.verbs import filter_verb, prioritize_verb

if TYPE_CHECKING:
    from extender.state.runtime import Runtime

log = logging.getLogger(__name__)

ROUTES: dict[str, Callable[[Runtime, bytes], tuple[int, bytes]]] = {
    "/scheduler/filter": filter_verb,
    "/scheduler/prioritize": prioritize_verb,
}


class LoopbackError(ValueError):
    """A ``--extender-bind`` that is not ``HOST:PORT`` on a loopback address."""


def loopback_address(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as (host, port), refused unless loopback."""
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise LoopbackError(f"--extender-bind {bind!r}: expected HOST:PORT")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise LoopbackError(
            f"--extender-bind {bind!r}: plain HTTP only on a loopback address "
            "(127.0.0.1 or ::1), for a kube-scheduler in the same pod"
        )
    return host, int(port)


def _handler(runtime: Runtime, max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per scheduler
        # TCP_NODELAY: the status line and headers go out in one write and the body in
        # another; with Nagle's algorithm the body waits for the client's delayed ACK
        # (~40 ms on Linux), which measured 10 pods/s instead of the HTTPS bind's 57.
        disable_nagle_algorithm = True
        server_version = "machine-catalog"

        def do_POST(self) -> None:
            started = time.perf_counter()
            verb = ROUTES.get(self.path)
            length = self.headers.get("Content-Length")
            if verb is None:
                status, body = 404, error_body(f"no route {self.path} on the extender bind")
            elif length is None or not length.isdigit():
                status, body = 411, error_body("a Content-Length is required")
            elif int(length) > max_body:
                status, body = 413, error_body(f"request body larger than {max_body} bytes")
                self.close_connection = True
            else:
                status, body = verb(runtime, self.rfile.read(int(length)))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            route = self.path if verb is not None else "<unknown>"
            telemetry.HTTP_REQUESTS.labels(route=route, code=str(status)).inc()
            telemetry.HTTP_DURATION.labels(route=route).observe(time.perf_counter() - started)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("extender bind: " + format, *args)

    return Handler


class ExtenderListener:
    """The loopback listener of one worker: :meth:`start` binds and serves in a thread."""

    def __init__(self, runtime: Runtime, bind: str) -> None:
        self.address = loopback_address(bind)
        self.runtime = runtime
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> ExtenderListener:
        handler = _handler(self.runtime, self.runtime.settings.max_body)
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        server = server_class(self.address, handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="extender-bind", daemon=True).start()
        log.info("extender routes in plain HTTP on %s:%d", *self.address[:2])
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
