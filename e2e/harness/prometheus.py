"""A real Prometheus (Debian's ``prometheus`` package) run by the test, and a work exporter.

The package's own service is not used: each test run starts ``/usr/bin/prometheus`` on a
loopback port with a data directory and a configuration of its own, scraping every second
and evaluating rules every second, so a rule's expression is evaluated within seconds of
the data it reads. ``promtool`` from the same package checks rule files.

:class:`WorkExporter` is the loopback exporter the live ``calibrate --prometheus`` test
scrapes: per-pod ``http_requests_total`` counters that grow at a rate the test sets, so
``rate(...)`` over them is that rate exactly (the counters are linear in time).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import Process, free_port, start, wait_until

INSTALL_HINT = "apt-get install prometheus (Debian's package; .ci/run installs it)"
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "overlays" / "monitoring" / "prometheusrule.yaml"


def binary(name: str) -> str:
    """``prometheus`` or ``promtool`` on PATH; a clear error naming the install when absent."""
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def overlay_rules(directory: Path) -> Path:
    """The monitoring overlay's PrometheusRule ``spec`` as a plain Prometheus rules file."""
    rule = yaml.safe_load(RULES.read_text())
    path = directory / "machine-catalog.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


class Prometheus:
    """One Prometheus server; ``query``, ``rules`` and ``alerts`` are its HTTP API."""

    def __init__(self, process: Process, url: str) -> None:
        self.process = process
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``; an AssertionError with the body if not success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector result."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@contextmanager
def running(
    workdir: Path,
    logs: Path,
    scrape_configs: Sequence[Mapping[str, Any]],
    rule_files: Sequence[Path] = (),
) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1 with ``scrape_configs``; stopped (and its data kept in
    ``workdir`` for a post-mortem) on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": list(scrape_configs),
    }
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    check = promtool("check", "config", str(config_file))
    if check.returncode != 0:
        raise AssertionError(f"promtool check config:\n{check.stdout}{check.stderr}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        logs,
    )
    server = Prometheus(process, url)
    try:
        wait_until(lambda: _ready(url), 60, "Prometheus ready", process)
        yield server
    finally:
        process.stop()


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=3) as r:
        return r.status == 200


class WorkExporter:
    """``http_requests_total{namespace, pod}`` on 127.0.0.1: each counter is its rate times
    the seconds since the rate was set, so Prometheus's ``rate()`` returns the rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[tuple[str, str], tuple[float, float]] = {}  # -> (rate, since)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def set_rates(self, rates: Mapping[tuple[str, str], float]) -> None:
        now = time.time()
        with self._lock:
            self._rates = {key: (rate, now) for key, rate in rates.items()}

    def exposition(self) -> str:
        now = time.time()
        lines = [
            "# HELP http_requests_total Requests served.",
            "# TYPE http_requests_total counter",
        ]
        with self._lock:
            for (ns, pod), (rate, since) in sorted(self._rates.items()):
                lines.append(
                    f'http_requests_total{{namespace="{ns}",pod="{pod}"}} {rate * (now - since)}'
                )
        return "\n".join(lines) + "\n"

    def __enter__(self) -> WorkExporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
