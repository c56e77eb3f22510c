"""Which stranded pods to re-create: a table over ``choose_recreations`` and the reading of
real-shaped Pod objects (``pending_pod``), both of :mod:`extender.loops.stranding`."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from extender.loops.stranding import (
    PendingPod,
    Room,
    Settings,
    choose_recreations,
    pending_pod,
)

NOW = 1_800_000_000.0
ON = Settings(after=600.0, max_per_cycle=5)

STUCK = PendingPod(
    namespace="shop",
    name="checkout-5d8f7b9c4-x2x9q",
    uid="uid-1",
    resource_version="1001",
    family="aws-m6i",
    owner_kind="ReplicaSet",
    owner_name="checkout-5d8f7b9c4",
    owner_uid="uid-rs",
    created=NOW - 900,
    unschedulable=True,
)
FULL_ELSEWHERE = Room(family_fits=False, elsewhere="aws-m7i")


def stuck(**changes: Any) -> PendingPod:
    return dataclasses.replace(STUCK, **changes)


@pytest.mark.parametrize(
    ("pod", "room", "settings", "recreate", "reason"),
    [
        (stuck(), FULL_ELSEWHERE, ON, True, "pending 900s on full family aws-m6i"),
        (stuck(owner_kind="StatefulSet"), FULL_ELSEWHERE, ON, False, "owned by a StatefulSet"),
        (
            stuck(owner_kind="StatefulSet"),
            FULL_ELSEWHERE,
            Settings(after=600.0, kinds=frozenset({"ReplicaSet", "StatefulSet"})),
            True,
            "by its StatefulSet",
        ),
        # Rule 1: not ours.
        (stuck(family=None), FULL_ELSEWHERE, ON, False, "not normalized"),
        # A family the user named is a hard restriction: never moved.
        (stuck(user_family=True), FULL_ELSEWHERE, ON, False, "named by the user"),
        # Rule 2: bound, being deleted, started.
        (stuck(bound=True), FULL_ELSEWHERE, ON, False, "bound to a node"),
        (stuck(deleting=True), FULL_ELSEWHERE, ON, False, "being deleted"),
        (stuck(started=True), FULL_ELSEWHERE, ON, False, "started"),
        # Rule 3: only pods a controller re-creates.
        (stuck(owner_kind=None), FULL_ELSEWHERE, ON, False, "no controller owner"),
        (stuck(owner_kind="Job"), FULL_ELSEWHERE, ON, False, "owned by a Job"),
        (stuck(owner_kind="DaemonSet"), FULL_ELSEWHERE, ON, False, "owned by a DaemonSet"),
        (
            stuck(owner_kind="Job"),
            FULL_ELSEWHERE,
            Settings(after=600.0, kinds=frozenset({"Job"})),
            True,
            "by its Job",
        ),
        # Rule 4: gates and nominations.
        (stuck(gated=True), FULL_ELSEWHERE, ON, False, "scheduling gates"),
        (stuck(nominated=True), FULL_ELSEWHERE, ON, False, "preemption under way"),
        # Rule 5: kube-scheduler said so.
        (stuck(unschedulable=False), FULL_ELSEWHERE, ON, False, "not reported unschedulable"),
        # Rule 6: the bound on the wait, and off.
        (stuck(created=NOW - 599), FULL_ELSEWHERE, ON, False, "not waited long enough"),
        (stuck(created=NOW - 600), FULL_ELSEWHERE, ON, True, "pending 600s"),
        (stuck(), FULL_ELSEWHERE, Settings(after=None), False, "not waited long enough"),
        # Rule 7: only when it helps.
        (stuck(), Room(True, "aws-m7i"), ON, False, "family aws-m6i has room for it now"),
        (stuck(), Room(False, None), ON, False, "no other allowed family has room"),
        (stuck(), Room(False, "aws-m6i"), ON, False, "no other allowed family has room"),
    ],
)
def test_which_pods_are_recreated(pod, room, settings, recreate, reason):
    asked: list[PendingPod] = []

    def ask(p: PendingPod) -> Room:
        asked.append(p)
        return room

    [choice] = choose_recreations([pod], ask, NOW, settings)
    assert choice.recreate is recreate
    assert reason in choice.reason
    if recreate:
        assert choice.target == "aws-m7i"
    # The cache is asked only about pods that pass every other rule.
    assert bool(asked) == (recreate or "room" in reason)


def test_at_most_max_per_cycle_oldest_first():
    pods = [stuck(name=f"p{i}", uid=f"u{i}", created=NOW - 1000 - 10 * i) for i in range(7)]
    choices = choose_recreations(pods, lambda p: FULL_ELSEWHERE, NOW, ON)
    recreated = [c.pod.name for c in choices if c.recreate]
    assert recreated == ["p6", "p5", "p4", "p3", "p2"]
    limited = {c.pod.name: c.reason for c in choices if not c.recreate}
    assert limited == {"p1": "rate limited: next cycle", "p0": "rate limited: next cycle"}


def test_no_pods_no_choices():
    assert choose_recreations([], lambda p: FULL_ELSEWHERE, NOW, ON) == []


# -- reading Pod objects ---------------------------------------------------------------------

ANNOTATIONS = {
    "machine-catalog.io/family": "aws-m6i",
    "machine-catalog.io/scu-per-core": "1.15",
    "machine-catalog.io/standard-resources": '{"containers":{"app":{"requests":{"cpu":"2"}}}}',
    "machine-catalog.io/catalog": "default@0123456789abcdef",
}

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "checkout-5d8f7b9c4-x2x9q",
        "namespace": "shop",
        "uid": "uid-1",
        "resourceVersion": "1001",
        "creationTimestamp": "2027-01-15T08:00:00Z",
        "annotations": ANNOTATIONS,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "checkout-5d8f7b9c4",
                "uid": "uid-rs",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    },
    "spec": {"containers": [{"name": "app"}], "schedulerName": "machine-catalog"},
    "status": {
        "phase": "Pending",
        "qosClass": "Burstable",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": "2027-01-15T08:00:01Z",
                "reason": "Unschedulable",
                "message": "0/40 nodes are available: ...",
            }
        ],
    },
}


def test_a_real_shaped_stranded_pod_is_read():
    pod = pending_pod(POD)
    assert pod == PendingPod(
        namespace="shop",
        name="checkout-5d8f7b9c4-x2x9q",
        uid="uid-1",
        resource_version="1001",
        family="aws-m6i",
        owner_kind="ReplicaSet",
        owner_name="checkout-5d8f7b9c4",
        owner_uid="uid-rs",
        created=datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC).timestamp(),
        unschedulable=True,
    )


def _with(path: str, value: Any) -> dict:
    pod = copy.deepcopy(POD)
    *parents, last = path.split(".")
    target = pod
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return pod


@pytest.mark.parametrize(
    ("path", "value", "field", "expected"),
    [
        ("spec.nodeName", "node-1", "bound", True),
        ("metadata.deletionTimestamp", "2027-01-15T08:10:00Z", "deleting", True),
        ("status.phase", "Running", "started", True),
        (
            "status.containerStatuses",
            [{"name": "app", "state": {"terminated": {"exitCode": 1}}}],
            "started",
            True,
        ),
        (
            "status.containerStatuses",
            [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}],
            "started",
            False,
        ),
        ("spec.schedulingGates", [{"name": "example.com/gate"}], "gated", True),
        ("status.nominatedNodeName", "node-2", "nominated", True),
        ("status.conditions", [], "unschedulable", False),
        ("metadata.ownerReferences", None, "owner_kind", None),
        (
            "metadata.ownerReferences",
            [{"kind": "ReplicaSet", "name": "x", "uid": "u", "controller": False}],
            "owner_kind",
            None,
        ),
        ("metadata.annotations", {"machine-catalog.io/family": "aws-m6i"}, "family", None),
        (
            "metadata.annotations",
            {**POD["metadata"]["annotations"], "machine-catalog.io/family-source": "user"},
            "user_family",
            True,
        ),
    ],
)
def test_pod_fields_are_read(path, value, field, expected):
    pod = pending_pod(_with(path, value))
    assert pod is not None
    assert getattr(pod, field) == expected


@pytest.mark.parametrize(
    "path",
    ["metadata.uid", "metadata.resourceVersion", "metadata.creationTimestamp", "metadata.name"],
)
def test_a_pod_missing_what_a_decision_needs_is_never_acted_on(path):
    assert pending_pod(_with(path, None)) is None


def test_garbage_is_read_as_nothing_rather_than_raising():
    for junk in ({}, {"metadata": "x"}, {"metadata": {"creationTimestamp": "yesterday"}}):
        assert pending_pod(junk) is None
    odd = _with("status.conditions", ["not a condition", None])
    assert pending_pod(odd).unschedulable is False
