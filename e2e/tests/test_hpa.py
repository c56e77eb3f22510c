"""The reason this exists, through the real HPA controller: the same work per replica shows
the same utilisation on old and new hardware once requests are in SCU.

Two families with equal SCU capacity get one node each: aws-c5 (1.10 SCU per vCPU, 8 vCPUs
= 8.8 SCU) and aws-m7i (1.30, 6769m = 8.8 SCU). A Deployment of 4 replicas asks 1 SCU each
and does 0.9 SCU of work per replica, so a replica uses 0.9 / speed vCPUs: 818m on c5, 692m
on m7i (the test metrics API reports exactly that, and the catalog's factors are taken as
the true speeds). The HPA targets 50% CPU.

- normalized, every replica is at 90% of its request: desired = ceil(4 x 90 / 50) = 8,
  what the work needs in SCU;
- with the webhook off, the same pods ask 1000m of any family: utilisation 75%, desired 6.
  The HPA under-provisions by a quarter because new hardware looks idle.

The replicas the HPA adds are pods its ReplicaSet creates like any other: the webhook pins
each to a family and rewrites its 1 SCU for it (910m on c5, 770m on m7i), and kube-scheduler
binds it to a node of that family; the two 8.8-SCU nodes have room for all eight 1-SCU
replicas.
"""

from __future__ import annotations

import json
import math
import re

from harness import objects
from harness.kube import eventually
from kubernetes import client

FAMILIES = "machine-catalog.io/families"
FAMILY = "machine-catalog.io/family"
SCU_PER_CORE = "machine-catalog.io/scu-per-core"
STANDARD = "machine-catalog.io/standard-resources"
FAMILY_SOURCE = "machine-catalog.io/family-source"
WORK_SCU = 900  # per replica, in milli-SCU
SPEED = {"c5.2xlarge": 1.10, "m7i.2xlarge": 1.30}
FAMILY_OF = {"c5.2xlarge": "aws-c5", "m7i.2xlarge": "aws-m7i"}  # the packaged catalog's
TARGET = 50
REPLICAS = 4


def workload(name: str, annotations: dict[str, str], raw: bool) -> dict:
    if raw:
        # No webhook: keep the raw pods on the same two families, two on each.
        return objects.spread_deployment(name, REPLICAS, "1", SPEED)
    spec: dict = {
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    return objects.controller("Deployment", name, REPLICAS, spec, annotations)


def hpa(name: str) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": 20,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": TARGET},
                    },
                }
            ],
        },
    }


def first_rescale(plane, api, namespace: str, name: str) -> tuple[int, str]:
    """The HPA's first decision, from its SuccessfulRescale event: (new size, message)."""
    autoscaling = client.AutoscalingV2Api(plane.api_client())
    autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa(name))
    events = eventually(
        lambda: [
            e
            for e in api.list_namespaced_event(namespace).items
            if e.reason == "SuccessfulRescale" and e.involved_object.name == name
        ],
        bool,
        90,
        f"the HPA of {namespace}/{name} to rescale",
    )
    message = sorted(events, key=lambda e: e.first_timestamp or e.event_time)[0].message
    return int(re.search(r"New size: (\d+)", message).group(1)), message


def run(plane, api, metrics_api, namespace: str, annotations: dict[str, str], raw: bool):
    apps = client.AppsV1Api(plane.api_client())
    apps.create_namespaced_deployment(namespace, workload("work", annotations, raw))
    pods = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=work").items,
        lambda items: (
            len(items) == REPLICAS
            and all(p.status.phase == "Running" and p.spec.node_name for p in items)
        ),
        90,
        "four running replicas",
    )
    node_type = {
        n: api.read_node(n).metadata.labels[objects.INSTANCE_TYPE]
        for n in {p.spec.node_name for p in pods}
    }
    usage = {
        p.metadata.name: math.floor(WORK_SCU / SPEED[node_type[p.spec.node_name]]) for p in pods
    }
    existing = metrics_api.current_pods()
    metrics_api.publish(
        pods=existing
        + [
            {
                "namespace": namespace,
                "name": p.metadata.name,
                "labels": p.metadata.labels,
                "containers": {"app": f"{usage[p.metadata.name]}m"},
            }
            for p in pods
        ]
    )
    requests = sum(
        int(objects.millis(p.spec.containers[0].resources.requests["cpu"])) for p in pods
    )
    # The HPA's own arithmetic (integer percent, then the ratio to the target).
    utilization = sum(usage.values()) * 100 // requests
    expected = math.ceil(utilization / TARGET * REPLICAS)
    size, message = first_rescale(plane, api, namespace, "work")
    first = {p.metadata.name for p in pods}
    return size, expected, utilization, sorted(node_type.values()), message, first


def check_added_replicas(api, namespace: str, size: int, first: set[str]) -> None:
    """The replicas the HPA added run, each normalized for the family it was pinned to and
    on a node of that family."""
    pods = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=work").items,
        lambda items: (
            len(items) == size
            and all(p.status.phase == "Running" and p.spec.node_name for p in items)
        ),
        90,
        f"{size} running replicas",
    )
    added = [p for p in pods if p.metadata.name not in first]
    assert len(added) == size - len(first)
    for pod in added:
        annotations = pod.metadata.annotations or {}
        node_type = api.read_node(pod.spec.node_name).metadata.labels[objects.INSTANCE_TYPE]
        where = (pod.metadata.name, pod.spec.node_name, annotations)
        # The webhook admitted it and chose the family (the template names none).
        assert annotations.get(FAMILY) == FAMILY_OF[node_type], where
        assert FAMILY_SOURCE not in annotations, where
        assert float(annotations[SCU_PER_CORE]) == SPEED[node_type], where
        assert json.loads(annotations[STANDARD]) == {
            "containers": {"app": {"requests": {"cpu": "1"}}}
        }, where
        # 1 SCU in that family's vCPUs, rounded up to a millicore.
        cpu = pod.spec.containers[0].resources.requests["cpu"]
        assert objects.millis(cpu) == math.ceil(1000 / SPEED[node_type]), where


def test_the_hpa_sees_the_same_utilisation_on_old_and_new_hardware(
    plane, api, server, scheduler, default_scheduler, kubelet, metrics_api
):
    objects.create_nodes(
        plane,
        [
            objects.node("hpa-c5", {objects.INSTANCE_TYPE: "c5.2xlarge"}, "8"),
            objects.node("hpa-m7i", {objects.INSTANCE_TYPE: "m7i.2xlarge"}, "6769m"),
        ],
    )
    normalized_ns = objects.opted_in_namespace(plane, "hpa-normalized")
    size, expected, utilization, types, message, first = run(
        plane, api, metrics_api, normalized_ns, {FAMILIES: "aws-c5,aws-m7i"}, raw=False
    )
    assert set(types) == set(SPEED), types  # replicas on both families
    # What the work needs in SCU: 4 replicas x 0.9 SCU at a 50% target.
    needs = math.ceil(REPLICAS * WORK_SCU / 10 / TARGET)
    assert (size, expected) == (needs, needs), (message, utilization)
    check_added_replicas(api, normalized_ns, size, first)

    api.create_namespace({"metadata": {"name": "hpa-raw"}})
    raw_size, raw_expected, raw_utilization, raw_types, raw_message, _ = run(
        plane, api, metrics_api, "hpa-raw", {}, raw=True
    )
    assert sorted(raw_types) == sorted(SPEED) * 2 or set(raw_types) == set(SPEED)
    assert raw_size == raw_expected, raw_message
    # The skew the webhook removes: the same work, a quarter fewer replicas.
    assert raw_size < needs, (raw_message, raw_utilization)
