"""A round-robin TCP balancer on loopback: what a Service does for two server replicas.

kube-proxy (or the API server's endpoint routing) spreads *connections* over a Service's
ready endpoints; each connection then stays with its replica (HTTP keep-alive). This
balancer does the same: each accepted connection goes to the next backend in turn, bytes
are copied both ways unchanged (TLS ends at the replica), and a backend that refuses the
connection is skipped, as an endpoint that failed readiness would be.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Sequence


class Balancer:
    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self._turn = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections: dict[tuple[str, int], int] = {b: 0 for b in self.backends}

    def start(self) -> Balancer:
        threading.Thread(target=self._accept, name="balancer", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        first = next(self._turn)
        for offset in range(len(self.backends)):
            backend = self.backends[(first + offset) % len(self.backends)]
            try:
                upstream = socket.create_connection(backend, timeout=2)
            except OSError:
                continue  # refused: that replica is down, try the next
            upstream.settimeout(None)
            self._track(upstream)
            with self._lock:
                self.connections[backend] += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
            return
        _close(client)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
