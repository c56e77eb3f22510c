"""A pod's effective CPU request, by the rules kube-scheduler uses.

Works on plain dicts (the JSON the API server and kube-scheduler send), not on client
models: the cache sees every pod of the cluster and must not pay for model objects.

The rules (``k8s.io/component-helpers/resource``, ``PodRequests``):

- pod-level ``spec.resources.requests.cpu``, when set, is the pod's request;
- otherwise the sum over app containers, plus restartable init containers ("sidecars",
  ``restartPolicy: Always``), which keep running beside them;
- a regular init container runs alone, but beside the sidecars started before it; the
  pod needs the largest of those moments if that exceeds the steady state;
- ``spec.overhead.cpu`` (RuntimeClass) is added on top.

A container with a CPU limit and no request is counted at its limit, as the API server's
defaulting would have made it.

In-place resize (``UseStatusResources``, GA in 1.35): a container whose status reports
``resources`` counts ``max(spec request, status.resources.requests, allocatedResources)``,
so an unapplied downsize still counts what the kubelet holds; while the pod's resize is
``Infeasible`` (condition ``PodResizePending`` with that reason, or the older
``status.resize``) only ``max(status.resources.requests, allocatedResources)``: what is
actually allocated, not the upsize that will never happen. App containers and sidecars
only: a regular init container has finished by the time the pod is resized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from machine_catalog.quantities import parse_quantity, to_millis


def _container_cpu(container: Mapping[str, Any], kind: str = "requests") -> int | None:
    resources = container.get("resources") or {}
    values = resources.get(kind) or {}
    if "cpu" in values:
        return to_millis(values["cpu"])
    if kind == "requests":
        limits = resources.get("limits") or {}
        if "cpu" in limits:
            return to_millis(limits["cpu"])
    return None


def is_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container that keeps running (KEP-753 restartable init container)."""
    return container.get("restartPolicy") == "Always"


def aggregate_container_requests(app: Iterable[int], init: Iterable[tuple[int, bool]]) -> int:
    """``AggregateContainerRequests`` for one resource: the pod's need without pod-level
    resources and without overhead.

    ``app`` holds the app containers' requests; ``init`` the init containers' in spec
    order, each with whether it is a sidecar. Result: ``max(sum(app) + sum(sidecars),
    max over regular init containers i of (request_i + sidecars started before i))``.
    The API server requires a pod-level request to be at least this (see
    :mod:`extender.admission.converting`), and the scheduler counts it when there is none.
    """
    sidecars = 0
    init_peak = 0
    for cpu, sidecar in init:
        if sidecar:
            sidecars += cpu
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + cpu)
    return max(sum(app) + sidecars, init_peak)


def resize_infeasible(pod: Mapping[str, Any]) -> bool:
    """The kubelet declared the pod's pending resize ``Infeasible`` (it will never fit)."""
    status = pod.get("status")
    if not isinstance(status, dict):
        return False
    conditions = status.get("conditions")
    for condition in conditions if isinstance(conditions, list) else ():
        if isinstance(condition, dict) and condition.get("type") == "PodResizePending":
            return condition.get("reason") == "Infeasible"
    return status.get("resize") == "Infeasible"  # before 1.33: a field instead of a condition


def _held(pod: Mapping[str, Any]) -> dict[str, int] | None:
    """Per container name, ``max(status.resources.requests.cpu, allocatedResources.cpu)``
    for the statuses that report resources; None when none do (a pending pod, a kubelet
    before 1.33), so the common path stays the spec alone."""
    status = pod.get("status")
    if not status or not isinstance(status, dict):
        return None
    out: dict[str, int] = {}
    for key in ("containerStatuses", "initContainerStatuses"):
        entries = status.get(key)
        if not entries or not isinstance(entries, list):
            continue
        for cs in entries:
            if not isinstance(cs, dict):
                continue
            resources = cs.get("resources")
            if not isinstance(resources, dict):
                continue
            requests, allocated = resources.get("requests"), cs.get("allocatedResources")
            reported = requests.get("cpu") if isinstance(requests, dict) else None
            granted = allocated.get("cpu") if isinstance(allocated, dict) else None
            out[str(cs.get("name"))] = max(
                0 if reported is None else to_millis(reported),
                0 if granted is None else to_millis(granted),
            )
    return out or None


def _with_status(
    pod: Mapping[str, Any],
    containers: Iterable[Any],
    init_containers: Iterable[Any],
    app: list[int],
    init: list[tuple[int, bool]],
    held: Mapping[str, int],
) -> None:
    """Replace the spec values of ``app`` and the sidecars of ``init`` in place by what
    kube-scheduler counts for them (``determineContainerReqs``); a no-op unless some status
    differs from its spec, which is the only case where ``Infeasible`` matters."""
    differs = [
        (i, h)
        for i, c in enumerate(containers)
        if (h := held.get(str(c.get("name")))) is not None and h != app[i]
    ]
    sidecars = [
        (i, h)
        for i, c in enumerate(init_containers)
        if init[i][1] and (h := held.get(str(c.get("name")))) is not None and h != init[i][0]
    ]
    if not differs and not sidecars:
        return
    infeasible = resize_infeasible(pod)
    for i, h in differs:
        app[i] = h if infeasible else max(app[i], h)
    for i, h in sidecars:
        init[i] = (h if infeasible else max(init[i][0], h), True)


def pod_cpu_request_millis(pod: Mapping[str, Any]) -> int:
    """Effective CPU request of a pod in millicores (0 when nothing requests CPU)."""
    spec = pod.get("spec") or {}
    overhead = to_millis((spec.get("overhead") or {}).get("cpu", 0))
    pod_level = ((spec.get("resources") or {}).get("requests") or {}).get("cpu")
    if pod_level is not None:
        return to_millis(pod_level) + overhead

    containers = spec.get("containers") or ()
    init_containers = spec.get("initContainers") or ()
    app = [_container_cpu(c) or 0 for c in containers]
    init = [(_container_cpu(c) or 0, is_sidecar(c)) for c in init_containers]
    held = _held(pod)
    if held is not None:
        _with_status(pod, containers, init_containers, app, init, held)
    return aggregate_container_requests(app, init) + overhead


def holds_resources(pod: Mapping[str, Any]) -> bool:
    """Bound and not terminal: the pod counts against its node's allocatable."""
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return bool(spec.get("nodeName")) and phase not in ("Succeeded", "Failed")


def node_allocatable_millis(node: Mapping[str, Any]) -> int:
    """A Node's allocatable CPU in millicores (its capacity when allocatable is absent).

    Allocatable, not capacity: the kubelet reserves CPU for system daemons, and the
    scheduler only ever places pods into what is left. Raises ``QuantityError`` on a value
    that is not a quantity; callers decide whether that is fatal.
    """
    status = node.get("status") or {}
    value = (status.get("allocatable") or {}).get("cpu")
    if value is None:
        value = (status.get("capacity") or {}).get("cpu", 0)
    return to_millis(value)


_QOS_RESOURCES = ("cpu", "memory")


def _positive(values: Any) -> dict[str, Decimal]:
    """The cpu/memory entries of a resource list that are above zero, parsed."""
    if not isinstance(values, dict):
        return {}
    out = {}
    for name in _QOS_RESOURCES:
        if name in values:
            quantity = parse_quantity(values[name])
            if quantity > 0:
                out[name] = quantity
    return out


def pod_qos(pod: Mapping[str, Any]) -> str:
    """The pod's QoS class (``Guaranteed``, ``Burstable``, ``BestEffort``), by the API
    server's rules (``ComputePodQOS``), from the spec alone.

    Only cpu and memory count. With pod-level resources set, they alone decide;
    otherwise app and init containers (ephemeral ones cannot set resources). Guaranteed:
    every container (or the pod level) has cpu and memory limits, and the summed requests
    equal the summed limits (a missing request was defaulted from its limit). BestEffort:
    no cpu or memory request or limit anywhere. Raises ``QuantityError`` on a bad value.
    """
    spec = pod.get("spec") or {}
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    containers = [
        (c.get("resources") or {}) if isinstance(c, dict) else {}
        for c in (*(spec.get("containers") or ()), *(spec.get("initContainers") or ()))
    ]
    pod_level = spec.get("resources") or {}
    if pod_level.get("requests") or pod_level.get("limits"):
        scopes = [pod_level]
        # Defaulting: a pod-level request takes the pod-level limit only for a resource
        # no container requests (a container's request takes its own limit).
        defaulted = {
            name
            for name in _QOS_RESOURCES
            if not any(name in (r.get("requests") or r.get("limits") or {}) for r in containers)
        }
    else:
        scopes = containers
        defaulted = set(_QOS_RESOURCES)
    for resources in scopes:
        found_limits = _positive(resources.get("limits"))
        found_requests = _positive(resources.get("requests"))
        for name, value in found_limits.items():
            if name in defaulted:
                found_requests.setdefault(name, value)
            limits[name] = limits.get(name, Decimal(0)) + value
        for name, value in found_requests.items():
            requests[name] = requests.get(name, Decimal(0)) + value
        if set(found_limits) != set(_QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"
