"""The family label ``machine-catalog.io/family`` on the real control plane: the session
server's leader keeps it on nodes, the webhook pins to it, kube-scheduler follows it.

Expected families are written out here (from the packaged catalog's instance-type lists),
not computed with the product's matcher. The module's own families, ``e2e-lab-a`` (1.0)
and ``e2e-lab-b`` (1.25), are added to the session catalog for the module and the catalog
is restored after it; their nodes (``lab-*``) are no other test's.
"""

from __future__ import annotations

import pytest
import yaml
from harness import objects
from harness.kube import bound, eventually, pod_manifest

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
KEEP = {"e2e.machine-catalog.io/keep": "yes", "team": "blue"}
#: The session cluster's synthetic nodes and the family label each must end up with:
#: m5.2xlarge and m6i.2xlarge are aws-m5 and aws-m6i (a cordoned node is still its
#: family's); m4 is the retired aws-m4; t3.medium is in no family; twin-ambiguous matches
#: e2e-twin-a and e2e-twin-b.
SESSION_NODES = {
    "m5-a": "aws-m5",
    "m5-b": "aws-m5",
    "m6i-cordoned": "aws-m6i",
    "m4-retired": None,
    "t3-unknown": None,
    "twin-ambiguous": None,
}
LAB_A = ["lab-a-0", "lab-a-1"]
LAB_B = "lab-b-0"


def labels(api, name: str) -> dict[str, str]:
    return dict(api.read_node(name).metadata.labels or {})


def wait_label(api, name: str, value: str | None, timeout: float = 30) -> dict[str, str]:
    return eventually(
        lambda: labels(api, name),
        lambda got: got.get(FAMILY) == value,
        timeout,
        f"{name} with {FAMILY}={value}",
    )


def catalog_with(text: str, **changes: dict) -> str:
    """The session catalog plus the module's two families, each changed by ``changes``."""
    doc = yaml.safe_load(text)
    doc["spec"]["families"] += [
        {"name": "e2e-lab-a", "scuPerCore": 1.0, "instanceTypes": ["e2e-lab-a.2xlarge"]},
        {"name": "e2e-lab-b", "scuPerCore": 1.25, "instanceTypes": ["e2e-lab-b.2xlarge"]},
    ]
    for family in doc["spec"]["families"]:
        family.update(changes.get(family["name"], {}))
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def lab(plane, api, server, scheduler, catalog):
    """The module's families in the served catalog and three nodes of theirs, each with two
    labels of a user's; the session catalog is restored after the module."""
    original = catalog.read_text()
    server.replace_catalog(catalog_with(original))
    nodes = [objects.node(n, {objects.INSTANCE_TYPE: "e2e-lab-a.2xlarge", **KEEP}) for n in LAB_A]
    nodes.append(objects.node(LAB_B, {objects.INSTANCE_TYPE: "e2e-lab-b.2xlarge", **KEEP}))
    objects.create_nodes(plane, nodes)
    try:
        yield original
    finally:
        server.replace_catalog(original)


def test_the_leader_labels_each_node_of_one_family_and_no_other(api, server):
    for name, family in SESSION_NODES.items():
        wait_label(api, name, family)
    # A real-world node of the fixture: its instance type is aws-m6i's.
    assert labels(api, "ip-10-0-1-23.ec2.internal")[FAMILY] == "aws-m6i"


def test_pods_created_once_a_family_is_labelled_are_pinned_by_the_label_alone(api, lab, namespace):
    """The pin is the family label in the nodeSelector, and nothing in the affinity: the
    one-label pin a user would write by hand, which kube-scheduler checks per node without
    the node-affinity term's per-node allocation."""
    for name in LAB_A:
        wait_label(api, name, "e2e-lab-a")
    pod = api.create_namespaced_pod(
        namespace, pod_manifest("pinned", "1", annotations={FAMILIES: "e2e-lab-a"})
    )
    assert pod.metadata.annotations[FAMILY] == "e2e-lab-a"
    assert pod.spec.node_selector == {FAMILY: "e2e-lab-a"}
    assert pod.spec.affinity is None
    assert bound(api, namespace, "pinned").spec.node_name in LAB_A


def test_a_node_that_becomes_ambiguous_loses_the_label_and_gets_it_back(api, lab):
    before = wait_label(api, LAB_B, "e2e-lab-b")
    # The twins' selector makes the node match e2e-lab-b and both twins.
    api.patch_node(LAB_B, {"metadata": {"labels": {objects.TWIN_LABEL: "twin"}}})
    after = wait_label(api, LAB_B, None)
    assert {k: v for k, v in after.items() if k != objects.TWIN_LABEL} == {
        k: v for k, v in before.items() if k != FAMILY
    }, "a label other than the family label changed"
    api.patch_node(LAB_B, {"metadata": {"labels": {objects.TWIN_LABEL: None}}})
    restored = wait_label(api, LAB_B, "e2e-lab-b")
    assert restored == before


def test_a_retired_family_loses_its_label_and_its_nodes_get_no_new_pods(
    plane, api, server, lab, namespace
):
    """A pod pinned to e2e-lab-a by the label waits for room there; the family is retired
    (``schedulable: false``) and the label leaves its nodes; room is then made on them, and
    the pod stays Pending: no node carries the label it asks for. New pods that allow both
    families go to e2e-lab-b."""
    for name in LAB_A:
        wait_label(api, name, "e2e-lab-a")
    residents = "lab-residents"
    api.create_namespace({"metadata": {"name": residents}})
    for name in LAB_A:
        api.create_namespaced_pod(residents, pod_manifest(f"on-{name}", "7", nodeName=name))
    api.create_namespaced_pod(
        namespace, pod_manifest("waiting", "4", annotations={FAMILIES: "e2e-lab-a"})
    )
    server.replace_catalog(catalog_with(lab, **{"e2e-lab-a": {"schedulable": False}}))
    for name in LAB_A:
        after = wait_label(api, name, None)
        assert {k: after.get(k) for k in KEEP} == KEEP
    api.delete_collection_namespaced_pod(residents, grace_period_seconds=0)
    eventually(lambda: api.list_namespaced_pod(residents).items, lambda p: not p, 30, "room made")
    for i in range(3):
        api.create_namespaced_pod(
            namespace,
            pod_manifest(f"new-{i}", "1", annotations={FAMILIES: "e2e-lab-a,e2e-lab-b"}),
        )
        assert bound(api, namespace, f"new-{i}").spec.node_name == LAB_B
    # The new pods are bound: the scheduler has had its cycles since the room was made.
    assert not api.read_namespaced_pod("waiting", namespace).spec.node_name
    server.replace_catalog(catalog_with(lab))
    for name in LAB_A:
        wait_label(api, name, "e2e-lab-a")
