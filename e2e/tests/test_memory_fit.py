"""A memory-heavy pod and the families whose nodes lack its memory, through the real API
server, ReplicaSet controller and kube-scheduler (issue 19, item 4).

e2e-mem-compute (1.3 SCU per vCPU, compute-optimised) gets two 8-vCPU nodes with 4Gi of
memory each: 20.8 SCU. e2e-mem-general (1.1) gets one 4-vCPU node with 32Gi: 4.4 SCU. Counted
by CPU alone the compute family wins every choice (the session server runs "most free").

- A pod of 1 SCU and 8Gi, allowed on both, fits no compute node (4Gi): it is pinned to the
  general family, asks ceil(1000 / 1.1) = 910m there, and kube-scheduler binds it there.
- A ReplicaSet pod of 1 SCU and 2Gi, admitted while the compute nodes had the memory, is
  pinned to compute; then pods bound by name take 3.5Gi of each compute node, and
  kube-scheduler reports it Unschedulable (Insufficient memory, the CPU is free). The
  stranded-pod remedy (the session server holds the Lease, re-creation after 20 s) deletes
  it, and the replacement is pinned to the general family and bound there.

The nodes are made for this module and deleted after it.
"""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import (
    bound,
    events_for,
    eventually,
    failed_scheduling,
    pod_manifest,
    recreated_pod,
)
from kubernetes import client

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
BOTH = {FAMILIES: "e2e-mem-compute,e2e-mem-general"}
GATE = "e2e.machine-catalog.io/hold"
COMPUTE_NODES = ["mem-compute-0", "mem-compute-1"]
GENERAL_NODE = "mem-general"
AFTER = 20  # --recreate-stranded-after in manifests/base/deployment.yaml
CYCLE = AFTER / 3


@pytest.fixture(scope="module")
def memory_families(plane, api, server, kubelet):
    compute = {objects.INSTANCE_TYPE: "e2e-mem-compute.2xlarge"}
    general = {objects.INSTANCE_TYPE: "e2e-mem-general.2xlarge"}
    nodes = [objects.node(n, compute, "8", memory="4Gi") for n in COMPUTE_NODES]
    nodes.append(objects.node(GENERAL_NODE, general, "4", memory="32Gi"))
    objects.create_nodes(plane, nodes)
    server.wait_for_nodes([*COMPUTE_NODES, GENERAL_NODE])
    yield
    for name in [*COMPUTE_NODES, GENERAL_NODE]:
        api.delete_node(name)


def dry_run_family(plane, namespace: str, memory: str) -> str | None:
    """The family the webhook would pin a pod of 1 SCU and ``memory`` to now."""
    body = pod_manifest("probe", "1", memory=memory, annotations=BOTH)
    out = plane.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", "--dry-run=server",
        input=json.dumps(body), check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["metadata"]["annotations"][FAMILY]


def test_a_pod_whose_memory_only_one_family_has_is_pinned_there_and_runs(
    plane, api, scheduler, memory_families, namespace
):
    # By CPU the compute family is the choice: a small pod goes there.
    assert dry_run_family(plane, namespace, "64Mi") == "e2e-mem-compute"

    pod = api.create_namespaced_pod(
        namespace, pod_manifest("heavy", "1", memory="8Gi", annotations=BOTH)
    )
    assert pod.metadata.annotations[FAMILY] == "e2e-mem-general"
    assert pod.spec.containers[0].resources.requests == {"cpu": "910m", "memory": "8Gi"}
    placed = bound(api, namespace, "heavy")
    assert placed.spec.node_name == GENERAL_NODE
    eventually(
        lambda: api.read_namespaced_pod("heavy", namespace).status.phase,
        lambda phase: phase == "Running",
        30,
        "heavy running",
    )


def held_replica_set(name: str, memory: str) -> dict:
    template = pod_manifest(name, "1", memory=memory, schedulingGates=[{"name": GATE}])
    return objects.controller("ReplicaSet", name, 1, template["spec"], BOTH)


def test_a_pod_whose_family_lost_the_memory_is_recreated_on_the_family_that_has_it(
    plane, api, scheduler, memory_families, namespace
):
    apps = client.AppsV1Api(plane.api_client())
    apps.create_namespaced_replica_set(namespace, held_replica_set("mem", "2Gi"))
    original = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=mem").items,
        lambda items: len(items) == 1,
        30,
        "the ReplicaSet's pod",
    )[0]
    # Admitted while both compute nodes had 4Gi free: the family with the most SCU.
    assert original.metadata.annotations[FAMILY] == "e2e-mem-compute"

    # Then the memory goes: 3.5Gi of each compute node taken by pods bound by name (little
    # CPU), in a namespace that is not opted in.
    fillers = f"{namespace}-fill"
    api.create_namespace({"metadata": {"name": fillers}})
    for node in COMPUTE_NODES:
        api.create_namespaced_pod(
            fillers, pod_manifest(f"on-{node}", "100m", memory="3584Mi", nodeName=node)
        )
    eventually(
        lambda: api.list_namespaced_pod(fillers).items,
        lambda pods: len(pods) == 2 and all(p.status.phase == "Running" for p in pods),
        30,
        "the memory fillers running",
    )
    apps.patch_namespaced_replica_set(
        "mem", namespace, {"spec": {"template": {"spec": {"schedulingGates": None}}}}
    )
    api.patch_namespaced_pod(
        original.metadata.name, namespace, [{"op": "remove", "path": "/spec/schedulingGates"}]
    )
    # kube-scheduler's own verdict: memory, not CPU (7.9 cores are free on each node).
    events = failed_scheduling(api, namespace, original.metadata.name, "memory verdict", 60)
    assert "Insufficient memory" in events[0].message, events[0].message
    assert "Insufficient cpu" not in events[0].message, events[0].message

    replacement = recreated_pod(
        api, namespace, "app=mem", original.metadata.uid, AFTER + 2 * CYCLE + 30
    )
    assert replacement.metadata.annotations[FAMILY] == "e2e-mem-general"
    assert replacement.spec.containers[0].resources.requests == {"cpu": "910m", "memory": "2Gi"}
    assert replacement.spec.node_name == GENERAL_NODE
    recreated = events_for(api, namespace, original.metadata.name, "StrandedPodRecreated")
    assert recreated, "no StrandedPodRecreated event on the deleted pod"
    assert "e2e-mem-general" in recreated[0].message, recreated[0].message
