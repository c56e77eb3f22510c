"""The objects an end-to-end cluster holds: nodes, the catalog, the server's RBAC identity and
the project's webhook configuration, each made from the project's own files where one exists.

Nodes are API objects with labels and a status (capacity, allocatable, a Ready condition),
as upstream's scheduler_perf makes them: there is no kubelet. The real-world nodes come from
``tests/fixtures/nodes-real-world.json`` (six platforms' labels), the rest are synthetic
nodes of the shapes a test needs (baseline, retired, unknown, ambiguous, cordoned).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import REPO, ControlPlane

FIXTURE_NODES = REPO / "tests" / "fixtures" / "nodes-real-world.json"
DEFAULT_CATALOG = REPO / "machine_catalog" / "data" / "default-catalog.yaml"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
TWIN_LABEL = "e2e.machine-catalog.io/pool"
NAMESPACE = "machine-catalog-system"


def e2e_catalog(directory: Path, scoring: dict[str, Any] | None = None) -> Path:
    """The packaged default catalog, plus two families that select the same label (so a
    node carrying it is ambiguous) and one for a test of its own, optionally with other
    scoring settings."""
    catalog = yaml.safe_load(DEFAULT_CATALOG.read_text())
    # A family of its own for the loadAware ranking test, at 1.1 SCU per vCPU.
    catalog["spec"]["families"].append(
        {"name": "e2e-rank", "scuPerCore": 1.1, "instanceTypes": ["e2e-rank.2xlarge"]}
    )
    # Three families for the two-replica burst test (test_replicas.py), no other test's.
    for name, factor in (("e2e-burst-a", 1.0), ("e2e-burst-b", 1.25), ("e2e-burst-c", 1.5)):
        catalog["spec"]["families"].append(
            {"name": name, "scuPerCore": factor, "instanceTypes": [f"{name}.2xlarge"]}
        )
    # Whole cores against the room check (test_whole_cores.py) and a factor edited while
    # pods are pending (test_opted_in_changes.py): families no other test uses.
    for name, factor in (("e2e-whole-fast", 1.3), ("e2e-whole-base", 1.0), ("e2e-edit", 1.0)):
        catalog["spec"]["families"].append(
            {"name": name, "scuPerCore": factor, "instanceTypes": [f"{name}.2xlarge"]}
        )
    # Memory that only one family's nodes have (test_memory_fit.py) and a family whose only
    # node is deleted with pods bound to it (test_node_deleted.py): no other test's.
    for name, factor in (
        ("e2e-mem-compute", 1.3),
        ("e2e-mem-general", 1.1),
        ("e2e-gone", 1.0),
        ("e2e-stay", 1.25),
    ):
        catalog["spec"]["families"].append(
            {"name": name, "scuPerCore": factor, "instanceTypes": [f"{name}.2xlarge"]}
        )
    for name in ("e2e-twin-a", "e2e-twin-b"):
        catalog["spec"]["families"].append(
            {
                "name": name,
                "scuPerCore": 1.0,
                "nodeSelector": {"matchLabels": {TWIN_LABEL: "twin"}},
            }
        )
    if scoring is not None:
        catalog["spec"]["scoring"] = scoring
    path = directory / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return path


def node(
    name: str,
    labels: dict[str, str],
    cpu: str = "8",
    *,
    memory: str = "32Gi",
    pods: str = "110",
    unschedulable: bool = False,
) -> dict[str, Any]:
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **labels},
        },
        "spec": {"unschedulable": unschedulable} if unschedulable else {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "e2e node",
                }
            ],
        },
    }


def fixture_nodes() -> list[dict[str, Any]]:
    """The six real-world nodes, as the API server would accept them on create."""
    items = json.loads(FIXTURE_NODES.read_text())["items"]
    out = []
    for item in items:
        obj = copy.deepcopy(item)
        meta = obj["metadata"]
        obj["metadata"] = {
            "name": meta["name"],
            "labels": meta.get("labels", {}),
            "annotations": meta.get("annotations", {}),
        }
        obj["spec"].pop("podCIDR", None)
        obj["spec"].pop("podCIDRs", None)
        status = obj["status"]
        obj["status"] = {
            "capacity": status["capacity"],
            "allocatable": status["allocatable"],
            "conditions": [c for c in status["conditions"] if c["type"] == "Ready"],
            "nodeInfo": status.get("nodeInfo", {}),
        }
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", "Node")
        out.append(obj)
    return out


# The synthetic nodes every scheduling test can rely on: name -> (labels, cpu, cordoned).
SYNTHETIC = {
    "m5-a": ({INSTANCE_TYPE: "m5.2xlarge"}, "8", False),
    "m5-b": ({INSTANCE_TYPE: "m5.2xlarge"}, "8", False),
    "m4-retired": ({INSTANCE_TYPE: "m4.2xlarge"}, "8", False),
    "t3-unknown": ({INSTANCE_TYPE: "t3.medium"}, "2", False),
    "twin-ambiguous": ({TWIN_LABEL: "twin"}, "8", False),
    "m6i-cordoned": ({INSTANCE_TYPE: "m6i.2xlarge"}, "8", True),
}


def cluster_nodes() -> list[dict[str, Any]]:
    synthetic = [
        node(name, labels, cpu, unschedulable=cordoned)
        for name, (labels, cpu, cordoned) in SYNTHETIC.items()
    ]
    return fixture_nodes() + synthetic


def create_nodes(plane: ControlPlane, nodes: list[dict[str, Any]]) -> None:
    from kubernetes import client

    api = client.CoreV1Api(plane.api_client())
    for obj in nodes:
        api.create_node(obj)
        # The TaintNodesByCondition admission plugin taints every new node not-ready; the
        # node lifecycle controller (off here: no kubelets) would lift it once Ready.
        api.patch_node(obj["metadata"]["name"], {"spec": {"taints": obj["spec"].get("taints")}})


def server_kubeconfig(plane: ControlPlane) -> Path:
    """A kubeconfig for ``serve`` holding a token of the manifests' own ServiceAccount.

    The server then runs with exactly the RBAC ``manifests/base/rbac.yaml`` grants, so a
    missing verb or resource shows up here as a 403, as it would in a real cluster.
    """
    base = REPO / "manifests" / "base"
    plane.kubectl("apply", "-f", str(base / "namespace.yaml"), "-f", str(base / "rbac.yaml"))
    token = plane.kubectl(
        "create", "token", "machine-catalog", "-n", NAMESPACE, "--duration=24h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": plane.server, "certificate-authority": str(plane.pki.ca)},
            }
        ],
        "users": [{"name": "machine-catalog", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "machine-catalog"}}],
        "current-context": "sa",
    }
    path = plane.workdir / "server-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def webhook_configuration(plane: ControlPlane, url: str) -> dict[str, Any]:
    """``manifests/base/webhook.yaml`` with ``url:`` and ``caBundle`` in place of the Service."""
    config = yaml.safe_load((REPO / "manifests" / "base" / "webhook.yaml").read_text())
    ca = base64.b64encode(plane.pki.ca.read_bytes()).decode()
    for hook in config["webhooks"]:
        path = hook["clientConfig"]["service"].get("path", "/")
        hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca}
    return config


def install_webhook(plane: ControlPlane, url: str) -> dict[str, Any]:
    from kubernetes import client

    config = webhook_configuration(plane, url)
    api = client.AdmissionregistrationV1Api(plane.api_client())
    api.create_mutating_webhook_configuration(config)
    return config


def opted_in_namespace(plane: ControlPlane, name: str) -> str:
    from kubernetes import client

    api = client.CoreV1Api(plane.api_client())
    api.create_namespace(
        {"metadata": {"name": name, "labels": {"machine-catalog.io/normalize": "enabled"}}}
    )
    return name


def register_metrics_api(plane: ControlPlane, address: str, port: int = 443) -> None:
    """Service + EndpointSlice + APIService ``v1beta1.metrics.k8s.io``, as a metrics-server
    install makes them, pointing at ``address`` (aggregator routing goes to the endpoint)."""
    from kubernetes import client

    api_client = plane.api_client()
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(
        "kube-system",
        {
            "metadata": {"name": "metrics-server"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
    )
    client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(
        "kube-system",
        {
            "metadata": {
                "name": "metrics-server-e2e",
                "labels": {"kubernetes.io/service-name": "metrics-server"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    )
    client.ApiregistrationV1Api(api_client).create_api_service(
        {
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                "caBundle": base64.b64encode(plane.pki.ca.read_bytes()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
    )


def millis(quantity: str) -> int:
    """A CPU quantity in millicores, by the product's own quantity arithmetic."""
    from machine_catalog.quantities import to_millis

    return to_millis(quantity)


def controller(
    kind: str,
    name: str,
    replicas: int,
    pod_spec: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``Deployment`` or ``ReplicaSet`` (``kind``) of ``replicas`` pods with ``pod_spec``,
    selected by ``app: name``, the template carrying ``annotations``."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(annotations or {})},
                "spec": pod_spec,
            },
        },
    }


def spread_deployment(name: str, replicas: int, cpu: str, types: Sequence[str]) -> dict[str, Any]:
    """A Deployment of pause pods held to ``types`` and spread evenly over them (one
    topology domain per instance type): what the calibrate tests need, replicas on
    every family they compare."""
    spec = {
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
            }
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": INSTANCE_TYPE, "operator": "In", "values": list(types)}
                            ]
                        }
                    ]
                }
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": INSTANCE_TYPE,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": name}},
            }
        ],
    }
    return controller("Deployment", name, replicas, spec)


CRD = "crd/machinecatalogs.machine-catalog.io"


def install_crd(plane: ControlPlane) -> str:
    """The MachineCatalog CRD of manifests/base, applied and established; its name."""
    plane.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "crd.yaml"))
    plane.kubectl("wait", "--for=condition=Established", CRD, "--timeout=60s")
    return CRD


def first_install_prerequisites(plane: ControlPlane) -> None:
    """What docs/operations.md applies before an overlay or the chart on an empty cluster:
    the Namespace and the MachineCatalog CRD, for real (a server-side dry run persists
    neither, so every object in them would fail, and the catalog object needs its kind)."""
    plane.kubectl("apply", "-f", str(REPO / "manifests" / "base" / "namespace.yaml"))
    install_crd(plane)


def write_certs(out: Path) -> None:
    """The generated-certs overlay's component, as its docs say to make it."""
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "machine_catalog_cli",
            "certs",
            "--service",
            "machine-catalog-webhook",
            "--extra-service",
            "machine-catalog-extender",
            "--namespace",
            NAMESPACE,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
