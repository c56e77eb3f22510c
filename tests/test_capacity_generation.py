"""The webhook's per-family totals, kept per capacity generation, against a recomputation.

``ClusterState.capacity_generation`` is not bumped by events of pods without a node (a
burst of creates), so the webhook reuses its arrays, per-family totals and per-shape room
across them and reads only the pending totals afresh. These tests drive random event
sequences and check, after every event, that (1) an unchanged capacity generation means
``all_nodes()`` is unchanged, and (2) the long-lived admitter decides exactly as a fresh
one (nothing cached) does, for an unconstrained pod and two sizes of one with a
nodeSelector (per-family totals kept per constraints, room per constraints and size).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import orjson
import pytest
from support.nodes import NODES, node
from support.webhook import CATALOG, make_review

from extender.admission.patching import FAMILY_ANNOTATION
from extender.admission.webhook import Admitter, decode_review
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource
from machine_catalog.matching import INSTANCE_TYPE_LABEL as IT

FAMILIES = [f.name for f in CATALOG.families if f.schedulable]
NODE_NAMES = [n["metadata"]["name"] for n in NODES]


def pod(name: str, cpu: str, *, node: str | None = None, family: str | None = None) -> dict:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]
    }
    if node is not None:
        spec["nodeName"] = node
    annotations = {FAMILY_ANNOTATION: family} if family else {}
    return {
        "metadata": {"uid": name, "namespace": "ns", "name": name, "annotations": annotations},
        "spec": spec,
        "status": {"phase": "Running" if node else "Pending"},
    }


def random_event(rng: random.Random, live: dict[str, dict]) -> tuple[str, str, dict]:
    """One watch event: mostly pods created Pending (a burst), some bindings, deletions and
    node changes (allocatable, cordon, a status heartbeat)."""
    roll = rng.random()
    if roll < 0.45 or not live:
        name = f"p{rng.randrange(10**9)}"
        obj = pod(name, rng.choice(["250m", "1", "3"]), family=rng.choice(FAMILIES))
        live[name] = obj
        return "Pod", "ADDED", obj
    if roll < 0.65:  # bind a pending pod (or move a bound one)
        name = rng.choice(sorted(live))
        old = live[name]
        cpu = old["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        obj = pod(name, cpu, node=rng.choice(NODE_NAMES))
        live[name] = obj
        return "Pod", "MODIFIED", obj
    if roll < 0.8:
        name = rng.choice(sorted(live))
        return "Pod", "DELETED", live.pop(name)
    node = copy.deepcopy(rng.choice(NODES))
    what = rng.random()
    if what < 0.4:
        node["status"]["allocatable"]["cpu"] = rng.choice(["2", "8", "16"])
    elif what < 0.7:
        node["spec"]["unschedulable"] = rng.random() < 0.5
    else:
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return "Node", "MODIFIED", node


def all_nodes_state(cluster: ClusterState) -> tuple:
    view = cluster.all_nodes()
    arrays = (view.family, view.allocatable, view.requested, view.unschedulable)
    other = {k: (a.tobytes(), r.tobytes()) for k, (a, r) in view.resources.items()}
    return tuple(a.tobytes() for a in arrays), tuple(view.names), other


def decide(admitter: Admitter, request: dict) -> tuple:
    verdict = admitter.admit(request)
    return verdict.decision, verdict.family, tuple(map(repr, verdict.patch)), verdict.warnings


def requests() -> list[dict]:
    plain = make_review(dryRun=True)
    zoned = make_review(dryRun=True)
    zoned["request"]["object"]["spec"]["nodeSelector"] = {"topology.kubernetes.io/zone": "z1"}
    bigger = copy.deepcopy(zoned)  # another shape under the same constraints
    for container in bigger["request"]["object"]["spec"]["containers"]:
        container.setdefault("resources", {}).setdefault("requests", {})["cpu"] = "3"
        container["resources"].pop("limits", None)
    return [decode_review(orjson.dumps(r)) for r in (plain, zoned, bigger)]


@pytest.mark.parametrize("seed", range(6))
def test_cached_totals_decide_as_a_recomputation_over_random_events(seed):
    rng = random.Random(seed)
    cluster = ClusterState(CATALOG)
    cluster.replace(NODES, [])
    runtime = Runtime(
        catalogs=CatalogSource(initial=CATALOG), cluster=cluster, settings=Settings("mc")
    )
    kept = Admitter(runtime)
    live: dict[str, dict] = {}
    reviews = requests()
    reused = 0
    for _ in range(150):
        before = cluster.capacity_generation, all_nodes_state(cluster)
        kind, event, obj = random_event(rng, live)
        cluster.apply(kind, event, obj)
        if cluster.capacity_generation == before[0]:
            reused += 1
            assert all_nodes_state(cluster) == before[1]  # caching on it is sound
        for request in reviews:
            assert decide(kept, request) == decide(Admitter(runtime), request)
    assert reused > 30  # the sequences do exercise the cached path


def test_a_pending_pod_moves_the_choice_without_a_rebuild():
    """A pod created Pending on a family changes the pending totals the next admission
    reads, and only those: the snapshot (arrays, per-family totals) is the same object."""
    cluster = ClusterState(CATALOG)
    cluster.replace(NODES, [])
    runtime = Runtime(
        catalogs=CatalogSource(initial=CATALOG), cluster=cluster, settings=Settings("mc")
    )
    admitter = Admitter(runtime)
    plain = requests()[0]
    first = admitter.admit(plain).family
    snapshot = admitter.fleet.snapshot()
    # Enough pending on the chosen family to make another family the most free.
    cluster.apply("Pod", "ADDED", pod("burst", "1000", family=first))
    assert admitter.fleet.snapshot() is snapshot
    assert cluster.pending_millis() == {first: 1_000_000}
    assert admitter.admit(plain).family != first
    cluster.apply("Pod", "MODIFIED", pod("burst", "1", node=NODE_NAMES[0]))
    assert admitter.fleet.snapshot() is not snapshot  # a binding changes a node's room
    assert np.array_equal(admitter.fleet.snapshot().view.family, snapshot.view.family)


def sized(cpu: str) -> dict:
    review = make_review(dryRun=True)
    for container in review["request"]["object"]["spec"]["containers"]:
        container["resources"] = {"requests": {"cpu": cpu, "memory": "1Gi"}}
    return decode_review(orjson.dumps(review))


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (("500m", "6"), ("aws-m5", "aws-c5")),
        (("6", "500m"), ("aws-c5", "aws-m5")),
        (("6", "6", "500m", "500m"), ("aws-c5", "aws-c5", "aws-m5", "aws-m5")),
    ],
)
def test_the_room_kept_per_generation_is_per_pod_size(order, expected):
    """m5 has the most free SCU (ten 2-core nodes) but no node holds 6 SCU there; c5's one
    16-core node does. Pods of both sizes admitted on one snapshot, in any order, each get
    the room of their own size, not the first one's."""
    nodes = [node(f"m5-{i}", {IT: "m5.large"}, "2") for i in range(10)]
    nodes.append(node("c5-0", {IT: "c5.large"}, "16"))
    cluster = ClusterState(CATALOG)
    cluster.replace(nodes, [])
    runtime = Runtime(
        catalogs=CatalogSource(initial=CATALOG), cluster=cluster, settings=Settings("mc")
    )
    admitter = Admitter(runtime)
    assert tuple(admitter.admit(sized(cpu)).family for cpu in order) == expected
