"""CPU rules of the API server as a test oracle, and hypothesis strategies for pods that
satisfy them in SCU: shared by the conversion and resize tests.

The oracle is written from the API server's rules (``pkg/apis/core/validation``:
``validateResourceRequirements`` for request <= limit, ``validatePodResourceConsistency``
for the pod level, with ``AggregateContainerRequests`` for the containers' total),
independently of :mod:`extender.admission.converting`.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import strategies as st

from extender.admission.converting import CPU_CONVERSION_ANNOTATION
from extender.admission.patching import normalize_ops, read_cpu_values
from machine_catalog.model import Family
from machine_catalog.quantities import to_millis

FACTORS = ["1", "1.18", "1.3", "0.8", "2.5", "1.07", "3.33"]


def family(factor: str) -> Family:
    return Family(name="f", scu_per_core=factor, instance_types=["x.large"])


def rewrite(pod: dict[str, Any], factor: str) -> dict[str, Any]:
    ops = normalize_ops(pod, read_cpu_values(pod), family(factor), "c@1", None)
    return jsonpatch.apply_patch(copy.deepcopy(pod), ops)


def cpu(resources: dict[str, Any] | None, kind: str) -> int | None:
    value = ((resources or {}).get(kind) or {}).get("cpu")
    return None if value is None else to_millis(value)


def request(container: dict[str, Any]) -> int:
    """The request after defaulting (a missing request takes the limit)."""
    res = container.get("resources")
    req = cpu(res, "requests")
    return req if req is not None else (cpu(res, "limits") or 0)


def aggregate(spec: dict[str, Any]) -> int:
    app = sum(request(c) for c in spec["containers"])
    sidecars, peak = 0, 0
    for c in spec.get("initContainers", []):
        if c.get("restartPolicy") == "Always":
            sidecars += request(c)
            peak = max(peak, sidecars)
        else:
            peak = max(peak, request(c) + sidecars)
    return max(app + sidecars, peak)


def validation_errors(pod: dict[str, Any]) -> list[str]:
    """The CPU errors the API server's validation would report for this pod."""
    spec = pod["spec"]
    errors = []
    for section in ("containers", "initContainers"):
        for c in spec.get(section, []):
            req, lim = cpu(c.get("resources"), "requests"), cpu(c.get("resources"), "limits")
            if req is not None and lim is not None and req > lim:
                errors.append(f"{c['name']}: request {req} > limit {lim}")
    pod_res = spec.get("resources")
    if pod_res:
        req, lim = cpu(pod_res, "requests"), cpu(pod_res, "limits")
        if req is not None and lim is not None and req > lim:
            errors.append(f"pod: request {req} > limit {lim}")
        if req is not None and aggregate(spec) > req:
            errors.append(f"pod: request {req} < aggregate {aggregate(spec)}")
        if lim is not None:
            for c in spec["containers"]:
                c_lim = cpu(c.get("resources"), "limits")
                if c_lim is not None and c_lim > lim:
                    errors.append(f"{c['name']}: limit {c_lim} > pod limit {lim}")
    return errors


# -- valid pods in SCU -----------------------------------------------------------------

MILLIS = st.integers(1, 64_000)


@st.composite
def container_resources(draw, guaranteed: bool) -> dict[str, Any]:
    req = draw(MILLIS | st.sampled_from([1000, 2000, 3000, 4000]))
    if guaranteed:
        return {
            "requests": {"cpu": f"{req}m", "memory": "1Gi"},
            "limits": {"cpu": f"{req}m", "memory": "1Gi"},
        }
    shape = draw(st.sampled_from(["request", "both", "both", "limit"]))
    lim = req + draw(st.integers(0, 3) | st.integers(0, 8000))
    out: dict[str, Any] = {}
    if shape in ("request", "both"):
        out["requests"] = {"cpu": f"{req}m"}
    if shape in ("both", "limit"):
        out["limits"] = {"cpu": f"{lim}m"}
    if shape == "both":  # with equal memory, only cpu's request < limit keeps it Burstable
        out["requests"]["memory"] = out["limits"]["memory"] = "1Gi"
    return out


@st.composite
def valid_pods(draw) -> dict[str, Any]:
    guaranteed = draw(st.booleans())
    containers = [
        {"name": f"c{i}", "image": "x", "resources": draw(container_resources(guaranteed))}
        for i in range(draw(st.integers(1, 4)))
    ]
    init = []
    for i in range(draw(st.integers(0, 3))):
        c: dict[str, Any] = {
            "name": f"i{i}",
            "image": "x",
            "resources": draw(container_resources(guaranteed)),
        }
        if draw(st.booleans()):
            c["restartPolicy"] = "Always"
        init.append(c)
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    meta: dict[str, Any] = {"name": "p"}
    if draw(st.integers(0, 4)) == 0:
        meta["annotations"] = {CPU_CONVERSION_ANNOTATION: "exact"}
    pod = {"metadata": meta, "spec": spec}
    shape = draw(st.sampled_from(["none", "request", "limit", "both", "equal"]))
    if shape != "none":
        # at least the aggregate (often exactly it: the hardest case for rounding), and
        # a limit at least the request and every app container's limit
        req = aggregate(spec) + draw(st.sampled_from([0, 0, 1, 2]) | st.integers(0, 5000))
        lims = [cpu(c["resources"], "limits") or 0 for c in containers]
        lim = max([req, *lims]) + draw(st.sampled_from([0, 1]) | st.integers(0, 5000))
        resources: dict[str, Any] = {}
        if shape in ("request", "both", "equal"):
            resources["requests"] = {"cpu": f"{req}m", "memory": "2Gi"}
        if shape in ("limit", "both"):
            resources["limits"] = {"cpu": f"{lim}m", "memory": "2Gi"}
        if shape == "equal":
            resources["limits"] = {"cpu": f"{max([req, *lims])}m", "memory": "2Gi"}
        spec["resources"] = resources
    assert validation_errors(pod) == []
    return pod


RESIZABLE = ("containers", "initContainers")


def resizable(pod: dict[str, Any]) -> list[tuple[str, int]]:
    """(section, index) of the containers a resize may change: app containers and sidecars
    (a regular init container's resources are immutable)."""
    out = [("containers", i) for i in range(len(pod["spec"]["containers"]))]
    for i, c in enumerate(pod["spec"].get("initContainers", [])):
        if c.get("restartPolicy") == "Always":
            out.append(("initContainers", i))
    return out


@st.composite
def resized_values(draw, pod: dict[str, Any]) -> dict[tuple[str, int, str], int]:
    """New SCU millis for some CPU values of ``pod``'s resizable containers (those it has)."""
    changes = {}
    for section, index in draw(st.lists(st.sampled_from(resizable(pod)), unique=True)):
        resources = pod["spec"][section][index]["resources"]
        kinds = [k for k in ("requests", "limits") if "cpu" in (resources.get(k) or {})]
        value = draw(st.integers(1, 64_000))
        bump = draw(st.sampled_from([0, 1, 2]) | st.integers(0, 4000))
        for kind in kinds:
            changes[(section, index, kind)] = value + (bump if kind == "limits" else 0)
    return changes


def set_values(pod: dict[str, Any], changes: dict[tuple[str, int, str], int]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    for (section, index, kind), millis in changes.items():
        pod["spec"][section][index]["resources"][kind]["cpu"] = f"{millis}m"
    return pod
