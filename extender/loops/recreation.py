"""The loop that re-creates pods stranded on a full family (``serve --recreate-stranded-after``).

Every ``interval`` seconds it lists the pods that are Pending and unbound (one LIST with a
field selector, all namespaces), asks the pure rules of :mod:`extender.loops.stranding` which to
re-create, answering their question about room from the cluster cache the webhook uses,
and deletes those pods. Each deleted pod's controller creates a replacement, which the
webhook pins to a family that can hold it.

Safety:

- **Only pods that are ours, unbound, never started and owned by a ReplicaSet** are ever
  deleted: :func:`extender.loops.stranding.choose_recreations` decides,
  and the delete carries **preconditions** on the pod's uid and resourceVersion. If the pod
  changed after the LIST (it got bound, a new pod took its name) the API server refuses
  with 409 Conflict and nothing happens.
- **One replica acts**: the loop runs in every replica but does nothing unless its replica
  holds the Lease (:mod:`extender.loops.leadership`), and checks again before each delete,
  so a leader that lost contact stops before another replica may start.
- **Bounded**: at most ``max_per_cycle`` deletions per cycle, longest-waiting first; a pod
  is deleted only after it waited ``after`` seconds (so a replacement that is stranded
  again waits that long too); nothing runs until the cache has synced.
- **Fast enough to matter**: a cycle runs every ``after / 3`` seconds (2 to 30), so a pod
  stranded by a burst is re-placed within about ``after`` plus a few seconds. Where a node
  autoscaler grows the family the pod waits for, set ``after`` above its scale-up time
  (docs/operations.md), or the pod is moved before the new node arrives.
- **Off** unless ``--recreate-stranded-after`` is given; never with a snapshot source.

Visible: a ``Warning`` Event ``StrandedPodRecreated`` on the pod and on its controller
(``kubectl describe rs``), a log line, and ``machine_catalog_stranded_pod_recreations_total
{outcome}`` / ``machine_catalog_stranded_pods``. RBAC: ``delete`` on pods and ``create`` on
events (manifests/base/rbac.yaml).
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from extender import telemetry
from extender.admission.converting import (
    effective_request,
    overhead_millis,
    pod_physical_requests,
)
from extender.admission.patching import PatchError
from extender.admission.placement import (
    Placement,
    PlacementError,
    choose_family,
    node_copies,
    pod_constraints,
    pod_needs,
    pod_tolerations,
    requested_families,
)
from extender.admission.reinvocation import without_pin
from extender.admission.resizing import scu_cpu_values
from extender.admission.webhook import Fleet
from extender.loops.periodic import Periodic
from extender.loops.stranding import (
    Choice,
    PendingPod,
    Room,
    Settings,
    choose_recreations,
    pending_pod,
)
from extender.state.cluster import MAX_CPU_MILLIS, ClusterState
from machine_catalog.annotations import (
    FAMILY_ANNOTATION,
    FAMILY_SOURCE_ANNOTATION,
    FAMILY_SOURCE_USER,
)
from machine_catalog.quantities import QuantityError
from machine_catalog.resources import pod_requests

log = logging.getLogger(__name__)

#: Pending pods not bound to a node: the only ones the rules can pick.
FIELD_SELECTOR = "status.phase=Pending,spec.nodeName="
EVENT_REASON = "StrandedPodRecreated"
COMPONENT = "machine-catalog"
MIN_INTERVAL, MAX_INTERVAL = 2.0, 30.0
PAGE_SIZE = 500
REQUEST_TIMEOUT = (5.0, 30.0)
#: The API server's owner kinds by apiVersion, for the Event on the controller.
OWNER_API_VERSIONS = {"ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1"}


def room_for(fleet: Fleet, pod: Mapping[str, Any]) -> Room:
    """Can the pod's family hold it now, and which family would the webhook choose for its
    replacement now (its own node rules, without our pin, and its families annotation; a
    family the user named stays a hard restriction)?

    "Hold" is kube-scheduler's fit on one node: an allowed node of the family has the
    pod's physical CPU request free and, on that same node, every other resource it
    requests (memory, ephemeral storage, a pod slot, extended resources:
    :func:`~extender.admission.placement.node_copies`). The replacement is sized as the
    webhook will size it: its SCU values (the record,
    :func:`extender.admission.resizing.scu_cpu_values`) converted per family exactly as
    the patch converts them (whole cores of a Guaranteed pod too), not the rounded
    physical request read back as SCU. Anything the cache cannot judge (a family no
    longer in the catalog, a spec it cannot read) answers "fits": never act on a guess.
    """
    snapshot = fleet.snapshot()
    catalog = snapshot.view.catalog
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    family = catalog.by_name.get(str(annotations.get(FAMILY_ANNOTATION, "")).strip())
    if family is None:
        return Room(True, None)
    user_family = annotations.get(FAMILY_SOURCE_ANNOTATION) == FAMILY_SOURCE_USER
    try:
        requests = pod_requests(pod, fleet.cluster.resize_rule)
        physical = requests.get("cpu", 0)
        needs = pod_needs(requests)
        values = scu_cpu_values(pod)
        factors = [f.factor for f in catalog.families]
        cpu_needs = pod_physical_requests(pod, values, factors)
        scu = {v.pointer: v.scu_millis for v in values}
        pod_scu = effective_request(values, scu) + overhead_millis(pod)
        spec = without_pin(pod.get("spec") or {}, family)
        unpinned = {**pod, "spec": spec}
        constraints = pod_constraints(unpinned)
        tolerations = pod_tolerations(unpinned)
        requested, _ = requested_families(annotations, catalog, trusted_family=not user_family)
    except (QuantityError, PatchError, PlacementError, ValueError) as exc:
        log.debug("cannot judge %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
        return Room(True, None)
    mask = fleet.mask(snapshot, constraints, tolerations)
    capacity = fleet.capacity(snapshot, mask, fixed=False)
    index = catalog.family_index[family.name]
    cpu_need = np.full(len(catalog.families), max(physical, 1), np.int64) if physical > 0 else None
    copies = node_copies(capacity, cpu_need, needs)
    if copies is not None and (copies[capacity.node_family == index] > 0).any():
        return Room(True, None)
    decision = choose_family(
        snapshot.view,
        capacity,
        constraints=constraints,
        allowed_nodes=mask,
        requested=requested,
        pending_physical=fleet.cluster.pending_millis(),
        reserved_scu={},
        pod_scu=min(pod_scu, MAX_CPU_MILLIS),
        pod_physical=[min(n, MAX_CPU_MILLIS) for n in cpu_needs],
        needs=needs,
    )
    if isinstance(decision, Placement) and decision.fits:
        return Room(False, decision.family.name)
    return Room(False, None)


def cycle_interval(after: float) -> float:
    """Seconds between cycles: a third of the wait, within 2..30 s."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, after / 3))


def _now_rfc3339(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Recreator(Periodic):
    """The loop; :meth:`run_once` is one cycle (the tests call it directly)."""

    thread_name = "recreate-stranded"

    def first_delay(self) -> float:
        # Replicas start together; spread their cycles over the interval.
        return random.uniform(0, self.interval)

    def __init__(
        self,
        cluster: ClusterState,
        api_client: client.ApiClient,
        settings: Settings,
        *,
        interval: float | None = None,
        leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.after is None:
            raise ValueError("Recreator needs settings.after (seconds); None turns it off")
        self.cluster = cluster
        self.api = client.CoreV1Api(api_client)
        self.settings = settings
        self.interval = interval if interval is not None else cycle_interval(settings.after)
        self.leader = leader
        self.clock = clock
        self.fleet = Fleet(cluster)
        self.instance = os.environ.get("HOSTNAME") or f"pid-{os.getpid()}"
        self._init_loop()

    # -- one cycle ---------------------------------------------------------------------

    def run_once(self) -> list[Choice]:
        if not self.cluster.synced or not self.leader():
            return []
        objects = self._pending_pods()
        pods: dict[str, tuple[PendingPod, Mapping[str, Any]]] = {}
        for obj in objects:
            parsed = pending_pod(obj)
            if parsed is not None:
                pods[parsed.uid] = (parsed, obj)
        choices = choose_recreations(
            [p for p, _ in pods.values()],
            lambda p: room_for(self.fleet, pods[p.uid][1]),
            self.clock(),
            self.settings,
        )
        stranded = 0
        for choice in choices:
            if choice.recreate or choice.target is not None:
                stranded += 1
            if choice.recreate:
                self._recreate(choice)
        telemetry.STRANDED_PODS.set(stranded)
        return choices

    def _pending_pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            response = self.api.list_pod_for_all_namespaces(
                field_selector=FIELD_SELECTOR,
                limit=PAGE_SIZE,
                _continue=token,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            try:
                body = orjson.loads(response.data)
            finally:
                response.release_conn()
            items += [i for i in body.get("items") or [] if isinstance(i, dict)]
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _recreate(self, choice: Choice) -> None:
        pod = choice.pod
        if not self.leader():  # lost the Lease during this cycle: leave it to the next leader
            return
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=pod.uid, resource_version=pod.resource_version)
        )
        try:
            self.api.delete_namespaced_pod(
                pod.name, pod.namespace, body=options, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            outcome = {409: "conflict", 404: "gone"}.get(exc.status, "error")
            telemetry.RECREATIONS.labels(outcome=outcome).inc()
            level = logging.WARNING if outcome == "error" else logging.INFO
            log.log(
                level,
                "not re-creating %s/%s: %s %s",
                pod.namespace,
                pod.name,
                exc.status,
                exc.reason,
            )
            return
        except Exception:
            telemetry.RECREATIONS.labels(outcome="error").inc()
            log.exception("deleting stranded pod %s/%s failed", pod.namespace, pod.name)
            return
        telemetry.RECREATIONS.labels(outcome="recreated").inc()
        log.warning("re-created %s/%s: %s", pod.namespace, pod.name, choice.reason)
        self._event(pod, "Pod", "v1", pod.name, pod.uid, choice.reason)
        if pod.owner_kind and pod.owner_name:
            message = f"deleted pod {pod.name} so it is re-created: {choice.reason}"
            api_version = OWNER_API_VERSIONS.get(pod.owner_kind, "apps/v1")
            self._event(pod, pod.owner_kind, api_version, pod.owner_name, pod.owner_uid, message)

    def _event(
        self,
        pod: PendingPod,
        kind: str,
        api_version: str,
        name: str,
        uid: str | None,
        message: str,
    ) -> None:
        """A core/v1 Event; a failure is logged, never raised (the deletion happened)."""
        stamp = _now_rfc3339(self.clock())
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{name[:200]}.{uuid.uuid4().hex[:16]}", namespace=pod.namespace
            ),
            involved_object=client.V1ObjectReference(
                kind=kind, api_version=api_version, name=name, namespace=pod.namespace, uid=uid
            ),
            reason=EVENT_REASON,
            message=message[:1024],
            type="Warning",
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=self.instance,
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
        )
        try:
            self.api.create_namespaced_event(pod.namespace, event, _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            log.warning("event for %s %s/%s not recorded: %s", kind, pod.namespace, name, exc)
