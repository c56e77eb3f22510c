"""Converting a whole pod's CPU: the API server must accept every rewritten pod it would
have accepted in SCU, the QoS class never changes, and Guaranteed whole-CPU pods keep
whole cores.

The validation oracle below is written from the API server's rules
(``pkg/apis/core/validation``: ``validateResourceRequirements`` for request <= limit,
``validatePodResourceConsistency`` for the pod level, with ``AggregateContainerRequests``
for the containers' total), independently of :mod:`extender.converting`.
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.converting import CPU_CONVERSION_ANNOTATION, keeps_whole_cores
from extender.patching import normalize_ops, read_cpu_values
from machine_catalog.loading import load_catalog
from machine_catalog.model import Family
from machine_catalog.quantities import to_millis
from machine_catalog.resources import pod_qos

CATALOG = load_catalog()
FACTORS = ["1", "1.18", "1.3", "0.8", "2.5", "1.07", "3.33"]


def family(factor: str) -> Family:
    return Family(name="f", scu_per_core=factor, instance_types=["x.large"])


def rewrite(pod: dict[str, Any], factor: str) -> dict[str, Any]:
    ops = normalize_ops(pod, read_cpu_values(pod), family(factor), "c@1", None)
    return jsonpatch.apply_patch(copy.deepcopy(pod), ops)


# -- the oracle ------------------------------------------------------------------------


def _cpu(resources: dict[str, Any] | None, kind: str) -> int | None:
    value = ((resources or {}).get(kind) or {}).get("cpu")
    return None if value is None else to_millis(value)


def _request(container: dict[str, Any]) -> int:
    """The request after defaulting (a missing request takes the limit)."""
    res = container.get("resources")
    req = _cpu(res, "requests")
    return req if req is not None else (_cpu(res, "limits") or 0)


def aggregate(spec: dict[str, Any]) -> int:
    app = sum(_request(c) for c in spec["containers"])
    sidecars, peak = 0, 0
    for c in spec.get("initContainers", []):
        if c.get("restartPolicy") == "Always":
            sidecars += _request(c)
            peak = max(peak, sidecars)
        else:
            peak = max(peak, _request(c) + sidecars)
    return max(app + sidecars, peak)


def validation_errors(pod: dict[str, Any]) -> list[str]:
    """The CPU errors the API server's validation would report for this pod."""
    spec = pod["spec"]
    errors = []
    for section in ("containers", "initContainers"):
        for c in spec.get(section, []):
            req, lim = _cpu(c.get("resources"), "requests"), _cpu(c.get("resources"), "limits")
            if req is not None and lim is not None and req > lim:
                errors.append(f"{c['name']}: request {req} > limit {lim}")
    pod_res = spec.get("resources")
    if pod_res:
        req, lim = _cpu(pod_res, "requests"), _cpu(pod_res, "limits")
        if req is not None and lim is not None and req > lim:
            errors.append(f"pod: request {req} > limit {lim}")
        if req is not None and aggregate(spec) > req:
            errors.append(f"pod: request {req} < aggregate {aggregate(spec)}")
        if lim is not None:
            for c in spec["containers"]:
                c_lim = _cpu(c.get("resources"), "limits")
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
        lims = [_cpu(c["resources"], "limits") or 0 for c in containers]
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_pods(), st.sampled_from(FACTORS))
def test_property_a_valid_pod_stays_valid_and_keeps_its_qos_class(pod, factor):
    patched = rewrite(pod, factor)
    assert validation_errors(patched) == []
    assert pod_qos(patched) == pod_qos(pod)
    # nobody gets less than ceil(scu / factor)
    f = Fraction(factor)
    for before, after in zip(read_cpu_values(pod), read_cpu_values(patched), strict=True):
        assert after.scu_millis >= math.ceil(before.scu_millis / f)


# -- the cases, worked by hand -------------------------------------------------


def one_scu(name: str) -> dict[str, Any]:
    return {"name": name, "image": "x", "resources": {"requests": {"cpu": "1"}}}


def test_three_containers_of_one_scu_with_pod_level_three_scu_on_1_18():
    # 1000 / 1.18 = 847.46 -> 848m per container, 2544m in all; ceil(3000 / 1.18) = 2543m
    # alone would be rejected, so the pod level becomes the containers' 2544m.
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [one_scu("a"), one_scu("b"), one_scu("c")],
            "resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}},
        },
    }
    patched = rewrite(pod, "1.18")
    assert [c["resources"]["requests"]["cpu"] for c in patched["spec"]["containers"]] == [
        "848m"
    ] * 3
    assert patched["spec"]["resources"] == {
        "requests": {"cpu": "2544m"},
        "limits": {"cpu": "2544m"},
    }


@pytest.mark.parametrize(
    ("spec", "factor", "expected"),
    [
        # sidecar beside the app: aggregate 848 + 848 = 1696 > ceil(2000 / 1.18) = 1695
        (
            {
                "containers": [one_scu("a")],
                "initContainers": [{**one_scu("s"), "restartPolicy": "Always"}],
                "resources": {"requests": {"cpu": "2"}},
            },
            "1.18",
            {"requests": {"cpu": "1696m"}},
        ),
        # a regular init container runs alone: max(848, 848) = 848 < 1695, no raise
        (
            {
                "containers": [one_scu("a")],
                "initContainers": [one_scu("i")],
                "resources": {"requests": {"cpu": "2"}},
            },
            "1.18",
            {"requests": {"cpu": "1695m"}},
        ),
        # pod limit above the request in SCU stays above it after the raise
        (
            {
                "containers": [one_scu("a"), one_scu("b"), one_scu("c")],
                "resources": {"requests": {"cpu": "3"}, "limits": {"cpu": "3001m"}},
            },
            "1.18",
            {"requests": {"cpu": "2544m"}, "limits": {"cpu": "2545m"}},
        ),
        # factor 1: nothing to raise
        (
            {
                "containers": [one_scu("a"), one_scu("b")],
                "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}},
            },
            "1",
            {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}},
        ),
    ],
)
def test_pod_level_values(spec, factor, expected):
    patched = rewrite({"metadata": {"name": "p"}, "spec": spec}, factor)
    assert patched["spec"]["resources"] == expected


def test_a_request_just_below_its_limit_stays_below_it():
    # 1002m and 1003m SCU both round to 850m on 1.18: the limit becomes 851m, or the
    # container (and with it a pod with equal memory) would turn Guaranteed.
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "image": "x",
                    "resources": {
                        "requests": {"cpu": "1002m", "memory": "1Gi"},
                        "limits": {"cpu": "1003m", "memory": "1Gi"},
                    },
                }
            ]
        },
    }
    patched = rewrite(pod, "1.18")
    assert patched["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "850m"
    assert patched["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "851m"
    assert pod_qos(pod) == pod_qos(patched) == "Burstable"


# -- static CPU manager ----------------------------------------------------------------


def guaranteed(cpu: str, name: str = "app", memory: str = "1Gi") -> dict[str, Any]:
    values = {"cpu": cpu, "memory": memory}
    return {"name": name, "image": "x", "resources": {"requests": values, "limits": dict(values)}}


@pytest.mark.parametrize(
    ("containers", "annotations", "factor", "expected"),
    [
        # Guaranteed, whole SCU: 2 / 1.18 = 1.695 -> 2 whole cores
        ([guaranteed("2")], {}, "1.18", ["2"]),
        # a slower family needs more cores: 2 / 0.8 = 2.5 -> 3
        ([guaranteed("2")], {}, "0.8", ["3"]),
        # exact multiple stays as it is: 4 / 2 = 2
        ([guaranteed("4")], {}, "2", ["2"]),
        # per container: only whole requests get whole cores (the kubelet decides per
        # container too); 500m shares the pool and is converted exactly
        ([guaranteed("2"), guaranteed("500m", "b")], {}, "1.18", ["2", "424m"]),
        # the opt-out converts exactly
        ([guaranteed("2")], {CPU_CONVERSION_ANNOTATION: "exact"}, "1.18", ["1695m"]),
    ],
)
def test_whole_cores_for_guaranteed_pods(containers, annotations, factor, expected):
    pod = {
        "metadata": {"name": "p", "annotations": annotations},
        "spec": {"containers": containers},
    }
    patched = rewrite(pod, factor)
    got = [c["resources"]["requests"]["cpu"] for c in patched["spec"]["containers"]]
    assert got == expected
    assert [c["resources"]["limits"]["cpu"] for c in patched["spec"]["containers"]] == expected
    assert pod_qos(patched) == "Guaranteed"


def test_burstable_and_pod_level_pods_are_converted_exactly():
    burstable = guaranteed("2")
    burstable["resources"]["requests"]["memory"] = "512Mi"
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [burstable]}}
    assert not keeps_whole_cores(pod)
    assert rewrite(pod, "1.18")["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1695m"

    pod_level = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [guaranteed("2")],
            "resources": {
                "requests": {"cpu": "2", "memory": "1Gi"},
                "limits": {"cpu": "2", "memory": "1Gi"},
            },
        },
    }
    assert pod_qos(pod_level) == "Guaranteed"
    assert not keeps_whole_cores(pod_level)  # the static policy skips pod-level resources
    patched = rewrite(pod_level, "1.18")
    assert patched["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1695m"


@pytest.mark.parametrize(
    ("spec", "qos"),
    [
        ({"containers": [{"name": "a"}]}, "BestEffort"),
        ({"containers": [guaranteed("1")]}, "Guaranteed"),
        # limits only: requests default to them
        (
            {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]},
            "Guaranteed",
        ),
        # cpu limit only: no memory limit, not Guaranteed
        ({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}, "Burstable"),
        # one Guaranteed container and one without limits
        ({"containers": [guaranteed("1"), {"name": "b"}]}, "Burstable"),
        # init containers count
        (
            {
                "containers": [guaranteed("1")],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}],
            },
            "Burstable",
        ),
        # pod-level resources decide alone; their request defaults to their limit only
        # for a resource no container requests
        (
            {
                "containers": [{"name": "a"}],
                "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
            },
            "Guaranteed",
        ),
        (
            {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
                "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
            },
            "Burstable",
        ),
        # zero values do not count
        ({"containers": [{"name": "a", "resources": {"requests": {"cpu": "0"}}}]}, "BestEffort"),
    ],
)
def test_pod_qos(spec, qos):
    assert pod_qos({"spec": spec}) == qos
