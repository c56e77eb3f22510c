"""``machine-catalog serve --kubeconfig`` as the tests run it: TLS, a fixed port, restartable."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import (
    REPO,
    ControlPlane,
    Process,
    free_port,
    https_ok,
    process_tree,
    start,
    wait_until,
)

#: The extender's reason for a node its cache lacks (``extender/filtering.py``).
NOT_IN_CACHE = "not in the extender's cluster cache"


def deployment_args() -> list[str]:
    """``args`` of the server container in ``manifests/base/deployment.yaml``."""
    docs = yaml.safe_load_all((REPO / "manifests" / "base" / "deployment.yaml").read_text())
    for doc in docs:
        if doc and doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container.get("args", [])[:1] == ["serve"]:
                    return list(container["args"])
    raise LookupError("no serve container in manifests/base/deployment.yaml")


class Server:
    """One ``serve`` process; ``stop()`` and ``start()`` keep the same port (and URL), so the
    scheduler's extender URL and the webhook configuration stay valid across a restart."""

    def __init__(
        self,
        plane: ControlPlane,
        catalog: Path,
        kubeconfig: Path,
        *,
        extra: tuple[str, ...] = (),
        name: str = "machine-catalog",
        catalog_resource: str | None = None,
        family_choice: str | None = "most-free",
    ) -> None:
        self.plane = plane
        self.catalog = catalog
        self.kubeconfig = kubeconfig
        self.extra = extra
        self.name = name
        self.catalog_resource = catalog_resource
        self.family_choice = family_choice
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: Process | None = None
        self.context = ssl.create_default_context(cafile=str(plane.pki.ca))

    def argv(self) -> list[str]:
        """The Deployment's own ``serve`` arguments, with the cluster's paths swapped in.

        ``--in-cluster`` becomes ``--kubeconfig``; the catalog, certificate and bind address
        point at the harness's files and port; every other flag (threads, the
        scheduler name) is the manifest's, so the test runs what a cluster would.
        """
        swap = {
            "--catalog": str(self.catalog),
            "--bind": f"127.0.0.1:{self.port}",
            "--certfile": str(self.plane.pki.server_cert),
            "--keyfile": str(self.plane.pki.server_key),
            "--state-dir": str(self.plane.workdir / f"{self.name}-state"),
        }
        args: list[str] = []
        manifest = iter(deployment_args())
        for arg in manifest:
            if arg == "--in-cluster":
                args += ["--kubeconfig", str(self.kubeconfig)]
            elif arg == "--catalog-resource" and self.catalog_resource is None:
                # The session's catalog is a file the tests edit (replace_catalog); the
                # resource path runs in test_catalog_resource.py with catalog_resource set.
                next(manifest)
                args += ["--catalog", str(self.catalog)]
            elif arg == "--catalog-resource":
                next(manifest)
                args += [arg, self.catalog_resource]
            elif arg == "--family-choice" and self.family_choice is not None:
                # The session's tests assert the family the deterministic rule picks; the
                # manifests' `spread` (for two replicas) runs in test_replicas.py.
                next(manifest)
                args += [arg, self.family_choice]
            elif arg in swap:
                next(manifest)
                args += [arg, swap[arg]]
            else:
                args.append(arg)
        (self.plane.workdir / f"{self.name}-state").mkdir(exist_ok=True)
        # Count resized pods as the kube-scheduler under test does: 1.37 aggregates the
        # spec, allocated and actuated totals; 1.34 takes the max per container.
        oldest = os.environ.get("MC_KUBERNETES_VERSION", "").startswith("1.34")
        args += ["--resize-accounting", "per-container" if oldest else "aggregate"]
        return [sys.executable, "-m", "machine_catalog_cli", *args, *self.extra]

    def start(self, timeout: float = 60) -> Server:
        self.proc = start(self.name, self.argv(), self.plane.logs())
        self.plane.processes[self.name] = self.proc
        wait_until(
            lambda: https_ok(f"{self.url}/readyz", self.context), timeout, "ready", self.proc
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, context=self.context, timeout=10) as r:
                body = r.read()
                status = r.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        return status, json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, context=self.context, timeout=10) as r:
            return json.loads(r.read())

    def workers(self) -> set[int]:
        """Pids of the processes that answer requests: the one gunicorn worker that owns
        the replica's state (a set, so a worker restarted by the master is seen too)."""
        assert self.proc is not None
        master = self.proc.popen.pid
        return set(process_tree(master)[1:]) or {master}

    def every_worker(self, check: Callable[[dict[str, Any]], bool], timeout: float, what: str):
        """Ask ``/readyz`` until the serving process has answered with ``check`` true.

        ``/readyz`` names the process that answered (``worker.pid``), so a worker the master
        restarted meanwhile is asked too; this waits for the state instead of sleeping.
        """
        from harness.kube import eventually

        good: set[int] = set()

        def progress() -> set[int]:
            answer = self.readyz()
            pid = answer["worker"]["pid"]
            (good.add if check(answer) else good.discard)(pid)
            return good

        eventually(progress, lambda seen: seen >= self.workers(), timeout, what)

    def replace_catalog(self, text: str) -> None:
        """Replace the catalog file atomically (as a ConfigMap update does) and wait until
        every worker serves it: its ``/readyz`` shows a catalog hash other than the old one
        (the cache's catalog, which answers are computed from, swapped once every node is
        re-matched)."""
        before = self.readyz()["catalog"]["hash"]
        tmp = self.catalog.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.catalog)
        self.every_worker(lambda r: r["catalog"]["hash"] != before, 30, "catalog reloaded")

    def wait_for_nodes(self, names: Iterable[str], timeout: float = 30) -> None:
        """Until the server's cache holds these nodes: the webhook sizes a pod from what
        the cache holds, so a pod created right after its nodes would race the watch.

        Asked the way kube-scheduler asks, through ``/scheduler/filter``: a node the cache
        lacks fails with "not in the extender's cluster cache", whatever the pod. Twelve
        answers in a row without it leave no doubt while the watch is catching up.
        """
        from harness.kube import eventually, pod_manifest

        names = list(names)
        probe = pod_manifest("probe", "1m", annotations={"machine-catalog.io/family": "aws-m5"})
        probe["metadata"]["namespace"] = "probe"

        def cached() -> list[str]:
            missing: set[str] = set()
            for _ in range(12):
                result = self.post("/scheduler/filter", {"Pod": probe, "NodeNames": names})
                reasons = {
                    **(result.get("FailedNodes") or {}),
                    **(result.get("FailedAndUnresolvableNodes") or {}),
                }
                missing |= {n for n, why in reasons.items() if NOT_IN_CACHE in why}
            return sorted(missing)

        eventually(cached, lambda missing: not missing, timeout, f"nodes {names} in the cache")

    def admissions(self) -> dict[str, float]:
        """``machine_catalog_admissions_total`` by decision."""
        return {
            dict(labels)["decision"]: value
            for (name, labels), value in self.metrics().items()
            if name == "machine_catalog_admissions_total"
        }

    def readyz(self) -> dict[str, Any]:
        return self.get("/readyz")[1]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/metrics`` of the server, as {(sample name, sorted labels): value}."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.get("/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}: {text}")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
