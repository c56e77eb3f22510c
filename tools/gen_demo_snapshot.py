"""Generate ``machine_catalog/data/demo-snapshot.json``, the packaged demo cluster.

The output is what ``kubectl get nodes,pods -A -o json`` prints (keys sorted, indented by
2 spaces instead of 4 to stay small) for a mixed fleet: an EKS cluster in eu-west-1 with
EC2 node groups of three schedulable families, one retiring family and one instance type
no family lists, plus two on-premises Sapphire Rapids servers joined as EKS hybrid nodes
and recognised by Node Feature Discovery labels.

    nodes (12)                         instance type   family
    ip-10-0-12-34 / ip-10-0-13-71      m5.2xlarge      aws-m5 (baseline)
    ip-10-0-45-118 (cordoned)          m5.xlarge       aws-m5
    ip-10-0-47-9 / ip-10-0-78-203      m6i.2xlarge     aws-m6i
    ip-10-0-79-52                      m6i.4xlarge     aws-m6i
    ip-10-0-14-187 / ip-10-0-46-220    m7g.2xlarge     aws-m7g (arm64)
    ip-10-0-77-15                      m4.2xlarge      aws-m4 (schedulable: false)
    ip-10-0-15-96                      t3.medium       none (unknown to the catalog)
    mi-0a3f9c1d27b84e615 / mi-0c71...  (bare metal)    baremetal-spr (NFD labels)

The content is deterministic: names, UIDs, IPs and digests come from a fixed seed, so
re-running the script reproduces the file byte for byte. Run it from the repository root
with the project installed (``make test`` builds ``.venv``):

    .venv/bin/python tools/gen_demo_snapshot.py            # write the file and check it
    .venv/bin/python tools/gen_demo_snapshot.py --check    # check the committed file

``make test`` runs ``--check`` (tests/test_tools.py): the committed file must be exactly
what this script writes, so an edit here goes with a regenerated file in the same commit.
Workloads are one function each (:data:`WORKLOADS`), called in a fixed order because
each draws its random name suffixes from the one seeded generator.

The checks load the packaged default catalog and assert that every node matches the family
written above (and the t3.medium none), that no node is ambiguous, that bound pods fit in
their node's allocatable CPU, and that the file stays small.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "machine_catalog" / "data" / "demo-snapshot.json"
MAX_BYTES = 400 * 1024

REGION = "eu-west-1"
ZONE_IDS = {"eu-west-1a": "euw1-az1", "eu-west-1b": "euw1-az2", "eu-west-1c": "euw1-az3"}
NOW = datetime(2024, 6, 4, 9, 30, 0, tzinfo=UTC)
EKS_VERSION = "v1.29.3-eks-ae9a62a"
ECR = f"602401143452.dkr.ecr.{REGION}.amazonaws.com"
APP_ECR = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"

_rng = random.Random(20240604)
_UUID_NS = uuid.UUID("6f2d8b1e-4c1a-4f7e-9a53-2b7c1d0e9f44")
_resource_version = 4_800_000
# Alphabet of generated name suffixes (k8s.io/apimachinery/pkg/util/rand): no vowels.
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def uid(*parts: str) -> str:
    return str(uuid.uuid5(_UUID_NS, "/".join(parts)))


def hexdigest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def suffix(n: int) -> str:
    return "".join(_rng.choice(_SUFFIX) for _ in range(n))


def next_rv() -> str:
    global _resource_version
    _resource_version += _rng.randint(3, 997)
    return str(_resource_version)


# --------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------


@dataclass
class NodeSpec:
    name: str
    ip: str
    instance_type: str | None  # None: bare metal (EKS hybrid node)
    family: str | None  # expected catalog family; None = unknown to the catalog
    vcpus: int
    mem_gib: int
    max_pods: int
    zone: str | None = None
    arch: str = "amd64"
    nodegroup: str | None = None
    created: datetime = NOW
    cordoned: bool = False
    instance_id: str = ""
    pod_ips: list[str] = field(default_factory=list)

    @property
    def hybrid(self) -> bool:
        return self.instance_type is None


def eks_reserved_cpu_millis(vcpus: int) -> int:
    """kube-reserved CPU of the EKS-optimized AMI (bootstrap.sh / nodeadm).

    6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% of the rest.
    """
    millis = 60
    if vcpus >= 2:
        millis += 10
    millis += 5 * max(0, min(vcpus, 4) - 2)
    millis += (25 * max(0, vcpus - 4) + 5) // 10  # 2.5m per core, rounded
    return millis


def millis_str(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def node_object(n: NodeSpec) -> dict[str, Any]:
    created = n.created
    mem_capacity_ki = n.mem_gib * 1024 * 1024 - (n.mem_gib * 1024 * 1024 * 35) // 1000
    mem_capacity_ki -= mem_capacity_ki % 4
    if n.hybrid:
        cpu_alloc = n.vcpus * 1000 - 1000  # kubeReserved 500m + systemReserved 500m
        mem_alloc_ki = mem_capacity_ki - (2048 + 100) * 1024
        disk_capacity_ki, disk_alloc = 936_449_284, "863030081329"
    else:
        cpu_alloc = n.vcpus * 1000 - eks_reserved_cpu_millis(n.vcpus)
        mem_alloc_ki = mem_capacity_ki - (255 + 11 * n.max_pods + 100) * 1024
        disk_capacity_ki, disk_alloc = 83_873_772, "76224326324"

    labels: dict[str, str] = {
        "beta.kubernetes.io/arch": n.arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": n.arch,
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
    }
    annotations = {
        "alpha.kubernetes.io/provided-node-ip": n.ip,
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    spec: dict[str, Any] = {}
    addresses = [{"address": n.ip, "type": "InternalIP"}]
    if n.hybrid:
        nfd = {
            "feature.node.kubernetes.io/cpu-cpuid.AMXBF16": "true",
            "feature.node.kubernetes.io/cpu-cpuid.AMXINT8": "true",
            "feature.node.kubernetes.io/cpu-cpuid.AMXTILE": "true",
            "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true",
            "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI": "true",
            "feature.node.kubernetes.io/cpu-hardware_multithreading": "true",
            "feature.node.kubernetes.io/cpu-model.family": "6",
            "feature.node.kubernetes.io/cpu-model.id": "143",
            "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
            "feature.node.kubernetes.io/cpu-pstate.status": "active",
            "feature.node.kubernetes.io/kernel-version.full": "5.15.0-107-generic",
            "feature.node.kubernetes.io/kernel-version.major": "5",
            "feature.node.kubernetes.io/kernel-version.minor": "15",
            "feature.node.kubernetes.io/kernel-version.revision": "0",
            "feature.node.kubernetes.io/memory-numa": "true",
            "feature.node.kubernetes.io/system-os_release.ID": "ubuntu",
            "feature.node.kubernetes.io/system-os_release.VERSION_ID": "22.04",
            "feature.node.kubernetes.io/system-os_release.VERSION_ID.major": "22",
            "feature.node.kubernetes.io/system-os_release.VERSION_ID.minor": "04",
        }
        labels |= nfd | {
            "eks.amazonaws.com/compute-type": "hybrid",
            "eks.amazonaws.com/hybrid-credential-provider": "ssm",
            "katacontainers.io/kata-runtime": "true",
        }
        annotations["nfd.node.kubernetes.io/feature-labels"] = ",".join(
            k.removeprefix("feature.node.kubernetes.io/") for k in sorted(nfd)
        )
        node_info = {
            "containerRuntimeVersion": "containerd://1.7.12",
            "kernelVersion": "5.15.0-107-generic",
            "osImage": "Ubuntu 22.04.4 LTS",
            "kubeletVersion": EKS_VERSION,
        }
    else:
        assert n.zone and n.nodegroup
        labels |= {
            "beta.kubernetes.io/instance-type": n.instance_type,
            "eks.amazonaws.com/capacityType": "ON_DEMAND",
            "eks.amazonaws.com/nodegroup": n.nodegroup,
            "eks.amazonaws.com/nodegroup-image": "ami-0" + hexdigest("ami", n.nodegroup)[:16],
            "failure-domain.beta.kubernetes.io/region": REGION,
            "failure-domain.beta.kubernetes.io/zone": n.zone,
            "k8s.io/cloud-provider-aws": hexdigest("cluster", "demo")[:32],
            "node.kubernetes.io/instance-type": n.instance_type,
            "topology.ebs.csi.aws.com/zone": n.zone,
            "topology.k8s.aws/zone-id": ZONE_IDS[n.zone],
            "topology.kubernetes.io/region": REGION,
            "topology.kubernetes.io/zone": n.zone,
        }
        annotations["csi.volume.kubernetes.io/nodeid"] = json.dumps(
            {"ebs.csi.aws.com": n.instance_id}, separators=(",", ":")
        )
        spec["providerID"] = f"aws:///{n.zone}/{n.instance_id}"
        addresses += [
            {"address": n.name, "type": "InternalDNS"},
            {"address": n.name, "type": "Hostname"},
        ]
        legacy = n.family == "aws-m4"
        node_info = {
            "containerRuntimeVersion": "containerd://1.7.11",
            "kernelVersion": (
                "6.1.90-99.173.amzn2023.aarch64"
                if n.arch == "arm64"
                else "5.10.215-203.850.amzn2.x86_64"
            ),
            "osImage": "Amazon Linux 2023.4.20240528" if n.arch == "arm64" else "Amazon Linux 2",
            # An old node group that was never upgraded: kubelet one minor behind.
            "kubeletVersion": "v1.28.8-eks-ae9a62a" if legacy else EKS_VERSION,
        }
    if n.hybrid:
        addresses.append({"address": n.name, "type": "Hostname"})
    if n.cordoned:
        spec["taints"] = [
            {
                "effect": "NoSchedule",
                "key": "node.kubernetes.io/unschedulable",
                "timeAdded": ts(NOW - timedelta(hours=2, minutes=14)),
            }
        ]
        spec["unschedulable"] = True

    heartbeat = ts(NOW - timedelta(seconds=_rng.randint(5, 50)))
    ready_since = ts(created + timedelta(seconds=_rng.randint(25, 70)))

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": ready_since,
            "message": message,
            "reason": reason,
            "status": status,
            "type": kind,
        }

    system_uuid = uid("system", n.name)
    if not n.hybrid:
        system_uuid = "ec2" + system_uuid[3:]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "annotations": dict(sorted(annotations.items())),
            "creationTimestamp": ts(created),
            "labels": dict(sorted(labels.items())),
            "name": n.name,
            "resourceVersion": next_rv(),
            "uid": uid("node", n.name),
        },
        "spec": spec,
        "status": {
            "addresses": addresses,
            "allocatable": {
                "cpu": millis_str(cpu_alloc),
                "ephemeral-storage": disk_alloc,
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": f"{mem_alloc_ki}Ki",
                "pods": str(n.max_pods),
            },
            "capacity": {
                "cpu": str(n.vcpus),
                "ephemeral-storage": f"{disk_capacity_ki}Ki",
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "memory": f"{mem_capacity_ki}Ki",
                "pods": str(n.max_pods),
            },
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": n.arch,
                "bootID": uid("boot", n.name),
                "containerRuntimeVersion": node_info["containerRuntimeVersion"],
                "kernelVersion": node_info["kernelVersion"],
                "kubeProxyVersion": node_info["kubeletVersion"],
                "kubeletVersion": node_info["kubeletVersion"],
                "machineID": hexdigest("machine", n.name)[:32],
                "operatingSystem": "linux",
                "osImage": node_info["osImage"],
                "systemUUID": system_uuid,
            },
        },
    }


def ec2(
    ip: str,
    itype: str,
    family: str | None,
    vcpus: int,
    mem: int,
    pods: int,
    zone: str,
    nodegroup: str,
    created: datetime,
    arch: str = "amd64",
    cordoned: bool = False,
) -> NodeSpec:
    """An EC2 node, named as the AWS cloud provider names it: after its private IP."""
    return NodeSpec(
        name=f"ip-{ip.replace('.', '-')}.{REGION}.compute.internal",
        ip=ip,
        instance_type=itype,
        family=family,
        vcpus=vcpus,
        mem_gib=mem,
        max_pods=pods,
        zone=zone,
        arch=arch,
        nodegroup=nodegroup,
        created=created,
        cordoned=cordoned,
        instance_id="i-0" + hexdigest("instance", ip)[:16],
    )


def day(month: int, d: int, h: int = 10, m: int = 0) -> datetime:
    return datetime(2024, month, d, h, m, 0, tzinfo=UTC)


# fmt: off
#: The EC2 nodes: IP, instance type, family, vCPUs, GiB, max pods, zone, node group, created.
EC2_NODES = [
    ("10.0.12.34",  "m5.2xlarge",  "aws-m5",  8,  32, 58,  "eu-west-1a", "general-m5",  day(5, 20, 7, 12)),   # noqa: E501
    ("10.0.13.71",  "m5.2xlarge",  "aws-m5",  8,  32, 58,  "eu-west-1a", "general-m5",  day(5, 20, 7, 13)),   # noqa: E501
    ("10.0.45.118", "m5.xlarge",   "aws-m5",  4,  16, 58,  "eu-west-1b", "general-m5",  day(5, 21, 14, 3)),   # noqa: E501
    ("10.0.47.9",   "m6i.2xlarge", "aws-m6i", 8,  32, 58,  "eu-west-1b", "general-m6i", day(5, 28, 9, 41)),   # noqa: E501
    ("10.0.78.203", "m6i.2xlarge", "aws-m6i", 8,  32, 58,  "eu-west-1c", "general-m6i", day(5, 28, 9, 42)),   # noqa: E501
    ("10.0.79.52",  "m6i.4xlarge", "aws-m6i", 16, 64, 234, "eu-west-1c", "general-m6i", day(5, 29, 16, 5)),   # noqa: E501
    ("10.0.14.187", "m7g.2xlarge", "aws-m7g", 8,  32, 58,  "eu-west-1a", "arm-m7g",     day(5, 30, 11, 20)),  # noqa: E501
    ("10.0.46.220", "m7g.2xlarge", "aws-m7g", 8,  32, 58,  "eu-west-1b", "arm-m7g",     day(5, 30, 11, 21)),  # noqa: E501
    ("10.0.77.15",  "m4.2xlarge",  "aws-m4",  8,  32, 58,  "eu-west-1c", "legacy-m4",   day(2, 12, 8, 55)),   # noqa: E501
    ("10.0.15.96",  "t3.medium",   None,      2,  4,  17,  "eu-west-1a", "system-t3",   day(4, 15, 13, 30)),  # noqa: E501
]
# fmt: on
#: Per node: the m5.xlarge is cordoned, the m7g nodes are arm64.
EC2_EXTRA: dict[str, dict[str, Any]] = {
    "10.0.45.118": {"cordoned": True},
    "10.0.14.187": {"arch": "arm64"},
    "10.0.46.220": {"arch": "arm64"},
}
NODES: list[NodeSpec] = [ec2(*row, **EC2_EXTRA.get(row[0], {})) for row in EC2_NODES] + [
    # EKS hybrid nodes: on-premises Sapphire Rapids servers, named by their SSM instance.
    NodeSpec(
        name=name,
        ip=ip,
        instance_type=None,
        family="baremetal-spr",
        vcpus=64,
        mem_gib=256,
        max_pods=110,
        created=day(3, 1, 9, minute),
    )
    for name, ip, minute in (
        ("mi-0a3f9c1d27b84e615", "192.168.40.11", 2),
        ("mi-0c71e2b94d5a6f083", "192.168.40.12", 4),
    )
]
BY_NAME = {n.name: n for n in NODES}


def node(short: str) -> NodeSpec:
    """A node by the unique start of its name (``ip-10-0-12-34``, ``mi-0a3f``)."""
    (match,) = [n for n in NODES if n.name.startswith(short)]
    return match


# --------------------------------------------------------------------------------------
# Pods
# --------------------------------------------------------------------------------------


def pod_ip(n: NodeSpec, host_network: bool) -> str:
    if host_network:
        return n.ip
    while True:
        if n.hybrid:
            third = 1 if n.name.startswith("mi-0a") else 2
            ip = f"10.86.{third}.{_rng.randint(2, 250)}"
        else:
            a, b, c, _ = n.ip.split(".")
            ip = f"{a}.{b}.{c}.{_rng.randint(2, 250)}"
        if ip not in n.pod_ips and ip != n.ip:
            n.pod_ips.append(ip)
            return ip


def resources(
    cpu: str | None = None,
    mem: str | None = None,
    cpu_limit: str | None = None,
    mem_limit: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    requests = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", mem_limit)) if v}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


PORT_NAMES = {
    53: "dns",
    80: "http",
    443: "https",
    6379: "redis",
    8000: "http",
    8001: "grpc",
    8080: "http",
    8085: "http",
    8443: "https",
    9153: "metrics",
    61678: "metrics",
}


def container(
    name: str,
    image: str,
    res: dict[str, Any],
    *,
    ports: list[int] = (),
    args: list[str] = (),
    sidecar: bool = False,
    mounts: list[dict] = (),
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}
    if args:
        c["args"] = list(args)
    if ports:
        c["ports"] = [{"containerPort": p, "name": PORT_NAMES[p], "protocol": "TCP"} for p in ports]
    c["resources"] = res
    if sidecar:
        c["restartPolicy"] = "Always"
    c["terminationMessagePath"] = "/dev/termination-log"
    c["terminationMessagePolicy"] = "File"
    if mounts:
        c["volumeMounts"] = list(mounts)
    return c


def sa_token_volume(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "name": "kube-root-ca.crt",
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                "path": "namespace",
                            }
                        ]
                    }
                },
            ],
        },
    }


def qos_class(spec: dict[str, Any]) -> str:
    all_containers = spec["containers"] + spec.get("initContainers", [])
    res = [c.get("resources", {}) for c in all_containers]
    if not any(r.get("requests") or r.get("limits") for r in res):
        return "BestEffort"
    for r in res:
        limits, requests = r.get("limits", {}), r.get("requests", {})
        for key in ("cpu", "memory"):
            if key not in limits or requests.get(key, limits[key]) != limits[key]:
                return "Burstable"
    return "Guaranteed"


@dataclass
class Owner:
    kind: str  # DaemonSet, ReplicaSet, StatefulSet, Job
    name: str
    namespace: str
    api_version: str = "apps/v1"

    @property
    def uid(self) -> str:
        return uid(self.kind, self.namespace, self.name)

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "blockOwnerDeletion": True,
            "controller": True,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
        }


def make_pod(
    *,
    name: str,
    namespace: str,
    owner: Owner,
    labels: dict[str, str],
    containers: list[dict[str, Any]],
    node_spec: NodeSpec | None,
    created: datetime,
    init_containers: list[dict[str, Any]] = (),
    annotations: dict[str, str] | None = None,
    service_account: str = "default",
    host_network: bool = False,
    priority_class: str | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    affinity: dict[str, Any] | None = None,
    node_selector: dict[str, str] | None = None,
    extra_volumes: list[dict[str, Any]] = (),
    phase: str = "Running",
    restart_policy: str = "Always",
    runtime_class: str | None = None,
    overhead: dict[str, str] | None = None,
    hostname: str | None = None,
    subdomain: str | None = None,
    restarts: int = 0,
    automount: bool = True,
) -> dict[str, Any]:
    sa_volume = f"kube-api-access-{suffix(5)}" if automount else None
    for c in [*containers, *init_containers]:
        if sa_volume:
            c.setdefault("volumeMounts", []).append(
                {
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    "name": sa_volume,
                    "readOnly": True,
                }
            )
    spec: dict[str, Any] = {}
    if affinity:
        spec["affinity"] = affinity
    if not automount:
        # Workloads that never call the API server opt out of the token mount.
        spec["automountServiceAccountToken"] = False
    spec["containers"] = containers
    spec["dnsPolicy"] = "ClusterFirstWithHostNet" if host_network else "ClusterFirst"
    spec["enableServiceLinks"] = True
    if host_network:
        spec["hostNetwork"] = True
    if hostname:
        spec["hostname"] = hostname
    if init_containers:
        spec["initContainers"] = list(init_containers)
    if node_spec is not None:
        spec["nodeName"] = node_spec.name
    if node_selector:
        spec["nodeSelector"] = node_selector
    if overhead:
        spec["overhead"] = overhead
    spec["preemptionPolicy"] = "PreemptLowerThanOrEqual"
    spec["priority"] = {
        "system-node-critical": 2000001000,
        "system-cluster-critical": 2000000000,
    }.get(priority_class or "", 0)
    if priority_class:
        spec["priorityClassName"] = priority_class
    spec["restartPolicy"] = restart_policy
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    spec["schedulerName"] = "default-scheduler"
    spec["securityContext"] = {}
    spec["serviceAccount"] = service_account
    spec["serviceAccountName"] = service_account
    if subdomain:
        spec["subdomain"] = subdomain
    spec["terminationGracePeriodSeconds"] = 30
    spec["tolerations"] = (
        tolerations
        if tolerations is not None
        else [
            {
                "effect": "NoExecute",
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "tolerationSeconds": 300,
            },
            {
                "effect": "NoExecute",
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "tolerationSeconds": 300,
            },
        ]
    )
    volumes = [*extra_volumes, *([sa_token_volume(sa_volume)] if sa_volume else [])]
    if volumes:
        spec["volumes"] = volumes

    meta: dict[str, Any] = {}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    meta |= {
        "creationTimestamp": ts(created),
        "labels": dict(sorted(labels.items())),
        "name": name,
        "namespace": namespace,
        "ownerReferences": [owner.reference()],
        "resourceVersion": next_rv(),
        "uid": uid("pod", namespace, name),
    }
    if owner.kind != "Job":
        # Generated names: Deployments and DaemonSets set generateName.
        if owner.kind in ("ReplicaSet", "DaemonSet"):
            meta = {"generateName": name[: name.rfind("-") + 1], **meta}
    else:
        meta = {"generateName": f"{owner.name}-", **meta}

    status: dict[str, Any]
    if node_spec is None:
        status = {"phase": "Pending", "qosClass": qos_class(spec)}
    else:
        status = pod_status(spec, node_spec, created, phase, host_network, restarts)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def image_id(image: str) -> str:
    repo = image.rsplit(":", 1)[0]
    return f"{repo}@sha256:{hexdigest('image', image)}"


def pod_status(
    spec: dict[str, Any],
    n: NodeSpec,
    created: datetime,
    phase: str,
    host_network: bool,
    restarts: int,
) -> dict[str, Any]:
    scheduled = created + timedelta(seconds=1)
    started = scheduled + timedelta(seconds=_rng.randint(2, 9))
    ready_at = started + timedelta(seconds=_rng.randint(3, 40))
    done = phase == "Succeeded"
    finished = ready_at + timedelta(minutes=_rng.randint(3, 25))

    def cond(kind: str, status: str, when: datetime, reason: str | None = None) -> dict:
        c: dict[str, Any] = {"lastProbeTime": None, "lastTransitionTime": ts(when)}
        if reason:
            c["reason"] = reason
        c |= {"status": status, "type": kind}
        return c

    if done:
        conditions = [
            cond("PodReadyToStartContainers", "False", finished),
            cond("Initialized", "True", started, "PodCompleted"),
            cond("Ready", "False", finished, "PodCompleted"),
            cond("ContainersReady", "False", finished, "PodCompleted"),
            cond("PodScheduled", "True", scheduled),
        ]
    else:
        conditions = [
            cond("PodReadyToStartContainers", "True", started),
            cond("Initialized", "True", started),
            cond("Ready", "True", ready_at),
            cond("ContainersReady", "True", ready_at),
            cond("PodScheduled", "True", scheduled),
        ]

    def cstatus(c: dict[str, Any], *, terminated: bool, init: bool = False) -> dict[str, Any]:
        cid = "containerd://" + hexdigest("container", n.name, c["name"], ts(created))
        s: dict[str, Any] = {
            "containerID": cid,
            "image": c["image"],
            "imageID": image_id(c["image"]),
            "lastState": {},
            "name": c["name"],
            "ready": (not terminated) or init,
            "restartCount": 0 if init else restarts,
            "started": not terminated,
        }
        if terminated:
            s["state"] = {
                "terminated": {
                    "containerID": cid,
                    "exitCode": 0,
                    "finishedAt": ts(started if init else finished),
                    "reason": "Completed",
                    "startedAt": ts(started - timedelta(seconds=2) if init else ready_at),
                }
            }
        else:
            s["state"] = {"running": {"startedAt": ts(ready_at - timedelta(seconds=2))}}
        return s

    status: dict[str, Any] = {"conditions": conditions}
    status["containerStatuses"] = [cstatus(c, terminated=done) for c in spec["containers"]]
    status["hostIP"] = n.ip
    status["hostIPs"] = [{"ip": n.ip}]
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [
            cstatus(c, terminated=done or c.get("restartPolicy") != "Always", init=True)
            for c in spec["initContainers"]
        ]
    status["phase"] = phase
    ip = pod_ip(n, host_network)
    status["podIP"] = ip
    status["podIPs"] = [{"ip": ip}]
    status["qosClass"] = qos_class(spec)
    status["startTime"] = ts(scheduled)
    return status


def daemonset_affinity(node_name: str, expressions: list[dict[str, Any]] | None) -> dict:
    """What the DaemonSet controller writes: its own terms, with matchFields on the node."""
    term: dict[str, Any] = {}
    if expressions:
        term["matchExpressions"] = expressions
    term["matchFields"] = [{"key": "metadata.name", "operator": "In", "values": [node_name]}]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


EKS_DS_AFFINITY = [
    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
]


def daemonset_pods() -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = []
    proxy = Owner("DaemonSet", "kube-proxy", "kube-system")
    vpc_cni = Owner("DaemonSet", "aws-node", "kube-system")
    cilium = Owner("DaemonSet", "cilium", "kube-system")
    tolerate_all = [{"operator": "Exists"}]
    for n in NODES:
        born = n.created + timedelta(seconds=_rng.randint(20, 45))
        pods.append(
            make_pod(
                name=f"kube-proxy-{suffix(5)}",
                namespace="kube-system",
                owner=proxy,
                labels={
                    "controller-revision-hash": "7b9c8b6dd4",
                    "k8s-app": "kube-proxy",
                    "pod-template-generation": "2",
                },
                containers=[
                    container(
                        "kube-proxy",
                        f"{ECR}/eks/kube-proxy:v1.29.3-minimal-eksbuild.2",
                        resources("100m"),
                        args=[
                            "--config=/var/lib/kube-proxy-config/config",
                            "--hostname-override=$(NODE_NAME)",
                        ],
                        mounts=[
                            {"mountPath": "/var/log", "name": "varlog"},
                            {"mountPath": "/run/xtables.lock", "name": "xtables-lock"},
                            {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": True},
                        ],
                    )
                ],
                node_spec=n,
                created=born,
                service_account="kube-proxy",
                host_network=True,
                priority_class="system-node-critical",
                tolerations=tolerate_all,
                affinity=daemonset_affinity(
                    n.name,
                    [
                        *EKS_DS_AFFINITY,
                        {
                            "key": "eks.amazonaws.com/compute-type",
                            "operator": "NotIn",
                            "values": ["fargate", "auto"],
                        },
                    ],
                ),
                extra_volumes=[
                    {"hostPath": {"path": "/var/log", "type": ""}, "name": "varlog"},
                    {
                        "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
                        "name": "xtables-lock",
                    },
                    {"hostPath": {"path": "/lib/modules", "type": ""}, "name": "lib-modules"},
                ],
            )
        )
        if n.hybrid:
            pods.append(
                make_pod(
                    name=f"cilium-{suffix(5)}",
                    namespace="kube-system",
                    owner=cilium,
                    labels={
                        "app.kubernetes.io/name": "cilium-agent",
                        "app.kubernetes.io/part-of": "cilium",
                        "controller-revision-hash": "5d8f9c7b64",
                        "k8s-app": "cilium",
                        "pod-template-generation": "1",
                    },
                    init_containers=[
                        container("mount-cgroup", "quay.io/cilium/cilium:v1.15.5", resources()),
                        container(
                            "clean-cilium-state",
                            "quay.io/cilium/cilium:v1.15.5",
                            resources("100m", "100Mi"),
                        ),
                        container(
                            "install-cni-binaries",
                            "quay.io/cilium/cilium:v1.15.5",
                            resources("100m", "10Mi"),
                        ),
                    ],
                    containers=[
                        container(
                            "cilium-agent",
                            "quay.io/cilium/cilium:v1.15.5",
                            resources("100m", "10Mi"),
                            args=["--config-dir=/tmp/cilium/config-map"],
                        )
                    ],
                    node_spec=n,
                    created=born,
                    service_account="cilium",
                    host_network=True,
                    priority_class="system-node-critical",
                    tolerations=tolerate_all,
                    affinity=daemonset_affinity(
                        n.name,
                        [
                            {
                                "key": "eks.amazonaws.com/compute-type",
                                "operator": "In",
                                "values": ["hybrid"],
                            }
                        ],
                    ),
                )
            )
        else:
            pods.append(
                make_pod(
                    name=f"aws-node-{suffix(5)}",
                    namespace="kube-system",
                    owner=vpc_cni,
                    labels={
                        "app.kubernetes.io/instance": "aws-vpc-cni",
                        "app.kubernetes.io/name": "aws-node",
                        "controller-revision-hash": "6c9d4f8b7",
                        "k8s-app": "aws-node",
                        "pod-template-generation": "3",
                    },
                    init_containers=[
                        container(
                            "aws-vpc-cni-init",
                            f"{ECR}/amazon-k8s-cni-init:v1.18.1-eksbuild.3",
                            resources("25m"),
                        )
                    ],
                    containers=[
                        container(
                            "aws-node",
                            f"{ECR}/amazon-k8s-cni:v1.18.1-eksbuild.3",
                            resources("25m"),
                            ports=[61678],
                        ),
                        container(
                            "aws-eks-nodeagent",
                            f"{ECR}/amazon/aws-network-policy-agent:v1.1.1-eksbuild.2",
                            resources("25m"),
                            args=["--enable-ipv6=false", "--enable-network-policy=false"],
                        ),
                    ],
                    node_spec=n,
                    created=born,
                    service_account="aws-node",
                    host_network=True,
                    priority_class="system-node-critical",
                    tolerations=tolerate_all,
                    affinity=daemonset_affinity(
                        n.name,
                        [
                            *EKS_DS_AFFINITY,
                            {
                                "key": "eks.amazonaws.com/compute-type",
                                "operator": "NotIn",
                                "values": ["fargate", "hybrid", "auto"],
                            },
                        ],
                    ),
                )
            )
    return pods


# --- normalized pods (what the machine-catalog webhook leaves on a pod) -----------------


def catalog_handles():
    """The packaged catalog, through the project's own loader and matching."""
    from machine_catalog.loading import default_catalog_path, load_catalog
    from machine_catalog.matching import family_selector_terms

    return load_catalog(default_catalog_path()), family_selector_terms


def normalized(family: str, scu_millis: int, catalog, terms_of) -> dict[str, Any]:
    """Annotations, physical CPU and pinning affinity for ``scu_millis`` SCU on ``family``."""
    from machine_catalog.quantities import scu_to_physical_millis

    fam = catalog.by_name[family]
    terms = [{"matchExpressions": t} for t in terms_of(fam)]
    return {
        "annotations": {
            "machine-catalog.io/catalog": catalog.version,
            "machine-catalog.io/family": family,
            "machine-catalog.io/scu-per-core": str(fam.scu_per_core),
        },
        "cpu": millis_str(scu_to_physical_millis(scu_millis, fam.factor)),
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        },
    }


def rs_pods(
    pods: list[dict[str, Any]],
    app: str,
    namespace: str,
    rs_hash: str,
    placements: list[str | None],
    build: Any,
) -> None:
    """Append one ReplicaSet's pods; ``placements`` are node short names (None: not bound)."""
    owner = Owner("ReplicaSet", f"{app}-{rs_hash}", namespace)
    for i, short in enumerate(placements):
        n = node(short) if short else None
        if n is None:  # admitted seconds ago, not bound yet
            created = NOW - timedelta(seconds=4)
        else:
            created = n.created + timedelta(minutes=5 + 7 * i)
        pods.append(build(owner, f"{app}-{rs_hash}-{suffix(5)}", n, created))


def coredns_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # kube-system: CoreDNS on the two m5 nodes (EKS add-on requests: 100m CPU, 70Mi).
    def coredns(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="kube-system",
            owner=owner,
            labels={
                "eks.amazonaws.com/component": "coredns",
                "k8s-app": "kube-dns",
                "pod-template-hash": "5b8cc885bc",
            },
            containers=[
                container(
                    "coredns",
                    f"{ECR}/eks/coredns:v1.11.1-eksbuild.9",
                    resources("100m", "70Mi", mem_limit="170Mi"),
                    args=["-conf", "/etc/coredns/Corefile"],
                )
            ],
            node_spec=n,
            created=created,
            service_account="coredns",
            priority_class="system-cluster-critical",
        )

    rs_pods(
        pods, "coredns", "kube-system", "5b8cc885bc", ["ip-10-0-12-34", "ip-10-0-13-71"], coredns
    )
    for p in pods[-2:]:
        p["spec"]["containers"][0]["ports"] = [
            {"containerPort": 53, "name": "dns", "protocol": "UDP"},
            {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
            {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
        ]


def cluster_autoscaler_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # The small system node (t3.medium, unknown to the catalog) runs the cluster add-ons
    # that are pinned to it by nodeSelector.
    system_selector = {"eks.amazonaws.com/nodegroup": "system-t3"}

    def autoscaler(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="kube-system",
            owner=owner,
            labels={
                "app.kubernetes.io/name": "cluster-autoscaler",
                "pod-template-hash": "7f9d5c6b48",
            },
            containers=[
                container(
                    "cluster-autoscaler",
                    "registry.k8s.io/autoscaling/cluster-autoscaler:v1.29.2",
                    resources("100m", "600Mi", "100m", "600Mi"),
                    ports=[8085],
                    args=[
                        "--cloud-provider=aws",
                        "--expander=least-waste",
                        "--balance-similar-node-groups",
                    ],
                )
            ],
            node_spec=n,
            created=created,
            service_account="cluster-autoscaler",
            priority_class="system-cluster-critical",
            node_selector=system_selector,
        )

    rs_pods(pods, "cluster-autoscaler", "kube-system", "7f9d5c6b48", ["ip-10-0-15-96"], autoscaler)


def frontend_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # web: plain (not normalized) frontend with a regular init container.
    def frontend(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="web",
            owner=owner,
            labels={"app": "frontend", "pod-template-hash": "7c4d9f6b8d"},
            init_containers=[
                container(
                    "render-config", f"{APP_ECR}/web/config-render:1.3.0", resources("50m", "32Mi")
                )
            ],
            containers=[
                container(
                    "nginx",
                    f"{APP_ECR}/web/frontend:4.21.0",
                    resources("500m", "256Mi", "1", "256Mi"),
                    ports=[8080],
                )
            ],
            node_spec=n,
            created=created,
            automount=False,
        )

    rs_pods(pods, "frontend", "web", "7c4d9f6b8d", ["ip-10-0-13-71", "ip-10-0-45-118"], frontend)


def checkout_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # shop: the namespace is opted in (label machine-catalog.io/normalize=enabled on the
    # Namespace). checkout asks for 3 SCU (limit 6 SCU) and was pinned to aws-m6i; its
    # fourth replica was just admitted and is not bound yet (Pending, no nodeName).
    co = normalized("aws-m6i", 3000, catalog, terms_of)
    co_limit = normalized("aws-m6i", 6000, catalog, terms_of)["cpu"]

    def checkout(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="shop",
            owner=owner,
            annotations=co["annotations"],
            labels={
                "app": "checkout",
                "pod-template-hash": "6b8f7c9d54",
                "app.kubernetes.io/part-of": "shop",
            },
            init_containers=[
                container(
                    "wait-for-db",
                    f"{APP_ECR}/shop/wait-for:0.4.1",
                    resources("10m", "16Mi"),
                    args=["postgres.shop.svc:5432"],
                )
            ],
            containers=[
                container(
                    "checkout",
                    f"{APP_ECR}/shop/checkout:2.14.3",
                    resources(co["cpu"], "2Gi", co_limit, "2Gi"),
                    ports=[8080],
                )
            ],
            node_spec=n,
            created=created,
            service_account="checkout",
            affinity=co["affinity"],
            automount=False,
        )

    rs_pods(
        pods,
        "checkout",
        "shop",
        "6b8f7c9d54",
        ["ip-10-0-47-9", "ip-10-0-78-203", "ip-10-0-79-52", None],
        checkout,
    )


def payments_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    pay = normalized("aws-m6i", 2000, catalog, terms_of)
    pay_limit = normalized("aws-m6i", 4000, catalog, terms_of)["cpu"]

    def payments(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="shop",
            owner=owner,
            annotations=pay["annotations"],
            labels={
                "app": "payments",
                "pod-template-hash": "59c7d8f6b4",
                "app.kubernetes.io/part-of": "shop",
            },
            containers=[
                container(
                    "payments",
                    f"{APP_ECR}/shop/payments:1.9.0",
                    resources(pay["cpu"], "1Gi", pay_limit, "1Gi"),
                    ports=[8443],
                )
            ],
            node_spec=n,
            created=created,
            service_account="payments",
            affinity=pay["affinity"],
            automount=False,
        )

    rs_pods(pods, "payments", "shop", "59c7d8f6b4", ["ip-10-0-79-52"], payments)


def cart_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # cart opted out of normalization with the pod label; plain vCPU request.
    def cart(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="shop",
            owner=owner,
            labels={
                "app": "cart",
                "pod-template-hash": "84d6c9b7f5",
                "app.kubernetes.io/part-of": "shop",
                "machine-catalog.io/normalize": "disabled",
            },
            containers=[
                container(
                    "cart",
                    f"{APP_ECR}/shop/cart:3.2.7",
                    resources("500m", "512Mi", mem_limit="512Mi"),
                    ports=[8080],
                )
            ],
            node_spec=n,
            created=created,
            service_account="cart",
            automount=False,
        )

    rs_pods(pods, "cart", "shop", "84d6c9b7f5", ["ip-10-0-47-9"], cart)


def catalog_api_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # catalog-api on Graviton3, normalized to aws-m7g, with a restartable sidecar init
    # container (log shipper, restartPolicy: Always) before a regular init container.
    cat = normalized("aws-m7g", 2000, catalog, terms_of)

    def catalog_api(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="shop",
            owner=owner,
            annotations=cat["annotations"],
            labels={
                "app": "catalog-api",
                "pod-template-hash": "d7b5f9c86",
                "app.kubernetes.io/part-of": "shop",
            },
            init_containers=[
                container(
                    "log-shipper",
                    "cr.fluentbit.io/fluent/fluent-bit:3.0.4",
                    resources("100m", "64Mi", mem_limit="128Mi"),
                    sidecar=True,
                ),
                container(
                    "migrate-check",
                    f"{APP_ECR}/shop/catalog-api:5.0.2",
                    resources("250m", "128Mi"),
                    args=["migrate", "--check"],
                ),
            ],
            containers=[
                container(
                    "catalog-api",
                    f"{APP_ECR}/shop/catalog-api:5.0.2",
                    resources(cat["cpu"], "1536Mi", mem_limit="1536Mi"),
                    ports=[8080],
                )
            ],
            node_spec=n,
            created=created,
            service_account="catalog-api",
            affinity=cat["affinity"],
            automount=False,
        )

    rs_pods(
        pods, "catalog-api", "shop", "d7b5f9c86", ["ip-10-0-14-187", "ip-10-0-46-220"], catalog_api
    )


def stateful_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # StatefulSets.
    def sts_pod(
        app: str,
        namespace: str,
        ordinal: int,
        short: str,
        c: dict[str, Any],
        labels: dict[str, str],
        created: datetime,
        **kw,
    ) -> dict[str, Any]:
        owner = Owner("StatefulSet", app, namespace)
        name = f"{app}-{ordinal}"
        return make_pod(
            name=name,
            namespace=namespace,
            owner=owner,
            labels=labels
            | {
                "apps.kubernetes.io/pod-index": str(ordinal),
                "controller-revision-hash": f"{app}-{hexdigest('rev', app)[:10]}",
                "statefulset.kubernetes.io/pod-name": name,
            },
            containers=[c],
            node_spec=node(short),
            created=created,
            hostname=name,
            subdomain=f"{app}-headless",
            automount=False,
            extra_volumes=[
                {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}}
            ],
            **kw,
        )

    pods.append(
        sts_pod(
            "redis",
            "data",
            0,
            "ip-10-0-12-34",
            container(
                "redis",
                "public.ecr.aws/docker/library/redis:7.2.4",
                resources("2", "8Gi", "2", "8Gi"),
                ports=[6379],
                mounts=[{"mountPath": "/data", "name": "data"}],
            ),
            {"app.kubernetes.io/name": "redis"},
            day(5, 20, 8, 2),
        )
    )
    # The retiring m4 node still runs an old stateful service until it is migrated.
    pods.append(
        sts_pod(
            "billing-legacy",
            "legacy",
            0,
            "ip-10-0-77-15",
            container(
                "billing",
                f"{APP_ECR}/legacy/billing:2019.11.4",
                resources("3", "6Gi", "4", "6Gi"),
                ports=[8080],
                mounts=[{"mountPath": "/var/lib/billing", "name": "data"}],
            ),
            {"app": "billing-legacy"},
            day(2, 12, 9, 30),
            restarts=3,
        )
    )


def feature_extractor_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # ml on the bare-metal Sapphire Rapids hosts: a Kata-isolated pod whose RuntimeClass
    # adds spec.overhead, and a model server.
    def feature_extractor(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="ml",
            owner=owner,
            labels={"app": "feature-extractor", "pod-template-hash": "5f6c8d7b9"},
            containers=[
                container(
                    "extractor",
                    f"{APP_ECR}/ml/feature-extractor:0.12.0",
                    resources("8", "16Gi", "16", "16Gi"),
                )
            ],
            node_spec=n,
            created=created,
            runtime_class="kata-qemu",
            automount=False,
            overhead={"cpu": "250m", "memory": "160Mi"},
            node_selector={"katacontainers.io/kata-runtime": "true"},
        )

    rs_pods(pods, "feature-extractor", "ml", "5f6c8d7b9", ["mi-0a3f"], feature_extractor)


def model_server_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    ms = normalized("baremetal-spr", 16000, catalog, terms_of)

    def model_server(owner, name, n, created):
        return make_pod(
            name=name,
            namespace="ml",
            owner=owner,
            annotations=ms["annotations"],
            labels={"app": "model-server", "pod-template-hash": "7d8b9c5f6"},
            containers=[
                container(
                    "server",
                    f"{APP_ECR}/ml/model-server:3.4.1",
                    resources(ms["cpu"], "32Gi", ms["cpu"], "32Gi"),
                    ports=[8000, 8001],
                )
            ],
            node_spec=n,
            created=created,
            service_account="model-server",
            affinity=ms["affinity"],
            automount=False,
        )

    rs_pods(pods, "model-server", "ml", "7d8b9c5f6", ["mi-0a3f", "mi-0c71"], model_server)


def batch_job_pods(pods: list[dict[str, Any]], catalog: Any, terms_of: Any) -> None:
    # batch: completed Job pods (phase Succeeded) hold no resources.
    def job_pod(job: str, short: str, started: datetime, c: dict[str, Any]) -> dict[str, Any]:
        owner = Owner("Job", job, "batch", api_version="batch/v1")
        cron = job.rsplit("-", 1)[0]
        return make_pod(
            name=f"{job}-{suffix(5)}",
            namespace="batch",
            owner=owner,
            labels={
                "batch.kubernetes.io/controller-uid": owner.uid,
                "batch.kubernetes.io/job-name": job,
                "controller-uid": owner.uid,
                "job-name": job,
                "app": cron,
            },
            containers=[c],
            node_spec=node(short),
            created=started,
            phase="Succeeded",
            restart_policy="Never",
            automount=False,
        )

    # CronJob job names carry the scheduled time in minutes since the epoch.
    nightly = datetime(2024, 6, 4, 0, 0, tzinfo=UTC)
    backup = datetime(2024, 6, 4, 1, 0, tzinfo=UTC)
    pods.append(
        job_pod(
            f"nightly-report-{int(nightly.timestamp()) // 60}",
            "ip-10-0-45-118",
            nightly + timedelta(seconds=2),
            container(
                "report",
                f"{APP_ECR}/batch/report:1.8.0",
                resources("1500m", "3Gi", mem_limit="3Gi"),
            ),
        )
    )
    pods.append(
        job_pod(
            f"db-backup-{int(backup.timestamp()) // 60}",
            "ip-10-0-46-220",
            backup + timedelta(seconds=1),
            container(
                "pg-dump",
                f"{APP_ECR}/batch/pg-backup:16.3",
                resources("1", "2Gi", mem_limit="2Gi"),
                args=["--target=s3://demo-backups/shop"],
            ),
        )
    )


#: One function per workload, called in this order: the order fixes the random name
#: suffixes each draws, so the output stays byte for byte the same.
WORKLOADS = (
    coredns_pods,
    cluster_autoscaler_pods,
    frontend_pods,
    checkout_pods,
    payments_pods,
    cart_pods,
    catalog_api_pods,
    stateful_pods,
    feature_extractor_pods,
    model_server_pods,
    batch_job_pods,
)


def workload_pods(catalog: Any, terms_of: Any) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = []
    for workload in WORKLOADS:
        workload(pods, catalog, terms_of)
    return pods


# --------------------------------------------------------------------------------------
# Assembly and checks
# --------------------------------------------------------------------------------------


def build() -> dict[str, Any]:
    catalog, terms_of = catalog_handles()
    nodes = [node_object(n) for n in NODES]
    pods = daemonset_pods() + workload_pods(catalog, terms_of)
    nodes.sort(key=lambda o: o["metadata"]["name"])
    pods.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    return {
        "apiVersion": "v1",
        "items": nodes + pods,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


def check(snapshot: dict[str, Any], size: int) -> list[str]:
    """Everything the demo promises; returns a human-readable summary."""
    catalog, _ = catalog_handles()
    from machine_catalog.quantities import to_millis
    from machine_catalog.resources import holds_resources, pod_cpu_request_millis

    items = snapshot["items"]
    nodes = [o for o in items if o["kind"] == "Node"]
    pods = [o for o in items if o["kind"] == "Pod"]
    assert size <= MAX_BYTES, f"snapshot is {size} bytes, over {MAX_BYTES}"
    assert len({o["metadata"]["uid"] for o in items}) == len(items), "duplicate uid"
    used: dict[str, int] = {}
    count: dict[str, int] = {}
    for p in pods:
        name = p["spec"].get("nodeName")
        if name:
            count[name] = count.get(name, 0) + 1
        if holds_resources(p):
            used[name] = used.get(name, 0) + pod_cpu_request_millis(p)
    lines = []
    for o in nodes:
        name = o["metadata"]["name"]
        expected = BY_NAME[name].family
        match = catalog.match(o["metadata"]["labels"])
        got = match.family.name if match.family else None
        assert match.status != "ambiguous", f"{name}: {match.describe()}"
        assert got == expected, f"{name}: expected {expected}, catalog says {match.describe()}"
        alloc = to_millis(o["status"]["allocatable"]["cpu"])
        assert used.get(name, 0) <= alloc, f"{name}: pods request {used[name]}m > {alloc}m"
        itype = o["metadata"]["labels"].get("node.kubernetes.io/instance-type", "(bare metal)")
        flags = " cordoned" if o["spec"].get("unschedulable") else ""
        lines.append(
            f"{name:44s} {itype:13s} {got or 'UNKNOWN':14s} "
            f"alloc {o['status']['allocatable']['cpu']:>6s} used {used.get(name, 0):>6d}m "
            f"pods {count.get(name, 0)}{flags}"
        )
    pending = [p for p in pods if not p["spec"].get("nodeName")]
    assert (
        len(pending) == 1 and "machine-catalog.io/family" in pending[0]["metadata"]["annotations"]
    )
    assert sum(p["status"]["phase"] == "Succeeded" for p in pods) == 2
    assert any(p["spec"].get("overhead") for p in pods)
    assert any(
        c.get("restartPolicy") == "Always"
        for p in pods
        for c in p["spec"].get("initContainers", [])
    )
    lines.append(f"{len(nodes)} nodes, {len(pods)} pods, {size} bytes")
    return lines


def render(snapshot: dict[str, Any]) -> str:
    # kubectl prints the object as a map, keys sorted at every level. It indents by 4
    # spaces; 2 (as `kubectl ... -o json | jq .` shows it) keeps the packaged file under
    # MAX_BYTES with the same content.
    return json.dumps(snapshot, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the committed file only")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.check:
        text = args.out.read_text()
        expected = render(build())
        if text != expected:
            print(f"{args.out} differs from what this script generates; re-run it", file=sys.stderr)
            return 1
    else:
        text = render(build())
        args.out.write_text(text)
    for line in check(json.loads(text), len(text.encode())):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
