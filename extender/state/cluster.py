"""The cluster-state cache: per-node totals kept current as events arrive.

Every scheduling request asks about a few hundred to a few thousand nodes, for every pod.
So the per-node facts it needs live in numpy arrays indexed through a name -> slot map,
and pod events update the totals incrementally: a request never iterates over pods.

Feeders (:mod:`extender.feeds`) call :meth:`ClusterState.replace`
with a full list (atomically: a relist is never half-applied) and :meth:`ClusterState.apply`
for each watch event. Nodes and pods are listed and watched separately against the API server,
each with its own resourceVersion, so :meth:`ClusterState.replace_nodes` and
:meth:`ClusterState.replace_pods` swap in one kind's relist without touching the other's
state. Readers call :meth:`ClusterState.view` and compute outside the lock.

A node's family is stored as an integer (its index in the catalog) and recomputed for all
nodes when the catalog changes, under the same lock, so a view's families and its catalog
always belong to one catalog version.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extender.state.usage import UsageSample, UsageView, unseen_millis
from machine_catalog.annotations import FAMILY_ANNOTATION, FAMILY_LABEL
from machine_catalog.catalog import Catalog
from machine_catalog.matching import NodeMatch, instance_type_of, selected_by_beta_only
from machine_catalog.quantities import QuantityError, physical_to_scu_millis, to_units
from machine_catalog.resources import (
    DEFAULT_RESIZE_RULE,
    holds_resources,
    node_allocatable_millis,
    pod_requests,
)

log = logging.getLogger(__name__)


#: Values of :attr:`ClusterState.family` that are not a catalog index.
UNKNOWN = -1
AMBIGUOUS = -2
ABSENT = -3  # the name is not a node the cache knows (used in views only)


#: Taint effects that keep a pod off a node unless it tolerates them (PreferNoSchedule only
#: lowers a score). The cordon taint is left out: ``unschedulable`` already says it, and
#: readers treat cordoned nodes on their own terms.
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

Taint = tuple[str, str, str]  # key, value, effect


def node_taints(node: Mapping[str, Any]) -> tuple[Taint, ...]:
    """The node's blocking taints, as plain tuples (comparable, cheap to keep per node)."""
    taints = (node.get("spec") or {}).get("taints")
    if not isinstance(taints, list):
        return ()
    return tuple(
        (str(t.get("key") or ""), str(t.get("value") or ""), t["effect"])
        for t in taints
        if isinstance(t, dict)
        and t.get("effect") in BLOCKING_EFFECTS
        and t.get("key") != UNSCHEDULABLE_TAINT
    )


#: Resources besides CPU that kube-scheduler's ``NodeResourcesFit`` counts on a node, and
#: that every real kubelet reports: a node object without one (a hand-written snapshot)
#: is not limited by it here (:data:`UNLIMITED`), rather than holding nothing.
NATIVE_RESOURCES = ("memory", "ephemeral-storage", "pods")
#: Stands for "the node does not say": far above any request, far below int64 overflow.
UNLIMITED = 2**62
#: The largest amount of one non-CPU resource the cache keeps for one pod (a petabyte of
#: memory): as :data:`MAX_CPU_MILLIS`, bounding an absurd value keeps the totals exact.
MAX_UNITS = 2**50


def counted_resource(name: str) -> bool:
    """A non-CPU resource ``NodeResourcesFit`` checks: memory, ephemeral storage, the pod
    count, hugepages and extended resources (``vendor.io/name``; ``IsScalarResourceName``)."""
    return (
        name in NATIVE_RESOURCES
        or name.startswith("hugepages-")
        or ("/" in name and not name.startswith("requests."))
    )


@dataclass(frozen=True, slots=True)
class PodEntry:
    """What one pod contributes: CPU and other resources on a node, or a pending
    reservation of CPU on a family."""

    node: str | None  # set while the pod holds resources on that node
    pending_family: str | None  # set while the pod is pinned to a family but not yet bound
    cpu_millis: int
    #: (resource, amount) of the counted non-CPU resources it holds on ``node``, the pod
    #: count (``pods``, 1) included; empty for a pending pod.
    other: tuple[tuple[str, int], ...] = ()


def _drop(counts: dict[str, int], key: str | None) -> None:
    """One less of ``key`` in ``counts`` (gone at zero); None counts nothing."""
    if key is None:
        return
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


@dataclass(frozen=True, slots=True)
class NodeView:
    """Facts about the nodes of one request, copied out under the lock.

    ``slots[i]`` is -1 for a name the cache does not know; its other fields are then 0
    and ``family[i]`` is :data:`ABSENT`.
    """

    catalog: Catalog
    names: Sequence[str]
    slots: np.ndarray  # int64
    allocatable: np.ndarray  # int64 physical millicores
    requested: np.ndarray  # int64 physical millicores held by bound, non-terminal pods
    family: np.ndarray  # int16: catalog family index, UNKNOWN, AMBIGUOUS or ABSENT
    unschedulable: np.ndarray  # bool: cordoned (spec.unschedulable)
    #: Labels of the known nodes that matched no family or several (position -> labels),
    #: so a reason can say why without the hot path touching every node's labels.
    unmatched_labels: Mapping[int, Mapping[str, str]]
    #: Each node's instance type as a code into :attr:`instance_types` (int32; 0 = no
    #: instance-type label, or a name the cache does not know): a rejection reason names
    #: the instance type, and thousands of rejected nodes share a handful of them.
    instance_type: np.ndarray
    instance_types: Sequence[str | None]
    #: Measured usage (``loadAware``), only when asked for: ``view(names, usage=True)``.
    usage: UsageView | None = None
    #: Per counted non-CPU resource (:func:`counted_resource`), (allocatable, requested)
    #: int64 arrays in whole units; only in :meth:`ClusterState.all_nodes` (the family
    #: choice). A resource no node reports is absent: every node has 0 of it.
    resources: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def match(self, position: int) -> NodeMatch | None:
        """The catalog's verdict for an unknown/ambiguous node of this view, for reasons."""
        labels = self.unmatched_labels.get(position)
        return None if labels is None else self.catalog.match(labels)


#: The largest CPU value the cache keeps for one pod or node: a million cores, in millis.
#: Real machines have at most a few thousand cores, so anything above is a typo or an
#: attack (``cpu: "1e16"``). Bounding, not ignoring, is what kube-scheduler does
#: (``MilliValue`` saturates at int64): such a pod still fills its node. It also keeps
#: every int64 total far from overflow: 10^9 per pod times 10^6 pods on a node is 10^15,
#: against 9.2 * 10^18 (an ``OverflowError`` in a total used to break every later event
#: for that node, and the watch replayed the event after each backoff).
MAX_CPU_MILLIS = 10**9

#: Objects already logged for a bad value (bounded: forgotten wholesale when full), so a
#: bad object logs once however many events it gets, and a flood of them cannot grow it.
_LOGGED: set[tuple[str, str, str]] = set()
_LOGGED_MAX = 10_000


def _bad_value(kind: str, key: str, problem: str, detail: str) -> None:
    """Log and count a bad CPU value (``problem``: unparsable | out_of_range), once per
    object however many events it gets."""
    from extender import telemetry  # here, not at the top: metrics imports this module's users

    seen = (kind, key, problem)
    if seen in _LOGGED:
        return
    if len(_LOGGED) >= _LOGGED_MAX:
        _LOGGED.clear()
    _LOGGED.add(seen)
    telemetry.BAD_VALUES.labels(kind=kind, problem=problem).inc()
    log.warning("%s %s: %s", kind, key, detail)


def bounded_cpu(millis: int, kind: str, key: str) -> int:
    """``millis``, or :data:`MAX_CPU_MILLIS` (counted and logged) when above it."""
    if millis <= MAX_CPU_MILLIS:
        return millis
    _bad_value(
        kind,
        key,
        "out_of_range",
        f"cpu of {millis}m is beyond any machine; counted as {MAX_CPU_MILLIS}m",
    )
    return MAX_CPU_MILLIS


def _node_allocatable_millis(node: Mapping[str, Any]) -> int:
    """Allocatable CPU; a node with an unparsable value holds nothing rather than crash the
    feed, and an absurd one is bounded."""
    try:
        millis = node_allocatable_millis(node)
    except QuantityError:
        _bad_value("node", _name(node), "unparsable", "unparsable cpu allocatable; counting 0")
        return 0
    return bounded_cpu(millis, "node", _name(node))


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name") or ""


def _pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def node_resources(node: Mapping[str, Any]) -> dict[str, int]:
    """A node's allocatable counted non-CPU resources (capacity when allocatable lacks
    one), in whole units; an unparsable value counts 0."""
    status = node.get("status") or {}
    out: dict[str, int] = {}
    for key in ("capacity", "allocatable"):
        values = status.get(key)
        for name, value in values.items() if isinstance(values, dict) else ():
            if counted_resource(name):
                try:
                    out[name] = min(to_units(value), UNLIMITED)
                except QuantityError:
                    out[name] = 0
    return out


def pod_entry(pod: Mapping[str, Any], rule: str = DEFAULT_RESIZE_RULE) -> PodEntry | None:
    """The pod's contribution to the totals, or None when it contributes nothing.

    ``rule``: how a pod mid-resize counts, as the kube-scheduler the cluster runs counts it
    (:data:`machine_catalog.resources.RESIZE_RULES`).
    """
    try:
        requests = pod_requests(pod, rule)
    except QuantityError:
        _bad_value("pod", _pod_key(pod), "unparsable", "unparsable request; counting 0")
        requests = {}
    cpu = bounded_cpu(requests.get("cpu", 0), "pod", _pod_key(pod))
    if holds_resources(pod):
        other = tuple(
            (name, min(amount, MAX_UNITS))
            for name, amount in requests.items()
            if amount > 0 and name != "pods" and counted_resource(name)
        )
        return PodEntry(
            node=pod["spec"]["nodeName"],
            pending_family=None,
            cpu_millis=cpu,
            other=(*other, ("pods", 1)),
        )
    phase = (pod.get("status") or {}).get("phase")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    family = annotations.get(FAMILY_ANNOTATION)
    if (
        family
        and not (pod.get("spec") or {}).get("nodeName")
        and phase not in ("Succeeded", "Failed")
    ):
        return PodEntry(node=None, pending_family=family, cpu_millis=cpu)
    return None


# -- compact objects ------------------------------------------------------------------------
#
# A feeder that holds a whole cluster's objects at once (a snapshot file: 150 MB of JSON for
# 50,000 pods, ~700 MB once parsed) can shrink them to what this module reads before
# building the cache. The projections live here, next to the code that reads the fields,
# so they cannot drift apart: ``set_node``/``pod_entry`` on a compact object give what they
# give on the full one.


def compact_node(node: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Node that :meth:`_Tables.set_node` reads, and nothing else."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    out_status = {}
    for key in ("allocatable", "capacity"):
        values = status.get(key) or {}
        kept = {k: v for k, v in values.items() if k == "cpu" or counted_resource(k)}
        if kept:
            out_status[key] = kept
    return {
        "metadata": {"name": meta.get("name"), "labels": meta.get("labels")},
        "spec": {"taints": spec.get("taints"), "unschedulable": spec.get("unschedulable")},
        "status": out_status,
    }


def compact_pod(pod: Mapping[str, Any], rule: str = DEFAULT_RESIZE_RULE) -> dict[str, Any]:
    """The smallest Pod with the same key and contribution as ``pod``.

    The key goes in ``uid``; the effective request (computed once here, by the full
    Kubernetes rules) becomes a pod-level request; the node or the pending family is kept
    as is. A pod that contributes nothing keeps only its key, so that a later duplicate
    still replaces an earlier one as it would have.
    """
    key = _pod_key(pod)
    entry = pod_entry(pod, rule)
    if entry is None:
        return {"metadata": {"uid": key}}
    meta: dict[str, Any] = {"uid": key}
    spec: dict[str, Any] = {"resources": {"requests": {"cpu": f"{entry.cpu_millis}m"}}}
    other = {name: str(amount) for name, amount in entry.other if name != "pods"}
    if other:  # in a container: pod-level requests may only set cpu, memory and hugepages
        spec["containers"] = [{"name": "c", "resources": {"requests": other}}]
    if entry.node is not None:
        spec["nodeName"] = entry.node
    else:
        meta["annotations"] = {FAMILY_ANNOTATION: entry.pending_family}
    return {"metadata": meta, "spec": spec}


class _Tables:
    """The arrays and maps of one consistent state; replaced whole on a relist."""

    def __init__(self, capacity: int = 64) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str | None] = [None] * capacity
        self.labels: list[Mapping[str, str]] = [{}] * capacity
        self.taints: list[tuple[Taint, ...]] = [()] * capacity
        self.allocatable = np.zeros(capacity, dtype=np.int64)
        self.requested = np.zeros(capacity, dtype=np.int64)
        self.family = np.full(capacity, ABSENT, dtype=np.int16)
        self.unschedulable = np.zeros(capacity, dtype=bool)
        #: Instance type per slot, as a code into ``instance_types`` (append-only, so a view
        #: holding the list can still read every code it copied).
        self.instance_type = np.zeros(capacity, dtype=np.int32)
        self.instance_types: list[str | None] = [None]
        self._instance_type_codes: dict[str | None, int] = {None: 0}
        self.free_slots: list[int] = []
        self.size = 0  # slots in use or freed: [0, size)
        self.pods: dict[str, PodEntry] = {}
        self.requested_by_node: dict[str, int] = {}
        self.pending_by_family: dict[str, int] = {}
        #: The counted non-CPU resources (:func:`counted_resource`): per node name, what
        #: its pods request; per resource a node reports, (allocatable, requested) arrays
        #: by slot, kept like ``allocatable``/``requested``. Created when a node first
        #: reports the resource; the native ones always exist.
        self.other_by_node: dict[str, dict[str, int]] = {}
        self.other: dict[str, tuple[np.ndarray, np.ndarray]] = {
            name: (np.full(capacity, UNLIMITED, np.int64), np.zeros(capacity, np.int64))
            for name in NATIVE_RESOURCES
        }
        self._init_usage(capacity)
        #: Nodes only the deprecated beta instance-type label makes their family's (slot ->
        #: family name), and how many per family: the webhook's pin names the beta label,
        #: which the API server warns about, only for a family that has such a node.
        self.beta_only: dict[int, str] = {}
        self.beta_only_count: dict[str, int] = {}
        #: Nodes whose ``machine-catalog.io/family`` label is not what the catalog says
        #: (slot -> the value it should have, None: no label), and per schedulable family
        #: how many of its nodes lack it: the leader's labeller works through the first,
        #: the webhook pins to the label alone once a family has none in the second.
        self.mislabelled: dict[int, str | None] = {}
        self.unlabelled_count: dict[str, int] = {}
        #: Per schedulable family, how many of its nodes carry the right label.
        self.labelled: dict[int, str] = {}
        self.labelled_count: dict[str, int] = {}

    def _grow(self) -> None:
        capacity = len(self.names) * 2
        extra = capacity - len(self.names)
        self.names.extend([None] * extra)
        self.labels.extend([{}] * extra)
        self.taints.extend([()] * extra)
        self.allocatable = np.concatenate([self.allocatable, np.zeros(extra, np.int64)])
        self.requested = np.concatenate([self.requested, np.zeros(extra, np.int64)])
        self.family = np.concatenate([self.family, np.full(extra, ABSENT, np.int16)])
        self.unschedulable = np.concatenate([self.unschedulable, np.zeros(extra, bool)])
        self.instance_type = np.concatenate([self.instance_type, np.zeros(extra, np.int32)])
        self.other = {
            name: (
                np.concatenate([alloc, np.zeros(extra, np.int64)]),
                np.concatenate([req, np.zeros(extra, np.int64)]),
            )
            for name, (alloc, req) in self.other.items()
        }
        self._grow_usage(extra)

    def _instance_type_code(self, labels: Mapping[str, Any]) -> int:
        value = instance_type_of(labels)
        value = value if isinstance(value, str) and value else None
        code = self._instance_type_codes.get(value)
        if code is None:
            code = self._instance_type_codes[value] = len(self.instance_types)
            self.instance_types.append(value)
        return code

    def set_node(self, node: Mapping[str, Any], catalog: Catalog) -> bool:
        """Add or update a node; True when the node set, its labels or its taints changed."""
        name = _name(node)
        if not name:
            return False
        slot = self.index.get(name)
        changed = slot is None
        if slot is None:
            if self.free_slots:
                slot = self.free_slots.pop()
            else:
                if self.size == len(self.names):
                    self._grow()
                slot = self.size
                self.size += 1
            # A copy of our own: the names of a relist then sit side by side in memory
            # instead of among the objects of the list they came from, and every
            # scheduling request compares hundreds of them (a cold 5,000-name lookup
            # measured 470 -> 390 µs).
            name = "".join((name, ""))  # a new str object (join returns a lone item as is)
            self.index[name] = slot
            self.names[slot] = name
        labels = (node.get("metadata") or {}).get("labels") or {}
        taints = node_taints(node)
        changed = changed or self.labels[slot] != labels or self.taints[slot] != taints
        self.labels[slot] = labels
        self.taints[slot] = taints
        self.allocatable[slot] = _node_allocatable_millis(node)
        self.unschedulable[slot] = bool((node.get("spec") or {}).get("unschedulable"))
        self.instance_type[slot] = self._instance_type_code(labels)
        self.requested[slot] = self.requested_by_node.get(name, 0)
        self._set_node_resources(slot, name, node_resources(node))
        self._match(slot, catalog)
        self._refresh_usage(slot, name, catalog)
        return changed

    def _set_node_resources(self, slot: int, name: str, values: Mapping[str, int]) -> None:
        """The slot's non-CPU columns: O(resources), plus O(nodes) once per resource the
        first time a node reports it."""
        for resource in values:
            if resource not in self.other:
                self._add_resource(resource)
        held = self.other_by_node.get(name, {})
        for resource, (alloc, req) in self.other.items():
            default = UNLIMITED if resource in NATIVE_RESOURCES else 0
            alloc[slot] = values.get(resource, default)
            req[slot] = min(held.get(resource, 0), UNLIMITED)

    def _add_resource(self, resource: str) -> None:
        """Columns for a resource no node reported before: every other node has none."""
        alloc = np.zeros(len(self.names), np.int64)
        req = np.zeros(len(self.names), np.int64)
        for node, slot in self.index.items():
            req[slot] = min(self.other_by_node.get(node, {}).get(resource, 0), UNLIMITED)
        self.other[resource] = (alloc, req)

    def _match(self, slot: int, catalog: Catalog) -> None:
        match = catalog.match(self.labels[slot])
        if match.status == "matched":
            self.family[slot] = catalog.family_index[match.families[0].name]
        else:
            self.family[slot] = UNKNOWN if match.status == "unknown" else AMBIGUOUS
        family = match.family
        if family is not None and selected_by_beta_only(family, self.labels[slot]):
            self._set_beta_only(slot, family.name)
        else:
            self._set_beta_only(slot, None)
        wanted = family.name if family is not None and family.schedulable else None
        self._set_mislabelled(slot, wanted, self.labels[slot].get(FAMILY_LABEL) != wanted)

    def _set_mislabelled(self, slot: int, wanted: str | None, wrong: bool) -> None:
        """Keep :attr:`mislabelled`, :attr:`labelled` and their per-family counts current
        for one slot: O(1)."""
        if slot in self.mislabelled:
            _drop(self.unlabelled_count, self.mislabelled.pop(slot))
        if slot in self.labelled:
            _drop(self.labelled_count, self.labelled.pop(slot))
        if wrong:
            self.mislabelled[slot] = wanted
            if wanted is not None:
                self.unlabelled_count[wanted] = self.unlabelled_count.get(wanted, 0) + 1
        elif wanted is not None:
            self.labelled[slot] = wanted
            self.labelled_count[wanted] = self.labelled_count.get(wanted, 0) + 1

    def _set_beta_only(self, slot: int, family: str | None) -> None:
        """Keep :attr:`beta_only` and its per-family count current for one slot: O(1)."""
        _drop(self.beta_only_count, self.beta_only.pop(slot, None))
        if family is not None:
            self.beta_only[slot] = family
            self.beta_only_count[family] = self.beta_only_count.get(family, 0) + 1

    def delete_node(self, name: str) -> bool:
        slot = self.index.pop(name, None)
        if slot is None:
            return False
        self.names[slot] = None
        self.labels[slot] = {}
        self.taints[slot] = ()
        self.allocatable[slot] = 0
        self.requested[slot] = 0
        for alloc, req in self.other.values():
            alloc[slot] = req[slot] = 0
        self.family[slot] = ABSENT
        self.unschedulable[slot] = False
        self.instance_type[slot] = 0
        self._refresh_usage(slot, None, None)
        self._set_beta_only(slot, None)
        self._set_mislabelled(slot, None, False)
        self.free_slots.append(slot)
        return True

    def rematch(self, catalog: Catalog) -> None:
        for slot in self.index.values():
            self._match(slot, catalog)
        self._refresh_all_usage(catalog)  # the factors may have changed

    def _add(self, entry: PodEntry, sign: int) -> None:
        if entry.node is not None:
            total = self.requested_by_node.get(entry.node, 0) + sign * entry.cpu_millis
            if total:
                self.requested_by_node[entry.node] = total
            else:
                self.requested_by_node.pop(entry.node, None)
            slot = self.index.get(entry.node)
            if slot is not None:
                self.requested[slot] = total
            if entry.other:
                self._add_other(entry.node, entry.other, sign, slot)
        elif entry.pending_family is not None:
            fam = entry.pending_family
            total = self.pending_by_family.get(fam, 0) + sign * entry.cpu_millis
            if total:
                self.pending_by_family[fam] = total
            else:
                self.pending_by_family.pop(fam, None)

    def _add_other(
        self, node: str, other: tuple[tuple[str, int], ...], sign: int, slot: int | None
    ) -> None:
        held = self.other_by_node.setdefault(node, {})
        for resource, amount in other:
            total = held.get(resource, 0) + sign * amount
            if total:
                held[resource] = total
            else:
                held.pop(resource, None)
            columns = self.other.get(resource)
            if columns is not None and slot is not None:
                columns[1][slot] = min(total, UNLIMITED)
        if not held:
            del self.other_by_node[node]

    def set_pod(self, key: str, entry: PodEntry | None) -> None:
        old = self.pods.pop(key, None)
        if old is not None:
            self._add(old, -1)
        if entry is not None:
            self.pods[key] = entry
            self._add(entry, +1)

    def take_nodes(self, other: _Tables) -> None:
        """Adopt ``other``'s node tables (``other`` is discarded); O(nodes), never O(pods)."""
        self.index, self.names, self.labels = other.index, other.names, other.labels
        self.taints = other.taints
        self.allocatable, self.family = other.allocatable, other.family
        self.unschedulable = other.unschedulable
        self.instance_type, self.instance_types = other.instance_type, other.instance_types
        self._instance_type_codes = other._instance_type_codes
        self.beta_only, self.beta_only_count = other.beta_only, other.beta_only_count
        self.mislabelled, self.unlabelled_count = other.mislabelled, other.unlabelled_count
        self.labelled, self.labelled_count = other.labelled, other.labelled_count
        self.free_slots, self.size = other.free_slots, other.size
        self.other = other.other
        self.requested = np.zeros(len(self.names), dtype=np.int64)
        self._refresh_requested()

    def take_pods(self, other: _Tables) -> None:
        """Adopt ``other``'s pod totals (``other`` is discarded); O(nodes), never O(pods)."""
        self.pods = other.pods
        self.requested_by_node = other.requested_by_node
        self.pending_by_family = other.pending_by_family
        self.other_by_node = other.other_by_node
        self.requested = np.zeros(len(self.names), dtype=np.int64)
        self._refresh_requested()

    def _refresh_requested(self) -> None:
        """Every node's requested columns from the by-name totals: O(nodes x resources)."""
        get = self.requested_by_node.get
        for resource, (alloc, _req) in list(self.other.items()):
            self.other[resource] = (alloc, np.zeros(len(self.names), np.int64))
        for name, slot in self.index.items():
            self.requested[slot] = get(name, 0)
            held = self.other_by_node.get(name)
            if held:
                for resource, amount in held.items():
                    columns = self.other.get(resource)
                    if columns is not None:
                        columns[1][slot] = min(amount, UNLIMITED)

    # -- node usage (loadAware) -------------------------------------------------------
    #
    # Kept by node name (like ``requested_by_node``) and mirrored into per-slot arrays in
    # SCU of the node's family, so a request gathers them like the other columns.

    def _init_usage(self, capacity: int) -> None:
        #: The last usage sample of each node (physical millicores).
        self.samples: dict[str, UsageSample] = {}
        #: Pods bound to a node since its last sample: node -> pod key -> (bound at, millis).
        self.unseen_by_node: dict[str, dict[str, tuple[float, int]]] = {}
        self._init_usage_arrays(capacity)

    def _init_usage_arrays(self, capacity: int) -> None:
        self.usage_scu = np.full(capacity, -1, dtype=np.int64)  # -1: no sample
        self.unseen_scu = np.zeros(capacity, dtype=np.int64)
        self.sample_at = np.full(capacity, -np.inf)

    def _grow_usage(self, extra: int) -> None:
        self.usage_scu = np.concatenate([self.usage_scu, np.full(extra, -1, np.int64)])
        self.unseen_scu = np.concatenate([self.unseen_scu, np.zeros(extra, np.int64)])
        self.sample_at = np.concatenate([self.sample_at, np.full(extra, -np.inf)])

    def _refresh_usage(self, slot: int, name: str | None, catalog: Catalog | None) -> None:
        """The slot's usage columns from the by-name tables (cleared for a freed slot)."""
        sample = self.samples.get(name) if name is not None else None
        unseen = self.unseen_by_node.get(name) if name is not None else None
        if catalog is None or (sample is None and not unseen):
            self.usage_scu[slot], self.unseen_scu[slot], self.sample_at[slot] = -1, 0, -np.inf
            return
        fam = int(self.family[slot])
        factor = (catalog.families[fam] if fam >= 0 else catalog.baseline).factor
        if sample is None:
            self.usage_scu[slot], self.sample_at[slot] = -1, -np.inf
        else:
            self.usage_scu[slot] = physical_to_scu_millis(sample.millis, factor)
            self.sample_at[slot] = sample.at
        millis = sum(unseen_millis(at, m, sample) for at, m in unseen.values()) if unseen else 0
        self.unseen_scu[slot] = physical_to_scu_millis(millis, factor)

    def _refresh_all_usage(self, catalog: Catalog) -> None:
        if not self.samples and not self.unseen_by_node:
            return
        for name, slot in self.index.items():
            self._refresh_usage(slot, name, catalog)

    def take_usage(self, other: _Tables, catalog: Catalog) -> None:
        """Adopt ``other``'s samples and unseen pods (a relist does not change usage)."""
        self.samples, self.unseen_by_node = other.samples, other.unseen_by_node
        self._init_usage_arrays(len(self.names))
        self._refresh_all_usage(catalog)

    def set_samples(
        self, samples: Mapping[str, UsageSample], replace: bool, catalog: Catalog
    ) -> None:
        """Record new samples; the pods a sample covers stop counting as unseen.

        ``replace`` drops the samples of nodes absent from ``samples`` (a file is the
        whole truth); otherwise they are kept until they go stale (a poll that missed one
        node says nothing new about it).
        """
        touched = set(samples)
        if replace:
            touched.update(self.samples)
            self.samples = {}
        for name, sample in samples.items():
            old = self.samples.get(name)
            if old is not None and old.at > sample.at:
                continue  # never go back in time (two polls answered out of order)
            self.samples[name] = sample
            unseen = self.unseen_by_node.get(name)
            if unseen:
                for key in [k for k, (at, _) in unseen.items() if sample.covers(at)]:
                    del unseen[key]
                if not unseen:
                    del self.unseen_by_node[name]
        for name in touched:
            slot = self.index.get(name)
            if slot is not None:
                self._refresh_usage(slot, name, catalog)

    def note_binding(
        self,
        key: str,
        old: PodEntry | None,
        new: PodEntry | None,
        now: float,
        max_age: float,
        catalog: Catalog,
    ) -> None:
        """Anti-herding, from one watch event: a pod newly on a node counts by its request
        until a sample covers it; a pod that left a node stops counting there.

        Entries older than ``max_age`` are dropped with the node's next binding: by then
        the node's sample, if any, is stale and its requests are its load anyway.
        """
        before = old.node if old is not None else None
        after = new.node if new is not None else None
        if before is not None and (before != after or new is None):
            unseen = self.unseen_by_node.get(before)
            if unseen is not None and unseen.pop(key, None) is not None:
                if not unseen:
                    del self.unseen_by_node[before]
                slot = self.index.get(before)
                if slot is not None:
                    self._refresh_usage(slot, before, catalog)
        if after is not None and new is not None and before != after:
            unseen = self.unseen_by_node.setdefault(after, {})
            for stale in [k for k, (at, _) in unseen.items() if at < now - max_age]:
                del unseen[stale]
            unseen[key] = (now, new.cpu_millis)
            slot = self.index.get(after)
            if slot is not None:
                self._refresh_usage(slot, after, catalog)

    def usage_view(self, slots: np.ndarray) -> UsageView:
        """The usage columns at ``slots`` (-1: a name the cache does not know)."""
        usage = self.usage_scu[slots]
        unseen = self.unseen_scu[slots]
        sample_at = self.sample_at[slots]
        if len(slots) and slots.min() < 0:
            absent = slots < 0
            usage[absent], unseen[absent], sample_at[absent] = -1, 0, -np.inf
        return UsageView(usage_scu=usage, unseen_scu=unseen, sample_at=sample_at)


class ClusterState:
    """Nodes and pods of one process, with the totals the scheduling path needs."""

    def __init__(self, catalog: Catalog, resize_rule: str = DEFAULT_RESIZE_RULE) -> None:
        self._lock = threading.Lock()
        self._catalog = catalog
        #: How a pod mid-resize counts (``serve --resize-accounting``): as the cluster's
        #: kube-scheduler counts it (:mod:`machine_catalog.resources`).
        self.resize_rule = resize_rule
        self._t = _Tables()
        #: True once both nodes and pods have been listed completely (``replace``, or
        #: ``replace_nodes`` and ``replace_pods``); never goes back to False.
        self.synced = False
        self._listed: set[str] = set()
        #: The last resourceVersion a feeder reported (any kind); for diagnostics only.
        self.resource_version: str | None = None
        #: time.monotonic() of the last sign of life from the source (event, bookmark, list).
        self.last_activity: float | None = None
        #: The same per kind: nodes and pods are separate watches, and one can be dead (its
        #: RBAC rule lost, say) while the other streams; age() goes by the older one.
        self._activity: dict[str, float | None] = {"Node": None, "Pod": None}
        self.source = "none"
        self.generation = 0  # bumped on every change; lets readers cache derived data
        #: Bumped only when the node set, a node's labels or taints, or the catalog change
        #: (not on pod events nor on node status updates): readers cache per-node label
        #: evaluations (the webhook's affinity masks) on it.
        self.node_generation = 0
        #: Bumped when anything :meth:`all_nodes` returns may have changed: a node event
        #: (status included), a pod event on a node (its requests), a relist, the catalog.
        #: Not by an event of a pod without a node, which changes only
        #: :meth:`pending_millis`: a burst of creates is a stream of such events, and the
        #: webhook keeps its per-family totals (O(nodes) to build) per this generation, so
        #: each of those admissions costs O(families), not a rebuild over every node.
        self.capacity_generation = 0
        #: Pods seen going from pending with a family pin to bound: the machine-catalog
        #: scheduler's bindings (the evidence :mod:`extender.state.pairing` weighs).
        self.scheduled_bindings = 0

    # -- feeding -----------------------------------------------------------------------

    def replace(
        self,
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        resource_version: str | None = None,
    ) -> None:
        """Swap in a full list: built aside, then swapped, so no reader sees half of it."""
        with self._lock:
            catalog = self._catalog
        tables = _Tables(capacity=64)
        for pod in pods:
            tables.set_pod(_pod_key(pod), pod_entry(pod, self.resize_rule))
        for node in nodes:
            tables.set_node(node, catalog)
        with self._lock:
            if catalog is not self._catalog:  # a reload raced the build: re-match first
                tables.rematch(self._catalog)
            tables.take_usage(self._t, self._catalog)
            self._t = tables
            self._swapped({"Node", "Pod"}, resource_version)

    def replace_nodes(
        self, nodes: Iterable[Mapping[str, Any]], resource_version: str | None = None
    ) -> None:
        """Swap in a relist of nodes only, keeping the pods (and their totals) as they are.

        The nodes are matched against the catalog outside the lock; under it, the current
        pod totals are moved over, so pod events applied meanwhile are not lost.
        """
        with self._lock:
            catalog = self._catalog
        built = _Tables(capacity=64)
        for node in nodes:
            built.set_node(node, catalog)
        with self._lock:
            if catalog is not self._catalog:
                built.rematch(self._catalog)
            built.take_pods(self._t)
            built.take_usage(self._t, self._catalog)
            self._t = built
            self._swapped({"Node"}, resource_version)

    def replace_pods(
        self, pods: Iterable[Mapping[str, Any]], resource_version: str | None = None
    ) -> None:
        """Swap in a relist of pods only, keeping the nodes as they are.

        Effective requests are computed outside the lock (the O(pods) part); under it, the
        current node tables are moved over and each node's total re-read: O(nodes).
        """
        built = _Tables(capacity=1)
        for pod in pods:
            built.set_pod(_pod_key(pod), pod_entry(pod, self.resize_rule))
        with self._lock:
            built.take_nodes(self._t)
            built.take_usage(self._t, self._catalog)
            self._t = built
            self._swapped({"Pod"}, resource_version)

    def _swapped(self, kinds: set[str], resource_version: str | None) -> None:
        """Bookkeeping after a swap; the caller holds the lock."""
        self._listed |= kinds
        if resource_version:
            self.resource_version = resource_version
        self.synced = self._listed >= {"Node", "Pod"}
        self.last_activity = time.monotonic()
        for kind in kinds:
            self._activity[kind] = self.last_activity
        self.generation += 1
        self.capacity_generation += 1
        if "Node" in kinds:
            self.node_generation += 1

    def apply(
        self,
        kind: str,
        event_type: str,
        obj: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> None:
        """One watch event (``ADDED``/``MODIFIED``/``DELETED``) for a Node or a Pod."""
        with self._lock:
            t = self._t
            nodes_changed = False
            on_nodes = True  # the event may change what all_nodes() returns
            if kind == "Node":
                if event_type == "DELETED":
                    nodes_changed = t.delete_node(_name(obj))
                else:
                    nodes_changed = t.set_node(obj, self._catalog)
            elif kind == "Pod":
                entry = None if event_type == "DELETED" else pod_entry(obj, self.resize_rule)
                key = _pod_key(obj)
                old = t.pods.get(key)
                t.set_pod(key, entry)
                on_nodes = (old is not None and old.node is not None) or (
                    entry is not None and entry.node is not None
                )
                self._note_binding(t, key, old, entry)
                if (
                    old is not None
                    and old.pending_family is not None
                    and entry is not None
                    and entry.node is not None
                ):
                    self.scheduled_bindings += 1
            else:
                raise ValueError(f"unexpected kind {kind!r}")
            if resource_version:
                self.resource_version = resource_version
            self.last_activity = self._activity[kind] = time.monotonic()
            self.generation += 1
            if on_nodes:
                self.capacity_generation += 1
            if nodes_changed:  # not on status-only updates (heartbeats, conditions)
                self.node_generation += 1

    def touch(self, resource_version: str | None = None, kind: str | None = None) -> None:
        """The source is alive (a bookmark, a quiet but open watch): for ``kind`` ("Node"
        or "Pod") only, or for both when None."""
        with self._lock:
            if resource_version:
                self.resource_version = resource_version
            self.last_activity = now = time.monotonic()
            for k in (kind,) if kind is not None else tuple(self._activity):
                self._activity[k] = now

    def set_catalog(self, catalog: Catalog) -> None:
        """Re-match every node against a new catalog version (on hot reload)."""
        with self._lock:
            self._catalog = catalog
            self._t.rematch(catalog)
            self.generation += 1
            self.capacity_generation += 1
            self.node_generation += 1

    # -- reading -----------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def view(self, names: Sequence[str], *, usage: bool = False) -> NodeView:
        """Copy out the facts for ``names`` (in order); unknown names get slot -1.

        The name -> slot lookups are the only per-name Python work of a scheduling request
        (~0.1 µs each with the hash of a freshly decoded string): one ``dict.get`` per name
        mapped in C, then one numpy gather per field. There is deliberately no cache keyed
        by the whole list: kube-scheduler starts each cycle's search where the previous one
        stopped and fills its feasible list in parallel completion order, so consecutive
        pods rarely send the same list, and hashing the list costs what the lookups cost.
        """
        with self._lock:
            t = self._t
            slots = np.fromiter(
                map(t.index.get, names, itertools.repeat(-1)), dtype=np.int64, count=len(names)
            )
            # Fancy indexing copies, so the view owns its arrays; slot -1 (a name the cache
            # does not know) reads the last slot, overwritten below.
            family = t.family[slots]
            allocatable = t.allocatable[slots]
            requested = t.requested[slots]
            unschedulable = t.unschedulable[slots]
            instance_type = t.instance_type[slots]
            unmatched: dict[int, Mapping[str, str]] = {}
            # Both rare (one reduction each when not): names the cache lacks, and nodes
            # that matched no family or several.
            if len(names) and slots.min() < 0:
                absent = slots < 0
                family[absent] = ABSENT
                allocatable[absent] = 0
                requested[absent] = 0
                unschedulable[absent] = False
                instance_type[absent] = 0
            if len(names) and family.min() < 0:
                labels = t.labels
                odd = np.flatnonzero((family == UNKNOWN) | (family == AMBIGUOUS))
                unmatched = {i: labels[slots[i]] for i in odd.tolist()}
            return NodeView(
                catalog=self._catalog,
                names=names,
                slots=slots,
                allocatable=allocatable,
                requested=requested,
                family=family,
                unschedulable=unschedulable,
                unmatched_labels=unmatched,
                instance_type=instance_type,
                instance_types=t.instance_types,
                usage=t.usage_view(slots) if usage else None,
            )

    def all_nodes(self) -> NodeView:
        """Every node the cache knows (for the webhook's per-family totals and metrics).

        Read straight from the arrays in slot order, under one lock: a free slot's family is
        ABSENT, so no name-by-name lookup is needed (at 5,000 nodes ~4x cheaper than
        ``view(names)``, and the webhook calls this after every cache change).
        """
        with self._lock:
            t = self._t
            size = t.size
            if not t.free_slots:  # every slot in [0, size) holds a node: plain copies
                slots: Any = slice(0, size)
                positions = np.arange(size, dtype=np.int64)
                names = t.names[:size]
            else:
                positions = np.flatnonzero(t.family[:size] != ABSENT)
                slots = positions
                names = [t.names[i] for i in positions.tolist()]
            family = t.family[slots].copy()  # the view owns its arrays
            odd = np.flatnonzero(family < 0)
            labels = t.labels
            return NodeView(
                catalog=self._catalog,
                names=names,  # type: ignore[arg-type]
                slots=positions,
                allocatable=t.allocatable[slots].copy(),
                requested=t.requested[slots].copy(),
                family=family,
                unschedulable=t.unschedulable[slots].copy(),
                unmatched_labels={i: labels[positions[i]] for i in odd.tolist()},
                instance_type=t.instance_type[slots].copy(),
                instance_types=t.instance_types,
                resources={
                    name: (alloc[slots].copy(), req[slots].copy())
                    for name, (alloc, req) in t.other.items()
                },
            )

    def labels_of(self, names: Sequence[str]) -> list[Mapping[str, str] | None]:
        """Labels of many nodes under one lock (None for a name the cache does not know)."""
        with self._lock:
            t = self._t
            get = t.index.get
            return [None if (slot := get(n)) is None else t.labels[slot] for n in names]

    def taints_of(self, names: Sequence[str]) -> list[tuple[Taint, ...] | None]:
        """Blocking taints of many nodes under one lock (None for an unknown name)."""
        with self._lock:
            t = self._t
            get = t.index.get
            return [None if (slot := get(n)) is None else t.taints[slot] for n in names]

    def beta_label_only(self, family: str) -> bool:
        """Whether some node is ``family``'s through the deprecated beta instance-type
        label alone (no GA label): only then must the webhook's pin carry the beta term
        (:func:`machine_catalog.matching.family_selector_terms`). O(1): a count per family
        kept as nodes come, change and go."""
        with self._lock:
            return family in self._t.beta_only_count

    def family_labelled(self, family: str) -> bool:
        """``family`` is schedulable, has nodes, and every one of them carries its family
        label (the webhook may pin to the label alone). O(1): counts per family kept as
        nodes come, change and go; a retired family's nodes never carry it."""
        with self._lock:
            t = self._t
            return family not in t.unlabelled_count and family in t.labelled_count

    def labels_to_fix(self) -> list[tuple[str, str | None]]:
        """(node, the family label it should have, None: none) for every node whose label
        is wrong, under one lock. O(wrong nodes)."""
        with self._lock:
            t = self._t
            return [(t.names[slot], wanted) for slot, wanted in t.mislabelled.items()]

    def pending_millis(self) -> dict[str, int]:
        """Physical millicores of pods pinned to each family and not yet bound."""
        with self._lock:
            return dict(self._t.pending_by_family)

    def age(self) -> float | None:
        """Seconds since the source last showed it is alive, for the kind heard from least
        recently (a live pod watch does not hide a dead node watch); None before any."""
        if self.last_activity is None:
            return None
        oldest = min((t for t in self._activity.values() if t is not None), default=None)
        since = self.last_activity if oldest is None else min(oldest, self.last_activity)
        return time.monotonic() - since

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"nodes": len(self._t.index), "pods": len(self._t.pods)}

    # -- node usage (loadAware) -----------------------------------------------------------

    #: Wall clock of bindings and of staleness (``time.time``; a simulation sets its own).
    usage_clock: Callable[[], float] = staticmethod(time.time)

    def _note_binding(
        self, t: _Tables, key: str, old: PodEntry | None, new: PodEntry | None
    ) -> None:
        """Anti-herding bookkeeping for one pod event; the caller holds the lock."""
        if (old is None or old.node is None) and (new is None or new.node is None):
            return  # the common pending-pod event: nothing on any node changes
        max_age = float(self._catalog.scoring.max_sample_age_seconds)
        t.note_binding(key, old, new, self.usage_clock(), max_age, self._catalog)

    def set_usage(self, samples: Mapping[str, UsageSample], *, replace: bool = False) -> None:
        """Record node usage samples (from the metrics poller or the metrics file)."""
        with self._lock:
            self._t.set_samples(samples, replace, self._catalog)
            self.generation += 1

    def usage_status(self, now: float | None = None) -> dict[str, list[str]]:
        """The cache's nodes by usage state: ``fresh``, ``stale`` or ``missing``.

        For the metrics and the feed's log lines, not for the scheduling path: O(nodes).
        """
        now = self.usage_clock() if now is None else now
        with self._lock:
            t = self._t
            max_age = float(self._catalog.scoring.max_sample_age_seconds)
            out: dict[str, list[str]] = {"fresh": [], "stale": [], "missing": []}
            for name, slot in t.index.items():
                if t.usage_scu[slot] < 0:
                    out["missing"].append(name)
                elif t.sample_at[slot] < now - max_age:
                    out["stale"].append(name)
                else:
                    out["fresh"].append(name)
            return out
