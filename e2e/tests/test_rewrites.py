"""Rewritten pods as the real API server validates them: pod-level resources, sidecars,
LimitRange, whole-CPU Guaranteed pods, resize, and the pods the webhook must leave alone.

Pods here are sized for aws-c6i (1.15 SCU per vCPU) and its one node, ``rw-c6i``, made for
this module so that no other test's pods share it.
"""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import eventually, pod_manifest
from kubernetes import client
from kubernetes.client.rest import ApiException

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
ON_C6I = {FAMILIES: "aws-c6i"}


@pytest.fixture(scope="module")
def c6i_node(plane, server):
    objects.create_nodes(
        plane, [objects.node("rw-c6i", {objects.INSTANCE_TYPE: "c6i.2xlarge"}, "16")]
    )
    server.wait_for_nodes(["rw-c6i"])
    return "rw-c6i"


def container(name: str, cpu: str, limit: str | None = None, **extra) -> dict:
    resources = {"requests": {"cpu": cpu, "memory": "64Mi"}}
    if limit:
        resources["limits"] = {"cpu": limit, "memory": "64Mi"}
    return {"name": name, "image": "registry.k8s.io/pause:3.10", "resources": resources, **extra}


def create(api, namespace: str, body: dict):
    return api.create_namespaced_pod(namespace, body)


def test_pod_level_resources_stay_at_least_the_sum_of_the_containers(api, c6i_node, namespace):
    """3 x 1 SCU with a pod-level 3 SCU: each container ceil(1000 / 1.15) = 870m, so the
    pod level must be 2610m; rounding 3 SCU alone would give 2609m, which the API server
    refuses (pod-level requests below the containers' sum)."""
    body = pod_manifest("podlevel", annotations=ON_C6I)
    body["spec"]["containers"] = [container(f"c{i}", "1") for i in range(3)]
    body["spec"]["resources"] = {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}
    pod = create(api, namespace, body)
    assert [c.resources.requests["cpu"] for c in pod.spec.containers] == ["870m"] * 3
    assert pod.spec.resources.requests["cpu"] == "2610m"


def test_a_sidecar_and_its_app_are_both_rewritten_and_accepted(api, c6i_node, namespace):
    body = pod_manifest("sidecar", annotations=ON_C6I)
    body["spec"]["initContainers"] = [container("proxy", "500m", restartPolicy="Always")]
    pod = create(api, namespace, body)
    assert pod.spec.init_containers[0].resources.requests["cpu"] == "435m"
    assert pod.spec.containers[0].resources.requests["cpu"] == "870m"


def test_limitrange_defaults_come_before_the_webhook_and_its_bounds_after(
    plane, api, c6i_node, namespace
):
    """LimitRanger's defaults (in SCU, as users write them) are filled in before mutating
    webhooks, so the webhook converts them; its min/max are checked after, against the
    physical values: a min of 1 rejects 1 SCU converted to 870m (docs/operations.md)."""
    api.create_namespaced_limit_range(
        namespace,
        {
            "metadata": {"name": "defaults"},
            "spec": {
                "limits": [
                    {"type": "Container", "defaultRequest": {"cpu": "1"}, "default": {"cpu": "2"}}
                ]
            },
        },
    )
    body = pod_manifest("defaulted", annotations=ON_C6I)
    del body["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    pod = create(api, namespace, body)
    assert pod.spec.containers[0].resources.requests["cpu"] == "870m"
    assert pod.spec.containers[0].resources.limits["cpu"] == "1740m"

    api.create_namespaced_limit_range(
        namespace,
        {
            "metadata": {"name": "minimum"},
            "spec": {"limits": [{"type": "Container", "min": {"cpu": "1"}}]},
        },
    )
    with pytest.raises(ApiException) as denied:
        create(api, namespace, pod_manifest("below-min", "1", annotations=ON_C6I))
    assert denied.value.status == 403
    assert "minimum cpu usage per Container is 1" in denied.value.body


def test_a_guaranteed_whole_cpu_pod_keeps_whole_cores_unless_it_opts_out(api, c6i_node, namespace):
    body = pod_manifest("pinned-cores", annotations=ON_C6I)
    body["spec"]["containers"] = [container("app", "2", "2")]
    pod = create(api, namespace, body)
    assert pod.spec.containers[0].resources.requests["cpu"] == "2"
    assert pod.spec.containers[0].resources.limits["cpu"] == "2"
    assert pod.status.qos_class == "Guaranteed"

    exact = pod_manifest(
        "exact", annotations={**ON_C6I, "machine-catalog.io/cpu-conversion": "exact"}
    )
    exact["spec"]["containers"] = [container("app", "2", "2")]
    pod = create(api, namespace, exact)
    assert pod.spec.containers[0].resources.requests["cpu"] == "1740m"
    assert pod.status.qos_class == "Guaranteed"


def test_a_resize_in_scu_becomes_physical_cpu_on_the_pods_family(
    plane, api, c6i_node, kubelet, namespace
):
    pod = create(api, namespace, pod_manifest("grows", "1", annotations=ON_C6I, nodeName=c6i_node))
    assert pod.spec.containers[0].resources.requests["cpu"] == "870m"
    eventually(
        lambda: api.read_namespaced_pod("grows", namespace).status.phase,
        lambda p: p == "Running",
        30,
        "running",
    )
    patch = {"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "2"}}}]}}
    out = plane.kubectl(
        "patch",
        "pod",
        "grows",
        "-n",
        namespace,
        "--subresource",
        "resize",
        "--type",
        "strategic",
        "-p",
        json.dumps(patch),
        "-o",
        "json",
    )
    resized = json.loads(out.stdout)
    assert resized["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1740m"
    # The record of SCU written at creation is kept (the resize subresource drops metadata).
    assert resized["metadata"]["annotations"][FAMILY] == "aws-c6i"


def skipped(server) -> float:
    """Pods the webhook was called for and left alone on purpose, over all workers."""
    return server.admissions().get("skipped", 0.0)


def test_a_mirror_pod_is_never_mutated(api, server, c6i_node, namespace):
    body = pod_manifest(
        "static", "2", annotations={"kubernetes.io/config.mirror": "hash"}, nodeName=c6i_node
    )
    body["spec"]["automountServiceAccountToken"] = False
    before = skipped(server)
    pod = create(api, namespace, body)
    assert pod.spec.containers[0].resources.requests["cpu"] == "2"
    assert FAMILY not in pod.metadata.annotations
    # The webhook saw it and chose to skip it (not: it was never called).
    assert skipped(server) >= before + 1
    # ...while the same pod without the mirror annotation gets our annotations.
    body = pod_manifest("not-static", "2", nodeName=c6i_node)
    assert create(api, namespace, body).metadata.annotations[FAMILY] == "aws-c6i"


def test_a_daemonset_pod_on_an_unknown_node_is_admitted_unchanged(plane, api, server, namespace):
    apps = client.AppsV1Api(plane.api_client())
    before = skipped(server)
    labels = {"app": "agent"}
    apps.create_namespaced_daemon_set(
        namespace,
        {
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": "t3-unknown"},
                        "containers": [container("agent", "250m")],
                    },
                },
            },
        },
    )
    pods = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=agent").items,
        lambda items: len(items) == 1,
        60,
        "the DaemonSet's pod created despite unknownNodes: reject",
    )
    assert pods[0].spec.containers[0].resources.requests["cpu"] == "250m"
    assert FAMILY not in (pods[0].metadata.annotations or {})
    # The webhook was called for it and admitted it unchanged on purpose (the exemption),
    # which the server logs by namespace and (generated) name.
    assert skipped(server) >= before + 1
    log = server.proc.log.read_text(errors="replace")
    assert f"admitted {namespace}/agent-" in log, log[-2000:]


def test_an_absurd_cpu_value_does_not_break_the_cache(api, server, kubelet, c6i_node):
    api.create_namespace({"metadata": {"name": "absurd"}})
    api.create_namespaced_pod("absurd", pod_manifest("huge", "1e16", nodeName="m4-retired"))
    eventually(
        lambda: api.read_namespaced_pod("huge", "absurd").status.phase,
        lambda p: p == "Running",
        30,
        "running",
    )
    status, ready = server.get("/readyz")
    assert status == 200, ready
    pod = pod_manifest("probe", "1", annotations={FAMILY: "aws-c6i"})
    pod["metadata"]["namespace"] = "probe"
    for _ in range(4):
        answer = server.post("/scheduler/filter", {"Pod": pod, "NodeNames": [c6i_node]})
        assert answer["NodeNames"] == [c6i_node], answer
    metrics = server.get("/metrics")[1]
    assert "machine_catalog_cache_bad_values_total" in metrics
