"""A test ``metrics.k8s.io`` server: the API server's aggregator proxies to it, the HPA
controller, ``calibrate`` and ``serve``'s usage poller read it as they would metrics-server.

It serves PodMetrics and NodeMetrics from a JSON file the test writes (re-read on every
request, so a test changes usage by rewriting the file):

    {"pods": [{"namespace": NS, "name": N, "labels": {...}, "containers": {"app": "450m"},
               "window": "30s"}],
     "nodes": {"node-a": "3200m"}}

Run inside a network namespace (``harness.netns``): the aggregator routes to an
EndpointSlice address, and EndpointSlice validation refuses loopback addresses.

    python -m harness.metrics_api --bind 10.213.0.2:443 --cert C --key K --data FILE
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
PREFIX = f"/apis/{GROUP}/{VERSION}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selected(labels: dict[str, str], selector: str) -> bool:
    """Equality-based label selectors (``a=b,c!=d``), which is what the HPA sends for a
    Deployment's matchLabels."""
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        else:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def pod_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PodMetrics",
        "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {
            "name": entry["name"],
            "namespace": entry["namespace"],
            "labels": entry.get("labels", {}),
            "creationTimestamp": _now(),
        },
        "timestamp": _now(),
        "window": entry.get("window", "30s"),
        "containers": [
            {"name": name, "usage": {"cpu": cpu, "memory": "64Mi"}}
            for name, cpu in entry["containers"].items()
        ],
    }


def node_metrics(name: str, cpu: str) -> dict[str, Any]:
    return {
        "kind": "NodeMetrics",
        "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {"name": name, "creationTimestamp": _now()},
        "timestamp": _now(),
        "window": "30s",
        "usage": {"cpu": cpu, "memory": "1Gi"},
    }


def resources() -> dict[str, Any]:
    verbs = ["get", "list"]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{GROUP}/{VERSION}",
        "resources": [
            {
                "name": "nodes",
                "singularName": "",
                "namespaced": False,
                "kind": "NodeMetrics",
                "verbs": verbs,
            },
            {
                "name": "pods",
                "singularName": "",
                "namespaced": True,
                "kind": "PodMetrics",
                "verbs": verbs,
            },
        ],
    }


def answer(path: str, query: dict[str, list[str]], data: dict[str, Any]) -> tuple[int, Any]:
    """(status, body) for one GET: the routes metrics-server serves, nothing else."""
    if path in ("/apis", "/apis/"):
        version = {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
        return 200, {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{"name": GROUP, "versions": [version], "preferredVersion": version}],
        }
    if path.rstrip("/") == PREFIX:
        return 200, resources()
    if not path.startswith(PREFIX + "/"):
        return 404, {"kind": "Status", "status": "Failure", "code": 404}
    parts = path[len(PREFIX) + 1 :].strip("/").split("/")
    selector = query.get("labelSelector", [""])[0]
    if parts[0] == "nodes":
        nodes = data.get("nodes", {})
        if len(parts) == 2:
            if parts[1] not in nodes:
                return 404, {"kind": "Status", "status": "Failure", "code": 404}
            return 200, node_metrics(parts[1], nodes[parts[1]])
        items = [node_metrics(n, cpu) for n, cpu in nodes.items()]
        return 200, {
            "kind": "NodeMetricsList",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {},
            "items": items,
        }
    namespace = None
    if parts[0] == "namespaces" and len(parts) >= 3 and parts[2] == "pods":
        namespace, parts = parts[1], parts[2:]
    if parts[0] != "pods":
        return 404, {"kind": "Status", "status": "Failure", "code": 404}
    pods = [
        p
        for p in data.get("pods", [])
        if (namespace is None or p["namespace"] == namespace)
        and _selected(p.get("labels", {}), selector)
    ]
    if len(parts) == 2:
        match = [p for p in pods if p["name"] == parts[1]]
        if not match:
            return 404, {"kind": "Status", "status": "Failure", "code": 404}
        return 200, pod_metrics(match[0])
    return 200, {
        "kind": "PodMetricsList",
        "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {},
        "items": [pod_metrics(p) for p in pods],
    }


def make_handler(data_file: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            try:
                data = json.loads(data_file.read_text()) if data_file.exists() else {}
            except ValueError:
                data = {}
            status, body = answer(url.path, urllib.parse.parse_qs(url.query), data)
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"{self.address_string()} {format % args}", flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--data", required=True, type=Path)
    args = parser.parse_args()
    host, port = args.bind.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), make_handler(args.data))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"metrics.k8s.io test server on {args.bind}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()


class MetricsApi:
    """The test server, running in a network namespace, registered with the aggregator.

    ``publish(pods=..., nodes=...)`` rewrites what it serves; readers see it at once.
    """

    def __init__(self, plane: Any, netns: Any, port: int = 443) -> None:
        from harness import objects
        from harness.controlplane import start

        self.plane = plane
        self.data = plane.workdir / "metrics.json"
        self.publish()
        argv = [
            *netns.exec_prefix(),
            sys.executable,
            "-m",
            "harness.metrics_api",
            "--bind",
            f"{netns.peer_ip}:{port}",
            "--cert",
            str(plane.pki.metrics_cert),
            "--key",
            str(plane.pki.metrics_key),
            "--data",
            str(self.data),
        ]
        self.process = start(
            "metrics-api", argv, plane.logs(), {"PYTHONPATH": str(Path(__file__).parents[1])}
        )
        plane.processes["metrics-api"] = self.process
        objects.register_metrics_api(plane, netns.peer_ip, port)

    def publish(
        self, pods: list[dict[str, Any]] | None = None, nodes: dict[str, str] | None = None
    ) -> None:
        tmp = self.data.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pods": pods or [], "nodes": nodes or {}}))
        tmp.replace(self.data)

    def current_pods(self) -> list[dict[str, Any]]:
        return list(json.loads(self.data.read_text()).get("pods", []))

    def current_nodes(self) -> dict[str, str]:
        return dict(json.loads(self.data.read_text()).get("nodes", {}))

    def wait_available(self, timeout: float = 60) -> None:
        from kubernetes import client

        from harness.controlplane import wait_until

        api = client.ApiregistrationV1Api(self.plane.api_client())

        def available() -> bool:
            status = api.read_api_service("v1beta1.metrics.k8s.io").status
            return any(
                c.type == "Available" and c.status == "True" for c in (status.conditions or [])
            )

        wait_until(available, timeout, "APIService v1beta1.metrics.k8s.io Available", self.process)
