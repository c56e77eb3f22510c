"""Shared by the hardening tests: a real ``machine-catalog serve`` on loopback, and what it serves.

The server is started through the CLI exactly as the Deployment runs it (``python -m
machine_catalog_cli serve ...``, gunicorn in-process, ``--bind 127.0.0.1:0``), its output goes to
a log file the tests read (for the port, and to check nothing leaked into it), and it is
stopped with SIGTERM under a deadline. Worker pids come from ``/proc/<master>/task/*/children``
so a test can kill one or read its RSS without asking the server.

The inputs: a small catalog in two versions that give *different, recognisable* answers for
the same request (version B retires the m6i family and switches scoring to binpack), and a
snapshot of the six real-world fixture nodes plus one busy pod, so the expected answers can
be worked out by hand (see :data:`FILTER_NAMES`).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DEADLINE = 30.0  # seconds for a server to come up or go down; generous for a loaded CI box

EKS = "ip-10-0-1-23.ec2.internal"  # m6i.2xlarge, 7910m allocatable, 6000m requested (busy pod)
KARPENTER = "ip-10-0-7-201.ec2.internal"  # m7g.4xlarge: no family in these catalogs
GKE = "gke-prod-pool-n2-8f7c2a1b-x7k2"  # n2-standard-8, 7910m: family base
AKS = "aks-d8sv5-31415926-vmss000004"  # Standard_D8s_v5: no family
TKE = "10.0.16.42"  # S5.2XLARGE16: no family
METAL = "rack12-node07"  # NFD vendor Intel, 111 cores: family spr (by nodeSelector)
FILTER_NAMES = [EKS, KARPENTER, GKE, METAL, AKS, TKE]

CATALOG_A = """\
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: hardening}
spec:
  baseline: base
  unknownNodes: reject
  scoring: {strategy: balanced}
  families:
    - {name: base, scuPerCore: 1.0, instanceTypes: [n2-standard-8]}
    - {name: m6i, scuPerCore: 1.18, schedulable: true, instanceTypes: [m6i.2xlarge]}
    - name: spr
      scuPerCore: 1.35
      nodeSelector:
        matchLabels: {feature.node.kubernetes.io/cpu-model.vendor_id: Intel}
"""
#: Every route answers differently than A, in more than one place, so an answer mixing
#: the two versions cannot pass for either: m6i retired (EKS fails), Standard_D8s_v5 joins
#: base (AKS passes), binpack scoring (prioritize), spr at 1.4 (the webhook's CPU values).
CATALOG_B = (
    CATALOG_A.replace("schedulable: true", "schedulable: false")
    .replace("instanceTypes: [n2-standard-8]", "instanceTypes: [n2-standard-8, Standard_D8s_v5]")
    .replace("strategy: balanced", "strategy: binpack")
    .replace("scuPerCore: 1.35", "scuPerCore: 1.4")
)
#: Fails validation at a known path.
CATALOG_INVALID = CATALOG_A.replace("scuPerCore: 1.18", "scuPerCore: -2")
INVALID_PATH = "spec.families[1].scuPerCore"


def fixture_nodes() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "nodes-real-world.json").read_text())["items"]


def snapshot_objects() -> list[dict[str, Any]]:
    """The six fixture nodes and a pod requesting 6 CPU on the EKS node, as ``kubectl`` lists."""
    busy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "busy", "namespace": "team-a", "uid": "uid-busy"},
        "spec": {
            "nodeName": EKS,
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "6"}}}],
        },
        "status": {"phase": "Running"},
    }
    nodes = [{"apiVersion": "v1", "kind": "Node", **n} for n in fixture_nodes()]
    return [*nodes, busy]


def write_snapshot(path: Path) -> Path:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": snapshot_objects()}))
    return path


def scheduler_pod(cpu: str = "1", family: str | None = None, **annotations: str) -> dict:
    """A pending pod as kube-scheduler sends it to the extender."""
    meta: dict[str, Any] = {"name": "web-1", "namespace": "team-a", "uid": "uid-web-1"}
    annotations = dict(annotations)
    if family is not None:
        annotations["machine-catalog.io/family"] = family
    if annotations:
        meta["annotations"] = annotations
    return {
        "metadata": meta,
        "spec": {
            "schedulerName": "machine-catalog",
            "containers": [
                {"name": "app", "image": "nginx:1.27", "resources": {"requests": {"cpu": cpu}}}
            ],
        },
        "status": {"phase": "Pending"},
    }


def extender_args(pod: Mapping[str, Any], names: Sequence[str] = FILTER_NAMES) -> bytes:
    return orjson.dumps({"Pod": pod, "NodeNames": list(names), "Nodes": None})


def admission_review(pod: Mapping[str, Any] | None = None, uid: str = "uid-1") -> dict:
    """The real ReplicaSet pod review of the fixtures, with ``pod`` as the object if given."""
    review = json.loads((FIXTURES / "admission-review-replicaset-pod.json").read_text())
    review["request"]["uid"] = uid
    if pod is not None:
        review["request"]["object"] = pod
    return review


def admission_pod() -> dict[str, Any]:
    return admission_review()["request"]["object"]


# -- a real server ----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Served:
    """One ``machine-catalog serve`` process (the gunicorn master) on 127.0.0.1."""

    proc: subprocess.Popen
    port: int
    log: Path
    args: list[str] = field(default_factory=list)

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        """One request; on a fresh connection (closed after) unless ``conn`` is given."""
        own = conn is None
        conn = conn or self.connection(timeout)
        try:
            sent = dict(headers or {})
            if body is not None:
                sent.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            if own:
                conn.close()

    def post(self, path: str, body: bytes, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def readyz(self, conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
        reply = self.request("GET", "/readyz", conn=conn)
        return reply.status, reply.json()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        reply = self.request("GET", "/metrics")
        assert reply.status == 200, reply.body
        out = {}
        for family in text_string_to_metric_families(reply.body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def worker_pids(self) -> list[int]:
        """The gunicorn workers alive now (children of the master), from /proc."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue  # a thread that ended meanwhile
        return sorted(set(pids))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, and the exit code; kills (and fails) if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"server did not stop on SIGTERM:\n{self.log_text()}") from None


def serve(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (sys.executable, "-m", "machine_catalog_cli"),
) -> Served:
    """``machine-catalog serve --bind 127.0.0.1:0 *args``; returns once it listens.

    ``program`` is how the command is invoked (an installed console script, say).
    """
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    command = [*program, "serve", "--bind", "127.0.0.1:0", *args]
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    deadline = time.monotonic() + DEADLINE
    while True:
        found = re.search(rb"Listening at: https?://127\.0\.0\.1:(\d+)", log.read_bytes())
        if found:
            return Served(proc, int(found.group(1)), log, command)
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            raise AssertionError(f"server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails with ``what`` after ``timeout``."""
    began = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def ready(server: Served, timeout: float = DEADLINE) -> dict:
    """Poll /readyz until it answers 200; its detail."""
    seen: dict[str, dict] = {}

    def is_ready() -> bool:
        try:
            status, detail = server.readyz()
        except OSError:
            return False
        if status == 200:
            seen["detail"] = detail
        return status == 200

    wait_until(is_ready, f"server ready; log:\n{server.log_text()}", timeout)
    return seen["detail"]


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (VmRSS, in MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def has_no_traceback(text: str | bytes) -> bool:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "Traceback" not in text and 'File "' not in text


# -- bounded load -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request of a load run: what was sent, when, and how its answer was judged."""

    route: str
    sent: float  # time.monotonic()
    received: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    verdict: str  # the judge's label ("A", "B", "ok"), or "error: ..." / "unexpected: ..."


#: (route, body, judge) for one request (POST; GET when the body is None); the judge
#: labels the reply.
Pick = Callable[[Any], tuple[str, bytes | None, Callable[[Reply], str]]]


class Load:
    """Client threads sending requests to a server until stopped or ``max_requests``.

    Each thread keeps a keep-alive connection (as kube-scheduler and the API server do) and
    opens a new one every ``reconnect_every`` requests, so the load reaches every worker.
    A request that gets no answer within ``timeout`` seconds is recorded as an error: a
    deadlock shows up as errors and as threads that do not stop, never as a hung test.
    """

    def __init__(
        self,
        server: Served,
        pick: Pick,
        *,
        threads: int = 6,
        max_requests: int | None = None,
        timeout: float = 10.0,
        reconnect_every: int = 20,
        seed: int = 0,
    ) -> None:
        import random
        import threading

        self.server = server
        self.pick = pick
        self.timeout = timeout
        self.reconnect_every = reconnect_every
        self.max_requests = max_requests
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(seed * 1000 + i),), daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def count(self) -> int:
        return len(self.samples)

    def _run(self, rng: Any) -> None:
        conn = None
        sent_on_conn = 0
        while not self._stop.is_set():
            with self._lock:
                if self.max_requests is not None and len(self.samples) >= self.max_requests:
                    self._stop.set()
                    break
            if conn is None or sent_on_conn >= self.reconnect_every:
                if conn is not None:
                    conn.close()
                conn = self.server.connection(self.timeout)
                sent_on_conn = 0
            route, body, judge = self.pick(rng)
            began = time.monotonic()
            try:
                method = "GET" if body is None else "POST"
                reply = self.server.request(method, route, body, conn=conn)
                verdict = judge(reply)
                status = reply.status
                sent_on_conn += 1
            except Exception as exc:  # the load records failures; the test asserts on them
                verdict, status = f"error: {exc!r}", 0
                conn.close()
                conn = None
            with self._lock:
                self.samples.append(Sample(route, began, time.monotonic(), status, verdict))
        if conn is not None:
            conn.close()

    def wait(self, seconds: float) -> None:
        """Sleep while the load runs (returns early when ``max_requests`` is reached)."""
        self._stop.wait(seconds)

    def stop(self, timeout: float = 15.0) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        hung = [t.name for t in self._threads if t.is_alive()]
        assert not hung, f"client threads still waiting for an answer: {hung}"
        return list(self.samples)


def failures(samples: Sequence[Sample], allowed: Sequence[str]) -> list[Sample]:
    """Samples that are not a 200 judged as one of ``allowed``."""
    return [s for s in samples if s.status != 200 or s.verdict not in allowed]


def run_tool(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python tools/SCRIPT *args`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
