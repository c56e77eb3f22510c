"""Pods stranded on a family that filled up after admission (``serve
--recreate-stranded-after``), through the real API server, ReplicaSet controller and
kube-scheduler; and the RBAC the remedy needs.

tencent-s6 (1.1 SCU per vCPU) gets one 8-vCPU node, tencent-sa2 (1.05) one 4-vCPU node, both
made for this module. A ReplicaSet pod and a bare pod, each 2 SCU and allowed on both, are
admitted while s6 has the most room, so both are pinned to s6; they are held by a
scheduling gate until a pod bound by name fills s6's node. Released, kube-scheduler finds
no room for them. The ReplicaSet's pod is deleted and re-created, and its replacement is
pinned to sa2 and bound; the bare pod (no controller to re-create it) is left alone.

The session's server runs the manifests' arguments (re-creation after 20 s, a cycle every
20 / 3 s) and, as the only replica, holds the Lease, so its loop is the one that acts: a
pod is re-created 20 to ~27 s after it was created.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from harness import objects
from harness.kube import events_for, eventually, pod_manifest, recreated_pod
from kubernetes import client

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
BOTH = {FAMILIES: "tencent-s6,tencent-sa2"}
GATE = "e2e.machine-catalog.io/hold"
AFTER = 20  # manifests/base/deployment.yaml
CYCLE = AFTER / 3
S6_NODE, SA2_NODE = "str-s6", "str-sa2"
SERVICE_ACCOUNT = "system:serviceaccount:machine-catalog-system:machine-catalog"


@pytest.fixture(scope="module")
def two_families(plane, server):
    objects.create_nodes(
        plane,
        [
            objects.node(S6_NODE, {objects.INSTANCE_TYPE: "S6.LARGE8"}, "8"),
            objects.node(SA2_NODE, {objects.INSTANCE_TYPE: "SA2.MEDIUM4"}, "4"),
        ],
    )
    # The session server admits the pods and, holding the Lease, re-creates them.
    server.wait_for_nodes([S6_NODE, SA2_NODE])


def held_pod(name: str) -> dict:
    return pod_manifest(name, "2", annotations=BOTH, schedulingGates=[{"name": GATE}])


def replica_set(name: str) -> dict:
    return objects.controller("ReplicaSet", name, 1, held_pod(name)["spec"], BOTH)


def release(api, namespace: str, name: str) -> None:
    api.patch_namespaced_pod(name, namespace, [{"op": "remove", "path": "/spec/schedulingGates"}])


def unschedulable(pod) -> bool:
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in pod.status.conditions or []
    )


def recreations(srv) -> float:
    metrics = srv.get("/metrics")[1]
    for line in metrics.splitlines():
        if line.startswith('machine_catalog_stranded_pod_recreations_total{outcome="recreated"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_replicaset_pod_stranded_on_a_full_family_is_recreated_on_one_with_room(
    plane, api, scheduler, kubelet, server, two_families, namespace
):
    apps = client.AppsV1Api(plane.api_client())
    before = recreations(server)
    # The bare pod first: it is at least as old as the ReplicaSet's, so it has waited long
    # enough whenever the ReplicaSet's pod is re-created.
    bare = api.create_namespaced_pod(namespace, held_pod("bare"))
    apps.create_namespaced_replica_set(namespace, replica_set("web"))
    pods = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=web").items,
        lambda items: len(items) == 1,
        30,
        "the ReplicaSet's pod",
    )
    original = pods[0]
    # s6 had the most free SCU (8.8 against 4.2, then 6.8 once the bare pod was pinned).
    assert bare.metadata.annotations[FAMILY] == "tencent-s6"
    assert original.metadata.annotations[FAMILY] == "tencent-s6"

    # s6 fills up after admission: 7 of its 8 vCPUs taken by a pod bound by name, in a
    # namespace that is not opted in. Neither pod (1819m) fits there any more.
    api.create_namespace({"metadata": {"name": "stranding-filler"}})
    api.create_namespaced_pod("stranding-filler", pod_manifest("fill", "7", nodeName=S6_NODE))
    eventually(
        lambda: api.read_namespaced_pod("fill", "stranding-filler").status.phase,
        lambda phase: phase == "Running",
        30,
        "the filler running",
    )
    # Replacements come without the gate; then both pods are released to the scheduler.
    apps.patch_namespaced_replica_set(
        "web", namespace, {"spec": {"template": {"spec": {"schedulingGates": None}}}}
    )
    release(api, namespace, original.metadata.name)
    release(api, namespace, "bare")
    eventually(
        lambda: [api.read_namespaced_pod(n, namespace) for n in ("bare", original.metadata.name)],
        lambda both: all(unschedulable(p) for p in both),
        60,
        "both pods reported unschedulable",
    )

    replacement = recreated_pod(
        api, namespace, "app=web", original.metadata.uid, AFTER + 2 * CYCLE + 30
    )
    assert replacement.metadata.annotations[FAMILY] == "tencent-sa2"
    assert replacement.spec.containers[0].resources.requests["cpu"] == "1905m"  # 2 SCU on sa2
    assert replacement.spec.node_name == SA2_NODE

    events = events_for(api, namespace, original.metadata.name, "StrandedPodRecreated")
    assert events, "no StrandedPodRecreated event on the deleted pod"
    assert "tencent-s6" in events[0].message and "tencent-sa2" in events[0].message
    assert events_for(api, namespace, "web", "StrandedPodRecreated")  # on the ReplicaSet too
    assert recreations(server) >= before + 1

    # The bare pod, just as stranded, has no controller to re-create it: it is never
    # deleted. Give the re-creating server a full cycle after it was due.
    created = bare.metadata.creation_timestamp.timestamp()
    time.sleep(max(0.0, created + AFTER + CYCLE + 2 - datetime.now(UTC).timestamp()))
    still = api.read_namespaced_pod("bare", namespace)
    assert still.metadata.uid == bare.metadata.uid
    assert not still.spec.node_name and unschedulable(still)
    assert still.metadata.annotations[FAMILY] == "tencent-s6"


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("delete", "pods", True),  # re-creation of stranded pods
        ("create", "events", True),  # StrandedPodRecreated
        ("list", "pods", True),
        ("watch", "nodes", True),
        ("update", "pods", False),
        ("patch", "pods", False),
        ("delete", "nodes", False),
    ],
)
def test_the_servers_service_account_may_delete_pods_but_not_change_them(
    plane, server, verb, resource, allowed
):
    """The manifests' RBAC (applied by the session server's kubeconfig), as the API server's
    authorizer answers for the ServiceAccount ``serve`` runs as."""
    out = plane.kubectl(
        "auth", "can-i", verb, resource, "--all-namespaces", "--as", SERVICE_ACCOUNT, check=False
    )
    assert out.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, out)
