"""Session fixtures: one control plane, one server, one scheduler, shared by every test.

Starting the control plane costs ~5 s, the server and scheduler a few more; tests share
them and keep to their own namespaces and node names so they do not see each other's pods.
Tests that stop a component restart it before they return (see ``restarted``).
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import objects
from harness.controlplane import ControlPlane, build_controlplane, running
from harness.kubelet import FakeKubelet
from harness.metrics_api import MetricsApi
from harness.netns import veth_namespace
from harness.server import Server


def pytest_report_header() -> str:
    version = os.environ.get("MC_KUBERNETES_VERSION") or "the newest (e2e/controlplane/go.mod)"
    return f"kubernetes: {version} (MC_KUBERNETES_VERSION)"


@pytest.fixture(scope="session")
def binaries() -> Path:
    """The control plane of ``MC_KUBERNETES_VERSION`` (build.sh reads it), built once."""
    return build_controlplane()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = os.environ.get("MC_E2E_WORKDIR")
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("controlplane")


@pytest.fixture(scope="session")
def plane(workdir: Path, binaries: Path) -> Iterator[ControlPlane]:
    with running(workdir, binaries) as plane:
        plane.start_controller_manager()
        objects.create_nodes(plane, objects.cluster_nodes())
        yield plane


@pytest.fixture(autouse=True)
def _components_running(plane: ControlPlane) -> None:
    """Before each test: anything that exited on its own is restarted, as a kubelet would."""
    restarted = plane.revive()
    if restarted:
        print(f"restarted after exiting: {', '.join(restarted)}")


@pytest.fixture(scope="session")
def api(plane: ControlPlane):
    from kubernetes import client

    return client.CoreV1Api(plane.api_client())


@pytest.fixture(scope="session")
def catalog(workdir: Path) -> Path:
    return objects.e2e_catalog(workdir)


@pytest.fixture(scope="session")
def server(plane: ControlPlane, catalog: Path) -> Iterator[Server]:
    """``machine-catalog serve --kubeconfig`` with the manifests' RBAC, the webhook installed."""
    srv = Server(plane, catalog, objects.server_kubeconfig(plane)).start()
    objects.install_webhook(plane, srv.url)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def scheduler(plane: ControlPlane, server: Server):
    """kube-scheduler with the project's KubeSchedulerConfiguration, extender -> ``server``."""
    config = plane.scheduler_config(server.url + "/scheduler", name="machine-catalog-scheduler")
    proc = plane.start_scheduler("machine-catalog-scheduler", config)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def default_scheduler(plane: ControlPlane):
    """The cluster's ordinary kube-scheduler, for pods that are not ours."""
    config = plane.scheduler_config(None, name="default-scheduler")
    proc = plane.start_scheduler("default-scheduler", config)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def metrics_api(plane: ControlPlane) -> Iterator[MetricsApi]:
    """A metrics.k8s.io server in a network namespace of the test's own, aggregated."""
    with veth_namespace(*plane.veth) as ns:
        metrics = MetricsApi(plane, ns)
        metrics.wait_available()
        yield metrics
        metrics.process.stop()


@pytest.fixture(scope="session")
def kubelet(plane: ControlPlane) -> Iterator[FakeKubelet]:
    k = FakeKubelet(plane.api_client()).start()
    yield k
    k.stop()


@pytest.fixture
def namespace(plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh opted-in namespace per test: its name, shortened, and a digest of its id."""
    node_id = request.node.nodeid
    short = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[5:40]
    digest = hashlib.sha1(node_id.encode()).hexdigest()[:8]
    return objects.opted_in_namespace(plane, f"t-{short.strip('-')}-{digest}")


@pytest.fixture(scope="session")
def ca_context(plane: ControlPlane) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(plane.pki.ca))


CATALOGS = ("machine-catalog.io", "v1alpha1", "machinecatalogs")


@pytest.fixture(scope="session")
def crd(plane: ControlPlane) -> str:
    """The MachineCatalog CustomResourceDefinition of manifests/base, established."""
    return objects.install_crd(plane)


@pytest.fixture
def served_catalog(plane: ControlPlane, crd: str, server: Server) -> Iterator[dict]:
    """The session server's catalog as a MachineCatalog, for the CLI to find (the server
    reads its file); deleted after the test, so the next one finds no stale resource."""
    import yaml
    from kubernetes import client

    document = yaml.safe_load(server.catalog.read_text())
    custom = client.CustomObjectsApi(plane.api_client())
    obj = custom.create_cluster_custom_object(*CATALOGS, document)
    yield obj
    custom.delete_cluster_custom_object(*CATALOGS, obj["metadata"]["name"])
