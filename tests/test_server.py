"""``extender.server.serve``: configuration, runtimes, and real gunicorn processes on loopback.

The process tests start ``serve`` in a subprocess on ``127.0.0.1:0`` (gunicorn logs the
port it got), wait for ``/readyz`` under a deadline, talk HTTP/1.1 to it the way
kube-scheduler does (one keep-alive connection, JSON bodies), and stop it with SIGTERM,
checking that it exits cleanly and removes its temporary directories.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.helpers import (
    DEADLINE,
    EKS,
    GKE,
    KARPENTER,
    METAL,
    fixture_nodes,
    ready,
    scheduler_pod,
    wait_until,
    write_snapshot,
)
from support.helpers import serve as serve_process

from extender.server.app import create_app
from extender.server.master import _ssl_context, gunicorn_options
from extender.server.serve import (
    ServeConfig,
    ServeError,
    build_runtime,
    cache_source,
    preflight,
    shutdown_runtime,
)
from machine_catalog.loading import load_catalog

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: serve-test}
spec:
  baseline: base
  families:
    - {name: base, scuPerCore: 1.0, instanceTypes: [n2-standard-8]}
    - {name: m6i, scuPerCore: 1.18, instanceTypes: [m6i.2xlarge]}
    - name: spr
      scuPerCore: 1.35
      nodeSelector:
        matchLabels: {feature.node.kubernetes.io/cpu-model.vendor_id: Intel}
"""


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A catalog and a ``kubectl get nodes,pods -A -o json`` style snapshot."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    snapshot = write_snapshot(tmp_path / "snapshot.json")
    return catalog, snapshot


# -- configuration --------------------------------------------------------------------------


def test_serve_config_refuses_half_tls_and_nonsense() -> None:
    with pytest.raises(ServeError, match="certfile and keyfile"):
        ServeConfig(certfile="/x.crt")
    with pytest.raises(ServeError, match="threads"):
        ServeConfig(threads=0)
    with pytest.raises(ServeError, match="max_body"):
        ServeConfig(max_body=0)
    with pytest.raises(ServeError, match="log_level"):
        ServeConfig(log_level="loud")
    assert ServeConfig(max_body=None).settings.max_body > 0  # None: the default


def test_cache_source_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    both = ServeConfig(snapshot="s.json", kubeconfig="k", in_cluster=True)
    assert cache_source(both).kind == "snapshot"
    assert cache_source(ServeConfig(kubeconfig="k", in_cluster=True)).path == "k"
    assert cache_source(ServeConfig(in_cluster=True)).in_cluster
    demo = cache_source(ServeConfig())
    assert demo.kind == "snapshot" and demo.path.endswith("demo-snapshot.json")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert cache_source(ServeConfig()).in_cluster
    assert cache_source(ServeConfig(snapshot="s.json")).kind == "snapshot"


def test_gunicorn_options_and_tls_floor() -> None:
    options = gunicorn_options(ServeConfig(threads=2, certfile="c", keyfile="k"))
    assert options["worker_class"] == "extender.server.worker.ThreadWorker"
    assert (options["workers"], options["threads"]) == (1, 2)  # one process owns the state
    assert options["keepalive"] > 0 and options["accesslog"] is None
    assert (options["certfile"], options["keyfile"]) == ("c", "k")
    context = _ssl_context(None, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert gunicorn_options(ServeConfig(access_log=True))["accesslog"] == "-"
    assert "certfile" not in gunicorn_options(ServeConfig())


def test_build_runtime_serves_a_snapshot_and_follows_the_catalog_file(tmp_path: Path) -> None:
    catalog, snapshot = write_inputs(tmp_path)
    config = ServeConfig(
        catalog=str(catalog),
        snapshot=str(snapshot),
        state_dir=str(tmp_path / "state"),
        reload_interval=0.05,
    )
    runtime = build_runtime(config)
    try:
        client = create_app(runtime).test_client()
        assert client.get("/readyz").status_code == 200
        body = orjson.dumps({"Pod": scheduler_pod("1"), "NodeNames": [GKE, KARPENTER]})
        assert client.post("/scheduler/filter", data=body).get_json()["NodeNames"] == [GKE]
        # The watcher thread picks up a catalog change and the cache re-matches nodes.
        catalog.write_text(
            CATALOG + "    - {name: graviton, scuPerCore: 1.2, instanceTypes: [m7g.4xlarge]}\n"
        )
        deadline = time.monotonic() + 10
        # Answers come from the cache's catalog, which the reload listener swaps just after
        # the source's: wait for that one.
        while runtime.cluster.catalog.by_name.get("graviton") is None:
            assert time.monotonic() < deadline, "catalog change not picked up"
            time.sleep(0.02)
        result = client.post("/scheduler/filter", data=body).get_json()
        assert result["NodeNames"] == [GKE, KARPENTER]
        assert (tmp_path / "state").is_dir()  # the last good catalog is persisted
    finally:
        shutdown_runtime(runtime)
    assert runtime.catalogs._thread is None  # stopped


def test_build_runtime_watches_an_api_server(tmp_path: Path) -> None:
    import yaml
    from support.fakeapi import FakeApiServer, make_node, make_pod

    catalog, _ = write_inputs(tmp_path)
    with FakeApiServer() as fake:
        fake.add("nodes", make_node("gke-1", cpu="8", instance_type="n2-standard-8"))
        fake.add("pods", make_pod("busy", cpu="7", node="gke-1"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
                    "users": [{"name": "t", "user": {"token": "x"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "t"}}],
                    "current-context": "fake",
                }
            )
        )
        config = ServeConfig(catalog=str(catalog), kubeconfig=str(kubeconfig))
        preflight(config)  # the master's check accepts the kubeconfig
        runtime = build_runtime(config)
        try:
            client = create_app(runtime).test_client()
            deadline = time.monotonic() + DEADLINE
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, client.get("/readyz").get_json()
                time.sleep(0.02)
            body = orjson.dumps({"Pod": scheduler_pod("2"), "NodeNames": ["gke-1", "gke-2"]})
            result = client.post("/scheduler/filter", data=body).get_json()
            assert result["FailedNodes"] == {}  # every rejection is unresolvable
            unresolvable = result["FailedAndUnresolvableNodes"]
            assert set(unresolvable) == {"gke-1", "gke-2"}  # gke-1: 1000m free of 8000m
            assert "not in the extender's cluster cache" in unresolvable["gke-2"]
            # A node added to the cluster reaches the cache through the watch.
            fake.add("nodes", make_node("gke-2", cpu="8", instance_type="n2-standard-8"))
            while client.post("/scheduler/filter", data=body).get_json()["NodeNames"] != ["gke-2"]:
                assert time.monotonic() < deadline, "watch event never reached the cache"
                time.sleep(0.02)
        finally:
            shutdown_runtime(runtime)


def test_preflight_reports_every_error_or_falls_back_to_the_last_good(tmp_path: Path) -> None:
    catalog, snapshot = write_inputs(tmp_path)
    state = tmp_path / "state"
    config = ServeConfig(catalog=str(catalog), snapshot=str(snapshot), state_dir=str(state))
    good = preflight(config).current
    catalog.write_text(
        CATALOG.replace("scuPerCore: 1.18", "scuPerCore: -1").replace(
            "baseline: base", "baseline: nope"
        )
    )
    no_state = ServeConfig(catalog=str(catalog), snapshot=str(snapshot))
    with pytest.raises(ServeError) as excinfo:
        preflight(no_state)
    message = str(excinfo.value)
    assert "spec.families[1].scuPerCore" in message
    assert "spec.baseline" in message
    # With a last good catalog in the state directory, the server still starts on it.
    assert preflight(config).current.hash == good.hash
    with pytest.raises(ServeError, match=r"missing\.json: cannot read"):
        preflight(
            ServeConfig(
                catalog=str(tmp_path / "state" / "last-good-catalog.json"),
                snapshot=str(tmp_path / "missing.json"),
            )
        )


# -- real gunicorn --------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path
    tls: ssl.SSLContext | None = None

    def connection(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.tls)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or self.connection()
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise


def start_server(tmp_path: Path, env: dict[str, str] | None = None, **config: Any) -> Server:
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    script = (
        "import json, sys\n"
        "from extender.server.serve import ServeConfig, serve\n"
        "sys.exit(serve(ServeConfig(**json.loads(sys.argv[1]))))\n"
    )
    config.setdefault("bind", "127.0.0.1:0")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + DEADLINE
    port = None
    while port is None:
        found = re.search(rb"Listening at: https?://127\.0\.0\.1:(\d+)", log.read_bytes())
        if found:
            port = int(found.group(1))
        elif proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start:\n{log.read_text()}")
        else:
            time.sleep(0.05)
    return Server(proc, port, log)


def wait_ready(server: Server) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            status, body = server.request("GET", "/readyz")
            if status == 200:
                return orjson.loads(body)
        except OSError:
            pass
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise AssertionError(f"server not ready:\n{server.log.read_text()}")
        time.sleep(0.05)


@pytest.fixture
def one_replica(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    catalog, snapshot = write_inputs(tmp_path)
    server = start_server(
        tmp_path,
        catalog=str(catalog),
        snapshot=str(snapshot),
        threads=2,
        max_body=256 * 1024,
        reload_interval=0.1,
        state_dir=str(tmp_path / "state"),
    )
    try:
        yield server, catalog
    finally:
        server.stop()


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def worker_pids(server: Server, want: int) -> set[int]:
    """Worker pids seen on fresh connections until ``want`` distinct ones answered."""
    pids: set[int] = set()
    deadline = time.monotonic() + DEADLINE
    while len(pids) < want:
        assert time.monotonic() < deadline, f"only workers {pids} answered"
        status, body = server.request("GET", "/readyz")
        if status == 200:
            pids.add(orjson.loads(body)["worker"]["pid"])
    return pids


@pytest.mark.slow
def test_gunicorn_one_process_end_to_end(one_replica: tuple[Server, Path]) -> None:
    server, catalog_path = one_replica
    ready = wait_ready(server)
    expected = load_catalog(catalog_path)
    assert ready["catalog"]["hash"] == expected.hash
    assert ready["cache"]["nodes"] == 6 and ready["cache"]["source"].startswith("snapshot")
    startup = server.log.read_text()
    assert re.search(
        r"serving on 127\.0\.0\.1:0: one process x 2 threads, tls off, catalog "
        + re.escape(expected.version),
        startup,
    ), startup

    # kube-scheduler keeps one connection open and POSTs on it.
    conn = server.connection()
    names = [EKS, KARPENTER, GKE, METAL]
    filters = 0
    for family in (None, "m6i"):
        body = orjson.dumps({"Pod": scheduler_pod("2", family), "Nodes": None, "NodeNames": names})
        status, raw = server.request("POST", "/scheduler/filter", body, conn)
        filters += 1
        assert status == 200
        result = orjson.loads(raw)
        assert result["Nodes"] is None and result["Error"] == ""
        if family is None:
            assert result["NodeNames"] == [GKE, METAL]
            assert result["FailedNodes"] == {}
            assert set(result["FailedAndUnresolvableNodes"]) == {EKS, KARPENTER}
        else:
            assert result["NodeNames"] == []
            assert set(result["FailedAndUnresolvableNodes"]) == {EKS, KARPENTER, GKE, METAL}

    full = [n for n in fixture_nodes() if n["metadata"]["name"] in (GKE, METAL, KARPENTER)]
    body = orjson.dumps(
        {"Pod": scheduler_pod("1"), "Nodes": {"metadata": {}, "items": full}, "NodeNames": None}
    )
    status, raw = server.request("POST", "/scheduler/filter", body, conn)
    filters += 1
    result = orjson.loads(raw)
    assert status == 200 and result["NodeNames"] is None
    assert result["Nodes"]["items"] == [n for n in full if n["metadata"]["name"] != KARPENTER]

    body = orjson.dumps({"Pod": scheduler_pod("2"), "Nodes": None, "NodeNames": [GKE, METAL]})
    status, raw = server.request("POST", "/scheduler/prioritize", body, conn)
    # floor(10 * (7910 - 2000) / 7910) = 7; floor(10 * (111000 - 2000) / 111000) = 9
    assert orjson.loads(raw) == [{"Host": GKE, "Score": 7}, {"Host": METAL, "Score": 9}]

    status, raw = server.request("POST", "/scheduler/filter", b'{"Pod": 1}', conn)
    filters += 1
    assert status == 400 and "error" in orjson.loads(raw)
    conn.close()

    # Over the limit: refused from the Content-Length, and the server stays up.
    huge = orjson.dumps(
        {"Pod": scheduler_pod("1"), "NodeNames": [f"node-{i:06d}" for i in range(30000)]}
    )
    assert len(huge) > 256 * 1024
    status, raw = server.request("POST", "/scheduler/filter", huge)
    assert status == 413 and b"262144 bytes" in raw

    # One process answers every connection, and its scrape counts every request.
    pids = worker_pids(server, 1)
    for _ in range(3):
        conn = server.connection()
        status, raw = server.request("GET", "/metrics", conn=conn)
        assert orjson.loads(server.request("GET", "/readyz", conn=conn)[1])["worker"]["pid"] in pids
        conn.close()
        assert status == 200
        samples = metric_samples(raw.decode())
        ok = samples[
            (
                "machine_catalog_http_requests_total",
                (("code", "200"), ("route", "/scheduler/filter")),
            )
        ]
        assert ok == filters - 1  # the 400 is counted apart
        assert (
            samples[
                (
                    "machine_catalog_http_requests_total",
                    (("code", "413"), ("route", "/scheduler/filter")),
                )
            ]
            == 1
        )
        assert (
            samples[("machine_catalog_filter_rejections_total", (("reason", "family_mismatch"),))]
            == 2
        )
        assert (
            samples[
                ("machine_catalog_catalog_info", (("hash", expected.hash), ("name", "serve-test")))
            ]
            == 1
        )
        assert samples[("machine_catalog_cache_nodes", ())] == 6

    # A worker that dies and restarts while the catalog file is invalid comes back on the
    # last good catalog (its counters start afresh, as any restarted process's do).
    catalog_path.write_text(CATALOG.replace("scuPerCore: 1.18", "scuPerCore: 0"))
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline, server.log.read_text()
        fresh = worker_pids(server, 1) - pids
        if fresh:
            break
    newcomer_ready = None
    while newcomer_ready is None:
        assert time.monotonic() < deadline, server.log.read_text()
        status, raw = server.request("GET", "/readyz")
        detail = orjson.loads(raw)
        if detail["worker"]["pid"] in fresh:
            newcomer_ready = (status, detail)
    status, detail = newcomer_ready
    assert status == 200
    assert detail["catalog"]["hash"] == expected.hash
    assert "spec.families[1].scuPerCore" in " ".join(detail["catalog"]["lastReloadError"]["errors"])
    _, raw = server.request("GET", "/metrics")
    samples = metric_samples(raw.decode())
    assert samples[("machine_catalog_catalog_last_reload_success", ())] == 0

    assert server.stop() == 0
    assert "Traceback" not in server.log.read_text()


#: Shared objects only the application loads: numpy's core and pydantic's validator.
APP_LIBRARIES = ("_multiarray_umath", "pydantic_core")


def mapped(pid: int, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` the process ``pid`` has mapped (its /proc/PID/maps)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in names if name in maps}


@pytest.mark.slow
def test_the_master_holds_none_of_the_applications_memory(tmp_path: Path) -> None:
    """``serve`` validates with the whole application imported, then execs the master: the
    master's process (same pid) maps neither numpy nor pydantic, the worker maps both, and
    the master's RSS is a fraction of the worker's."""
    catalog, snapshot = write_inputs(tmp_path)
    served = start_server(tmp_path, catalog=str(catalog), snapshot=str(snapshot))
    try:
        worker = worker_pids(served, 1).pop()
        assert mapped(served.proc.pid, APP_LIBRARIES) == set()
        assert mapped(worker, APP_LIBRARIES) == set(APP_LIBRARIES)

        def rss_kb(pid: int) -> int:
            status = Path(f"/proc/{pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

        assert rss_kb(served.proc.pid) < rss_kb(worker) / 2
    finally:
        assert served.stop() == 0
    assert "Traceback" not in served.log.read_text()


def test_the_master_module_imports_gunicorn_and_the_standard_library_only() -> None:
    code = (
        "import sys, extender.server.master, extender.server.worker; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.replace("'", '"')))
    assert loaded.isdisjoint({"kubernetes", "numpy", "pydantic", "flask", "yaml", "orjson"})
    assert loaded.isdisjoint({"machine_catalog", "machine_catalog_cli"})


@pytest.mark.slow
def test_gunicorn_refuses_an_invalid_catalog_at_start(tmp_path: Path) -> None:
    catalog, snapshot = write_inputs(tmp_path)
    catalog.write_text(CATALOG.replace("baseline: base", "baseline: missing"))
    script = (
        "import json, sys\n"
        "from extender.server.serve import ServeConfig, serve\n"
        "sys.exit(serve(ServeConfig(**json.loads(sys.argv[1]))))\n"
    )
    config = {"catalog": str(catalog), "snapshot": str(snapshot), "bind": "127.0.0.1:0"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 1
    assert "spec.baseline" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Listening at" not in done.stderr


@pytest.mark.slow
def test_gunicorn_tls_serves_tls12_or_newer_only(tmp_path: Path) -> None:
    from machine_catalog.certs import issue_serving_cert, make_ca

    catalog, snapshot = write_inputs(tmp_path)
    ca = make_ca()
    leaf = issue_serving_cert(ca.cert_pem, ca.key_pem, ["localhost"], ip_addresses=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    server = start_server(
        tmp_path,
        catalog=str(catalog),
        snapshot=str(snapshot),
        certfile=str(tmp_path / "tls.crt"),
        keyfile=str(tmp_path / "tls.key"),
    )
    try:
        trusting = ssl.create_default_context(cadata=ca.cert_pem.decode())
        server.tls = trusting
        assert wait_ready(server)["status"] == "ready"
        conn = server.connection()
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.close()

        # A client that speaks only TLS 1.0/1.1 (allowed by its own OpenSSL at level 0).
        old = ssl.create_default_context(cadata=ca.cert_pem.decode())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with contextlib.suppress(ssl.SSLError):
            old.set_ciphers("ALL:@SECLEVEL=0")
        server.tls = old
        with pytest.raises((ssl.SSLError, ConnectionError)):
            server.request("GET", "/healthz")
    finally:
        assert server.stop() == 0


def test_a_worker_leaving_keeps_the_servers_directories(tmp_path: Path) -> None:
    """A worker exits by raising SystemExit through ``serve()``'s frame (gunicorn forks
    inside ``run()``); its cleanup must not delete the metrics directory and the last good
    catalog that the master and the next worker still use."""
    catalog, snapshot = write_inputs(tmp_path)
    state = tmp_path / "state"
    server = serve_process(
        tmp_path, "--catalog", str(catalog), "--snapshot", str(snapshot), "--state-dir", str(state)
    )
    try:
        ready(server)
        assert (state / "last-good-catalog.json").exists()
        leaving = server.worker_pids()[0]
        os.kill(leaving, signal.SIGTERM)  # a graceful worker exit; gunicorn starts another
        wait_until(lambda: leaving not in server.worker_pids(), "the worker left")
        ready(server)
        assert (state / "last-good-catalog.json").exists()
        assert server.metrics()
    finally:
        assert server.stop() == 0, server.log_text()


def test_a_client_stalling_mid_body_frees_its_thread_after_the_body_timeout(
    tmp_path: Path,
) -> None:
    """Two stalled bodies hold both threads of the only worker; --body-timeout frees them."""
    catalog, snapshot = write_inputs(tmp_path)
    server = serve_process(
        tmp_path,
        *("--catalog", str(catalog), "--snapshot", str(snapshot)),
        *("--threads", "2", "--body-timeout", "0.5"),
    )
    stalled = []
    try:
        ready(server)
        head = (
            b"POST /scheduler/filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"Pod": '
        )
        for _ in range(2):
            stalled.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            stalled[-1].sendall(head)
        started = time.monotonic()
        assert server.request("GET", "/healthz", timeout=10).status == 200
        assert time.monotonic() - started < 5
        for sock in stalled:
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            assert reply.status == 400
            assert reply.read() == (
                b'{"error":"request body incomplete: the client stopped sending it"}'
            )
    finally:
        for sock in stalled:
            sock.close()
        assert server.stop() == 0, server.log_text()
