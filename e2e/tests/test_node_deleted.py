"""A node deleted with pods bound to it, through the real API server, kube-controller-manager
(PodGC, the ReplicaSet controller) and kube-scheduler (issue 19, item 17).

e2e-gone (1.0 SCU per vCPU) gets one 8-vCPU node, e2e-stay (1.25) one 4-vCPU node, both made
for this module. A ReplicaSet of two 1-SCU pods allowed on both is pinned to e2e-gone (the
most free SCU: 8 against 5) and bound there. Then the node is deleted, as a cloud's node
group deletes a VM. There is no kubelet to evict the pods: the API server keeps them bound
to the missing node until kube-controller-manager's PodGC, after its 40 s quarantine, marks
them Failed and deletes them; their ReplicaSet then re-creates them.

What a user needs from the server meanwhile: it keeps answering; the family's room and its
``/metrics`` gauges follow the node (no node, no capacity, the orphans' requests counted
nowhere, as kube-scheduler counts them against no existing node); a new pod is never pinned
to the family that has no node left; a pod that allows only that family is refused with
the reason; and the ReplicaSet's replacements are pinned to e2e-stay, rewritten for it and
bound there.
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from harness import objects
from harness.kube import eventually, pod_manifest
from kubernetes import client

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
BOTH = {FAMILIES: "e2e-gone,e2e-stay"}
GONE_NODE, STAY_NODE = "gone-0", "stay-0"
STAY_FACTOR = Fraction("1.25")  # e2e-stay's scuPerCore (harness.objects.e2e_catalog)
POD_GC = 40 + 20 + 60  # quarantine, the GC period, then the ReplicaSet and the scheduler

# Also run on the oldest supported Kubernetes (make e2e-oldest): PodGC of pods on a deleted
# node and the webhook's view of a missing node are behaviours a release can change.
pytestmark = pytest.mark.every_version


@pytest.fixture(scope="module")
def two_families(plane, api, server, kubelet):
    objects.create_nodes(
        plane,
        [
            objects.node(GONE_NODE, {objects.INSTANCE_TYPE: "e2e-gone.2xlarge"}, "8"),
            objects.node(STAY_NODE, {objects.INSTANCE_TYPE: "e2e-stay.2xlarge"}, "4"),
        ],
    )
    server.wait_for_nodes([GONE_NODE, STAY_NODE])
    yield
    api.delete_node(STAY_NODE)


def replica_set(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": BOTH},
                "spec": pod_manifest(name, "1")["spec"],
            },
        },
    }


def family_gauges(server, family: str) -> dict[str, float]:
    """The server's per-family gauges (a family with no node may have none: 0)."""
    metrics = server.metrics()
    names = ("nodes", "capacity_scu", "requested_scu", "pending_scu")
    label = (("family", family),)
    return {n: metrics.get((f"machine_catalog_family_{n}", label), 0.0) for n in names}


def dry_run(plane, namespace: str, annotations: dict[str, str]):
    """The API server's answer to creating a 1-SCU pod now (nothing is stored)."""
    body = pod_manifest("probe", "1", annotations=annotations)
    return plane.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", "--dry-run=server",
        input=json.dumps(body), check=False,
    )  # fmt: skip


def running(pods) -> bool:
    return all(p.status.phase == "Running" and p.spec.node_name for p in pods)


def test_after_the_only_node_of_a_family_is_deleted_its_pods_go_to_another_family(
    plane, api, server, scheduler, two_families, namespace
):
    apps = client.AppsV1Api(plane.api_client())
    apps.create_namespaced_replica_set(namespace, replica_set("web", 2))
    originals = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=web").items,
        lambda items: len(items) == 2 and running(items),
        60,
        "two replicas running",
    )
    assert {p.metadata.annotations[FAMILY] for p in originals} == {"e2e-gone"}
    assert {p.spec.node_name for p in originals} == {GONE_NODE}
    eventually(
        lambda: family_gauges(server, "e2e-gone"),
        lambda g: g["nodes"] == 1 and g["requested_scu"] == 2,
        30,
        "the server counting the two replicas on e2e-gone",
    )

    api.delete_node(GONE_NODE)
    # The server follows the node: no node, no capacity, nothing requested on e2e-gone,
    # although the API server still has both pods bound to the missing node.
    eventually(
        lambda: family_gauges(server, "e2e-gone"),
        lambda g: g == {"nodes": 0, "capacity_scu": 0, "requested_scu": 0, "pending_scu": 0},
        30,
        "e2e-gone empty in the server's gauges",
    )
    orphans = api.list_namespaced_pod(namespace, label_selector="app=web").items
    assert {p.metadata.uid for p in orphans} == {p.metadata.uid for p in originals}
    assert {p.spec.node_name for p in orphans} == {GONE_NODE}
    status, ready = server.get("/readyz")
    assert status == 200, ready

    # A new pod allowed on both goes to the family that still has a node; one allowed only
    # on the family without nodes is refused, saying why.
    both = dry_run(plane, namespace, BOTH)
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["metadata"]["annotations"][FAMILY] == "e2e-stay"
    only_gone = dry_run(plane, namespace, {FAMILIES: "e2e-gone"})
    assert only_gone.returncode != 0
    assert "no uncordoned node in the cluster: e2e-gone" in only_gone.stderr, only_gone.stderr

    # PodGC deletes the orphans; the ReplicaSet's replacements land on e2e-stay.
    old = {p.metadata.uid for p in originals}
    replacements = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=web").items,
        lambda items: (
            len(items) == 2 and not old & {p.metadata.uid for p in items} and running(items)
        ),
        POD_GC,
        "the orphans garbage-collected and their replacements running",
    )
    per_pod = -(-1000 // STAY_FACTOR)  # 1 SCU in e2e-stay's millicores, rounded up
    for pod in replacements:
        assert pod.metadata.annotations[FAMILY] == "e2e-stay"
        assert objects.millis(pod.spec.containers[0].resources.requests["cpu"]) == per_pod
        assert pod.spec.node_name == STAY_NODE
    eventually(
        lambda: family_gauges(server, "e2e-stay")["requested_scu"],
        lambda scu: scu == int(2 * per_pod * STAY_FACTOR) / 1000,
        30,
        "the server counting the replacements on e2e-stay",
    )
    assert server.get("/readyz")[0] == 200
