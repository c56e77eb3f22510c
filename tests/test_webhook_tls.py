"""The webhook over HTTPS, as the API server calls it.

The API server only calls webhooks over TLS, dials ``<service>.<namespace>.svc`` and
verifies the certificate against the webhook's ``caBundle``. This test starts the real
server (``extender.server.serve`` under gunicorn, in a subprocess on 127.0.0.1 with a free
port) with a throwaway CA and serving certificate, and posts a real AdmissionReview with a
client that trusts only that CA and checks the Service's DNS name, as the API server does.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from machine_catalog.certs import issue_serving_cert, make_ca, service_dns_names

FIXTURES = Path(__file__).parent / "fixtures"
SERVICE, NAMESPACE = "machine-catalog-webhook", "machine-catalog-system"
SERVER_NAME = f"{SERVICE}.{NAMESPACE}.svc"  # what the API server dials and verifies
DEADLINE = 30.0


class ServiceConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, verifying the certificate for the Service's DNS name (SNI too)."""

    def __init__(self, port: int, context: ssl.SSLContext, server_name: str = SERVER_NAME):
        super().__init__("127.0.0.1", port, timeout=10, context=context)
        self.server_name = server_name
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.server_name)
        except BaseException:
            raw.close()
            raise


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    def post(self, context: ssl.SSLContext, body: bytes, server_name: str = SERVER_NAME):
        conn = ServiceConnection(self.port, context, server_name)
        try:
            conn.request(
                "POST",
                "/webhook/mutate?timeout=5s",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            reply = conn.getresponse()
            return reply.status, reply.getheader("Content-Type"), reply.read(), conn.sock.version()
        finally:
            conn.close()


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """Trusts only the throwaway CA and checks the host name (like the API server's client)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem.decode())
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, bytes, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = make_ca()
    leaf = issue_serving_cert(ca.cert_pem, ca.key_pem, service_dns_names(SERVICE, NAMESPACE))
    (tmp / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp / "tls.key").write_bytes(leaf.key_pem)
    (tmp / "tls.key").chmod(0o600)
    nodes = json.loads((FIXTURES / "nodes-real-world.json").read_text())
    (tmp / "snapshot.json").write_text(json.dumps(nodes))
    config = {
        "bind": "127.0.0.1:0",
        "snapshot": str(tmp / "snapshot.json"),
        "certfile": str(tmp / "tls.crt"),
        "keyfile": str(tmp / "tls.key"),
        "scheduler_name": "machine-catalog",
    }
    log = tmp / "server.log"
    script = (
        "import json, sys\n"
        "from extender.server.serve import ServeConfig, serve\n"
        "sys.exit(serve(ServeConfig(**json.loads(sys.argv[1]))))\n"
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + DEADLINE
        port = None
        while port is None:
            found = re.search(rb"Listening at: https://127\.0\.0\.1:(\d+)", log.read_bytes())
            if found:
                port = int(found.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        server = Server(proc, port, log)
        _wait_ready(server, client_context(ca.cert_pem))
        yield server, ca.cert_pem, tmp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_ready(server: Server, context: ssl.SSLContext) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        conn = ServiceConnection(server.port, context)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise AssertionError(f"server not ready:\n{server.log.read_text()}")
        time.sleep(0.05)


def review() -> dict[str, Any]:
    return json.loads((FIXTURES / "admission-review-replicaset-pod.json").read_text())


@pytest.mark.slow
def test_an_admission_review_over_https_verified_like_the_api_server(tls_server):
    server, ca_pem, _ = tls_server
    sent = review()
    status, content_type, body, version = server.post(
        client_context(ca_pem), json.dumps(sent).encode()
    )
    assert status == 200
    assert content_type == "application/json"
    assert version in ("TLSv1.2", "TLSv1.3")
    answer = json.loads(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    pod = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(sent["request"]["object"]))
    assert pod["metadata"]["annotations"]["machine-catalog.io/family"]
    assert pod["spec"]["schedulerName"] == "machine-catalog"
    assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def _handshakes_with_a_tls11_server(client: ssl.SSLContext, cert_dir: Path) -> str:
    """Control: the old client does complete a handshake with a server that allows TLS 1.1,
    so a refusal by the webhook comes from the webhook's floor, not from this client."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def accept() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server_ctx.wrap_socket(conn, server_side=True):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with client.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
            version = tls.version()
        thread.join(timeout=10)
    return version or ""


@pytest.mark.slow
def test_tls_below_1_2_is_refused(tls_server):
    server, ca_pem, cert_dir = tls_server
    old = client_context(ca_pem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")  # so that only the server's floor can refuse
    assert _handshakes_with_a_tls11_server(old, cert_dir) == "TLSv1.1"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        server.post(old, json.dumps(review()).encode())


@pytest.mark.slow
def test_a_client_that_trusts_another_ca_or_dials_another_name_is_refused(tls_server):
    server, ca_pem, _ = tls_server
    body = json.dumps(review()).encode()
    with pytest.raises(ssl.SSLCertVerificationError):
        server.post(client_context(make_ca().cert_pem), body)
    with pytest.raises(ssl.SSLCertVerificationError):
        server.post(client_context(ca_pem), body, server_name="machine-catalog-webhook.other.svc")
    # every name the Service can be dialled by is in the certificate
    for name in service_dns_names(SERVICE, NAMESPACE):
        status, *_ = server.post(client_context(ca_pem), body, server_name=name)
        assert status == 200
