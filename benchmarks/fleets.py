"""Synthetic fleets shaped like real clusters, shared by both harnesses.

Both benchmarks need the same things: a three-family catalog (an old, a baseline and a new
generation), nodes that look like what ``kubectl get nodes -o json`` prints on EKS (so the
server parses, matches and caches the same amount of data it would in production), and
pods shaped like the ones a ReplicaSet creates. Everything is generated from a seed, so a
run can be repeated exactly.

The families use real AWS instance types with the factors of the issue (0.8 / 1.0 / 1.35
SCU per vCPU), not the packaged catalog's sourced factors: the benchmark measures the
mechanism, and round factors make the results easy to check by hand.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from machine_catalog.catalog import Catalog

REGION = "eu-west-1"
ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """One machine-type family of the benchmark fleet."""

    name: str
    scu_per_core: str  # as written in the catalog (a Kubernetes quantity)
    description: str
    prefix: str  # instance-type prefix: m4 -> m4.2xlarge, m4.4xlarge
    cpu_family: str  # NFD feature.node.kubernetes.io/cpu-model.family
    cpu_model: str  # NFD feature.node.kubernetes.io/cpu-model.id
    generation: int


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("m4", "0.8", "Intel Xeon E5-2686 v4 (Broadwell), 2.3 GHz", "m4", "6", "79", 4),
    FamilySpec("m5", "1.0", "Intel Xeon Platinum 8259CL (Cascade Lake)", "m5", "6", "85", 5),
    FamilySpec("m7i", "1.35", "Intel Xeon Platinum 8488C (Sapphire Rapids)", "m7i", "6", "143", 7),
)
BASELINE = "m5"

#: (size suffix, vCPUs, allocatable millicores after EKS's kube-reserved/system-reserved)
SIZES: tuple[tuple[str, int, int], ...] = (
    ("2xlarge", 8, 7910),
    ("4xlarge", 16, 15890),
    ("8xlarge", 32, 31850),
)


def catalog_document(strategy: str = "balanced") -> dict[str, Any]:
    """The benchmark catalog as a parsed MachineCatalog document."""
    return {
        "apiVersion": "machine-catalog.io/v1alpha1",
        "kind": "MachineCatalog",
        "metadata": {"name": "bench"},
        "spec": {
            "baseline": BASELINE,
            "unknownNodes": "reject",
            "scoring": {"strategy": strategy},
            "families": [
                {
                    "name": f.name,
                    "description": f.description,
                    "scuPerCore": f.scu_per_core,
                    "generation": f.generation,
                    "instanceTypes": [f"{f.prefix}.{size}" for size, _, _ in SIZES],
                }
                for f in FAMILIES
            ],
        },
    }


def bench_catalog(strategy: str = "balanced") -> Catalog:
    return Catalog.from_data(catalog_document(strategy), source="benchmarks/fleets.py")


def write_catalog(path: Path, strategy: str = "balanced") -> Path:
    """Write the catalog as JSON (valid YAML), which is what ``--catalog`` reads."""
    path.write_bytes(orjson.dumps(catalog_document(strategy), option=orjson.OPT_INDENT_2))
    return path


# -- nodes -----------------------------------------------------------------------------


def node_names(rng: random.Random) -> Iterator[str]:
    """Unique EC2 private DNS names (``ip-10-12-34-56.eu-west-1.compute.internal``)."""
    seen: set[tuple[int, int, int]] = set()
    while True:
        octets = (rng.randrange(0, 256), rng.randrange(0, 256), rng.randrange(1, 255))
        if octets in seen:
            continue
        seen.add(octets)
        a, b, c = octets
        yield f"ip-10-{a}-{b}-{c}.{REGION}.compute.internal"


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _images(rng: random.Random, count: int = 12) -> list[dict[str, Any]]:
    images = []
    for i in range(count):
        digest = _hex(rng, 64)
        images.append(
            {
                "names": [
                    f"registry.example/team/service-{i}@sha256:{digest}",
                    f"registry.example/team/service-{i}:v1.{i}",
                ],
                "sizeBytes": 50_000_000 + i * 1_000_003,
            }
        )
    return images


def make_node(
    rng: random.Random,
    name: str,
    family: FamilySpec,
    size: tuple[str, int, int],
    zone: str,
) -> dict[str, Any]:
    """A Node as the API server serves it on EKS (labels, status, images; ~6 KB of JSON)."""
    suffix, vcpus, allocatable = size
    instance_type = f"{family.prefix}.{suffix}"
    ip = name.split(".")[0].removeprefix("ip-").replace("-", ".")
    instance_id = "i-0" + _hex(rng, 16)
    heartbeat = "2026-11-27T09:58:31Z"
    started = "2026-11-02T07:11:09Z"
    memory_ki = vcpus * 4 * 1024 * 1024
    conditions = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": _uid(rng),
            "resourceVersion": str(rng.randrange(10**8, 10**9)),
            "creationTimestamp": "2026-11-02T07:10:58Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/instance-type": instance_type,
                "beta.kubernetes.io/os": "linux",
                "eks.amazonaws.com/capacityType": "ON_DEMAND",
                "eks.amazonaws.com/nodegroup": f"general-{family.prefix}-{suffix}",
                "eks.amazonaws.com/nodegroup-image": "ami-0" + _hex(rng, 16),
                "failure-domain.beta.kubernetes.io/region": REGION,
                "failure-domain.beta.kubernetes.io/zone": zone,
                "feature.node.kubernetes.io/cpu-model.family": family.cpu_family,
                "feature.node.kubernetes.io/cpu-model.id": family.cpu_model,
                "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
                "k8s.io/cloud-provider-aws": _hex(rng, 32),
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                INSTANCE_TYPE_LABEL: instance_type,
                "topology.ebs.csi.aws.com/zone": zone,
                "topology.k8s.aws/zone-id": "euw1-az" + zone[-1:].replace("a", "1"),
                "topology.kubernetes.io/region": REGION,
                "topology.kubernetes.io/zone": zone,
            },
            "annotations": {
                "alpha.kubernetes.io/provided-node-ip": ip,
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {"providerID": f"aws:///{zone}/{instance_id}"},
        "status": {
            "addresses": [
                {"address": ip, "type": "InternalIP"},
                {"address": name, "type": "InternalDNS"},
                {"address": name, "type": "Hostname"},
            ],
            "allocatable": {
                "cpu": f"{allocatable}m",
                "ephemeral-storage": "95491281146",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": f"{memory_ki - 1016832}Ki",
                "pods": "58" if vcpus <= 16 else "234",
            },
            "capacity": {
                "cpu": str(vcpus),
                "ephemeral-storage": "104845292Ki",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": f"{memory_ki}Ki",
                "pods": "58" if vcpus <= 16 else "234",
            },
            "conditions": [
                {
                    "lastHeartbeatTime": heartbeat,
                    "lastTransitionTime": started,
                    "message": f"kubelet has {message}" if kind != "Ready" else message,
                    "reason": reason,
                    "status": status,
                    "type": kind,
                }
                for kind, status, reason, message in conditions
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": _uid(rng),
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.1.134-152.225.amzn2023.x86_64",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.34.2-eks-113cf36",
                "machineID": _hex(rng, 32),
                "operatingSystem": "linux",
                "osImage": "Amazon Linux 2023.7.20250527",
                "systemUUID": _uid(rng),
            },
            "images": _images(rng),
        },
    }


def make_nodes(
    count: int, seed: int = 1, sizes: Sequence[tuple[str, int, int]] = SIZES
) -> list[dict[str, Any]]:
    """``count`` nodes, a third of each family, sizes and zones drawn from the seed."""
    rng = random.Random(seed)
    names = node_names(rng)
    nodes = []
    for i in range(count):
        family = FAMILIES[i % len(FAMILIES)]
        nodes.append(make_node(rng, next(names), family, rng.choice(sizes), ZONES[i % 3]))
    return nodes


def node_allocatable_millis(node: dict[str, Any]) -> int:
    return int(node["status"]["allocatable"]["cpu"].removesuffix("m"))


# -- pods ------------------------------------------------------------------------------

#: Typical per-container CPU requests (millicores) and how often they occur.
CPU_REQUESTS = (50, 100, 100, 200, 250, 250, 500, 500, 1000, 2000)

_POD_TEMPLATE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "",
        "generateName": "",
        "namespace": "",
        "uid": "",
        "resourceVersion": "",
        "creationTimestamp": "2026-11-27T10:01:12Z",
        "labels": {},
        "annotations": {"prometheus.io/scrape": "true"},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "",
                "uid": "",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    },
    "spec": {
        "volumes": [
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                    ],
                    "defaultMode": 420,
                },
            }
        ],
        "containers": [
            {
                "name": "app",
                "image": "",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {},
                "volumeMounts": [
                    {
                        "name": "kube-api-access",
                        "readOnly": True,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    }
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
                    "timeoutSeconds": 1,
                    "periodSeconds": 5,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                },
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }
        ],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    },
    "status": {"phase": "Pending", "qosClass": "Burstable"},
}


_POD_TEMPLATE_JSON = orjson.dumps(_POD_TEMPLATE)


def make_pod(
    rng: random.Random,
    app: str,
    namespace: str,
    cpu_millis: int,
    node_name: str | None = None,
    sidecar_millis: int = 0,
) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it; bound and Running when ``node_name`` is given."""
    pod = orjson.loads(_POD_TEMPLATE_JSON)  # a fresh deep copy, 5x faster than deepcopy
    template_hash = _hex(rng, 9)
    rs = f"{app}-{template_hash}"
    name = f"{rs}-{_hex(rng, 5)}"
    meta = pod["metadata"]
    meta.update(
        name=name,
        generateName=f"{rs}-",
        namespace=namespace,
        uid=_uid(rng),
        resourceVersion=str(rng.randrange(10**8, 10**9)),
        labels={"app.kubernetes.io/name": app, "pod-template-hash": template_hash},
    )
    meta["ownerReferences"][0].update(name=rs, uid=_uid(rng))
    container = pod["spec"]["containers"][0]
    container["image"] = f"registry.example/{namespace}/{app}:1.{rng.randrange(40)}.0"
    container["resources"] = {
        "requests": {"cpu": f"{cpu_millis}m", "memory": f"{max(cpu_millis // 2, 64)}Mi"},
        "limits": {"memory": f"{max(cpu_millis, 128)}Mi"},
    }
    if sidecar_millis:
        pod["spec"]["initContainers"] = [
            {
                "name": "istio-proxy",
                "image": "registry.example/istio/proxyv2:1.27.1",
                "restartPolicy": "Always",
                "resources": {
                    "requests": {"cpu": f"{sidecar_millis}m", "memory": "128Mi"},
                    "limits": {"memory": "1Gi"},
                },
            }
        ]
    if node_name is not None:
        pod["spec"]["nodeName"] = node_name
        pod["status"] = {
            "phase": "Running",
            "qosClass": "Burstable",
            "hostIP": "10.0.0.1",
            "podIP": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "startTime": "2026-11-27T10:01:13Z",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-27T10:01:20Z"}
                for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
            ],
        }
    return pod


def make_pods(
    nodes: Sequence[dict[str, Any]], pods_per_node: int, seed: int = 2
) -> list[dict[str, Any]]:
    """``pods_per_node`` running pods on every node, requesting about half of it in all.

    Requests are drawn from :data:`CPU_REQUESTS` (scaled down when a node holds more than
    ten pods, as dense nodes run small pods), so every node keeps room for the pod the
    benchmark schedules.
    """
    rng = random.Random(seed)
    scale = min(1.0, 10 / max(pods_per_node, 1))
    pods = []
    for node in nodes:
        budget = node_allocatable_millis(node) // 2
        name = node["metadata"]["name"]
        for _ in range(pods_per_node):
            cpu = max(10, int(rng.choice(CPU_REQUESTS) * scale))
            cpu = max(10, min(cpu, budget // 2))
            budget -= cpu
            app = f"svc-{rng.randrange(400):03d}"
            pods.append(make_pod(rng, app, f"team-{rng.randrange(40):02d}", cpu, name))
    return pods


def write_snapshot(path: Path, nodes: Sequence[Any], pods: Sequence[Any]) -> Path:
    """A ``v1 List`` of Nodes then Pods, as ``kubectl get nodes,pods -A -o json`` prints."""
    doc = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}}
    with path.open("wb") as fh:
        fh.write(orjson.dumps(doc)[:-1] + b',"items":[')
        first = True
        for obj in (*nodes, *pods):
            if not first:
                fh.write(b",")
            fh.write(orjson.dumps(obj))
            first = False
        fh.write(b"]}")
    return path


# -- request bodies --------------------------------------------------------------------


def pending_pod(seed: int = 3, cpu_millis: int = 500, normalized: bool = False) -> dict[str, Any]:
    """The Pod of an ExtenderArgs: the scheduler's informer copy of a pending pod.

    ``normalized``: as the webhook left it (family annotations and required affinity are
    not needed by the benchmark; the extender reads the family annotation).
    """
    rng = random.Random(seed)
    pod = make_pod(rng, "web", "team-a", cpu_millis)
    pod["spec"]["schedulerName"] = "machine-catalog"
    if normalized:
        pod["metadata"]["annotations"].update(
            {
                "machine-catalog.io/family": "m5",
                "machine-catalog.io/scu-per-core": "1",
            }
        )
    return pod


def extender_args(pod: dict[str, Any], nodes: Sequence[dict[str, Any]], full: bool) -> bytes:
    """An ExtenderArgs body exactly as kube-scheduler's ``json.Marshal`` shapes it."""
    if full:
        body = {"Pod": pod, "Nodes": {"metadata": {}, "items": list(nodes)}, "NodeNames": None}
    else:
        names = [n["metadata"]["name"] for n in nodes]
        body = {"Pod": pod, "Nodes": None, "NodeNames": names}
    return orjson.dumps(body)


def admission_review(seed: int = 4, cpu_millis: int = 1500) -> bytes:
    """An AdmissionReview for a pod a ReplicaSet creates, like the API server sends it."""
    rng = random.Random(seed)
    pod = make_pod(rng, "checkout", "shop", cpu_millis, sidecar_millis=100)
    del pod["metadata"]["name"], pod["metadata"]["uid"], pod["metadata"]["resourceVersion"]
    pod["status"] = {}
    review = {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": _uid(rng),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": _uid(rng),
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {
                "kind": "CreateOptions",
                "apiVersion": "meta.k8s.io/v1",
                "propagationPolicy": "Background",
            },
        },
    }
    return orjson.dumps(review)
