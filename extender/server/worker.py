"""gunicorn's ``gthread`` worker, with no thread parked on a connection that sends nothing.

This is the webhook stall of issue 17. The API server's Go HTTP client, when a webhook
call finds no idle connection, dials a new one; if another connection comes free first, the
call goes there and the new connection, handshake done, waits in the client's idle pool
(up to 90 s) without a request. Under a burst of pod creates it dials several such
connections at once. Stock ``gthread`` hands every accepted connection to a pool thread,
which waits up to 5 s for a first byte (the TLS ClientHello arrives at once), completes the
handshake and then blocks reading a request head that does not come. With ``--threads 4``
four such connections take every thread; the webhook calls queued behind them hit the API
server's 5 s timeout (``failurePolicy: Fail``: the pod create fails) and nothing is logged.
On stop those connections keep the worker in its graceful wait until it is killed, so its
exit is not logged either. Measured in ``benchmarks/webhook_stall.py`` (py-spy dumps: all
four threads in ``Request.parse`` → ``SSLSocket.read``).

Here a new connection gets a thread only while it is sending: if no byte arrives within
:data:`FIRST_BYTES_WAIT`, or, over TLS, no request follows the handshake within it, the
connection goes back to the worker's poller (gthread's own "pending" path, which costs a
poller entry, not a thread) and returns to a thread when its request arrives. A stopping
worker closes such connections within gthread's keep-alive linger, as it does kept-alive
ones: they carry no request to finish.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from gunicorn.workers import gthread

log = logging.getLogger(__name__)

#: Seconds a pool thread waits for a new connection's first bytes (and, over TLS, for the
#: request after the handshake) before the poller takes over. The Go client writes both at
#: once, so only a connection dialed for a request that went elsewhere waits this long.
FIRST_BYTES_WAIT = 0.05


def request_waiting(conn: Any, timeout: float) -> bool:
    """Whether ``conn`` has bytes to read within ``timeout`` (decrypted ones included)."""
    pending = getattr(conn.sock, "pending", None)
    if pending is not None and pending() > 0:
        return True
    conn.data_ready = False
    return bool(conn.wait_for_data(timeout))


class ThreadWorker(gthread.ThreadWorker):
    """``gthread``; connections that have not sent a request wait in the poller."""

    def handle(self, conn: Any) -> Any:
        if not conn.initialized:
            if not request_waiting(conn, FIRST_BYTES_WAIT):
                return gthread._DEFER
            conn.sock.setblocking(True)
            try:
                conn.init()  # the TLS handshake: the ClientHello is here
            except (OSError, ssl.SSLError) as err:  # a client gone mid-handshake
                log.debug("connection from %s closed during the handshake: %s", conn.client, err)
                return False
            if not request_waiting(conn, FIRST_BYTES_WAIT):
                return gthread._DEFER
            conn.data_ready = True
        return super().handle(conn)

    def _cap_keepalive(self, deadline: float) -> None:
        """On stop, close connections that never sent a request by ``deadline`` too."""
        super()._cap_keepalive(deadline)
        for conn in self.pending_conns:
            conn.timeout = min(conn.timeout, deadline)


def check_supported() -> None:
    """Fail at start, not under load, if gunicorn's gthread lacks what this relies on."""
    needed = ("_DEFER", "TConn", "ThreadWorker")
    missing = [name for name in needed if not hasattr(gthread, name)]
    for method in ("wait_for_data",):
        if not hasattr(gthread.TConn, method):
            missing.append(f"TConn.{method}")
    for method in ("_cap_keepalive", "finish_request"):
        if not hasattr(gthread.ThreadWorker, method):
            missing.append(f"ThreadWorker.{method}")
    if missing:
        raise RuntimeError(f"gunicorn's gthread lacks {', '.join(missing)} (needs gunicorn 27)")
