"""kube-scheduler calling the extender: where pods land, what never gets used, what the
events say, and what happens while the extender is away.

Each test uses its own families so that pods of earlier tests do not change its room:
the session's cluster is shared (see conftest).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from harness import objects
from harness.kube import bound, failed_scheduling, pod_manifest

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
BETA_INSTANCE_TYPE = "beta.kubernetes.io/instance-type"
NEVER_USED = {"t3-unknown", "twin-ambiguous", "m4-retired", "m6i-cordoned"}


# The family of every node a pod may land on, written out by hand from the packaged
# catalog (not computed with the product's matcher, which is what is under test). The
# session's nodes by name (the real-world fixture has a bare-metal node without an
# instance type), the nodes other tests add by their instance type.
FAMILY_OF_NODE = {
    "ip-10-0-1-23.ec2.internal": "aws-m6i",
    "ip-10-0-7-201.ec2.internal": "aws-m7g",
    "gke-prod-pool-n2-8f7c2a1b-x7k2": "gcp-n2",
    "aks-d8sv5-31415926-vmss000004": "azure-dv5",
    "10.0.16.42": "tencent-s5",
    "rack12-node07": "baremetal-spr",
    "m5-a": "aws-m5",
    "m5-b": "aws-m5",
}
FAMILY_OF_INSTANCE_TYPE = {
    "S6.LARGE8": "tencent-s6",
    "SA2.MEDIUM4": "tencent-sa2",
    "SA3.2XLARGE16": "tencent-sa3",
    "Standard_D4_v3": "azure-dv3",
    "Standard_D4_v4": "azure-dv4",
    "Standard_D8as_v5": "azure-dasv5",
    "c3-standard-8": "gcp-c3",
    "c5.2xlarge": "aws-c5",
    "c6i.2xlarge": "aws-c6i",
    "c7g.2xlarge": "aws-c7g",
    "e2e-rank.2xlarge": "e2e-rank",
    "m5.2xlarge": "aws-m5",
    "m5.xlarge": "aws-m5",
    "m6a.2xlarge": "aws-m6a",
    "m6g.2xlarge": "aws-m6g",
    "m6i.2xlarge": "aws-m6i",
    "m7a.2xlarge": "aws-m7a",
    "m7i.2xlarge": "aws-m7i",
    "n1-standard-4": "gcp-n1",
    "n2d-standard-8": "gcp-n2d",
    "t2a-standard-8": "gcp-t2a",
}


def family_of_node(api, name: str) -> str:
    """The expected family of a node, from the tables above."""
    if name in FAMILY_OF_NODE:
        return FAMILY_OF_NODE[name]
    labels = api.read_node(name).metadata.labels
    instance_type = labels.get(objects.INSTANCE_TYPE) or labels.get(BETA_INSTANCE_TYPE)
    assert instance_type in FAMILY_OF_INSTANCE_TYPE, f"{name} ({instance_type}): add it above"
    return FAMILY_OF_INSTANCE_TYPE[instance_type]


@pytest.mark.parametrize(
    "families",
    ["aws-m7g", "gcp-n2", "baremetal-spr", "aws-m6i,gcp-n2", None],
)
def test_pods_land_only_on_nodes_of_the_family_they_were_sized_for(
    api, scheduler, kubelet, namespace, families
):
    annotations = {FAMILIES: families} if families else {}
    for i in range(3):
        api.create_namespaced_pod(namespace, pod_manifest(f"p{i}", "500m", annotations=annotations))
    for i in range(3):
        pod = bound(api, namespace, f"p{i}")
        family = pod.metadata.annotations[FAMILY]
        if families:
            assert family in families.split(",")
        assert family_of_node(api, pod.spec.node_name) == family
        assert pod.spec.node_name not in NEVER_USED


@pytest.mark.parametrize("node", ["t3-unknown", "twin-ambiguous", "m4-retired"])
def test_unknown_ambiguous_and_retired_nodes_are_refused_by_the_extender(
    plane, api, scheduler, node
):
    """A pod the webhook never saw (not opted in) asks our scheduler for one of these nodes by
    name: the in-tree filters let it through, the extender must not."""
    ns = f"direct-{node}"
    api.create_namespace({"metadata": {"name": ns}})
    body = pod_manifest("p", "100m", scheduler="machine-catalog")
    body["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    api.create_namespaced_pod(ns, body)
    events = failed_scheduling(api, ns, "p", "FailedScheduling")
    message = events[0].message
    expected = {
        "t3-unknown": "matches no family",
        "twin-ambiguous": "matches several families",
        "m4-retired": "is retired",
    }[node]
    assert expected in message, message
    time.sleep(2)
    assert not api.read_namespaced_pod("p", ns).spec.node_name


def test_a_full_family_gives_failed_scheduling_events_with_the_extenders_reasons(
    plane, api, scheduler, kubelet, namespace
):
    """azure-dv5 has one node (7820m at 1.15 = 8.99 SCU). The first pod takes 8 SCU; a
    second pod of 4 SCU pinned there cannot be placed, and the event says why."""
    api.create_namespaced_pod(
        namespace, pod_manifest("big", "8", annotations={FAMILIES: "azure-dv5"})
    )
    bound(api, namespace, "big")
    api.create_namespaced_pod(
        namespace, pod_manifest("more", "4", annotations={FAMILIES: "azure-dv5"})
    )
    events = failed_scheduling(
        api, namespace, "more", "FailedScheduling for the pod that does not fit"
    )
    message = events[-1].message
    # The pin leaves one candidate node, full in vCPU too, so the in-tree fit names it; every
    # other node is excluded by the pin the webhook wrote (the family label's nodeSelector,
    # or the affinity before the leader labelled the family's nodes).
    assert "0/" in message and ("Insufficient cpu" in message or "needs 4 SCU" in message)
    assert "didn't match Pod's node affinity/selector" in message
    assert not api.read_namespaced_pod("more", namespace).spec.node_name

    # A pod not sized by the webhook but pinned by annotation alone (as the README's tour
    # shows) reaches the extender with every node the in-tree filters let through: the event
    # carries the extender's own reasons.
    ns = "direct-pinned"
    api.create_namespace({"metadata": {"name": ns}})
    direct = pod_manifest(
        "pinned", "3", annotations={FAMILY: "azure-dv5"}, scheduler="machine-catalog"
    )
    api.create_namespaced_pod(ns, direct)
    events = failed_scheduling(api, ns, "pinned", "FailedScheduling with extender reasons")
    message = events[-1].message
    assert "pod is pinned to family azure-dv5" in message, message


def test_the_scoring_strategy_is_visible_in_where_pods_land(
    plane, api, server, scheduler, kubelet, namespace, catalog
):
    """aws-m6g gets two equal nodes made for this test. With ``balanced`` pods alternate
    between them; after a hot reload to ``binpack`` the next pods all go to the fuller
    node, which the in-tree scorers (least allocated) alone would never do."""
    nodes = ["score-a", "score-b"]
    objects.create_nodes(
        plane, [objects.node(n, {objects.INSTANCE_TYPE: "m6g.2xlarge"}) for n in nodes]
    )
    server.wait_for_nodes(nodes)
    original = catalog.read_text()

    def place(prefix: str, count: int) -> list[str]:
        placed = []
        for i in range(count):
            name = f"{prefix}{i}"
            api.create_namespaced_pod(
                namespace, pod_manifest(name, "1", annotations={FAMILIES: "aws-m6g"})
            )
            placed.append(bound(api, namespace, name).spec.node_name)
        return placed

    balanced = place("bal", 4)
    assert sorted(balanced) == ["score-a", "score-a", "score-b", "score-b"], balanced
    try:
        set_scoring(server, catalog, "binpack")
        packed = place("pack", 3)
        assert len(set(packed)) == 1, packed
    finally:
        server.replace_catalog(original)


def set_scoring(server, catalog: Path, strategy: str) -> None:
    doc = yaml.safe_load(catalog.read_text())
    doc["spec"]["scoring"] = {"strategy": strategy}
    server.replace_catalog(yaml.safe_dump(doc, sort_keys=False))


def test_with_the_extender_stopped_pods_stay_pending_and_are_placed_once_it_is_back(
    plane, api, server, scheduler, kubelet
):
    ns = "extender-outage"
    api.create_namespace({"metadata": {"name": ns}})
    server.stop()
    try:
        body = pod_manifest(
            "waits", "500m", annotations={FAMILY: "gcp-n2"}, scheduler="machine-catalog"
        )
        api.create_namespaced_pod(ns, body)
        events = failed_scheduling(api, ns, "waits", "FailedScheduling while the extender is down")
        # The failed call to the extender's URL: "connection refused", or "connection reset"
        # when the server went down under kube-scheduler's kept-alive connection.
        message = events[-1].message
        assert "/scheduler/filter" in message, message
        assert "refused" in message or "reset" in message or "EOF" in message, message
        time.sleep(3)
        assert not api.read_namespaced_pod("waits", ns).spec.node_name
    finally:
        server.start()
    pod = bound(api, ns, "waits", timeout=90)
    assert family_of_node(api, pod.spec.node_name) == "gcp-n2"
