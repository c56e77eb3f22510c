"""Opted-in pods while the server or its catalog changes, through the real API server.

- **The webhook down.** It is installed with ``failurePolicy: Fail``: while the session
  server is stopped, a pod create in an opted-in namespace is refused (never admitted with
  SCU read as vCPUs); once the server is back the same create succeeds, normalized.
- **A factor edited while pods are pending.** Family e2e-edit (1.0 SCU per vCPU, this
  module's own, one tainted 4-vCPU node filled by a pod bound by name) holds a pending
  pod converted at 1.0. The catalog then says 1.25. The pending pod keeps the millicores
  and factor it was converted with (requests are immutable, and they are still what it
  needs); a pod created after the edit is converted at 1.25; once the filler goes, both
  are bound to the node (2000m + 1600m of its 4000m).
"""

from __future__ import annotations

import json

import pytest
import yaml
from harness import objects
from harness.kube import eventually, pod_manifest
from kubernetes.client.exceptions import ApiException

FAMILY = "machine-catalog.io/family"
FACTOR = "machine-catalog.io/scu-per-core"
RECORD = "machine-catalog.io/standard-resources"
EDIT_NODE = "edit-0"
FILLERS = "edit-fillers"
TAINT = {"key": "e2e.machine-catalog.io/dedicated", "value": "edit", "effect": "NoSchedule"}
ON_EDIT = {
    "annotations": {"machine-catalog.io/families": "e2e-edit"},
    "tolerations": [{**TAINT, "operator": "Equal"}],
}


def create_or_none(api, namespace: str, body: dict):
    try:
        return api.create_namespaced_pod(namespace, body)
    except ApiException:
        return None  # still refused (the server syncing its cache answers 503)


def test_with_the_webhook_down_an_opted_in_create_is_refused_then_normalized(
    api, server, namespace
):
    server.stop()
    try:
        with pytest.raises(ApiException) as refused:
            api.create_namespaced_pod(namespace, pod_manifest("during", "1"))
        assert refused.value.status == 500, refused.value
        assert "pods.machine-catalog.io" in str(refused.value.body), refused.value.body
        assert [p.metadata.name for p in api.list_namespaced_pod(namespace).items] == []
    finally:
        server.start()
    pod = eventually(
        lambda: create_or_none(api, namespace, pod_manifest("during", "1")),
        lambda p: p is not None,
        60,
        "the create to succeed once the webhook is back",
    )
    annotations = pod.metadata.annotations
    assert annotations[FAMILY], annotations
    assert json.loads(annotations[RECORD]) == {"containers": {"app": {"requests": {"cpu": "1"}}}}
    factor = float(annotations[FACTOR])
    cpu = pod.spec.containers[0].resources.requests["cpu"]
    millis = int(cpu[:-1]) if cpu.endswith("m") else int(cpu) * 1000
    assert millis == -(-1000 * 1000 // round(factor * 1000)), (cpu, factor)


@pytest.fixture(scope="module")
def full_edit_node(plane, api, kubelet):
    node = objects.node(EDIT_NODE, {objects.INSTANCE_TYPE: "e2e-edit.2xlarge"}, "4")
    node["spec"]["taints"] = [TAINT]
    objects.create_nodes(plane, [node])
    api.create_namespace({"metadata": {"name": FILLERS}})
    api.create_namespaced_pod(FILLERS, pod_manifest("filler", "4", nodeName=EDIT_NODE))
    eventually(
        lambda: api.read_namespaced_pod("filler", FILLERS).status.phase,
        lambda phase: phase == "Running",
        30,
        "the filler running",
    )


def unschedulable(api, namespace: str, name: str) -> bool:
    conditions = api.read_namespaced_pod(name, namespace).status.conditions or []
    return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)


def test_a_factor_edited_while_pods_are_pending(
    plane, api, server, scheduler, catalog, full_edit_node, namespace
):
    before = eventually(
        lambda: create_or_none(api, namespace, pod_manifest("before", "2", **ON_EDIT)),
        lambda p: p is not None,
        30,
        "the pod pinned to e2e-edit",
    )
    assert before.metadata.annotations[FAMILY] == "e2e-edit"
    assert float(before.metadata.annotations[FACTOR]) == 1.0
    assert before.spec.containers[0].resources.requests["cpu"] == "2"
    eventually(lambda: unschedulable(api, namespace, "before"), bool, 60, "before pending")

    original = catalog.read_text()
    doc = yaml.safe_load(original)
    (edited,) = [f for f in doc["spec"]["families"] if f["name"] == "e2e-edit"]
    edited["scuPerCore"] = 1.25
    server.replace_catalog(yaml.safe_dump(doc, sort_keys=False))
    try:
        after = api.create_namespaced_pod(namespace, pod_manifest("after", "2", **ON_EDIT))
        assert after.metadata.annotations[FAMILY] == "e2e-edit"
        assert float(after.metadata.annotations[FACTOR]) == 1.25
        assert after.spec.containers[0].resources.requests["cpu"] == "1600m"
        # The pending pod is as it was converted: requests are immutable.
        still = api.read_namespaced_pod("before", namespace)
        assert still.spec.containers[0].resources.requests["cpu"] == "2"
        assert float(still.metadata.annotations[FACTOR]) == 1.0
        assert not still.spec.node_name

        api.delete_namespaced_pod("filler", FILLERS, grace_period_seconds=0)
        for name in ("before", "after"):
            placed = eventually(
                lambda name=name: api.read_namespaced_pod(name, namespace).spec.node_name,
                bool,
                90,
                f"{name} bound",
            )
            assert placed == EDIT_NODE
    finally:
        server.replace_catalog(original)
