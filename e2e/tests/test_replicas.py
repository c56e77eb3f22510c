"""Two replicas of ``serve`` behind one address, as a Service spreads connections: a burst
that fits the cluster only once normalized, and the leader killed in the middle of it.

Three families of this module's own, five 8-vCPU nodes: e2e-burst-a (1.0 SCU/vCPU) two
nodes, e2e-burst-b (1.25) two, e2e-burst-c (1.5) one. A 2-SCU pod takes 2000m, 1600m or
1334m there, so a node holds 4, 5 or 5 of them: 23 slots. The ReplicaSet asks for 21 (90%
of the slots, 42 SCU). Unnormalized, 2 vCPUs each, the same five nodes hold 20: the burst
fits only when each pod gets the right physical request for the family it lands on.

The ReplicaSet controller creates the pods in concurrent batches; the API server sends each
admission through a round-robin TCP balancer to one of the two replicas (each with its own
state and reservations, running the manifests' arguments: ``--family-choice spread``,
re-creation of stranded pods after 20 s by the Lease holder). Every replica must be Running
within 60 s. Half-way the Lease holder is killed: the other replica takes the Lease within
its duration, no pod is lost, and no pod is deleted twice.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from harness import objects
from harness.balancer import Balancer
from harness.kube import eventually, pod_manifest
from harness.server import Server
from kubernetes import client

FAMILIES = {"e2e-burst-a": 2, "e2e-burst-b": 2, "e2e-burst-c": 1}
REPLICAS = 21
DEADLINE = 60
LEASE_DURATION = 15


@pytest.fixture(scope="module")
def burst_nodes(plane):
    objects.create_nodes(
        plane,
        [
            objects.node(f"burst-{family[-1]}-{i}", {objects.INSTANCE_TYPE: f"{family}.2xlarge"})
            for family, count in FAMILIES.items()
            for i in range(count)
        ],
    )


@pytest.fixture(scope="module")
def two_replicas(plane, server, catalog, burst_nodes):
    """A second replica, a balancer over both, and the webhook pointed at the balancer."""
    # Both replicas as the manifests run them: --family-choice spread. The session server
    # (most-free for the other tests) restarts with the manifests' choice for this module.
    server.stop()
    server.family_choice = None
    server.start()
    second = Server(
        plane, catalog, server.kubeconfig, name="mc-replica-2", family_choice=None
    ).start()
    balancer = Balancer([("127.0.0.1", server.port), ("127.0.0.1", second.port)]).start()
    hooks = client.AdmissionregistrationV1Api(plane.api_client())
    config = objects.webhook_configuration(plane, f"https://127.0.0.1:{balancer.port}")
    name = config["metadata"]["name"]
    original = hooks.read_mutating_webhook_configuration(name)
    installed = {h.name for h in original.webhooks}
    patch = {
        "webhooks": [
            {"name": h["name"], "clientConfig": h["clientConfig"]}
            for h in config["webhooks"]
            if h["name"] in installed
        ]
    }
    hooks.patch_mutating_webhook_configuration(name, patch)
    try:
        yield server, second, balancer
    finally:
        restore = {
            "webhooks": [
                {
                    "name": h.name,
                    "clientConfig": {
                        "url": h.client_config.url,
                        "caBundle": h.client_config.ca_bundle,
                    },
                }
                for h in original.webhooks
            ]
        }
        hooks.patch_mutating_webhook_configuration(name, restore)
        balancer.stop()
        second.stop()
        server.stop()
        server.family_choice = "most-free"
        server.start()


def leader_of(replicas) -> Server | None:
    for replica in replicas:
        try:
            if replica.readyz()["leader"]["leading"]:
                return replica
        except OSError:
            continue
    return None


def replica_set(name: str) -> dict:
    labels = {"app": name}
    pod = pod_manifest(name, "2", annotations={"machine-catalog.io/families": ",".join(FAMILIES)})
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": pod["metadata"]["annotations"]},
                "spec": pod["spec"],
            },
        },
    }


def test_a_burst_through_two_replicas_runs_in_full_and_survives_the_leader(
    plane, api, scheduler, kubelet, two_replicas, namespace
):
    first, second, _balancer = two_replicas
    replicas = (first, second)
    leader = eventually(lambda: leader_of(replicas), lambda r: r is not None, 30, "a leader")
    apps = client.AppsV1Api(plane.api_client())

    started = time.monotonic()
    apps.create_namespaced_replica_set(namespace, replica_set("burst"))
    # The leader dies while the burst is being placed.
    eventually(
        lambda: len(api.list_namespaced_pod(namespace, label_selector="app=burst").items),
        lambda n: n >= REPLICAS // 2,
        30,
        "half the burst created",
    )
    killed_at = time.monotonic()
    killed_identity = leader.readyz()["leader"]["identity"]
    os.killpg(leader.proc.popen.pid, signal.SIGKILL)  # master and worker: no Lease release
    leader.proc.popen.wait(10)
    leader.start()  # as the kubelet restarts a container: a new process, a new identity

    def running():
        pods = api.list_namespaced_pod(namespace, label_selector="app=burst").items
        return [
            p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]

    done = eventually(
        running, lambda pods: len(pods) == REPLICAS, DEADLINE, "every replica Running"
    )
    took = time.monotonic() - started
    print(f"{REPLICAS} replicas Running {took:.1f} s after the ReplicaSet was created")
    assert took <= DEADLINE

    # The Lease moved on from the killed process within its duration (plus retries).
    eventually(
        lambda: leader_of(replicas),
        lambda r: r is not None and r.readyz()["leader"]["identity"] != killed_identity,
        max(0.0, killed_at + LEASE_DURATION + 10 - time.monotonic()),
        "a live replica holds the Lease",
    )

    # Every pod is on its family's node, with that family's physical request.
    per_node: dict[str, int] = {}
    for pod in done:
        family = pod.metadata.annotations["machine-catalog.io/family"]
        assert pod.spec.node_name.startswith(f"burst-{family[-1]}-"), (pod.metadata.name, family)
        per_node[pod.spec.node_name] = per_node.get(pod.spec.node_name, 0) + 1
    assert sum(per_node.values()) == REPLICAS

    # No pod deleted twice: one StrandedPodRecreated event per deleted pod at most.
    events = api.list_namespaced_event(
        namespace, field_selector="reason=StrandedPodRecreated"
    ).items
    deleted = [e.involved_object.name for e in events if e.involved_object.kind == "Pod"]
    assert len(deleted) == len(set(deleted)), deleted
