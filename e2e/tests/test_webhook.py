"""The webhook called by the real kube-apiserver: what gets normalized, what is left alone."""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import cpu_requests, eventually, pod_manifest
from kubernetes import client

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
STANDARD = "machine-catalog.io/standard-resources"
M6I_NODES = {"ip-10-0-1-23.ec2.internal"}
# The admission warning for a pod admitted to a family that has no room for it now.
FITS_NOT = "may stay Pending"


def deployment(name: str, replicas: int, cpu: str, annotations: dict[str, str]) -> dict:
    return objects.controller(
        "Deployment", name, replicas, pod_manifest(name, cpu)["spec"], annotations
    )


def test_a_deployment_becomes_a_replicaset_and_normalized_pods_that_land_on_their_family(
    plane, api, server, scheduler, kubelet, namespace
):
    apps = client.AppsV1Api(plane.api_client())
    apps.create_namespaced_deployment(namespace, deployment("web", 2, "2", {FAMILIES: "aws-m6i"}))
    pods = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=web").items,
        lambda items: len(items) == 2 and all(p.spec.node_name for p in items),
        60,
        "two bound pods",
    )
    for pod in pods:
        # 2 SCU on aws-m6i (1.15 SCU per vCPU): ceil(2000 / 1.15) = 1740m.
        assert cpu_requests(pod) == ["1740m"]
        assert pod.metadata.annotations[FAMILY] == "aws-m6i"
        assert json.loads(pod.metadata.annotations[STANDARD])
        assert pod.spec.scheduler_name == "machine-catalog"
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        assert pod.spec.node_name in M6I_NODES
    eventually(
        lambda: apps.read_namespaced_deployment(name="web", namespace=namespace).status,
        lambda s: s.ready_replicas == 2,
        60,
        "deployment ready",
    )


def test_opted_out_pods_other_namespaces_and_kube_system_are_untouched(plane, api, server):
    api.create_namespace({"metadata": {"name": "not-opted-in"}})
    cases = [
        ("not-opted-in", pod_manifest("plain", "2")),
        ("kube-system", pod_manifest("system", "2")),
    ]
    opted = "opted-in-but-out"
    api.create_namespace(
        {"metadata": {"name": opted, "labels": {"machine-catalog.io/normalize": "enabled"}}}
    )
    cases.append(
        (opted, pod_manifest("out", "2", labels={"machine-catalog.io/normalize": "disabled"}))
    )
    for ns, body in cases:
        created = api.create_namespaced_pod(ns, body)
        assert cpu_requests(created) == ["2"], ns
        assert FAMILY not in (created.metadata.annotations or {}), ns
        assert created.spec.scheduler_name == "default-scheduler", ns
    # The webhook was up and reached all along: the same pod without the opt-out label, in
    # the same namespace, carries our annotations. Untouched above means left alone.
    control = api.create_namespaced_pod(opted, pod_manifest("in", "2"))
    assert control.metadata.annotations[FAMILY], control.metadata.annotations
    assert json.loads(control.metadata.annotations[STANDARD])
    assert control.spec.scheduler_name == "machine-catalog"


def test_server_side_dry_run_creates_take_no_reservation(plane, server, namespace):
    """tencent-s5 has one node of 7.9 SCU. Three dry-run creates of 3 SCU each would leave
    no room if they reserved; none warns. Three real creates do warn on the third, which
    shows the warning is live."""

    def create(name: str, *flags: str) -> str:
        body = pod_manifest(name, "3", annotations={FAMILIES: "tencent-s5"})
        out = plane.kubectl("create", "-n", namespace, "-f", "-", *flags, input=json.dumps(body))
        return out.stderr

    dry = [create(f"dry-{i}", "--dry-run=server") for i in range(3)]
    assert not any(FITS_NOT in w for w in dry), dry
    real = [create(f"real-{i}") for i in range(3)]
    assert FITS_NOT not in real[0]
    assert FITS_NOT in real[2], real
