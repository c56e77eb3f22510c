"""The stranded-pod loop against the loopback fake API server, through the real client.

The cluster: family ``std`` (1.0 SCU/core) is full, family ``fast`` (1.25) has a node with
room. Pods are normalized by the real patch builder (``normalize_ops``),
so their pin, annotations and record are what the webhook writes. Each test runs one cycle
(:meth:`Recreator.run_once`) with a fixed clock and checks what the fake API server saw:
which pods were deleted, with which preconditions, and the Events posted.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml
from prometheus_client import REGISTRY
from support.fakeapi import FakeApiServer

from extender.admission.patching import normalize_ops, read_cpu_values
from extender.admission.placement import pod_constraints
from extender.admission.reinvocation import without_pin
from extender.admission.webhook import Fleet
from extender.feeds.watching import load_api_client
from extender.loops.recreation import EVENT_REASON, Recreator, room_for
from extender.loops.stranding import Choice, Room, Settings, pending_pod
from extender.server.serve import ServeConfig, build_runtime, shutdown_runtime
from extender.state.cluster import ClusterState
from machine_catalog.annotations import FAMILY_ANNOTATION as FAMILY
from machine_catalog.annotations import FAMILY_LABEL
from machine_catalog.loading import parse_catalog

IT = "node.kubernetes.io/instance-type"
ZONE = "topology.kubernetes.io/zone"
CATALOG = parse_catalog(
    """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: stranding}
spec:
  baseline: std
  families:
    - {name: std, scuPerCore: 1.0, instanceTypes: [std.large]}
    - {name: fast, scuPerCore: 1.25, instanceTypes: [fast.large]}
"""
)
CREATED = "2027-01-15T08:00:00Z"
T0 = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC).timestamp()
AFTER = 600.0


def node(name: str, instance_type: str, cpu: str, zone: str = "a") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {IT: instance_type, ZONE: zone}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu}},
    }


NODES = [node("std-1", "std.large", "4"), node("fast-1", "fast.large", "8", zone="b")]
FILLER = {
    "metadata": {"name": "filler", "namespace": "shop", "uid": "uid-filler"},
    "spec": {
        "nodeName": "std-1",
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "4"}}}],
    },
    "status": {"phase": "Running"},
}


def normalized(
    name: str,
    family: str = "std",
    *,
    owner: str | None = "ReplicaSet",
    cpu: str = "2",
    spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    unschedulable: bool = True,
    labelled: bool = False,
) -> dict[str, Any]:
    """A pod as the webhook left it (``labelled``: pinned by the family label's
    nodeSelector, else by the family's affinity), then as kube-scheduler marked it."""
    pod: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "creationTimestamp": CREATED,
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}],
            **(spec or {}),
        },
        "status": {"phase": "Pending"},
    }
    if owner:
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner,
                "name": "checkout-5d8f7b9c4",
                "uid": "uid-owner",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    fam = CATALOG.by_name[family]
    ops = normalize_ops(
        pod, read_cpu_values(pod), fam, CATALOG.version, "machine-catalog", labelled=labelled
    )
    pod = jsonpatch.JsonPatch(orjson.loads(orjson.dumps(ops))).apply(pod)
    if unschedulable:
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't "
                "match Pod's node affinity/selector.",
                "lastTransitionTime": CREATED,
            }
        ]
    return pod


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(fake, tmp_path) -> str:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
                "users": [{"name": "t", "user": {"token": "x"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "t"}}],
                "current-context": "fake",
            }
        )
    )
    return str(kubeconfig)


@pytest.fixture
def api(kubeconfig):
    client = load_api_client(kubeconfig)
    yield client
    client.close()


class World:
    def __init__(self, fake: FakeApiServer, api: Any, pods: list[dict[str, Any]]) -> None:
        self.fake = fake
        self.stored = {p["metadata"]["name"]: fake.add("pods", p) for p in [FILLER, *pods]}
        self.cluster = ClusterState(CATALOG)
        self.cluster.replace(NODES, fake.objects("pods"))
        self.now = T0 + AFTER + 60
        self.recreator = Recreator(
            self.cluster, api, Settings(after=AFTER, max_per_cycle=5), clock=lambda: self.now
        )

    def names(self) -> set[str]:
        return {p["metadata"]["name"] for p in self.fake.objects("pods")}

    def deletes(self) -> list[str]:
        return [r.path for r in self.fake.requests if r.method == "DELETE"]


def recreations(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "machine_catalog_stranded_pod_recreations_total", {"outcome": outcome}
    )
    return value or 0.0


def test_a_stranded_pod_is_deleted_with_preconditions_and_events_are_posted(fake, api):
    world = World(fake, api, [normalized("stuck")])
    before = recreations("recreated")

    [choice] = world.recreator.run_once()

    assert choice.recreate and choice.target == "fast"
    assert world.names() == {"filler"}
    assert world.deletes() == ["/api/v1/namespaces/shop/pods/stuck"]
    assert recreations("recreated") == before + 1
    on_pod, on_owner = fake.events
    stored = world.stored["stuck"]["metadata"]
    assert on_pod["involvedObject"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "name": "stuck",
        "namespace": "shop",
        "uid": stored["uid"],
    }
    assert on_owner["involvedObject"]["kind"] == "ReplicaSet"
    assert on_owner["involvedObject"]["name"] == "checkout-5d8f7b9c4"
    for event in (on_pod, on_owner):
        assert event["reason"] == EVENT_REASON and event["type"] == "Warning"
        assert "full family std" in event["message"] and "fast has room" in event["message"]
        assert event["source"] == {"component": "machine-catalog"}
        assert event["metadata"]["namespace"] == "shop"


@pytest.mark.parametrize(
    ("pod", "why"),
    [
        (normalized("bare", owner=None), "no controller owner"),
        (normalized("job", owner="Job"), "owned by a Job"),
        (normalized("fresh", unschedulable=False), "not reported unschedulable"),
        # Its own nodeSelector keeps it on zone a, where only std has nodes.
        (
            normalized("zoned", spec={"nodeSelector": {ZONE: "a"}}),
            "no other allowed family has room",
        ),
        # Its own required affinity, ANDed with the pin by the webhook, says the same.
        (
            normalized(
                "affine",
                spec={
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": ZONE, "operator": "In", "values": ["a"]}
                                        ]
                                    }
                                ]
                            }
                        }
                    }
                },
            ),
            "no other allowed family has room",
        ),
        (
            normalized("only-std", annotations={"machine-catalog.io/families": "std"}),
            "no other allowed family has room",
        ),
        # A pod whose own family has room is left to the scheduler.
        (normalized("on-fast", family="fast"), "family fast has room for it now"),
    ],
)
def test_pods_the_rules_keep_are_not_touched(fake, api, pod, why):
    world = World(fake, api, [pod])
    [choice] = world.recreator.run_once()
    assert not choice.recreate
    assert why in choice.reason
    assert world.deletes() == [] and fake.events == []
    assert pod["metadata"]["name"] in world.names()


def test_a_pod_not_waited_long_enough_is_kept_until_it_has(fake, api):
    world = World(fake, api, [normalized("stuck")])
    world.now = T0 + AFTER - 1
    assert not world.recreator.run_once()[0].recreate
    world.now = T0 + AFTER
    assert world.recreator.run_once()[0].recreate
    assert world.names() == {"filler"}


def test_a_pod_that_changed_since_the_list_is_not_deleted(fake, api):
    world = World(fake, api, [normalized("stuck")])
    listed = pending_pod(world.stored["stuck"])
    # kube-scheduler binds it between our LIST and our DELETE: a new resourceVersion.
    fake.modify("pods", "shop/stuck", lambda p: p["spec"].update(nodeName="fast-1"))
    before = recreations("conflict")

    world.recreator._recreate(Choice(listed, True, "test", "fast"))

    assert "stuck" in world.names()
    assert recreations("conflict") == before + 1
    assert fake.events == []


def test_two_replicas_acting_on_one_list_delete_once(fake, api):
    world = World(fake, api, [normalized("stuck")])
    listed = pending_pod(world.stored["stuck"])
    other = Recreator(world.cluster, api, Settings(after=AFTER), clock=lambda: world.now)
    gone = recreations("gone")

    world.recreator._recreate(Choice(listed, True, "test", "fast"))
    other._recreate(Choice(listed, True, "test", "fast"))

    assert world.names() == {"filler"}
    assert recreations("gone") == gone + 1
    assert len(fake.events) == 2  # one pair, from the replica that deleted it


def test_at_most_max_per_cycle_per_cycle(fake, api):
    world = World(fake, api, [normalized(f"stuck-{i}") for i in range(7)])
    world.recreator.settings = Settings(after=AFTER, max_per_cycle=3)
    choices = world.recreator.run_once()
    assert sum(c.recreate for c in choices) == 3
    assert len(world.names()) == 1 + 4
    assert REGISTRY.get_sample_value("machine_catalog_stranded_pods") == 7


def test_nothing_happens_before_the_cache_synced(fake, api):
    world = World(fake, api, [normalized("stuck")])
    world.recreator.cluster = ClusterState(CATALOG)  # never fed
    assert world.recreator.run_once() == []
    assert fake.requests == []  # not even the LIST
    assert "stuck" in world.names()


def test_room_for_reads_the_pod_as_the_webhook_would_now(fake, api):
    world = World(fake, api, [])
    fleet = Fleet(world.cluster)
    assert room_for(fleet, normalized("p")).elsewhere == "fast"
    assert room_for(fleet, normalized("p")).family_fits is False
    # A pod pinned to a family the catalog lost: never judged, never touched.
    lost = normalized("p")
    lost["metadata"]["annotations"]["machine-catalog.io/family"] = "gone"
    assert room_for(fleet, lost).family_fits is True


@pytest.mark.parametrize(
    "affinity",
    [
        None,
        {"nodeAffinity": {}},
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["a"]}]},
                        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["b"]}]},
                    ]
                }
            },
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
        },
    ],
)
def test_without_pin_gives_back_the_pods_own_node_rules(affinity):
    spec = {} if affinity is None else {"affinity": copy.deepcopy(affinity)}
    pod = normalized("p", spec=spec)
    restored = without_pin(pod["spec"], CATALOG.by_name["std"])
    original = {"metadata": {}, "spec": spec}
    for n in [*NODES, node("fast-a", "fast.large", "8", zone="a")]:
        labels, name = n["metadata"]["labels"], n["metadata"]["name"]
        assert pod_constraints({"spec": restored}).allows(name, labels) == pod_constraints(
            original
        ).allows(name, labels)


def _loops() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "recreate-stranded" and t.is_alive()]


@pytest.mark.parametrize("after", [None, 600.0])
def test_serve_runs_the_loop_only_when_asked_and_stops_it(kubeconfig, tmp_path, after):
    config = ServeConfig(
        kubeconfig=kubeconfig, state_dir=str(tmp_path), recreate_stranded_after=after
    )
    runtime = build_runtime(config)
    try:
        assert len(_loops()) == (0 if after is None else 1)
    finally:
        shutdown_runtime(runtime)
    assert _loops() == []


def _guaranteed(cpu: str) -> dict[str, Any]:
    values = {"cpu": cpu, "memory": "1Gi"}
    return {
        "containers": [{"name": "app", "resources": {"requests": values, "limits": dict(values)}}]
    }


def test_the_replacement_is_sized_as_the_webhook_will_size_it():
    # A Guaranteed 2-SCU pod pinned to fast (1.25) holds 2 whole cores there; fast is full.
    # std (1.0) has 2.1 cores free: the replacement takes 2 cores on std, which fit. Read
    # back as SCU, the 2 cores would be 2.5 SCU (2500m on std), which would not.
    cluster = ClusterState(CATALOG)
    full_fast = copy.deepcopy(FILLER)
    full_fast["metadata"].update(name="fast-filler", uid="uid-fast-filler")
    full_fast["spec"]["nodeName"] = "fast-1"
    full_fast["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "7"
    std_filler = copy.deepcopy(FILLER)
    std_filler["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1900m"
    cluster.replace(NODES, [std_filler, full_fast])
    pod = normalized("whole", family="fast", spec=_guaranteed("2"))
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "2"
    room = room_for(Fleet(cluster), pod)
    assert room == Room(family_fits=False, elsewhere="std")


LABELLED = [
    {**n, "metadata": {**n["metadata"], "labels": {**n["metadata"]["labels"], FAMILY_LABEL: f}}}
    for n, f in zip(NODES, ("std", "fast"), strict=True)
]


@pytest.mark.parametrize(
    ("nodes", "labelled", "named"),
    [
        pytest.param(NODES, False, {"annotations": {FAMILY: "std"}}, id="affinity pin, annotation"),
        pytest.param(
            LABELLED, True, {"annotations": {FAMILY: "std"}}, id="nodeSelector pin, annotation"
        ),
        pytest.param(
            LABELLED,
            True,
            {"spec": {"nodeSelector": {FAMILY_LABEL: "std"}}},
            id="nodeSelector pin, the user's own nodeSelector on the family label",
        ),
    ],
)
def test_a_family_the_user_named_is_never_left_for_another(nodes, labelled, named):
    cluster = ClusterState(CATALOG)
    cluster.replace(nodes, [FILLER])
    pod = normalized("named", labelled=labelled, **named)
    assert pod["metadata"]["annotations"]["machine-catalog.io/family-source"] == "user"
    assert room_for(Fleet(cluster), pod) == Room(family_fits=False, elsewhere=None)
    chosen = normalized("chosen", labelled=labelled)
    assert "machine-catalog.io/family-source" not in chosen["metadata"]["annotations"]
    assert room_for(Fleet(cluster), chosen) == Room(family_fits=False, elsewhere="fast")


def test_a_pod_on_a_family_the_user_named_is_not_recreated(fake, api):
    world = World(
        fake, api, [normalized("named", annotations={"machine-catalog.io/family": "std"})]
    )
    [choice] = world.recreator.run_once()
    assert not choice.recreate
    assert "named by the user" in choice.reason
    assert world.deletes() == [] and "named" in world.names()
