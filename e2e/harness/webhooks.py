"""Another mutating webhook, served from the test process: what a sidecar injector or a
policy webhook that runs after ours does to a pod, against the real API server.

The API server calls mutating webhooks in the order of their configurations' names, so one
named ``zz-...`` runs after ``machine-catalog``; when it changes the pod, the API server
calls ours again (``reinvocationPolicy: IfNeeded``). :class:`TestWebhook` serves HTTPS on
127.0.0.1 with a certificate from the cluster's CA and registers itself, scoped to one
namespace (``kubernetes.io/metadata.name``), so it touches no other test's pods.

    with TestWebhook(plane, "zz-sidecar", namespace, add_container) as hook:
        ...  # pods created in ``namespace`` go through ``add_container``
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.controlplane import ControlPlane

#: ``mutate(pod) -> JSON patch operations`` (an empty list: no change).
Mutate = Callable[[dict[str, Any]], list[dict[str, Any]]]


def review_response(review: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """An allowed AdmissionReview response carrying ``ops`` as a JSON patch (if any)."""
    response: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True}
    if ops:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


class TestWebhook:
    """A namespace-scoped mutating webhook for pod CREATEs; ``calls`` counts its calls."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, plane: ControlPlane, name: str, namespace: str, mutate: Mutate) -> None:
        self.plane = plane
        self.name = name
        self.namespace = namespace
        self.mutate = mutate
        self.calls = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _context(self) -> ssl.SSLContext:
        from machine_catalog.certs import issue_serving_cert

        pair = issue_serving_cert(
            self.plane.pki.ca.read_bytes(),
            self.plane.pki.ca_key.read_bytes(),
            ["localhost"],
            ip_addresses=["127.0.0.1"],
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(pair.cert_pem)
            key.write_bytes(pair.key_pem)
            context.load_cert_chain(cert, key)
        return context

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook._lock:
                    hook.calls += 1
                body = json.dumps(review_response(review, hook.mutate(review["request"]["object"])))
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def configuration(self, url: str) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [
                {
                    "name": f"{self.name}.e2e.machine-catalog.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "reinvocationPolicy": "IfNeeded",
                    "timeoutSeconds": 5,
                    "clientConfig": {
                        "url": url,
                        "caBundle": base64.b64encode(self.plane.pki.ca.read_bytes()).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                            "scope": "Namespaced",
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": self.namespace}
                    },
                }
            ],
        }

    def start(self) -> TestWebhook:
        from kubernetes import client

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        httpd.socket = self._context().wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        url = f"https://127.0.0.1:{httpd.server_address[1]}/mutate"
        admission = client.AdmissionregistrationV1Api(self.plane.api_client())
        admission.create_mutating_webhook_configuration(self.configuration(url))
        return self

    def wait_active(self, timeout: float = 20) -> None:
        """Until the API server calls us: it picks up a new configuration from a watch, a
        moment after the create. Probed with server-side dry-run creates (no side effects;
        a denial by a webhook still shows the call happened)."""
        import time

        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.CoreV1Api(self.plane.api_client())
        probe = {
            "metadata": {"name": f"{self.name}-probe"},
            "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]},
        }
        deadline = time.monotonic() + timeout
        while self.calls == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook {self.name} not called after {timeout:.0f} s")
            try:
                api.create_namespaced_pod(self.namespace, probe, dry_run="All")
            except ApiException as exc:
                if exc.status != 403:
                    raise
            time.sleep(0.2)

    def stop(self) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        admission = client.AdmissionregistrationV1Api(self.plane.api_client())
        try:
            admission.delete_mutating_webhook_configuration(self.name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> TestWebhook:
        self.start()
        self.wait_active()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
