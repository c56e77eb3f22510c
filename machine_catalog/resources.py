"""A pod's effective requests, by the rules kube-scheduler uses.

Works on plain dicts (the JSON the API server and kube-scheduler send), not on client
models: the cache sees every pod of the cluster and must not pay for model objects.

The rules (``k8s.io/component-helpers/resource``, ``PodRequests``), per resource:

- the sum over app containers, plus restartable init containers ("sidecars",
  ``restartPolicy: Always``), which keep running beside them;
- a regular init container runs alone, but beside the sidecars started before it; the
  pod needs the largest of those moments if that exceeds the steady state;
- pod-level ``spec.resources.requests`` replace that for the resources they may set
  (``cpu``, ``memory``, ``hugepages-*``);
- ``spec.overhead`` (RuntimeClass) is added on top.

A container with a limit and no request is counted at its limit, as the API server's
defaulting would have made it. CPU is in millicores (``MilliValue``), every other resource
in whole units rounded up (``Value``): bytes, devices, pages.

**In-place resize: two rules, by kube-scheduler release** (``--resize-accounting``). A pod
mid-resize has a spec (what is asked), ``status.containerStatuses[].allocatedResources``
(what the kubelet admitted) and ``status.containerStatuses[].resources`` (what the runtime
applied). kube-scheduler counts:

- ``per-container`` (:data:`PER_CONTAINER`; read in component-helpers v0.34.0, which
  kube-scheduler 1.34.x builds, ``determineContainerReqs``): for each app container and
  sidecar whose status reports ``resources``, ``max(spec, status.resources.requests,
  allocatedResources)``, then the sum; while the resize is ``Infeasible`` (condition
  ``PodResizePending`` with that reason, or the older ``status.resize``) only
  ``max(status.resources.requests, allocatedResources)``. Regular init containers: spec.
- ``aggregate`` (:data:`AGGREGATE`; kubernetes#140046, read in component-helpers v0.37.2,
  which kube-scheduler 1.37.x builds, ``AggregateContainerRequests``): the whole pod's
  aggregate is computed three times, from the specs, from the allocated and from the
  actuated requests (a container without such a status falls back to its allocated, then
  to its spec, or to nothing while ``Infeasible``), and the pod counts the largest of the
  three per resource (of the last two while ``Infeasible``). With pod-level status
  (``status.allocatedResources`` and ``status.resources.requests``, beta since 1.36) those
  two are taken as they are, and pod-level requests count ``max(spec,
  status.resources.requests, status.allocatedResources)``.

Releases between 1.34 and 1.37 were not read here: pick the rule whose description matches
the ``AggregateContainerRequests`` of the component-helpers release your kube-scheduler
builds (its ``go.mod``). The rules differ only for a pod mid-resize whose containers move
in different directions (one up, one down: per-container takes each one's larger value,
aggregate the larger pod total) or whose status has ``allocatedResources`` but no
``resources``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from machine_catalog.quantities import QuantityError, parse_quantity, to_millis, to_units

#: Resize accounting of kube-scheduler up to at least 1.34 (component-helpers v0.34.0).
PER_CONTAINER = "per-container"
#: Resize accounting of kube-scheduler 1.37 (component-helpers v0.37.2, kubernetes#140046).
AGGREGATE = "aggregate"
RESIZE_RULES = (PER_CONTAINER, AGGREGATE)
#: The manifests pin kube-scheduler v1.34.1.
DEFAULT_RESIZE_RULE = PER_CONTAINER

Requests = dict[str, int]


def _amount(name: str, value: Any) -> int:
    return to_millis(value) if name == "cpu" else to_units(value)


def _parsed(values: Any) -> Requests | None:
    """A resource list in kube-scheduler's units; None when absent. Raises
    ``QuantityError`` for something that is neither a map nor absent."""
    if values is None:
        return None
    if not isinstance(values, dict):
        raise QuantityError(f"a resource list must be a map, not {type(values).__name__}")
    return {str(k): _amount(str(k), v) for k, v in values.items()}


def container_requests(container: Mapping[str, Any]) -> Requests:
    """A container's spec requests, a limit standing in for a missing request."""
    resources = container.get("resources") or {}
    out = _parsed(resources.get("limits")) or {}
    out.update(_parsed(resources.get("requests")) or {})
    return out


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


def _add(into: Requests, values: Mapping[str, int]) -> None:
    for k, v in values.items():
        into[k] = into.get(k, 0) + v


def _max(*lists: Mapping[str, int] | None) -> Requests:
    """Go's ``max(ResourceList...)``: every resource named anywhere, at its largest."""
    out: Requests = {}
    for values in lists:
        for k, v in (values or {}).items():
            if v > out.get(k, -1):
                out[k] = v
    return out


def _aggregate(
    app: Iterable[Mapping[str, int]], init: Iterable[tuple[Mapping[str, int], bool]]
) -> Requests:
    """:func:`aggregate_container_requests` for every resource at once."""
    total: Requests = {}
    for values in app:
        _add(total, values)
    sidecars: Requests = {}
    peak: Requests = {}
    for values, sidecar in init:
        if sidecar:
            _add(total, values)
            _add(sidecars, values)
            moment = sidecars
        else:
            moment = dict(sidecars)
            _add(moment, values)
        peak = _max(peak, moment)
    return _max(total, peak)


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


def _statuses(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]] | None:
    """Container statuses by name that carry ``resources`` or ``allocatedResources``; None
    when none does (a pending pod, an old kubelet), so the common path is the spec alone.
    App containers' statuses win over init containers' of the same name, as Go's
    ``findContainerStatus`` searches them first."""
    status = pod.get("status")
    if not isinstance(status, dict):
        return None
    out: dict[str, Mapping[str, Any]] = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        entries = status.get(key)
        for cs in entries if isinstance(entries, list) else ():
            if isinstance(cs, dict) and ("resources" in cs or "allocatedResources" in cs):
                out[str(cs.get("name"))] = cs
    return out or None


def _per_container(
    pod: Mapping[str, Any],
    containers: list[Mapping[str, Any]],
    init_containers: list[Mapping[str, Any]],
    statuses: Mapping[str, Mapping[str, Any]],
) -> Requests:
    """1.34's ``determineContainerReqs``, per app container and sidecar."""
    infeasible = resize_infeasible(pod)

    def held(c: Mapping[str, Any], spec: Requests) -> Requests:
        cs = statuses.get(str(c.get("name")))
        if cs is None or not isinstance(cs.get("resources"), dict):
            return spec
        status = _max(
            _parsed(cs["resources"].get("requests")), _parsed(cs.get("allocatedResources"))
        )
        return status if infeasible else _max(spec, status)

    app = [held(c, container_requests(c)) for c in containers]
    init = [
        (held(c, container_requests(c)) if is_sidecar(c) else container_requests(c), is_sidecar(c))
        for c in init_containers
    ]
    return _aggregate(app, init)


def _aggregate_max(
    pod: Mapping[str, Any],
    containers: list[Mapping[str, Any]],
    init_containers: list[Mapping[str, Any]],
    statuses: Mapping[str, Mapping[str, Any]],
) -> Requests:
    """1.37's ``AggregateContainerRequests``: the largest of three whole-pod aggregates."""
    infeasible = resize_infeasible(pod)
    spec = [container_requests(c) for c in containers]
    init_spec = [container_requests(c) for c in init_containers]
    sidecar = [is_sidecar(c) for c in init_containers]
    spec_total = _aggregate(spec, zip(init_spec, sidecar, strict=True))
    status = pod.get("status") or {}
    pod_allocated = _parsed(status.get("allocatedResources"))
    pod_actuated = _parsed((status.get("resources") or {}).get("requests"))
    if pod_allocated is not None and pod_actuated is not None:
        allocated, actuated = pod_allocated, pod_actuated
    else:

        def allocated_of(c: Mapping[str, Any], own: Requests) -> Requests:
            cs = statuses.get(str(c.get("name"))) or {}
            values = _parsed(cs.get("allocatedResources"))
            if values is not None:
                return values
            return {} if infeasible else own

        def actuated_of(c: Mapping[str, Any], own: Requests) -> Requests:
            cs = statuses.get(str(c.get("name"))) or {}
            values = _parsed((cs.get("resources") or {}).get("requests"))
            return values if values is not None else allocated_of(c, own)

        allocated, actuated = (
            _aggregate(
                [fn(c, own) for c, own in zip(containers, spec, strict=True)],
                [
                    (fn(c, own), side)
                    for c, own, side in zip(init_containers, init_spec, sidecar, strict=True)
                ],
            )
            for fn in (allocated_of, actuated_of)
        )
    return _max(actuated, allocated) if infeasible else _max(spec_total, actuated, allocated)


def _pod_level_resource(name: str) -> bool:
    return name in ("cpu", "memory") or name.startswith("hugepages-")


def pod_requests(pod: Mapping[str, Any], rule: str = DEFAULT_RESIZE_RULE) -> Requests:
    """Every resource the pod requests, as kube-scheduler's ``PodRequests`` counts it
    (``rule``: :data:`RESIZE_RULES`, see the module docstring). Raises ``QuantityError``."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    init_containers = spec.get("initContainers") or []
    statuses = _statuses(pod)
    if statuses is None and not (
        rule == AGGREGATE and isinstance((pod.get("status") or {}).get("allocatedResources"), dict)
    ):
        out = _aggregate(
            map(container_requests, containers),
            ((container_requests(c), is_sidecar(c)) for c in init_containers),
        )
    elif rule == AGGREGATE:
        out = _aggregate_max(pod, containers, init_containers, statuses or {})
    else:
        out = _per_container(pod, containers, init_containers, statuses or {})
    pod_level = _parsed((spec.get("resources") or {}).get("requests"))
    if pod_level and any(map(_pod_level_resource, pod_level)):
        status = pod.get("status") or {}
        if rule == AGGREGATE and isinstance(status.get("resources"), dict):
            pod_level = _max(
                None if resize_infeasible(pod) else pod_level,
                _parsed(status["resources"].get("requests")),
                _parsed(status.get("allocatedResources")),
            )
        out.update((k, v) for k, v in pod_level.items() if _pod_level_resource(k))
    _add(out, _parsed(spec.get("overhead")) or {})
    return out


def pod_cpu_request_millis(pod: Mapping[str, Any], rule: str = DEFAULT_RESIZE_RULE) -> int:
    """Effective CPU request of a pod in millicores (0 when nothing requests CPU)."""
    return pod_requests(pod, rule).get("cpu", 0)


#: The fields of a Pod :func:`pod_requests` and :func:`holds_resources` read.
def request_fields(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest Pod that counts exactly as ``pod`` under every rule: its containers'
    names, resources and restart policies, pod-level resources, overhead, node, phase and
    the status a resize leaves (container statuses' resources, conditions).

    Who lists pods to count them (``report --kubeconfig``) keeps this much of each and
    no more, so it counts what the server's cache counts from the full objects.
    """
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    status = pod.get("status") if isinstance(pod.get("status"), dict) else {}

    def containers(key: str) -> list[Any]:
        return [
            {k: c[k] for k in ("name", "resources", "restartPolicy") if k in c}
            if isinstance(c, dict)
            else c
            for c in spec.get(key) or ()
        ]

    def statuses(key: str) -> list[Any]:
        return [
            {k: cs[k] for k in ("name", "resources", "allocatedResources") if k in cs}
            if isinstance(cs, dict)
            else cs
            for cs in status.get(key) or ()
        ]

    out_spec = {k: spec[k] for k in ("nodeName", "overhead", "resources") if k in spec}
    out_spec["containers"] = containers("containers")
    out_spec["initContainers"] = containers("initContainers")
    out_status: dict[str, Any] = {"phase": status.get("phase")}
    for key in ("containerStatuses", "initContainerStatuses"):
        if key in status:
            out_status[key] = statuses(key)
    for key in ("resources", "allocatedResources", "resize"):
        if key in status:
            out_status[key] = status[key]
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        out_status["conditions"] = [
            c for c in conditions if isinstance(c, dict) and c.get("type") == "PodResizePending"
        ]
    return {"spec": out_spec, "status": out_status}


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
