"""Converting a whole pod's CPU: the API server must accept every rewritten pod it would
have accepted in SCU, the QoS class never changes, and Guaranteed whole-CPU pods keep
whole cores.

The validation oracle (``tests/cpu_rules.py``) is written from the API server's rules,
independently of :mod:`extender.admission.converting`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.cpu_rules import FACTORS, rewrite, valid_pods, validation_errors

from extender.admission.converting import (
    CPU_CONVERSION_ANNOTATION,
    keeps_whole_cores,
    pod_physical_requests,
)
from extender.admission.patching import read_cpu_values
from machine_catalog.quantities import to_millis
from machine_catalog.resources import pod_cpu_request_millis, pod_qos


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


# -- the physical request the patch writes, per family (what the family must hold) -------


def _pod(containers, *, pod_level=None, overhead=None, annotations=None, init=None):
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    if pod_level:
        spec["resources"] = pod_level
    if overhead:
        spec["overhead"] = {"cpu": overhead}
    return {"metadata": {"name": "p", "annotations": annotations or {}}, "spec": spec}


def _sidecar(cpu: str) -> dict[str, Any]:
    return {**one_scu("side"), "restartPolicy": "Always", "resources": {"requests": {"cpu": cpu}}}


@pytest.mark.parametrize(
    ("pod", "factors", "expected"),
    [
        # The pod: Guaranteed 2 SCU is 2 whole cores on 1.3 (not ceil(2000/1.3) =
        # 1539m) and on 1.0; 3 cores on 0.8.
        (_pod([guaranteed("2")]), ["1.3", "1", "0.8"], [2000, 2000, 3000]),
        # Opted out, or Burstable: exact.
        (
            _pod([guaranteed("2")], annotations={CPU_CONVERSION_ANNOTATION: "exact"}),
            ["1.3"],
            [1539],
        ),
        (_pod([one_scu("a"), one_scu("b")]), ["1.3"], [1540]),  # 770m each, not 1539m
        # Per-container rounding: three 1-SCU containers on 1.18 take 848m each = 2544m,
        # one more than ceil(3000 / 1.18).
        (_pod([one_scu("a"), one_scu("b"), one_scu("c")]), ["1.18"], [2544]),
        # A pod-level request is the pod's request, raised to the containers' aggregate.
        (
            _pod([one_scu("a"), one_scu("b"), one_scu("c")], pod_level={"requests": {"cpu": "3"}}),
            ["1.18"],
            [2544],
        ),
        # Overhead (RuntimeClass) is physical: added as it is, never converted.
        (_pod([one_scu("a")], overhead="250m"), ["1.25", "1"], [1050, 1250]),
        # A regular init container's peak (beside the sidecar started before it).
        (_pod([one_scu("a")], init=[_sidecar("500m"), one_scu("init")]), ["1"], [1500]),
        # Nothing requests CPU.
        (_pod([{"name": "a", "image": "x"}]), ["1.3"], [0]),
    ],
)
def test_pod_physical_requests_are_what_the_patch_writes(pod, factors, expected):
    fractions = [Fraction(f) for f in factors]
    assert pod_physical_requests(pod, read_cpu_values(pod), fractions) == expected
    for factor, need in zip(factors, expected, strict=True):
        patched = rewrite(pod, factor)
        spec = patched["spec"]
        spec.pop("overhead", None)
        extra = to_millis((pod["spec"].get("overhead") or {}).get("cpu", 0))
        assert pod_cpu_request_millis(patched) + extra == need
