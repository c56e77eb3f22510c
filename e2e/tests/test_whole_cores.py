"""A Guaranteed pod is checked for room with the whole cores the patch gives it, through the
real API server and kube-scheduler.

Two families of this module's own: e2e-whole-fast (1.3 SCU per vCPU) and e2e-whole-base
(1.0), one 4-vCPU node each, tainted for this module only. Fillers bound by name leave 1.9
cores free on the fast node (2.47 SCU) and 2.1 on the base node. A Guaranteed ``cpu: 2``
pod gets 2 whole cores wherever it goes (static CPU manager), which the fast node cannot
hold: it is pinned to the base family and bound there. A Burstable ``cpu: 2`` pod gets
``ceil(2000 / 1.3) = 1539m`` on the fast node, which holds it, and the fast family has the
most free SCU: it goes there.
"""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import eventually, pod_manifest

FAMILY = "machine-catalog.io/family"
FAMILIES = {"machine-catalog.io/families": "e2e-whole-fast,e2e-whole-base"}
TAINT = {"key": "e2e.machine-catalog.io/dedicated", "value": "whole-cores", "effect": "NoSchedule"}
TOLERATE = [{**TAINT, "operator": "Equal"}]
FAST, BASE = "whole-fast-0", "whole-base-0"
FILLERS = "whole-fillers"


def guaranteed(name: str) -> dict:
    body = pod_manifest(name, "2", annotations=FAMILIES, tolerations=TOLERATE)
    resources = body["spec"]["containers"][0]["resources"]
    resources["limits"] = dict(resources["requests"])
    return body


@pytest.fixture(scope="module")
def nodes(plane, api, server, kubelet):
    made = []
    for name, family in ((FAST, "e2e-whole-fast"), (BASE, "e2e-whole-base")):
        node = objects.node(name, {objects.INSTANCE_TYPE: f"{family}.2xlarge"}, "4")
        node["spec"]["taints"] = [TAINT]
        made.append(node)
    objects.create_nodes(plane, made)
    api.create_namespace({"metadata": {"name": FILLERS}})
    for node, cpu in ((FAST, "2100m"), (BASE, "1900m")):
        api.create_namespaced_pod(FILLERS, pod_manifest(f"on-{node}", cpu, nodeName=node))
    eventually(
        lambda: api.list_namespaced_pod(FILLERS).items,
        lambda pods: len(pods) == 2 and all(p.status.phase == "Running" for p in pods),
        30,
        "the fillers running",
    )


def dry_run(plane, namespace: str, body: dict) -> dict:
    out = plane.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", "--dry-run=server",
        input=json.dumps(body),
    )  # fmt: skip
    return json.loads(out.stdout)


def test_a_guaranteed_pod_goes_where_its_whole_cores_fit(
    plane, api, server, scheduler, nodes, namespace
):
    # On empty nodes the fast family would hold the pod too (and has more room): the choice
    # turns to base only once the webhook's cache has the fillers.
    eventually(
        lambda: dry_run(plane, namespace, guaranteed("probe"))["metadata"]["annotations"][FAMILY],
        lambda family: family == "e2e-whole-base",
        30,
        "the webhook to see the fillers",
    )
    # Burstable, the same SCU: 1539m fits the fast node's 1.9 cores, and fast has the most.
    burstable = dry_run(
        plane, namespace, pod_manifest("probe", "2", annotations=FAMILIES, tolerations=TOLERATE)
    )
    assert burstable["metadata"]["annotations"][FAMILY] == "e2e-whole-fast"
    assert burstable["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1539m"

    pod = api.create_namespaced_pod(namespace, guaranteed("whole"))
    assert pod.metadata.annotations[FAMILY] == "e2e-whole-base"
    resources = pod.spec.containers[0].resources
    assert resources.requests["cpu"] == resources.limits["cpu"] == "2"
    placed = eventually(
        lambda: api.read_namespaced_pod("whole", namespace).spec.node_name,
        bool,
        60,
        "whole bound",
    )
    assert placed == BASE
    assert api.read_namespaced_pod("whole", namespace).status.qos_class == "Guaranteed"


def test_held_to_the_fast_family_it_is_warned_that_it_cannot_fit(
    plane, api, server, nodes, namespace
):
    body = guaranteed("held")
    body["metadata"]["annotations"] = {"machine-catalog.io/families": "e2e-whole-fast"}
    out = eventually(
        lambda: plane.kubectl(
            "create",
            "-n",
            namespace,
            "-f",
            "-",
            "-o",
            "json",
            "--dry-run=server",
            input=json.dumps(body),
        ),
        lambda out: "2 cores there: 2.6 SCU" in out.stderr,
        30,
        "the warning that 2 cores do not fit (once the webhook sees the fillers)",
    )
    assert json.loads(out.stdout)["metadata"]["annotations"][FAMILY] == "e2e-whole-fast"
