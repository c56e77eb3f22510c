"""Webhooks that run after ours, through the real API server (``reinvocationPolicy:
IfNeeded``): a sidecar injector's container is normalized on our second call and recorded,
and a policy webhook's nodeSelector that contradicts the pinned family is denied.

The other webhooks are served from the test process (:mod:`harness.webhooks`), named
``zz-...`` so that the API server calls them after ``machine-catalog``, and scoped to the
test's namespace. Pods here are pinned to gcp-t2a (1.1 SCU per vCPU) and its one node,
made for this module.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from harness import objects
from harness.kube import eventually, pod_manifest
from harness.webhooks import TestWebhook
from kubernetes.client.rest import ApiException

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
STANDARD = "machine-catalog.io/standard-resources"
ON_T2A = {FAMILIES: "gcp-t2a"}
FACTOR = Fraction("1.1")


def physical(scu_millis: int) -> str:
    """``ceil(scu / scuPerCore)`` millicores, as the API server stores it."""
    millis = math.ceil(scu_millis / FACTOR)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


@pytest.fixture(scope="module")
def t2a_node(plane, api, server):
    objects.create_nodes(plane, [objects.node("lw-t2a", {objects.INSTANCE_TYPE: "t2a-standard-8"})])
    probe = pod_manifest("probe", annotations=ON_T2A)
    objects.opted_in_namespace(plane, "lw-probe-in")

    def admitted() -> bool:
        try:
            api.create_namespaced_pod("lw-probe-in", probe, dry_run="All")
        except ApiException:
            return False
        return True

    eventually(admitted, bool, 30, "the webhook's cache to know the gcp-t2a node")
    return "lw-t2a"


def mesh_agent(pod: dict) -> list[dict]:
    """A sidecar injector: appends ``mesh-agent`` (250m, in SCU like every value in an
    opted-in namespace) unless the pod has it already (it is called again too)."""
    if any(c.get("name") == "mesh-agent" for c in pod["spec"]["containers"]):
        return []
    agent = {
        "name": "mesh-agent",
        "image": "registry.k8s.io/pause:3.10",
        "resources": {
            "requests": {"cpu": "250m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "32Mi"},
        },
    }
    return [{"op": "add", "path": "/spec/containers/-", "value": agent}]


def test_a_sidecar_injected_after_us_is_normalized_and_recorded(
    plane, api, server, scheduler, kubelet, t2a_node, namespace
):
    with TestWebhook(plane, "zz-sidecar", namespace, mesh_agent):
        pod = api.create_namespaced_pod(namespace, pod_manifest("meshed", "2", annotations=ON_T2A))
    assert pod.metadata.annotations[FAMILY] == "gcp-t2a"
    requests = {c.name: c.resources.requests["cpu"] for c in pod.spec.containers}
    assert requests == {"app": physical(2000), "mesh-agent": physical(250)}  # 1819m, 228m
    limits = {c.name: (c.resources.limits or {}).get("cpu") for c in pod.spec.containers}
    assert limits == {"app": None, "mesh-agent": physical(500)}  # 455m
    record = json.loads(pod.metadata.annotations[STANDARD])
    assert record["containers"] == {
        "app": {"requests": {"cpu": "2"}},
        "mesh-agent": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m"}},
    }
    bound = eventually(
        lambda: api.read_namespaced_pod("meshed", namespace),
        lambda p: bool(p.spec.node_name),
        60,
        "meshed bound",
    )
    assert bound.spec.node_name == t2a_node


def test_a_later_node_selector_for_another_family_is_denied_naming_the_pinned_family(
    plane, api, server, t2a_node, namespace
):
    """A policy webhook sends every pod to gcp-c3 nodes; the pod's CPU is already converted
    for gcp-t2a, and no gcp-t2a node is left to it: the create is refused, saying so."""

    def to_c3(pod: dict) -> list[dict]:
        selector = {objects.INSTANCE_TYPE: "c3-standard-8"}
        if (pod["spec"].get("nodeSelector") or {}) == selector:
            return []
        return [{"op": "add", "path": "/spec/nodeSelector", "value": selector}]

    with TestWebhook(plane, "zz-policy", namespace, to_c3) as hook:
        calls = hook.calls
        with pytest.raises(ApiException) as denied:
            api.create_namespaced_pod(namespace, pod_manifest("moved", "2", annotations=ON_T2A))
        assert hook.calls > calls
    assert denied.value.status == 403
    message = json.loads(denied.value.body)["message"]
    assert "pinned to family gcp-t2a" in message, message
    assert "later admission webhook" in message, message

    # Without the policy webhook the same pod is admitted: the denial was the contradiction.
    # (The API server drops a deleted configuration from a watch, a moment later.)
    def create():
        try:
            return api.create_namespaced_pod(
                namespace, pod_manifest("moved", "2", annotations=ON_T2A)
            )
        except ApiException:
            return None

    pod = eventually(create, bool, 20, "the same pod admitted without the policy webhook")
    assert pod.metadata.annotations[FAMILY] == "gcp-t2a"
    # No policy's entry; the family label is our own pin once the family is labelled.
    assert set(pod.spec.node_selector or {}) <= {FAMILY}
