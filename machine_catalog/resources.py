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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machine_catalog.quantities import to_millis


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


def pod_cpu_request_millis(pod: Mapping[str, Any]) -> int:
    """Effective CPU request of a pod in millicores (0 when nothing requests CPU)."""
    spec = pod.get("spec") or {}
    overhead = to_millis((spec.get("overhead") or {}).get("cpu", 0))
    pod_level = ((spec.get("resources") or {}).get("requests") or {}).get("cpu")
    if pod_level is not None:
        return to_millis(pod_level) + overhead

    app = sum(_container_cpu(c) or 0 for c in spec.get("containers") or ())
    sidecars = 0
    init_peak = 0
    for container in spec.get("initContainers") or ():
        cpu = _container_cpu(container) or 0
        if is_sidecar(container):
            sidecars += cpu
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + cpu)
    return max(app + sidecars, init_peak) + overhead


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
