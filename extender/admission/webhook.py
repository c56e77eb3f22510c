"""``POST /webhook/mutate``: the mutating admission webhook (``admission.k8s.io/v1``).

For each pod CREATE in an opted-in namespace it chooses a family (:mod:`.placement`),
rewrites the pod for it (:mod:`.patching`) and answers with a JSON patch. This module
is the I/O edge: it decodes the review, reads the cluster cache, keeps the per-worker caches
and the reservation ledger, and encodes the answer.

What each situation becomes:

- not a pod, not a CREATE, a pod labelled ``machine-catalog.io/normalize: disabled`` ->
  allowed, no patch.
- a pod the webhook already normalized (reinvocation after a later webhook changed it,
  re-admission) -> its annotations are checked, not trusted: one naming a family the
  catalog lacks, or a retired family on a pod not fixed to its nodes, is a forgery ->
  denied (403). Otherwise containers added since (absent from the SCU record) are
  normalized, values another webhook changed are kept as physical and re-recorded, a lost
  pin is restored (:mod:`extender.admission.reinvocation`), and node rules that now leave no node of
  the pinned family are denied (403); nothing to change -> allowed, no patch.
- a mirror pod (``kubernetes.io/config.mirror``) -> allowed, no patch, always; a DaemonSet
  pod fixed to a node the catalog cannot map -> allowed, no patch, with a warning, even
  under ``unknownNodes: reject`` (:mod:`extender.admission.exemptions`).
- a pod that cannot be placed or read (unknown names in ``machine-catalog.io/families``,
  a CPU value that is not a quantity, no family with a node the pod allows) -> allowed:
  false, code 403, a message that says why for every family.
- cache not synced yet -> allowed: false, code 503: with an empty cache every family looks
  empty and the pod would be denied (or pinned) for a wrong reason.
- a review that is not one (not JSON, no ``request``/``uid``, a pod ``object`` that is not
  an object) -> HTTP 400 ``{"error": ...}``: the caller is broken, there is no uid to echo.
- an unexpected exception -> allowed: false, code 500, ``internal error: <type>``, and the
  traceback in our log only. Not ``allowed: true`` unchanged: the webhook is installed with
  ``failurePolicy: Fail`` because a pod admitted without normalization runs with SCU
  misread as vCPUs, unpinned, and requests are immutable, so that is never fixed later.
  Denying makes an internal error behave like the webhook being down, which is the
  operator's stated choice; the owning controller retries.

A ``pods/resize`` UPDATE of a pod the webhook normalized has its changed CPU values read
as SCU and converted for the pod's family (:mod:`extender.admission.resizing`, which also says how
the SCU record stays true, since a resize cannot change annotations).

``dryRun`` requests get the same answer but take no reservation. Pods fixed to a node by
name (``nodeName``, DaemonSet ``matchFields``) keep their scheduler: nothing is left to
choose, and the extender would strand a DaemonSet pod on a retiring node.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from extender import telemetry
from extender.admission.converting import pod_physical_requests
from extender.admission.exemptions import daemonset_exemption, is_mirror_pod
from extender.admission.patching import (
    FAMILY_ANNOTATION,
    SCU_PER_CORE_ANNOTATION,
    Op,
    PatchError,
    normalize_ops,
    read_cpu_values,
    was_normalized,
)
from extender.admission.placement import (
    Denied,
    FamilyCapacity,
    NodeConstraints,
    Placement,
    PlacementError,
    ReservationLedger,
    Toleration,
    choose_family,
    family_capacity,
    holdable_scu,
    low_discrepancy,
    node_mask,
    pod_constraints,
    pod_needs,
    pod_tolerations,
    proportional,
    requested_families,
    toleration_mask,
)
from extender.admission.reinvocation import recorded_factor, second_look
from extender.admission.resizing import AUDIT_KEY, is_resize, resize
from extender.errors import error_body
from extender.state.cluster import MAX_CPU_MILLIS, ClusterState, NodeView, Taint
from machine_catalog.annotations import NORMALIZE_LABEL
from machine_catalog.quantities import QuantityError
from machine_catalog.resources import pod_requests

if TYPE_CHECKING:
    from extender.state.runtime import Runtime

log = logging.getLogger(__name__)

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_WARNING = 120
WARNING_PREFIX = "machine-catalog: "


class MalformedReview(ValueError):
    """Not an AdmissionReview we can answer (no uid to echo): HTTP 400."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The webhook's answer for one request, before encoding."""

    decision: str  # mutated | skipped | denied | error (the metric's label)
    allowed: bool
    patch: Sequence[Op] = ()
    code: int = 200
    message: str = ""
    warnings: tuple[str, ...] = ()
    family: str | None = None
    #: ``auditAnnotations`` of the response (the API server prefixes the webhook's name).
    audit: tuple[tuple[str, str], ...] = ()


def _skipped(*warnings: str) -> Verdict:
    return Verdict("skipped", True, warnings=warnings)


def _denied(message: str, code: int = 403) -> Verdict:
    return Verdict("denied", False, code=code, message=message)


# -- wire ---------------------------------------------------------------------------------


def decode_review(body: bytes) -> dict[str, Any]:
    """The ``request`` of a review body, shape-checked; :class:`MalformedReview` if not."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedReview(f"body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise MalformedReview(f"AdmissionReview must be a JSON object, got {type(review).__name__}")
    api_version = review.get("apiVersion")
    if api_version is not None and api_version != API_VERSION:
        raise MalformedReview(
            f"unsupported apiVersion {str(api_version)[:60]!r}; send {API_VERSION}"
        )
    req = review.get("request")
    if not isinstance(req, dict):
        raise MalformedReview("AdmissionReview.request must be an object")
    uid = req.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("AdmissionReview.request.uid must be a non-empty string")
    return req


def _warning(text: str) -> str:
    text = WARNING_PREFIX + text
    return text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 3] + "..."


def encode_response(uid: str, verdict: Verdict) -> bytes:
    """A full AdmissionReview; ``patch`` and ``patchType`` together or not at all."""
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if verdict.allowed and verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(list(verdict.patch))).decode()
    if not verdict.allowed:
        response["status"] = {"code": verdict.code, "message": verdict.message}
    if verdict.warnings:
        response["warnings"] = [_warning(w) for w in verdict.warnings]
    if verdict.audit:
        response["auditAnnotations"] = dict(verdict.audit)
    return orjson.dumps({"apiVersion": API_VERSION, "kind": KIND, "response": response})


# -- per-worker caches --------------------------------------------------------------------


@dataclass
class FleetSnapshot:
    """The node facts of one capacity generation, and what derives from them."""

    #: ``ClusterState.capacity_generation`` (events of pods without a node leave it).
    generation: int
    node_generation: int
    names: list[str]
    #: Read on the first pod with node constraints (most pods have none).
    labels: list[Mapping[str, str] | None] | None
    view: NodeView
    #: Node masks per pod constraints and per pod tolerations; shared by snapshots of one
    #: node generation, since they depend on names, labels and taints only.
    masks: OrderedDict[Hashable, np.ndarray]
    #: Blocking taints per node, and whether any node has one (read once per node generation).
    taints: list[tuple[Taint, ...] | None] | None = None
    tainted: bool = False
    _unconstrained: FamilyCapacity | None = field(default=None, repr=False)
    #: Per-family totals over a constrained pod's allowed nodes, per what its mask derives
    #: from (constraints, tolerations); and :func:`holdable_scu` per that and the pod's
    #: shape (SCU, physical request per family, other needs). A ReplicaSet's burst
    #: computes each once per generation.
    capacities: OrderedDict[Hashable, FamilyCapacity] = field(default_factory=OrderedDict)
    holdable: OrderedDict[Hashable, list[int]] = field(default_factory=OrderedDict)


class Fleet:
    """The cluster as the webhook reads it, cached per capacity generation.

    At 5,000 nodes, copying the arrays out of the cache costs ~0.2 ms, reading every
    node's labels ~0.5 ms and evaluating a selector over them ~0.5 ms. So the arrays and
    per-family totals are kept per *capacity generation* (an event that can change a node's
    free room: a node event, a pod on a node; not a pod created Pending, which is every
    event of a burst of creates: pending totals are read per admission, O(families)),
    the room per pod shape (:func:`holdable_scu`) with them, and the labels and the
    node masks computed from them per *node generation*, which only the node set, a
    node's labels or the catalog bump: not pod events, not node status heartbeats. A
    ReplicaSet's pods share one constraints key, so its burst evaluates the selector once.
    The cache is per worker; a read is at worst one event old, which is harmless (the
    extender checks capacity again at scheduling time).
    """

    MAX_MASKS = 256
    MAX_SHAPES = 64
    #: Each holds a few arrays over the allowed nodes (~0.3 MB at 5,000 nodes).
    MAX_CAPACITIES = 32

    def __init__(self, cluster: ClusterState) -> None:
        self.cluster = cluster
        self._lock = threading.Lock()
        self._snapshot: FleetSnapshot | None = None

    def snapshot(self) -> FleetSnapshot:
        cluster = self.cluster
        # Read the generations *before* the data: a snapshot may be newer than its key
        # (rebuilt once more next time), never older.
        generation, node_generation = cluster.capacity_generation, cluster.node_generation
        current = self._snapshot
        if current is not None and current.generation == generation:
            return current
        view = cluster.all_nodes()
        if (
            current is not None
            and current.node_generation == node_generation
            and cluster.node_generation == node_generation  # no node event during the copy
        ):
            # Same node set in the same slot order: labels, taints, masks still line up.
            labels, masks = current.labels, current.masks
            taints, tainted = current.taints, current.tainted
        else:
            labels, masks = None, OrderedDict()
            taints = cluster.taints_of(view.names)
            tainted = any(taints)
        snapshot = FleetSnapshot(
            generation=generation,
            node_generation=node_generation,
            names=view.names,  # all_nodes() hands out a list of its own
            labels=labels,
            view=view,
            masks=masks,
            taints=taints,
            tainted=tainted,
        )
        with self._lock:
            self._snapshot = snapshot
        return snapshot

    def _memo(
        self,
        table: OrderedDict[Hashable, Any],
        limit: int,
        key: Hashable,
        compute: Callable[[], Any],
    ) -> Any:
        """``table[key]``, computed once by ``compute()`` (outside the lock: two threads may
        both compute it, and either result is right) and kept as the ``limit`` most recently
        used of ``table``, one of a snapshot's caches."""
        with self._lock:
            cached = table.get(key)
            if cached is not None:
                table.move_to_end(key)
                return cached
        value = compute()
        with self._lock:
            table[key] = value
            while len(table) > limit:
                table.popitem(last=False)
        return value

    def holdable(
        self, snapshot: FleetSnapshot, key: Hashable, compute: Callable[[], list[int]]
    ) -> list[int]:
        """``compute()`` (the pod's room per family over its allowed nodes) once per
        ``key`` (what the mask derives from, and the pod's shape) and snapshot."""
        return self._memo(snapshot.holdable, self.MAX_SHAPES, key, compute)

    def mask(
        self,
        snapshot: FleetSnapshot,
        constraints: NodeConstraints,
        tolerations: tuple[Toleration, ...],
    ) -> np.ndarray | None:
        """Nodes the pod's own rules allow, or None when they allow every node.

        Taints count only for pods the scheduler places: a pod fixed to a node by name was
        put there on purpose (DaemonSet pods tolerate what their controller checked).
        """
        mask = None
        if not constraints.unconstrained:

            def by_labels() -> np.ndarray:
                if snapshot.labels is None:
                    # By name, so they line up with this snapshot's names even if a node
                    # changed since (that bumped node_generation: the next snapshot
                    # starts afresh).
                    snapshot.labels = self.cluster.labels_of(snapshot.names)
                return node_mask(constraints, snapshot.names, snapshot.labels)

            mask = self._memo(snapshot.masks, self.MAX_MASKS, constraints, by_labels)
        if snapshot.tainted and constraints.fixed_nodes is None:
            taints = snapshot.taints or []
            tolerated = self._memo(
                snapshot.masks,
                self.MAX_MASKS,
                ("tolerations", tolerations),
                lambda: toleration_mask(tolerations, taints),
            )
            mask = tolerated if mask is None else mask & tolerated
        return mask

    def capacity(
        self,
        snapshot: FleetSnapshot,
        mask: np.ndarray | None,
        *,
        fixed: bool,
        key: Hashable | None = None,
    ) -> FamilyCapacity:
        """Per-family totals over ``mask``'s nodes; kept per snapshot under ``key`` (what
        the mask derives from) when given, and always for the unconstrained pod."""
        if mask is not None:

            def totals() -> FamilyCapacity:
                return family_capacity(snapshot.view.catalog, snapshot.view, mask, fixed=fixed)

            if key is None:
                return totals()
            return self._memo(snapshot.capacities, self.MAX_CAPACITIES, key, totals)
        if snapshot._unconstrained is None:
            snapshot._unconstrained = family_capacity(
                snapshot.view.catalog, snapshot.view, None, fixed=False
            )
        return snapshot._unconstrained


# -- the decision -------------------------------------------------------------------------


def _is_pod_create(req: Mapping[str, Any]) -> bool:
    kind = req.get("kind") if isinstance(req.get("kind"), dict) else {}
    return (
        req.get("operation") == "CREATE"
        and kind.get("kind") == "Pod"
        and kind.get("group", "") == ""
        and not req.get("subResource")
    )


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


class Admitter:
    """Decides one admission request; shared by the requests of one worker."""

    def __init__(self, runtime: Runtime, ledger: ReservationLedger | None = None) -> None:
        self.runtime = runtime
        self.fleet = Fleet(runtime.cluster)
        self.ledger = ledger if ledger is not None else ReservationLedger()
        # The choice and its reservation happen under one lock, so an admission decided on
        # another thread a moment later always sees this one's reservation (a choice costs
        # about a millisecond; the GIL serialises it anyway).
        self._deciding = threading.Lock()
        self._spread = (
            proportional(low_discrepancy(random.random()))
            if runtime.settings.family_choice == "spread"
            else None
        )

    def admit(self, req: Mapping[str, Any]) -> Verdict:
        """The verdict for a decoded request; raises :class:`MalformedReview` on a bad pod."""
        if is_resize(req):
            return self._admit_resize(req)
        if not _is_pod_create(req):
            return _skipped()
        pod = req.get("object")
        if not isinstance(pod, dict):
            raise MalformedReview("AdmissionReview.request.object must be a Pod object")
        metadata = _dict(pod.get("metadata"))
        if _dict(metadata.get("labels")).get(NORMALIZE_LABEL) == "disabled":
            return _skipped()
        annotations = _dict(metadata.get("annotations"))
        if is_mirror_pod(annotations):
            return _skipped()  # the kubelet runs the static manifest, not this object
        if was_normalized(annotations):
            forged = self._not_ours(pod, annotations)
            return self._second_look(pod, annotations) if forged is None else _denied(forged)

        overhead = _dict(pod.get("spec")).get("overhead")
        if overhead is not None and not isinstance(overhead, dict):
            return _denied("pod spec.overhead must be a map of resource quantities")
        try:
            values = read_cpu_values(pod)
            constraints = pod_constraints(pod)
            tolerations = pod_tolerations(pod)
            requests = pod_requests(pod, self.runtime.cluster.resize_rule)
            pod_scu = min(requests.get("cpu", 0), MAX_CPU_MILLIS)
            needs = pod_needs(requests)
        except (PatchError, PlacementError) as exc:
            return _denied(str(exc))
        except QuantityError as exc:  # spec.overhead: containers were read above
            return _denied(f"pod spec.overhead.cpu: {exc}")

        cluster = self.runtime.cluster
        if not cluster.synced:
            return _denied("cluster cache not synced yet; retry shortly", code=503)
        snapshot = self.fleet.snapshot()
        view = snapshot.view
        catalog = view.catalog  # one catalog version for the whole admission
        try:
            requested, warnings = requested_families(annotations, catalog, trusted_family=False)
        except PlacementError as exc:
            return _denied(str(exc))
        # Room is judged on exactly what the patch will write on each family (whole cores
        # of a Guaranteed pod, per-container rounding), not on ceil(scu / f).
        factors = [f.factor for f in catalog.families]
        physical = [min(p, MAX_CPU_MILLIS) for p in pod_physical_requests(pod, values, factors)]

        fixed = constraints.fixed_nodes is not None
        mask = self.fleet.mask(snapshot, constraints, tolerations)
        # The mask derives from these alone (the snapshot fixes the nodes, labels, taints).
        derives = (constraints, tolerations, fixed)
        capacity = self.fleet.capacity(snapshot, mask, fixed=fixed, key=derives)
        shape = (pod_scu, tuple(physical), tuple(sorted(needs.items())))
        holdable = self.fleet.holdable(
            snapshot,
            (derives, shape),
            lambda: holdable_scu(capacity, factors, pod_scu, physical, needs),
        )
        # Not part of the snapshot: a pod created Pending changes these and nothing else.
        pending = cluster.pending_millis()  # O(families)
        with self._deciding:
            decision = choose_family(
                view,
                capacity,
                constraints=constraints,
                allowed_nodes=mask,
                requested=requested,
                pending_physical=pending,
                reserved_scu=self.ledger.totals(),
                pod_scu=pod_scu,
                pod_physical=physical,
                spread=self._spread,
                needs=needs,
                holdable=holdable,
            )
            if isinstance(decision, Placement) and req.get("dryRun") is not True:
                self.ledger.reserve(decision.family.name, decision.held_scu or pod_scu)
        if isinstance(decision, Denied):
            exempt = daemonset_exemption(pod, constraints.fixed_nodes, view)
            if exempt is not None:
                log.info("admitted %s unchanged: %s", _describe({"object": pod}), exempt)
                return _skipped(*warnings, exempt)
            return _denied(decision.message)
        if not isinstance(decision, Placement):
            return _skipped(*warnings, decision.reason)

        family = decision.family
        scheduler = None if decision.fixed else self.runtime.settings.scheduler_name
        beta = self.runtime.cluster.beta_label_only(family.name)
        labelled = self.runtime.cluster.family_labelled(family.name)
        patch = normalize_ops(
            pod, values, family, catalog.version, scheduler, beta=beta, labelled=labelled
        )
        return Verdict(
            "mutated",
            True,
            patch=patch,
            warnings=(*warnings, *decision.warnings),
            family=family.name,
        )

    def _admit_resize(self, req: Mapping[str, Any]) -> Verdict:
        """``pods/resize`` of a pod the webhook normalized: the changed CPU values are SCU
        and become physical millicores of its family (:mod:`extender.admission.resizing`)."""
        new, old = req.get("object"), req.get("oldObject")
        if not isinstance(new, dict) or not isinstance(old, dict):
            raise MalformedReview("a resize review needs the Pod in object and oldObject")
        try:
            result = resize(old, new)
        except PatchError as exc:
            return _denied(str(exc))
        if result is None:
            return _skipped()
        factor = f"{float(result.factor):g}"
        return Verdict(
            "mutated",
            True,
            patch=result.patch,
            warnings=(
                f"resize: {result.converted} CPU value(s) read as SCU, set for family "
                f"{result.family} at {factor} SCU/core",
            ),
            family=result.family,
            audit=((AUDIT_KEY, result.standard),),
        )

    # -- reinvocation (reinvocationPolicy: IfNeeded) ------------------------------------

    def _second_look(self, pod: Mapping[str, Any], annotations: Mapping[str, Any]) -> Verdict:
        """A pod we already normalized, seen again after later webhooks changed it.

        New containers are normalized and the SCU record updated, the pin restored where a
        later webhook dropped it (:mod:`extender.admission.reinvocation`); node rules added after us
        that leave no node of the pinned family are denied, naming the family.
        """
        catalog = self.runtime.cluster.catalog
        family = catalog.by_name[str(annotations[FAMILY_ANNOTATION]).strip()]
        if recorded_factor(annotations) != family.factor:
            # Forged, or the catalog changed the family's factor between our two calls:
            # values converted with two factors would be wrong either way. A denied create
            # is retried by its controller and normalized afresh.
            return _denied(
                f"annotation {SCU_PER_CORE_ANNOTATION} says "
                f"{str(annotations[SCU_PER_CORE_ANNOTATION])[:20]!r}, but family {family.name} "
                f"has scuPerCore {family.scu_per_core} in catalog {catalog.version}; remove "
                "the machine-catalog.io annotations and let the webhook choose"
            )
        try:
            values = read_cpu_values(pod)
            constraints = pod_constraints(pod)
            tolerations = pod_tolerations(pod)
        except (PatchError, PlacementError) as exc:
            return _denied(str(exc))
        if not constraints.unconstrained:
            if not self.runtime.cluster.synced:
                return _denied("cluster cache not synced yet; retry shortly", code=503)
            contradiction = self._contradiction(family.name, constraints, tolerations)
            if contradiction is not None:
                return _denied(contradiction)
        beta = self.runtime.cluster.beta_label_only(family.name)
        labelled = self.runtime.cluster.family_labelled(family.name)
        second = second_look(pod, annotations, values, family, beta=beta, labelled=labelled)
        if not second.ops:
            return _skipped(*second.warnings)
        return Verdict(
            "mutated", True, patch=second.ops, warnings=second.warnings, family=family.name
        )

    def _contradiction(
        self, family: str, constraints: NodeConstraints, tolerations: tuple[Toleration, ...]
    ) -> str | None:
        """Why the pod's node rules leave no node of its pinned ``family``; None if some is
        left (cordoned nodes count: a cordon is temporary) or the family has no node at all
        in the cache (nothing to contradict; the extender reports that at scheduling)."""
        snapshot = self.fleet.snapshot()
        view = snapshot.view
        index = view.catalog.family_index.get(family)
        if index is None:
            return None
        of_family = view.family == index
        if not of_family.any():
            return None
        mask = self.fleet.mask(snapshot, constraints, tolerations)
        if mask is None or (mask & of_family).any():
            return None
        return (
            f"the pod is pinned to family {family} (its CPU is converted for it), but its "
            "nodeSelector/node affinity/tolerations, as changed after normalization (by a "
            f"later admission webhook), allow no node of family {family}; remove the "
            "conflicting rule, or restrict families with machine-catalog.io/families"
        )

    def _not_ours(self, pod: Mapping[str, Any], annotations: Mapping[str, Any]) -> str | None:
        """Why a pod carrying the webhook's annotations cannot be its own work; None if it
        can be (reinvocation, re-admission: left alone).

        Anyone can write the four annotations on a new pod, so they are checked against the
        catalog: the webhook never pins a pod to a family the catalog lacks, nor to a
        retired one unless the pod is fixed to its nodes by name (a DaemonSet pod).
        """
        catalog = self.runtime.cluster.catalog
        name = str(annotations[FAMILY_ANNOTATION]).strip()
        family = catalog.by_name.get(name)
        if family is None:
            return (
                f"annotation {FAMILY_ANNOTATION} names family {name[:63]!r}, which the catalog "
                f"{catalog.version} does not have; remove the machine-catalog.io annotations"
                " and let the webhook choose"
            )
        if family.schedulable:
            return None
        try:
            fixed = pod_constraints(pod).fixed_nodes is not None
        except PlacementError as exc:
            return str(exc)
        if fixed:
            return None
        return (
            f"annotation {FAMILY_ANNOTATION} names family {name!r}, which is retired "
            "(schedulable: false); no new pods are placed there"
        )


def _describe(req: Mapping[str, Any]) -> str:
    """namespace/name (or generateName) for logs, safe on any input."""
    obj = _dict(req.get("object"))
    meta = _dict(obj.get("metadata"))
    name = meta.get("name") or meta.get("generateName") or req.get("name") or "?"
    return f"{req.get('namespace') or meta.get('namespace') or ''}/{str(name)[:100]}"


def review(admitter: Admitter, body: bytes) -> tuple[int, bytes]:
    """HTTP status and body for one request body: the route without Flask."""
    try:
        req = decode_review(body)
        uid = req["uid"]
        try:
            verdict = admitter.admit(req)
        except MalformedReview:
            raise
        except Exception as exc:
            log.exception("admission of %s (uid %s) failed", _describe(req), uid)
            verdict = Verdict(
                "error", False, code=500, message=f"internal error: {type(exc).__name__}"
            )
    except MalformedReview as exc:
        return 400, error_body(str(exc))
    if verdict.decision == "denied":
        log.info("denied %s (uid %s): %s", _describe(req), uid, verdict.message)
    elif verdict.decision == "mutated":
        log.debug("normalized %s (uid %s) for family %s", _describe(req), uid, verdict.family)
    telemetry.ADMISSIONS.labels(decision=verdict.decision).inc()
    return 200, encode_response(uid, verdict)
