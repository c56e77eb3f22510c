"""Connections that send nothing do not hold serve's threads (the webhook stall, issue 17).

The API server's Go client dials spare connections during a burst and leaves them idle,
handshake done, without a request. Stock gunicorn ``gthread`` parked one of its threads on
each (blocked reading a request head, forever over TLS, 5 s over plain HTTP); with
``--threads`` of them parked, webhook calls queued behind them and hit the API server's
5 s timeout. Here more idle connections than threads are opened first, over TLS and over
plain HTTP, and a request on a fresh connection must still be answered at once; a request
sent later on an idle connection is answered too (the poller hands it back to a thread),
and SIGTERM is not held up by them.
"""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from support.helpers import serve

from machine_catalog.certs import issue_serving_cert, make_ca

pytestmark = pytest.mark.slow

THREADS = 2
IDLE = THREADS  # stock gthread: one parked thread each, and the next request waits
#: Far below the API server's 5 s webhook timeout and stock gthread's 5 s first-byte wait.
PROMPT = 1.5


def tls_files(tmp_path: Path) -> tuple[list[str], ssl.SSLContext]:
    ca = make_ca()
    leaf = issue_serving_cert(ca.cert_pem, ca.key_pem, ["localhost"], ip_addresses=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    args = ["--certfile", str(tmp_path / "tls.crt"), "--keyfile", str(tmp_path / "tls.key")]
    return args, context


def idle_connection(port: int, context: ssl.SSLContext | None) -> socket.socket:
    """Connected (and, over TLS, handshaken), sending nothing: a Go client's spare."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def get(port: int, context: ssl.SSLContext | None, path: str = "/healthz") -> float:
    """Seconds for one GET on a fresh connection; infinity when it got no answer."""
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROMPT + 2)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=PROMPT + 2, context=context)
    began = time.monotonic()
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 200
    except TimeoutError:
        return float("inf")
    finally:
        conn.close()
    return time.monotonic() - began


def request_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_idle_connections_do_not_hold_the_threads(tmp_path: Path, tls: bool) -> None:
    args, context = tls_files(tmp_path) if tls else ([], None)
    server = serve(tmp_path, "--threads", str(THREADS), *args)
    try:
        deadline = time.monotonic() + 60  # the worker boots after gunicorn listens
        while get(server.port, context) == float("inf"):
            assert time.monotonic() < deadline, server.log_text()
        idle = [idle_connection(server.port, context) for _ in range(IDLE)]
        time.sleep(0.3)  # the worker has accepted them and handed them to its threads
        took = [get(server.port, context) for _ in range(3)]
        assert max(took) < PROMPT, f"requests waited {took} behind {IDLE} idle connections"
        reply = request_on(idle[0])
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=20)
        stopped = time.monotonic() - began
        # Stock gthread waits out its whole graceful timeout (25 s) for them; the harness
        # and a test runner give up at 15 s.
        assert stopped < 15, f"stop took {stopped:.1f} s with idle connections open"
        assert "Worker exiting" in server.log_text()
        for sock in idle:
            sock.close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=5)
