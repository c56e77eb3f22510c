"""Start and stop a real control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, as built by ``e2e/controlplane/build.sh``, plus ``machine-catalog serve``.

Everything listens on 127.0.0.1 on free ports and writes into one work directory (logs, data,
certificates), so several control planes can run side by side and nothing touches the host.
Nodes are API objects with no kubelet behind them, as in upstream's scheduler_perf: the node
lifecycle controller is off, so they stay Ready without leases.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.netns import veth_addresses
from harness.pki import Pki, make_pki, write_kubeconfig

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "e2e" / "controlplane" / "build.sh"


def build_controlplane() -> Path:
    """The directory of the four binaries, building them first when they are missing."""
    env_dir = os.environ.get("MC_CONTROLPLANE_BIN")
    if env_dir:
        return Path(env_dir)
    out = subprocess.run(
        ["bash", str(BUILD)], stdout=subprocess.PIPE, text=True, check=True, timeout=3600
    )
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768-60999).

    Outgoing connections of every process on the machine take ephemeral ports; a listener
    that restarts on its port (the server, in the extender-outage test) could find one taken
    there in between. Below the range only listeners compete.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


@dataclass
class Process:
    """One started program, its log, and how to stop it."""

    name: str
    argv: Sequence[str]
    log: Path
    popen: subprocess.Popen
    env: dict[str, str] | None = None
    #: Stopped by the harness or a test (not to be revived).
    stopped: bool = False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its children that were waited for.

        gunicorn's workers are children of the master and are still running, so for
        ``serve`` the harness sums the whole process tree (see ``tree_cpu_seconds``).
        """
        return tree_cpu_seconds(self.popen.pid)

    def stop(self, timeout: float = 15) -> None:
        self.stopped = True
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # The whole process group (each program starts its own session): gunicorn's
            # master killed alone leaves a worker that is still finishing (graceful timeout
            # 25 s) holding the listening socket, and a restart on the same port then fails.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (gunicorn: the master and its workers)."""
    tree, stack = [], [pid]
    while stack:
        p = stack.pop()
        tree.append(p)
        stack.extend(_children(p))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat; after the ")" split the
        # state is fields[0], so they sit at 11..14.
        total += sum(int(x) for x in fields[11:15]) / ticks
    return total


def start(name: str, argv: Sequence[str], logs: Path, env: dict[str, str] | None = None) -> Process:
    log = logs / f"{name}.log"
    handle = log.open("ab")
    popen = subprocess.Popen(
        list(argv),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    handle.close()
    return Process(name, list(argv), log, popen, env)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: Process | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    tail = f"\n{proc.name} log:\n{proc.tail()}" if proc else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=3) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ optional controller-manager and schedulers)."""

    workdir: Path
    bin: Path
    pki: Pki
    kubeconfig: Path
    server: str
    etcd_url: str
    processes: dict[str, Process] = field(default_factory=dict)
    #: (host, peer) addresses of the veth the metrics.k8s.io test server will use.
    veth: tuple[str, str] = ("", "")

    # -- clients ---------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def api_client(self):
        """A kubernetes client ApiClient authenticated as the admin (system:masters)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    # -- components ------------------------------------------------------------------------

    def logs(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(exist_ok=True)
        return path

    def start_controller_manager(self) -> Process:
        """kube-controller-manager with every default controller but node lifecycle.

        Node lifecycle would taint our kubelet-less nodes unreachable. The HPA controller is
        sped up (sync every 2 s, no readiness grace periods) so the HPA test converges in
        seconds instead of minutes; the algorithm is unchanged.
        """
        proc = start(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--controllers=*,-node-lifecycle-controller",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca}",
                "--use-service-account-credentials=false",
                "--horizontal-pod-autoscaler-sync-period=2s",
                "--horizontal-pod-autoscaler-cpu-initialization-period=1s",
                "--horizontal-pod-autoscaler-initial-readiness-delay=1s",
                "--horizontal-pod-autoscaler-downscale-stabilization=0s",
                "--concurrent-replicaset-syncs=10",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "-v=1",
            ],
            self.logs(),
        )
        self.processes[proc.name] = proc
        return proc

    def scheduler_config(
        self, extender_url: str | None, *, name: str, base: dict | None = None
    ) -> Path:
        """The project's KubeSchedulerConfiguration, changed only where a test cluster must.

        ``base`` defaults to ``manifests/components/scheduler-extender`` (every pod through
        the extender, so the suite exercises its verbs; the shipped base configuration is
        tested on its own): the extender URL points at the local server, the CA at the
        harness's file, and the kubeconfig at the admin's.
        Without ``extender_url`` the extenders are removed: the default scheduler.
        """
        config = base or yaml.safe_load(
            (
                REPO / "manifests" / "components" / "scheduler-extender" / "scheduler-config.yaml"
            ).read_text()
        )
        config = dict(config)
        config["clientConnection"] = {
            **config.get("clientConnection", {}),
            "kubeconfig": str(self.kubeconfig),
            "qps": 500,
            "burst": 1000,
        }
        if extender_url is None:
            config.pop("extenders", None)
            config["profiles"] = [{"schedulerName": "default-scheduler"}]
            config["leaderElection"] = {"leaderElect": False}
        else:
            extenders = []
            for ext in config.get("extenders") or []:  # the in-tree components have none
                ext = dict(ext)
                ext["urlPrefix"] = extender_url
                ext["tlsConfig"] = {**ext.get("tlsConfig", {}), "caFile": str(self.pki.ca)}
                extenders.append(ext)
            if extenders:
                config["extenders"] = extenders
        path = self.workdir / f"{name}-config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start_scheduler(self, name: str, config: Path) -> Process:
        proc = start(
            name,
            [
                str(self.bin / "kube-scheduler"),
                f"--config={config}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "-v=1",
            ],
            self.logs(),
        )
        self.processes[name] = proc
        return proc

    @contextlib.contextmanager
    def scheduler_running(self, name: str, config: Path) -> Iterator[Process]:
        """Run the scheduler ``name`` with another configuration file for a while, then
        with its own again (one kube-scheduler per profile name at a time: two would race
        to bind the same pods)."""
        old = self.processes[name]
        old.stop()
        proc = self.start_scheduler(name, config)
        try:
            yield proc
        finally:
            proc.stop()
            self.processes[name] = start(name, old.argv, self.logs(), old.env)

    def restart(self, name: str) -> Process:
        """Stop one component and start it again with the same arguments and log."""
        old = self.processes[name]
        old.stop()
        proc = start(name, old.argv, self.logs(), old.env)
        self.processes[name] = proc
        if name == "kube-apiserver":
            ctx = self.ssl_context()
            wait_until(lambda: https_ok(f"{self.server}/readyz", ctx), 120, "ready", proc)
        return proc

    def revive(self) -> list[str]:
        """Restart every component that exited on its own, as a kubelet restarts a crashed
        container: kube-scheduler exits by design when it loses its leader lease, which an
        API server restart (test_cache) can cause. Returns the names restarted."""
        dead = [n for n, p in self.processes.items() if not p.alive() and not p.stopped]
        for name in dead:
            self.restart(name)
        return dead

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision (its JSON gateway); returns the revision.

        Every resourceVersion before it is gone: a watch resumed from one gets 410 Gone.
        """
        import json

        def call(path: str, body: dict) -> dict:
            req = urllib.request.Request(
                self.etcd_url + path,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        revision = int(call("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        self.processes.clear()


def start_control_plane(workdir: Path, binaries: Path, attempts: int = 3) -> ControlPlane:
    """etcd and kube-apiserver, up and ready; the caller adds the rest.

    Ports are picked free and then bound by the child a moment later; on a busy machine
    another process can take one in between, so a start that fails to bind is retried on
    new ports.
    """
    for attempt in range(attempts):
        try:
            return _start_control_plane(workdir, binaries)
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_control_plane(workdir: Path, binaries: Path) -> ControlPlane:
    workdir.mkdir(parents=True, exist_ok=True)
    # Where the metrics.k8s.io test server listens: inside a network namespace, on a veth
    # (harness.netns); its certificate carries the address from the start.
    veth = veth_addresses()
    pki = make_pki(workdir / "pki", metrics_ip=veth[1])
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    data = workdir / "etcd"
    shutil.rmtree(data, ignore_errors=True)
    etcd = start(
        "etcd",
        [
            str(binaries / "etcd"),
            f"--data-dir={data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            # A throwaway test store: fsync only costs time here.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
        logs,
    )
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", server, pki)
    plane = ControlPlane(workdir, binaries, pki, kubeconfig, server, etcd_url, {"etcd": etcd}, veth)
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{etcd_url}/health", timeout=2).status == 200,
            30,
            "etcd healthy",
            etcd,
        )
        apiserver = start(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--authorization-mode=Node,RBAC",
                # The aggregation layer, for the metrics.k8s.io test server (HPA test).
                f"--requestheader-client-ca-file={pki.front_proxy_ca}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_cert}",
                f"--proxy-client-key-file={pki.front_proxy_key}",
                # Route aggregated APIs to an endpoint address, not the Service's cluster IP
                # (nothing here implements Service IPs).
                "--enable-aggregator-routing=true",
                # The kubernetes Service's endpoint would be 127.0.0.1, which endpoint
                # validation refuses; nothing in these tests reaches the API by that Service.
                "--endpoint-reconciler-type=none",
                "--max-requests-inflight=2000",
                "--max-mutating-requests-inflight=1000",
                "-v=1",
            ],
            logs,
        )
        plane.processes["kube-apiserver"] = apiserver
        ctx = plane.ssl_context()
        wait_until(
            lambda: https_ok(f"{server}/readyz", ctx), 120, "kube-apiserver ready", apiserver
        )

    except BaseException:
        plane.stop()
        raise
    return plane


@contextlib.contextmanager
def running(workdir: Path, binaries: Path) -> Iterator[ControlPlane]:
    plane = start_control_plane(workdir, binaries)
    try:
        yield plane
    finally:
        plane.stop()
