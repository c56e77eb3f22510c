"""Pods stranded on a full family, and which of them to re-create: pure functions, no I/O.

The webhook pins a pod to a family when it is created; requests are in that family's
physical CPU and cannot change while the pod waits. If the family fills up after admission
(other pods bound first, nodes went away) while another family the pod allows has room,
the pod stays Pending until the family grows, which it may never do. The remedy
(:mod:`extender.loops.recreation` runs it) is to **delete such a pod if it never started and a
controller owns it**: the controller creates a replacement, which the webhook admits afresh
and pins to a family that can hold it now (:func:`extender.admission.placement.choose_family`).

Why re-creation and not scheduling gates: a gated pod's node affinity may be narrowed
(KEP-3838), but its CPU requests cannot change while gated, and the requests are what the
family decided (``ceil(scu / scuPerCore)``). Moving a pod to another family needs new
requests, so it needs a new pod.

A pod is re-created only if **every** rule holds (the first that fails is the reason shown,
in this order):

1. the webhook normalized it (its four annotations) and it names a family, which the
   webhook chose: a family the user named (``machine-catalog.io/family``, recorded as
   ``machine-catalog.io/family-source: user``) is a hard restriction, and the replacement
   would be pinned to the same full family again, deleted again, every cycle;
2. it is not bound (no ``spec.nodeName``), not being deleted, and never started (phase
   ``Pending``, no container status that ran);
3. it has a controller owner of a kind that re-creates deleted pods
   (``ReplicaSet`` by default; never a bare pod, a Job, a DaemonSet pod). Not a
   ``StatefulSet`` by default either: its pods usually have volumes bound in one zone,
   which the family choice does not see, so the replacement could be stranded again;
4. it is not waiting on scheduling gates, nor nominated to a node (a preemption is under
   way for it);
5. kube-scheduler reported it unschedulable (``PodScheduled=False``, reason
   ``Unschedulable``);
6. it has waited at least ``after`` seconds since it was created (the bound on the wait);
7. its family cannot hold it now (no allowed node with room for it), and another family
   it allows can (what the webhook would choose for it now, if that differs and fits).

At most ``max_per_cycle`` pods are re-created per call, the longest-waiting first, so a
sudden shortage turns into a steady trickle rather than a storm of deletions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from extender.admission.patching import FAMILY_ANNOTATION, was_normalized
from machine_catalog.annotations import FAMILY_SOURCE_ANNOTATION, FAMILY_SOURCE_USER

DEFAULT_KINDS = frozenset({"ReplicaSet"})


@dataclass(frozen=True, slots=True)
class PendingPod:
    """What the decision needs to know about one pod, read from the API object."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    family: str | None  # None: not normalized by the webhook
    owner_kind: str | None  # the controller owner's kind; None: no controller
    owner_name: str | None
    owner_uid: str | None
    created: float  # seconds since the epoch
    bound: bool = False
    deleting: bool = False
    started: bool = False
    gated: bool = False
    nominated: bool = False
    unschedulable: bool = False
    user_family: bool = False  # the user named the family (machine-catalog.io/family-source)


@dataclass(frozen=True, slots=True)
class Room:
    """The cluster cache's answer for one pod: can its family hold it, and which other
    family would the webhook pin it to now (None: none that can hold it)."""

    family_fits: bool
    elsewhere: str | None


@dataclass(frozen=True, slots=True)
class Settings:
    """``--recreate-stranded-after`` and friends; ``after`` None turns the remedy off."""

    after: float | None = None
    max_per_cycle: int = 5
    kinds: frozenset[str] = DEFAULT_KINDS


@dataclass(frozen=True, slots=True)
class Choice:
    pod: PendingPod
    recreate: bool
    reason: str
    #: For ``recreate``: the family the replacement is expected to get.
    target: str | None = None


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def pending_pod(pod: Mapping[str, Any]) -> PendingPod | None:
    """Read a Pod API object; None if it lacks what any decision needs (name, uid,
    resourceVersion, creationTimestamp): such an object is never acted on."""
    meta = _dict(pod.get("metadata"))
    spec = _dict(pod.get("spec"))
    status = _dict(pod.get("status"))
    names = (meta.get("namespace"), meta.get("name"), meta.get("uid"), meta.get("resourceVersion"))
    created = _timestamp(meta.get("creationTimestamp"))
    if not all(isinstance(v, str) and v for v in names) or created is None:
        return None
    annotations = _dict(meta.get("annotations"))
    family = annotations.get(FAMILY_ANNOTATION) if was_normalized(annotations) else None
    owner = next(
        (
            _dict(o)
            for o in (meta.get("ownerReferences") or [])
            if isinstance(o, dict) and o.get("controller") is True
        ),
        None,
    )
    statuses = [
        _dict(s)
        for key in ("containerStatuses", "initContainerStatuses")
        for s in (status.get(key) or [])
    ]
    started = status.get("phase") not in (None, "", "Pending") or any(
        _dict(s.get("state")).get("running")
        or _dict(s.get("state")).get("terminated")
        or _dict(s.get("lastState")).get("terminated")
        or s.get("started") is True
        for s in statuses
    )
    unschedulable = any(
        isinstance(c, dict)
        and c.get("type") == "PodScheduled"
        and c.get("status") == "False"
        and c.get("reason") == "Unschedulable"
        for c in (status.get("conditions") or [])
    )
    return PendingPod(
        namespace=names[0],  # type: ignore[arg-type]
        name=names[1],  # type: ignore[arg-type]
        uid=names[2],  # type: ignore[arg-type]
        resource_version=names[3],  # type: ignore[arg-type]
        family=str(family).strip() if family else None,
        owner_kind=str(owner.get("kind")) if owner else None,
        owner_name=str(owner.get("name")) if owner else None,
        owner_uid=str(owner.get("uid")) if owner else None,
        created=created,
        bound=bool(spec.get("nodeName")),
        deleting=meta.get("deletionTimestamp") is not None,
        started=bool(started),
        gated=bool(spec.get("schedulingGates")),
        nominated=bool(status.get("nominatedNodeName")),
        unschedulable=unschedulable,
        user_family=annotations.get(FAMILY_SOURCE_ANNOTATION) == FAMILY_SOURCE_USER,
    )


def _why_not(pod: PendingPod, now: float, settings: Settings) -> str | None:
    """Rules 1-6 of the module docstring: the first that fails, or None."""
    if pod.family is None:
        return "not normalized by machine-catalog"
    if pod.user_family:
        return f"family {pod.family} was named by the user (machine-catalog.io/family)"
    if pod.bound:
        return "bound to a node"
    if pod.deleting:
        return "being deleted"
    if pod.started:
        return "started"
    if pod.owner_kind is None:
        return "no controller owner"
    if pod.owner_kind not in settings.kinds:
        return f"owned by a {pod.owner_kind}, which is not re-created"
    if pod.gated:
        return "waiting on scheduling gates"
    if pod.nominated:
        return "nominated to a node (preemption under way)"
    if not pod.unschedulable:
        return "not reported unschedulable"
    if settings.after is None or now - pod.created < settings.after:
        return "has not waited long enough"
    return None


def choose_recreations(
    pods: Sequence[PendingPod],
    room: Callable[[PendingPod], Room],
    now: float,
    settings: Settings,
) -> list[Choice]:
    """One :class:`Choice` per pod (see the module docstring for the rules).

    ``room`` is asked only for pods that pass rules 1-6, so the cache is consulted for the
    few pods that waited too long, never for every pending pod.
    """
    choices: list[Choice] = []
    eligible: list[tuple[PendingPod, str]] = []
    for pod in pods:
        why = _why_not(pod, now, settings)
        if why is None:
            answer = room(pod)
            if answer.family_fits:
                why = f"family {pod.family} has room for it now"
            elif answer.elsewhere is None or answer.elsewhere == pod.family:
                why = "no other allowed family has room either"
            else:
                eligible.append((pod, answer.elsewhere))
                continue
        choices.append(Choice(pod, False, why))
    eligible.sort(key=lambda e: (e[0].created, e[0].namespace, e[0].name))
    for i, (pod, target) in enumerate(eligible):
        waited = int(now - pod.created)
        if i < settings.max_per_cycle:
            reason = (
                f"pending {waited}s on full family {pod.family}; family {target} has room: "
                f"re-created by its {pod.owner_kind}"
            )
            choices.append(Choice(pod, True, reason, target))
        else:
            choices.append(Choice(pod, False, "rate limited: next cycle", target))
    return choices
