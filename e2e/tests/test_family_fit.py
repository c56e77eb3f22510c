"""A family choice that fits: aggregated free SCU hides fragmentation, through the real API
server and kube-scheduler.

azure-dv3 (0.85 SCU per vCPU) gets three 4-vCPU nodes, each filled to 1500m free (1.275 SCU:
3.8 SCU in all); azure-dv4 (1.05) one 4-vCPU node with 2000m free (2.1 SCU). A pod of 2 SCU
allowed on both needs 2353m on a dv3 node, which none has, and 1905m on dv4, which its node
has: it is pinned to dv4 and bound there, although dv3 has more free SCU in total. The nodes
are made for this module and filled with pods bound by name in a namespace that is not
opted in (physical CPU, no scheduler).
"""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import eventually, pod_manifest

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
BOTH = {FAMILIES: "azure-dv3,azure-dv4"}
DV3_NODES = ["fit-dv3-0", "fit-dv3-1", "fit-dv3-2"]
DV4_NODE = "fit-dv4"


@pytest.fixture(scope="module")
def fragmented(plane, api, server, kubelet):
    nodes = [objects.node(n, {objects.INSTANCE_TYPE: "Standard_D4_v3"}, "4") for n in DV3_NODES]
    nodes.append(objects.node(DV4_NODE, {objects.INSTANCE_TYPE: "Standard_D4_v4"}, "4"))
    objects.create_nodes(plane, nodes)
    api.create_namespace({"metadata": {"name": "fit-fillers"}})
    for name in DV3_NODES:
        api.create_namespaced_pod("fit-fillers", pod_manifest(f"on-{name}", "2500m", nodeName=name))
    api.create_namespaced_pod("fit-fillers", pod_manifest(f"on-{DV4_NODE}", "2", nodeName=DV4_NODE))
    eventually(
        lambda: api.list_namespaced_pod("fit-fillers").items,
        lambda pods: len(pods) == 4 and all(p.status.phase == "Running" for p in pods),
        30,
        "the fillers running",
    )


def dry_run_family(plane, namespace: str, cpu: str) -> str | None:
    """The family the webhook would pin a pod of ``cpu`` SCU to now (no reservation)."""
    body = pod_manifest("probe", cpu, annotations=BOTH)
    out = plane.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", "--dry-run=server",
        input=json.dumps(body), check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)["metadata"]["annotations"][FAMILY]


def test_a_pod_goes_to_the_family_with_a_node_that_holds_it_not_the_most_free_scu(
    plane, api, server, scheduler, fragmented, namespace
):
    # The webhook's cache has the fillers once the choice for 2 SCU turns to dv4 (on empty
    # nodes, dv3 has both more room in total and nodes that hold the pod).
    eventually(
        lambda: dry_run_family(plane, namespace, "2"),
        lambda family: family == "azure-dv4",
        30,
        "the webhook to see the fillers",
    )
    # The choice is the fit, not the totals: a pod of 1 SCU, which a node of either family
    # holds, goes to dv3, which has the most free SCU (3.8 against 2.1).
    assert dry_run_family(plane, namespace, "1") == "azure-dv3"

    pod = api.create_namespaced_pod(namespace, pod_manifest("fits", "2", annotations=BOTH))
    assert pod.metadata.annotations[FAMILY] == "azure-dv4"
    assert pod.spec.containers[0].resources.requests["cpu"] == "1905m"  # ceil(2000 / 1.05)
    placed = eventually(
        lambda: api.read_namespaced_pod("fits", namespace).spec.node_name,
        bool,
        60,
        "fits bound",
    )
    assert placed == DV4_NODE
