"""Choosing the family a new pod is normalized for: pure functions over data given to them.

The webhook must answer in about a millisecond at 5,000 nodes, for every pod a controller
creates. So the work here is proportional to nodes and families, never to pods: per-family
free capacity is one ``np.bincount`` over the node arrays, and only a pod that restricts
its nodes (nodeSelector, required node affinity, ``nodeName``) needs a per-node label
evaluation, which the caller caches per node generation (:func:`node_mask` is pure, so the
cache key is just the constraints and the node set).

The rules, in the order a person reading a denial needs them:

1. *Candidates* are the catalog's families minus the retired ones (``schedulable: false``),
   minus those the pod excluded (``machine-catalog.io/families``, or a user-written
   ``machine-catalog.io/family``), minus those with no uncordoned node that the pod's own
   nodeSelector / required affinity allows and whose NoSchedule/NoExecute taints it
   tolerates (a dedicated, tainted pool with lots of room must not attract pods that can
   never run there). A family with no node in the cluster at all is not a candidate
   either: pinning a pod to it would leave it Pending for ever (node groups that scale
   from zero are therefore not chosen until they have one node).
2. A candidate *fits* when its allowed nodes can hold the pod as they are fragmented: each
   node counts ``floor(free / pod)`` copies of the pod, for CPU and for every other
   resource kube-scheduler's ``NodeResourcesFit`` counts (memory, ephemeral storage, the
   pod count, hugepages, extended resources), the least of them: a node holds the pod only
   if all fit on that one node (:func:`node_copies`, :func:`holdable_scu`). What is
   pending on the family or reserved by this replica (CPU only) is taken off that. The
   pod's CPU is the physical request the patch will write on that family, not
   ``ceil(scu / f)``: a Guaranteed pod of 2 SCU gets 2 whole cores on a 1.3 family (2.6
   SCU of its room), so a node with 1.9 cores free there cannot hold it. Aggregated free
   SCU alone hides fragmentation (8 SCU free as 2 SCU on four nodes holds no 8 SCU pod). Only
   fitting candidates are kept, unless no candidate fits: then all of them are (the pod
   may wait for room anywhere, and is admitted with a warning).
3. Among candidates the pod goes to the family with the most *free SCU*: over its
   schedulable, uncordoned nodes that the pod allows, ``(allocatable - requested) * factor``
   (a node never counts below zero), minus pods already pinned to the family and not yet
   bound (the cache's pending totals), minus what this worker reserved for pods it admitted
   seconds ago that the cache has not seen yet (:class:`ReservationLedger`).
4. Ties go to the higher ``scuPerCore`` (the faster hardware gives the same SCU with fewer
   physical cores), then to the name, so every replica picks the same family for the same
   state.
5. With ``serve --family-choice spread`` (the manifests' setting, as they run two
   replicas) the pod instead goes to one of the fitting families at random, with odds in
   proportion to the room each has for whole pods of this size (rule 2's holdable SCU,
   less what is pending or reserved; :func:`proportional`). Replicas decide at the same moment
   on the same state, each seeing only its own reservations: under "most free" a burst
   split across two replicas sends both halves to the largest family, while proportional
   odds send each family its share of the burst. Within one replica the ledger still
   takes every earlier admission off the odds, and the points drawn are a low-discrepancy
   sequence from a random start, so a replica's share lands within a pod of proportional.

A pod *fixed to nodes by name* (``spec.nodeName``, or required terms that all select
``metadata.name In [...]``, which is how the DaemonSet controller places its pods) has no
choice to make: someone else chose the node, and the webhook's job is only to translate
SCU for the hardware it runs on. For such a pod a retired family is still normalized (a
log agent must run on a node that is being drained), cordoned and tainted nodes count
(DaemonSet pods tolerate ``unschedulable``, and their controller checked the taints), and
the scheduler is not changed (see :mod:`extender.admission.webhook`).
A node the catalog does not know is allowed unchanged when ``unknownNodes: allow`` (SCU is
the baseline's there: nothing to rewrite) and denied under ``reject``; an ambiguous node is
always denied, because its factor is unknown and the catalog must be fixed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from extender.state.cluster import ABSENT, AMBIGUOUS, UNKNOWN, NodeView, counted_resource
from machine_catalog.annotations import FAMILIES_ANNOTATION, FAMILY_ANNOTATION
from machine_catalog.catalog import Catalog
from machine_catalog.model import Family
from machine_catalog.quantities import physical_to_scu_millis, scu_to_physical_millis
from machine_catalog.selectors import requirement_matches

#: A families annotation longer than this is refused rather than split: a catalog has tens
#: of families with names of at most 63 characters, so anything bigger is a mistake or an
#: attack, and the denial must stay short.
MAX_FAMILIES_ANNOTATION = 4096
#: Names quoted in one denial message, each cut to a label's length.
MAX_QUOTED_NAMES = 5

_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
_FIELD_OPERATORS = frozenset({"In", "NotIn"})
NODE_NAME_FIELD = "metadata.name"


NO_ALLOWED_NODE = "no uncordoned node allowed by the pod's nodeSelector/affinity/tolerations"


class PlacementError(ValueError):
    """The pod cannot be placed as written; the message is shown to the user verbatim."""


# -- the pod's own node restrictions ----------------------------------------------------


Requirement = tuple[str, str, tuple[str, ...]]  # key, operator, values


@dataclass(frozen=True, slots=True)
class Term:
    """One ``nodeSelectorTerm``: every expression (on labels) and field (on the name) holds."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        # An empty term selects no node (as in Kubernetes' nodeaffinity helper).
        if not self.expressions and not self.fields:
            return False
        for key, op, values in self.expressions:
            if not requirement_matches(labels, key, op, values):
                return False
        fields = {NODE_NAME_FIELD: name}
        return all(requirement_matches(fields, k, op, values) for k, op, values in self.fields)

    def fixed_names(self) -> frozenset[str] | None:
        """The node names this term is limited to, when it has a ``metadata.name In``."""
        names: frozenset[str] | None = None
        for _key, op, values in self.fields:
            if op == "In":
                names = frozenset(values) if names is None else names & frozenset(values)
        return names


@dataclass(frozen=True, slots=True)
class NodeConstraints:
    """What the pod itself says about its nodes, normalised and hashable (a cache key)."""

    node_name: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    #: ORed required terms; None when the pod has no required node affinity.
    terms: tuple[Term, ...] | None = None

    @property
    def unconstrained(self) -> bool:
        return self.node_name is None and not self.node_selector and self.terms is None

    @property
    def fixed_nodes(self) -> frozenset[str] | None:
        """The only nodes the pod can run on, when they are given by name; else None."""
        if self.node_name is not None:
            return frozenset((self.node_name,))
        if not self.terms:
            return None
        names: set[str] = set()
        for term in self.terms:
            fixed = term.fixed_names()
            if fixed is None:
                return None
            names |= fixed
        return frozenset(names)

    def allows(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.node_name is not None and name != self.node_name:
            return False
        for key, value in self.node_selector:
            if labels.get(key) != value:
                return False
        return self.terms is None or any(t.matches(name, labels) for t in self.terms)


def _requirements(items: Any, where: str, fields: bool) -> tuple[Requirement, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise PlacementError(f"{where} must be a list")
    out: list[Requirement] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PlacementError(f"{where}[{i}] must be an object")
        key, op, values = item.get("key"), item.get("operator"), item.get("values") or []
        if not isinstance(key, str) or not key:
            raise PlacementError(f"{where}[{i}].key must be a non-empty string")
        allowed = _FIELD_OPERATORS if fields else _OPERATORS
        if not isinstance(op, str) or op not in allowed:  # a list or map is unhashable
            raise PlacementError(f"{where}[{i}].operator {str(op)[:20]!r} is not supported")
        if fields and key != NODE_NAME_FIELD:
            raise PlacementError(f"{where}[{i}].key: only {NODE_NAME_FIELD} is a node field")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise PlacementError(f"{where}[{i}].values must be a list of strings")
        out.append((key, op, tuple(values)))
    return tuple(out)


def pod_constraints(pod: Mapping[str, Any]) -> NodeConstraints:
    """Read ``nodeName``, ``nodeSelector`` and required node affinity; raise on nonsense.

    The API server validates the pod only after mutating admission, so a malformed
    affinity reaches us; it is denied with the path of the problem instead of guessed at.
    """
    spec = pod.get("spec") or {}
    if not isinstance(spec, dict):
        raise PlacementError("spec must be an object")
    node_name = spec.get("nodeName") or None
    if node_name is not None and not isinstance(node_name, str):
        raise PlacementError("spec.nodeName must be a string")
    selector = spec.get("nodeSelector") or {}
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise PlacementError("spec.nodeSelector must map strings to strings")
    affinity = spec.get("affinity") or {}
    if not isinstance(affinity, dict):
        raise PlacementError("spec.affinity must be an object")
    node_affinity = affinity.get("nodeAffinity") or {}
    if not isinstance(node_affinity, dict):
        raise PlacementError("spec.affinity.nodeAffinity must be an object")
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    terms: tuple[Term, ...] | None = None
    if required is not None:
        where = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        if not isinstance(required, dict):
            raise PlacementError(f"{where} must be an object")
        raw_terms = required.get("nodeSelectorTerms")
        raw_terms = [] if raw_terms is None else raw_terms
        if not isinstance(raw_terms, list):
            raise PlacementError(f"{where}.nodeSelectorTerms must be a list")
        parsed = []
        for i, raw in enumerate(raw_terms):
            if not isinstance(raw, dict):
                raise PlacementError(f"{where}.nodeSelectorTerms[{i}] must be an object")
            at = f"{where}.nodeSelectorTerms[{i}]"
            parsed.append(
                Term(
                    expressions=_requirements(
                        raw.get("matchExpressions"), f"{at}.matchExpressions", False
                    ),
                    fields=_requirements(raw.get("matchFields"), f"{at}.matchFields", True),
                )
            )
        terms = tuple(parsed)
    return NodeConstraints(
        node_name=node_name, node_selector=tuple(sorted(selector.items())), terms=terms
    )


def node_mask(
    constraints: NodeConstraints,
    names: Sequence[str],
    labels: Sequence[Mapping[str, str] | None],
) -> np.ndarray:
    """Which of ``names`` the pod's constraints allow (labels None = node not known).

    Nodes of one node group share the label values a selector looks at, so the rules are
    evaluated once per distinct tuple of those values, not once per node. Pods fixed to
    nodes by name only look at those names.
    """
    mask = np.zeros(len(names), dtype=bool)
    fixed = constraints.fixed_nodes
    if fixed is not None:
        wanted = fixed
        for i, name in enumerate(names):
            if name in wanted and labels[i] is not None:
                mask[i] = constraints.allows(name, labels[i])  # type: ignore[arg-type]
        return mask
    if constraints.unconstrained:
        mask[:] = [lab is not None for lab in labels]
        return mask
    if any(t.fields for t in constraints.terms or ()):  # a name rule: node by node
        for i, (name, node_labels) in enumerate(zip(names, labels, strict=True)):
            mask[i] = node_labels is not None and constraints.allows(name, node_labels)
        return mask
    keys = sorted(
        {k for k, _ in constraints.node_selector}
        | {k for t in constraints.terms or () for k, _, _ in t.expressions}
    )
    # One column of values per key the rules read, then one verdict per distinct row: the
    # rules never look at any other label, so a row is all they need.
    present = [lab if lab is not None else {} for lab in labels]
    columns = [[lab.get(k) for lab in present] for k in keys]
    rows = list(zip(*columns, strict=True)) if keys else [()] * len(present)
    verdicts = {
        row: constraints.allows("", {k: v for k, v in zip(keys, row, strict=True) if v is not None})
        for row in set(rows)
    }
    mask[:] = list(map(verdicts.__getitem__, rows))
    mask &= np.fromiter((lab is not None for lab in labels), dtype=bool, count=len(labels))
    return mask


# -- taints and tolerations ----------------------------------------------------------------


Toleration = tuple[str, str, str, str]  # key, operator, value, effect
_TOLERATION_OPERATORS = frozenset({"Equal", "Exists"})


def pod_tolerations(pod: Mapping[str, Any]) -> tuple[Toleration, ...]:
    """``spec.tolerations`` normalised (sorted, deduplicated, hashable); raise on nonsense.

    ``tolerationSeconds`` is dropped: it only says how long a pod stays after a NoExecute
    taint appears, not whether it may be placed on a tainted node.
    """
    raw = (pod.get("spec") or {}).get("tolerations")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PlacementError("spec.tolerations must be a list")
    out = set()
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise PlacementError(f"spec.tolerations[{i}] must be an object")
        key, op = t.get("key") or "", t.get("operator") or "Equal"
        value, effect = t.get("value") or "", t.get("effect") or ""
        if not isinstance(op, str) or op not in _TOLERATION_OPERATORS:
            raise PlacementError(
                f"spec.tolerations[{i}].operator {str(op)[:20]!r} is not supported"
            )
        if not all(isinstance(v, str) for v in (key, value, effect)):
            raise PlacementError(f"spec.tolerations[{i}]: key, value and effect must be strings")
        out.add((key, op, value, effect))
    return tuple(sorted(out))


def tolerates(tolerations: Iterable[Toleration], taint: tuple[str, str, str]) -> bool:
    """``v1.Toleration.ToleratesTaint``: effect (empty = all), then key and value."""
    key, value, effect = taint
    for t_key, op, t_value, t_effect in tolerations:
        if t_effect and t_effect != effect:
            continue
        if op == "Exists":
            if not t_key or t_key == key:
                return True
        elif t_key == key and t_value == value:
            return True
    return False


def toleration_mask(
    tolerations: tuple[Toleration, ...],
    taints: Sequence[tuple[tuple[str, str, str], ...] | None],
) -> np.ndarray:
    """Nodes whose blocking taints the pod tolerates (a node without taints: True; an
    unknown node, None: False). Node groups share their taints: one verdict per distinct set.
    """
    verdicts = {
        node_taints: node_taints is not None and all(tolerates(tolerations, t) for t in node_taints)
        for node_taints in set(taints)
    }
    return np.fromiter(map(verdicts.__getitem__, taints), dtype=bool, count=len(taints))


# -- which families the pod allows --------------------------------------------------------


def _quote(names: Iterable[str]) -> str:
    names = list(names)
    shown = [repr(n[:63]) for n in names[:MAX_QUOTED_NAMES]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def requested_families(
    annotations: Mapping[str, Any], catalog: Catalog, *, trusted_family: bool
) -> tuple[frozenset[str] | None, list[str]]:
    """The families the pod's annotations allow (None = no restriction), and warnings.

    ``machine-catalog.io/families`` is a comma-separated list. A ``machine-catalog.io/family``
    the webhook did not write (``trusted_family`` False) is the user's restriction to that
    one family, never a free pass: otherwise writing it would skip normalization and land
    a pod on a retired family. Names the catalog does not know are denied, naming them.
    """
    warnings: list[str] = []
    allowed: frozenset[str] | None = None
    raw = annotations.get(FAMILIES_ANNOTATION)
    if raw is not None:
        if not isinstance(raw, str):
            raise PlacementError(f"annotation {FAMILIES_ANNOTATION} must be a string")
        if len(raw) > MAX_FAMILIES_ANNOTATION:
            raise PlacementError(
                f"annotation {FAMILIES_ANNOTATION} is {len(raw)} characters long "
                f"(at most {MAX_FAMILIES_ANNOTATION}); list family names, comma separated"
            )
        names = [n.strip() for n in raw.split(",")]
        names = [n for n in names if n]
        if names:
            unknown = [n for n in dict.fromkeys(names) if n not in catalog.by_name]
            if unknown:
                raise PlacementError(
                    f"annotation {FAMILIES_ANNOTATION} names families the catalog "
                    f"{catalog.version} does not have: {_quote(unknown)}"
                )
            allowed = frozenset(names)
        else:
            warnings.append(f"empty {FAMILIES_ANNOTATION} annotation ignored: any family allowed")
    family = annotations.get(FAMILY_ANNOTATION)
    if family is not None and not trusted_family:
        if not isinstance(family, str) or not family.strip():
            raise PlacementError(f"annotation {FAMILY_ANNOTATION} must name one family")
        name = family.strip()
        if name not in catalog.by_name:
            raise PlacementError(
                f"annotation {FAMILY_ANNOTATION} names family {_quote([name])}, which the "
                f"catalog {catalog.version} does not have"
            )
        if not catalog.by_name[name].schedulable:
            raise PlacementError(
                f"annotation {FAMILY_ANNOTATION} names family {name!r}, which is retired "
                "(schedulable: false); no new pods are placed there"
            )
        allowed = frozenset((name,)) if allowed is None else allowed & {name}
    return allowed, warnings


# -- the choice ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Normalize the pod for ``family``."""

    family: Family
    free_scu: int  # millis of SCU free on the family for this pod, after the deductions
    fixed: bool  # the pod is fixed to nodes by name: no scheduler change, retired allowed
    warnings: tuple[str, ...] = ()
    #: One allowed node of the family can hold the pod (after pending and reserved SCU);
    #: False when no family could and the choice fell back to aggregated free SCU.
    fits: bool = True
    #: SCU millis the pod takes up on ``family`` as the patch writes it
    #: (:func:`held_scu`): what the reservation ledger takes off the family's room.
    held_scu: int = 0


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Admit the pod as it is (it only fits nodes the catalog does not know, and allows them)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Denied:
    message: str


Decision = Placement | Unchanged | Denied


@dataclass(frozen=True, slots=True)
class FamilyCapacity:
    """Per-family facts over the nodes the pod allows (arrays indexed like catalog.families)."""

    has_node: np.ndarray  # bool
    free_physical: np.ndarray  # int64 physical millicores, uncordoned nodes only
    #: The most physical millicores free on one allowed uncordoned node, per family.
    largest_free_physical: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: The allowed uncordoned nodes, as (family index, free physical millicores), for
    #: :func:`holdable_scu`.
    node_family: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    node_free: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: The same nodes' free amount of each counted non-CPU resource (memory, pods, GPUs:
    #: :attr:`NodeView.resources`); a resource absent here is one no node has.
    node_other_free: Mapping[str, np.ndarray] = field(default_factory=dict)


def family_capacity(
    catalog: Catalog, view: NodeView, allowed: np.ndarray | None, *, fixed: bool
) -> FamilyCapacity:
    """``np.bincount`` by family over the allowed nodes: O(nodes), vectorised.

    Cordoned nodes never add free capacity; they make a family compatible only for a pod
    fixed to them by name (DaemonSet pods tolerate ``unschedulable``). The largest free
    node per family is one ``np.maximum.at`` over the same nodes.
    """
    n = len(catalog.families)
    family = view.family
    known = family >= 0
    if allowed is not None:
        known = known & allowed
    uncordoned = known & ~view.unschedulable
    reachable = known if fixed else uncordoned
    has_node = np.bincount(family[reachable], minlength=n)[:n] > 0
    free = np.clip(view.allocatable - view.requested, 0, None)
    free_physical = np.bincount(family[uncordoned], weights=free[uncordoned], minlength=n)[:n]
    node_family, node_free = family[uncordoned], free[uncordoned]
    largest = np.zeros(n, dtype=np.int64)
    np.maximum.at(largest, node_family, node_free)
    other = {
        name: np.clip(alloc[uncordoned] - req[uncordoned], 0, None)
        for name, (alloc, req) in view.resources.items()
    }
    return FamilyCapacity(
        has_node=has_node,
        free_physical=free_physical.astype(np.int64),
        largest_free_physical=largest,
        node_family=node_family,
        node_free=node_free,
        node_other_free=other,
    )


def held_scu(pod_scu: int, physical: int, factor: Fraction) -> int:
    """SCU millis a pod of ``pod_scu`` takes up on a family where the patch gives it
    ``physical`` millicores: ``pod_scu`` when that is ``ceil(pod_scu / f)`` (exact
    conversion), else ``floor(physical * f)``, which is more (whole cores for a Guaranteed
    pod: 2 SCU on a 1.3 family is 2000m, 2.6 SCU of that family's room; per-container
    rounding)."""
    if physical <= scu_to_physical_millis(pod_scu, factor):
        return pod_scu
    return max(pod_scu, physical_to_scu_millis(physical, factor))


def node_copies(
    capacity: FamilyCapacity, cpu_need: np.ndarray | None, needs: Mapping[str, int]
) -> np.ndarray | None:
    """How many copies of the pod each of ``capacity``'s nodes holds, one after another,
    as kube-scheduler's ``NodeResourcesFit`` would place them: the least over every
    resource the pod requests of ``floor(free / request)``. A node holds the pod only if
    every resource fits on that same node.

    ``cpu_need``: physical millicores per family index (None: no CPU request); ``needs``:
    the other counted resources (:func:`extender.state.cluster.counted_resource`, the pod
    count included). None when the pod requests nothing at all. O(nodes x resources).
    """
    copies = None if cpu_need is None else capacity.node_free // cpu_need[capacity.node_family]
    for name, amount in needs.items():
        if amount <= 0:
            continue
        free = capacity.node_other_free.get(name)
        fit = np.zeros(len(capacity.node_family), np.int64) if free is None else free // amount
        copies = fit if copies is None else np.minimum(copies, fit)
    return copies


def pod_needs(requests: Mapping[str, int]) -> dict[str, int]:
    """The counted non-CPU part of a pod's requests (:func:`~machine_catalog.resources.
    pod_requests`), with the pod count every pod takes."""
    out = {
        name: amount
        for name, amount in requests.items()
        if amount > 0 and name != "pods" and counted_resource(name)
    }
    out["pods"] = 1
    return out


def holdable_scu(
    capacity: FamilyCapacity,
    factors: Sequence[Fraction],
    pod_scu: int,
    pod_physical: Sequence[int] | None = None,
    needs: Mapping[str, int] | None = None,
) -> list[int]:
    """SCU millis per family usable by pods the size of this one: fragmentation counted,
    so free SCU scattered in pieces smaller than the pod counts for nothing.

    ``holdable[f] = held_f * sum over f's allowed uncordoned nodes of copies(node)``:
    each node holds as many copies of the pod as kube-scheduler's ``NodeResourcesFit``
    would place there one after another (:func:`node_copies`): ``floor(free_physical /
    need_f)``, and no more than its memory, pod slots and every other resource the pod
    requests (``needs``) allow. ``need_f`` is ``pod_physical[f]``, the physical request the
    patch writes on family ``f`` (:func:`extender.admission.converting.physical_requests`;
    default ``ceil(pod_scu / factor_f)``), and ``held_f`` what that is in the pod's SCU
    (:func:`held_scu`). One gather, one division per resource and one ``bincount`` over
    the nodes, for every family at once. A pod without a CPU request gets the family's
    free SCU if one of its nodes holds it, else -1 (it fits nowhere there).
    """
    n = len(factors)
    needs = needs or {}
    if pod_physical is None:
        pod_physical = [scu_to_physical_millis(pod_scu, f) if pod_scu > 0 else 0 for f in factors]
    has_cpu = pod_scu > 0 or any(pod_physical)
    need = np.array(pod_physical, dtype=np.int64)
    cpu_need = None
    if has_cpu:
        if not len(capacity.node_family) or not (capacity.largest_free_physical >= need).any():
            return [0] * n
        cpu_need = np.maximum(need, 1)
    copies = node_copies(capacity, cpu_need, needs)
    if not has_cpu:
        free = [
            physical_to_scu_millis(int(capacity.free_physical[i]), factors[i]) for i in range(n)
        ]
        if copies is None:
            return free
        holding = np.bincount(capacity.node_family, weights=copies > 0, minlength=n)[:n] > 0
        return [free[i] if holding[i] else -1 for i in range(n)]
    assert copies is not None
    per_family = np.bincount(capacity.node_family, weights=copies, minlength=n)[:n]
    return [int(c) * held_scu(pod_scu, int(need[i]), factors[i]) for i, c in enumerate(per_family)]


def choose_family(
    view: NodeView,
    capacity: FamilyCapacity,
    *,
    constraints: NodeConstraints,
    allowed_nodes: np.ndarray | None,
    requested: frozenset[str] | None,
    pending_physical: Mapping[str, int],
    reserved_scu: Mapping[str, int],
    pod_scu: int,
    pod_physical: Sequence[int] | None = None,
    spread: Callable[[Sequence[int]], int] | None = None,
    needs: Mapping[str, int] | None = None,
    holdable: Sequence[int] | None = None,
) -> Decision:
    """Pick the family (see the module docstring for the rules), or say why none fits.

    ``pod_physical`` holds, per family of the catalog, the physical request the patch
    writes there (:func:`extender.admission.converting.physical_requests`): room and
    warnings are judged on exactly that. None: ``ceil(pod_scu / f)``. ``needs``: the pod's
    other counted resources (:func:`pod_needs`); a family fits only if one of its nodes
    holds them all. ``spread`` (rule 5) picks an index among the fitting families given
    their room for whole pods; None keeps the family with the most free SCU. ``holdable``:
    :func:`holdable_scu` of these arguments when the caller has it already (it caches it
    per pod shape: O(nodes) to compute, the rest of the choice is O(families)).
    """
    catalog = view.catalog
    fixed_nodes = constraints.fixed_nodes
    fixed = fixed_nodes is not None
    reasons: dict[str, list[str]] = {}
    candidates: list[tuple[int, Family, bool, int, int, int]] = []
    factors = _factors(catalog)
    if pod_physical is None:
        pod_physical = [scu_to_physical_millis(pod_scu, f) for f in factors]
    if holdable is None:
        holdable = holdable_scu(capacity, factors, pod_scu, pod_physical, needs)
    for i, family in enumerate(catalog.families):
        name = family.name
        if requested is not None and name not in requested:
            why = "not allowed by the pod's machine-catalog.io/families or /family annotation"
        elif not family.schedulable and not fixed:
            why = "retired (schedulable: false)"
        elif not capacity.has_node[i]:
            if fixed:
                why = "not the family of the node the pod is fixed to"
            elif allowed_nodes is None:
                why = "no uncordoned node in the cluster"
            else:
                why = NO_ALLOWED_NODE
        else:
            factor = factors[i]
            claimed = physical_to_scu_millis(
                pending_physical.get(name, 0), factor
            ) + reserved_scu.get(name, 0)
            free = physical_to_scu_millis(int(capacity.free_physical[i]), factor) - claimed
            held = held_scu(pod_scu, pod_physical[i], factor)  # the pod's size there
            # SCU of whole pods its nodes can still take (-1: none of them holds the pod)
            room = int(holdable[i]) - claimed if holdable[i] >= 0 else -1
            # Spread odds count whole pods (room / held), in units of pod_scu.
            weight = max(0, room) * pod_scu // held if held > 0 else max(0, room)
            candidates.append((free, family, room >= held, weight, held, pod_physical[i]))
            continue
        reasons.setdefault(why, []).append(name)

    if candidates:
        # Families where one allowed node can hold the pod (after what is already promised
        # to them); only when there is none, every candidate (aggregated free SCU decides).
        fitting = [c for c in candidates if c[2]] or candidates
        # Most free SCU; then the faster hardware; then the name: deterministic everywhere.
        fitting.sort(key=lambda c: (-c[0], -c[1].scu_per_core, c[1].name))
        chosen = 0
        if spread is not None and len(fitting) > 1 and fitting[0][2]:
            chosen = spread([c[3] for c in fitting])
        free, family, fits, _weight, held, physical = fitting[chosen]
        warnings: list[str] = []
        if fixed and not family.schedulable:
            warnings.append(
                f"family {family.name} is retired; normalized for it as the node is fixed"
            )
        if free < held:
            there = (
                f" ({physical / 1000:g} cores there: {held / 1000:g} SCU)"
                if held != pod_scu
                else ""
            )
            warnings.append(
                f"family {family.name} has {free / 1000:g} SCU free, the pod asks "
                f"{pod_scu / 1000:g}{there}: it may stay Pending"
            )
        elif not fits:
            others = sorted(k for k in needs or {} if k != "pods")
            beside = f" and the pod's {', '.join(others)}" if others else ""
            warnings.append(
                f"no allowed node of any family has {pod_scu / 1000:g} SCU{beside} free "
                f"(family {family.name} has {free / 1000:g} SCU free in smaller pieces or on "
                "nodes without the rest): it may stay Pending"
            )
        return Placement(
            family=family,
            free_scu=free,
            fixed=fixed,
            warnings=tuple(warnings),
            fits=fits,
            held_scu=held,
        )

    odd = _odd_nodes(view, allowed_nodes, fixed)
    if catalog.unknown_nodes == "allow" and requested is None and odd["unknown"]:
        return Unchanged(
            reason="the pod only fits nodes the catalog does not know (unknownNodes: allow)"
        )
    message = "no machine family can take this pod: " + "; ".join(
        f"{why}: {', '.join(names)}" for why, names in reasons.items()
    )
    details = _fixed_node_details(view, fixed_nodes, allowed_nodes) if fixed_nodes else []
    if not fixed and not constraints.unconstrained:
        # The nodes the pod selects exist but the catalog cannot place pods there: say why.
        for position in (odd["unknown"] + odd["ambiguous"])[:3]:
            details.append(_describe_node(view, position))
    if details:
        message += ". " + "; ".join(details)
    return Denied(message=message)


GOLDEN = 0.6180339887498949


def low_discrepancy(start: float) -> Callable[[], float]:
    """Points in [0, 1) that fill the interval evenly: ``start + k * golden ratio`` mod 1.

    Independent random draws leave a burst's split to chance (two replicas splitting 16
    pods over families of 10 and 6 slots over-committed the larger by 0.55 pods on
    average, up to 4); this sequence, from a random start per replica, keeps each
    replica's picks within one pod of its proportional share (at most one pod over, in 17
    of 200 trials; most-free: two over in every trial; tests/test_family_spread.py).
    """
    state = [start % 1.0]

    def draw() -> float:
        state[0] = (state[0] + GOLDEN) % 1.0
        return state[0]

    return draw


def proportional(draw: Callable[[], float]) -> Callable[[Sequence[int]], int]:
    """Rule 5: an index with odds in proportion to its weight; ``draw`` gives points in
    [0, 1) (:func:`low_discrepancy`)."""

    def pick(weights: Sequence[int]) -> int:
        total = sum(weights)
        if total <= 0:
            return 0
        point = draw() * total
        for index, weight in enumerate(weights):
            point -= weight
            if point < 0:
                return index
        return len(weights) - 1

    return pick


@functools.lru_cache(maxsize=8)
def _factors(catalog: Catalog) -> tuple[Fraction, ...]:
    """The exact factors of a catalog's families, built once per catalog version."""
    return tuple(f.factor for f in catalog.families)


def _describe_node(view: NodeView, position: int) -> str:
    match = view.match(position)
    if match is None:
        family = view.catalog.families[int(view.family[position])]
        return f"node {view.names[position]}: family {family.name}"
    policy = " (spec.unknownNodes: reject)" if match.status == "unknown" else ""
    return f"node {view.names[position]}: {match.describe()}{policy}"


def _fixed_node_details(
    view: NodeView, fixed_nodes: frozenset[str], allowed: np.ndarray | None
) -> list[str]:
    """Why each node a pod is fixed to (a few of them) cannot take it."""
    positions = {name: i for i, name in enumerate(view.names) if name in fixed_nodes}
    details = []
    for name in sorted(fixed_nodes)[:3]:
        position = positions.get(name)
        if position is None or view.family[position] == ABSENT:
            details.append(f"node {_quote([name])} is not in the cluster cache")
        elif allowed is not None and not allowed[position]:
            details.append(f"node {name} does not match the pod's nodeSelector/node affinity")
        else:
            details.append(_describe_node(view, position))
    return details


def _odd_nodes(view: NodeView, allowed: np.ndarray | None, fixed: bool) -> dict[str, list[int]]:
    """Positions of allowed nodes that are unknown / ambiguous, for the fallback and reasons."""
    reachable = np.ones(len(view.family), dtype=bool) if allowed is None else allowed.copy()
    if not fixed:
        reachable &= ~view.unschedulable
    return {
        "unknown": [int(i) for i in np.flatnonzero(reachable & (view.family == UNKNOWN))],
        "ambiguous": [int(i) for i in np.flatnonzero(reachable & (view.family == AMBIGUOUS))],
        "known": [int(i) for i in np.flatnonzero(reachable & (view.family >= 0))],
    }


# -- reservations -------------------------------------------------------------------------


@dataclass
class ReservationLedger:
    """SCU this worker promised to families for pods the cluster cache has not seen yet.

    Between the webhook's answer and the pod's ADDED event on the watch there are a few
    hundred milliseconds in which a burst of pods (a Deployment scaled to 50) would all see
    the same free capacity and all go to one family. Each admission reserves its SCU here
    for ``ttl`` seconds; after that the cache's pending totals count the pod instead (the
    overlap double-counts for at most ``ttl``, which only makes the spread more even). The
    ledger is bounded (oldest entries dropped first) and per worker process: workers of
    one server do not see each other's reservations. Dry-run admissions take none.
    """

    ttl: float = 5.0
    max_entries: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _entries: deque[tuple[float, str, int]] = field(default_factory=deque, init=False)
    _totals: dict[str, int] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def _drop_oldest(self) -> None:
        _, family, millis = self._entries.popleft()
        left = self._totals[family] - millis
        if left:
            self._totals[family] = left
        else:
            del self._totals[family]

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] <= now:
            self._drop_oldest()

    def reserve(self, family: str, scu_millis: int) -> None:
        if scu_millis <= 0:
            return
        with self._lock:
            now = self.clock()
            self._expire(now)
            while len(self._entries) >= self.max_entries:
                self._drop_oldest()
            self._entries.append((now + self.ttl, family, scu_millis))
            self._totals[family] = self._totals.get(family, 0) + scu_millis

    def totals(self) -> dict[str, int]:
        """Live reservations per family, in SCU millis."""
        with self._lock:
            self._expire(self.clock())
            return dict(self._totals)

    def __len__(self) -> int:
        with self._lock:
            self._expire(self.clock())
            return len(self._entries)
