"""In-place resize (``pods/resize``) through the real webhook route, with AdmissionReviews
shaped as the API server sends them (UPDATE, subResource ``resize``, ``oldObject``).

The pod under resize is the real ReplicaSet fixture pod, first admitted by the webhook
(CREATE) on an aws-m6i node (1.15 SCU/core), then bound and running.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from fractions import Fraction
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.cpu_rules import (
    FACTORS,
    resized_values,
    rewrite,
    set_values,
    valid_pods,
    validation_errors,
)
from support.helpers import admission_pod
from support.reviews import Hook, create_review, labelled_node, patched, resize_review, running

from extender.admission.converting import CPU_CONVERSION_ANNOTATION
from extender.admission.patching import STANDARD_RESOURCES_ANNOTATION
from extender.admission.resizing import explains, is_resize, resize, scu_values
from machine_catalog.quantities import to_millis
from machine_catalog.resources import pod_qos

NODE = "ip-10-0-1-23.ec2.internal"
F = Fraction("1.15")


def c(scu: int) -> int:
    """ceil(scu / 1.15), computed here independently."""
    return math.ceil(Fraction(scu) / F)


@pytest.fixture(scope="module")
def hook() -> Hook:
    return Hook([labelled_node(NODE, "m6i.2xlarge", cpu="8")])


def admitted(hook: Hook, pod: dict[str, Any] | None = None) -> dict[str, Any]:
    review = create_review(pod or admission_pod())
    response = hook.review(review)
    assert response["allowed"] is True
    return running(patched(review, response), NODE)


def with_cpu(pod: dict[str, Any], container: str, kind: str, cpu: str) -> dict[str, Any]:
    """``pod`` after ``kubectl patch --subresource resize`` of one CPU value."""
    pod = copy.deepcopy(pod)
    for section in ("containers", "initContainers"):
        for c_ in pod["spec"].get(section, []):
            if c_["name"] == container:
                c_["resources"].setdefault(kind, {})["cpu"] = cpu
    return pod


def cpu_of(pod: dict[str, Any], container: str, kind: str) -> int:
    for section in ("containers", "initContainers"):
        for c_ in pod["spec"].get(section, []):
            if c_["name"] == container:
                return to_millis(c_["resources"][kind]["cpu"])
    raise KeyError(container)


def test_the_created_pod_is_what_the_resize_tests_start_from(hook):
    old = admitted(hook)
    assert cpu_of(old, "checkout", "requests") == c(1500) == 1305
    assert cpu_of(old, "checkout", "limits") == c(2000) == 1740
    assert cpu_of(old, "istio-proxy", "requests") == c(100) == 87


def test_a_resized_request_is_read_as_scu_and_the_rest_is_left_alone(hook):
    old = admitted(hook)
    new = with_cpu(old, "checkout", "requests", "1")  # 1 SCU
    review = resize_review(old, new)
    assert is_resize(review["request"])
    response = hook.review(review)
    assert response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops == [
        {"op": "replace", "path": "/spec/containers/0/resources/requests/cpu", "value": "870m"}
    ]
    result = patched(review, response)
    assert cpu_of(result, "checkout", "requests") == c(1000) == 870
    # everything else exactly as the API server holds it
    assert cpu_of(result, "checkout", "limits") == cpu_of(old, "checkout", "limits")
    assert cpu_of(result, "istio-proxy", "requests") == cpu_of(old, "istio-proxy", "requests")
    assert result["metadata"] == old["metadata"]
    (warning,) = response["warnings"]
    assert "1 CPU value(s) read as SCU" in warning and "aws-m6i" in warning
    # the audit annotation holds the whole pod's SCU values after the resize
    audit = orjson.loads(response["auditAnnotations"]["standard-resources"])
    assert audit["containers"]["checkout"] == {
        "requests": {"cpu": "1"},
        "limits": {"cpu": "2"},
    }
    assert audit["initContainers"]["istio-proxy"]["requests"] == {"cpu": "100m"}


def test_request_and_limit_resized_together_keep_their_order(hook):
    old = admitted(hook)
    new = with_cpu(with_cpu(old, "checkout", "requests", "3005m"), "checkout", "limits", "3006m")
    result = patched(resize_review(old, new), hook.review(resize_review(old, new)))
    # both round to 2614m on 1.15: the limit goes one above, so QoS cannot change
    assert c(3005) == c(3006) == 2614
    assert cpu_of(result, "checkout", "requests") == 2614
    assert cpu_of(result, "checkout", "limits") == 2615


def test_a_resize_that_changes_nothing_gets_no_patch(hook):
    old = admitted(hook)
    response = hook.review(resize_review(old, copy.deepcopy(old)))
    assert response["allowed"] is True
    assert "patch" not in response and "warnings" not in response


def test_a_sidecar_resize_is_converted(hook):
    old = admitted(hook)
    new = with_cpu(old, "istio-proxy", "requests", "500m")
    result = patched(resize_review(old, new), hook.review(resize_review(old, new)))
    assert cpu_of(result, "istio-proxy", "requests") == c(500) == 435


def guaranteed_pod() -> dict[str, Any]:
    pod = admission_pod()
    pod["spec"].pop("initContainers", None)
    values = {"cpu": "2", "memory": "2Gi"}
    pod["spec"]["containers"][0]["resources"] = {"requests": values, "limits": dict(values)}
    return pod


def test_a_guaranteed_whole_cpu_pod_keeps_whole_cores_through_a_resize(hook):
    old = admitted(hook, guaranteed_pod())
    assert cpu_of(old, "checkout", "requests") == 2000  # 2 SCU -> 1740m -> 2 whole cores
    old["status"]["qosClass"] = "Guaranteed"
    new = with_cpu(with_cpu(old, "checkout", "requests", "3"), "checkout", "limits", "3")
    result = patched(resize_review(old, new), hook.review(resize_review(old, new)))
    assert c(3000) == 2609
    assert cpu_of(result, "checkout", "requests") == cpu_of(result, "checkout", "limits") == 3000


def test_the_opt_out_converts_a_guaranteed_resize_exactly(hook):
    pod = guaranteed_pod()
    pod["metadata"]["annotations"][CPU_CONVERSION_ANNOTATION] = "exact"
    old = admitted(hook, pod)
    assert cpu_of(old, "checkout", "requests") == c(2000) == 1740
    new = with_cpu(with_cpu(old, "checkout", "requests", "3"), "checkout", "limits", "3")
    result = patched(resize_review(old, new), hook.review(resize_review(old, new)))
    assert cpu_of(result, "checkout", "requests") == cpu_of(result, "checkout", "limits") == 2609


def test_a_pod_the_webhook_did_not_normalize_is_left_alone(hook):
    old = running(admission_pod(), NODE)  # created before the namespace opted in
    new = with_cpu(old, "checkout", "requests", "1")
    response = hook.review(resize_review(old, new))
    assert response["allowed"] is True and "patch" not in response


def test_a_bad_quantity_in_a_resize_is_denied_clearly(hook):
    old = admitted(hook)
    response = hook.review(resize_review(old, with_cpu(old, "checkout", "requests", "lots")))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "checkout" in response["status"]["message"]


def test_a_resize_review_without_old_object_is_a_bad_request(hook):
    old = admitted(hook)
    review = resize_review(old, old)
    del review["request"]["oldObject"]
    reply = hook.client.post("/webhook/mutate", data=json.dumps(review).encode())
    assert reply.status_code == 400
    assert "oldObject" in reply.get_json()["error"]


def test_ordinary_pod_updates_are_not_touched(hook):
    old = admitted(hook)
    review = resize_review(old, with_cpu(old, "checkout", "requests", "1"))
    del review["request"]["subResource"]
    response = hook.review(review)
    assert response["allowed"] is True and "patch" not in response


def test_a_dry_run_resize_gets_the_same_answer(hook):
    old = admitted(hook)
    new = with_cpu(old, "checkout", "requests", "1")
    wet = hook.review(resize_review(old, new))
    dry = hook.review(resize_review(old, new, dryRun=True))
    assert dry["patch"] == wet["patch"]


# -- the SCU record stays true ------------------------------------------------------------


def test_scu_values_follow_the_record_until_a_resize_makes_it_stale(hook):
    old = admitted(hook)
    assert scu_values(old) == {
        ("containers", "checkout", "requests"): 1500,
        ("containers", "checkout", "limits"): 2000,
        ("initContainers", "istio-proxy", "requests"): 100,
        ("initContainers", "istio-proxy", "limits"): 2000,
    }
    new = with_cpu(old, "checkout", "requests", "1")
    after = patched(resize_review(old, new), hook.review(resize_review(old, new)))
    # the annotation still says 1500m (a resize cannot change it) ...
    record = orjson.loads(after["metadata"]["annotations"][STANDARD_RESOURCES_ANNOTATION])
    assert record["containers"]["checkout"]["requests"] == {"cpu": "1500m"}
    # ... but it no longer explains 870m, so the SCU read from the pod is 870 * 1.15
    values = scu_values(after)
    assert values[("containers", "checkout", "requests")] == math.floor(870 * F) == 1000
    assert values[("containers", "checkout", "limits")] == 2000  # still the record


@pytest.mark.parametrize(
    ("scu", "physical", "factor", "expected"),
    [
        (1500, 1305, "1.15", True),  # exact: ceil(1500 / 1.15)
        (1500, 1306, "1.15", True),  # a limit one above its request
        (1500, 1304, "1.15", False),  # less than was asked: not ours
        (2000, 2000, "1.15", True),  # whole cores of 1740m
        (2000, 3000, "1.15", False),  # a resize to 3 cores
        (1000, 870, "1.15", True),
        (1000, 1000, "1", True),
        (1000, 2000, "1", False),
    ],
)
def test_explains(scu, physical, factor, expected):
    assert explains(scu, physical, Fraction(factor)) is expected


# -- property: a valid resize stays valid ---------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(FACTORS))
def test_property_a_valid_resize_in_scu_gives_a_valid_pod_of_the_same_qos(data, factor):
    scu_pod = data.draw(valid_pods())
    scu_pod["spec"].pop("resources", None)  # pods with pod-level resources cannot be resized
    changes = data.draw(resized_values(scu_pod))
    resized_scu = set_values(scu_pod, changes)
    # the resize the user meant is valid in SCU and keeps the QoS class (else the API
    # server rejects it whatever the webhook does)
    assume(validation_errors(resized_scu) == [])
    assume(pod_qos(resized_scu) == pod_qos(scu_pod))

    old = rewrite(scu_pod, factor)  # as created through the webhook
    new = set_values(old, changes)  # the user's resize, in SCU, over the physical pod
    result = resize(old, new)
    after = new if result is None else jsonpatch.apply_patch(new, result.patch)
    assert validation_errors(after) == []
    assert pod_qos(after) == pod_qos(old)
    f = Fraction(factor)
    for (section, index, kind), scu in changes.items():
        got = to_millis(after["spec"][section][index]["resources"][kind]["cpu"])
        before = to_millis(old["spec"][section][index]["resources"][kind]["cpu"])
        if got != before or result is None:
            assert got >= math.ceil(scu / f)


# -- any value anywhere in a resize review gets an answer, never an internal error ---------


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _replaced(doc: Any, path: tuple, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


ODD_VALUES = st.sampled_from(
    [None, True, 0, -1, 1.5, "", "x", "1e16", "-1", "nan", [], {}, [1], {"a": 1}, "1Ki"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=ODD_VALUES, which=st.sampled_from(["object", "oldObject"]))
def test_any_value_anywhere_in_a_resize_gets_an_answer_not_an_internal_error(
    hook, data, value, which
):
    old = admitted(hook)
    review = resize_review(old, with_cpu(old, "checkout", "requests", "1"))
    path = data.draw(st.sampled_from(_paths(review["request"][which])))
    review["request"][which] = _replaced(review["request"][which], path, value)
    reply = hook.client.post("/webhook/mutate", data=json.dumps(review).encode())
    assert reply.status_code in (200, 400), reply.data
    assert b"Traceback" not in reply.data
    if reply.status_code == 200:
        response = reply.get_json()["response"]
        assert response.get("status", {}).get("code") != 500, (which, path, value, response)


# -- a container resize under a pod-level request the resize does not change -------------


def _one(name: str, cpu: str) -> dict[str, Any]:
    return {"name": name, "image": "x", "resources": {"requests": {"cpu": cpu}}}


@pytest.mark.parametrize(
    ("containers", "pod_request", "factor", "resized", "expected"),
    [
        # 1.18: pod level 3 SCU is 2543m (the containers take 848 + 848 + 424 = 2120m).
        # The third resized to 1 SCU is ceil(1000 / 1.18) = 848m, 2544m in all: 1m over
        # the pod's request, refused by the API server. It gets 847m.
        (["1", "1", "500m"], "3", "1.18", {2: 1000}, {2: 847}),
        # Two resized together: the last set gives the millicore back first.
        (["1", "500m", "500m"], "3", "1.18", {1: 1000, 2: 1000}, {1: 848, 2: 847}),
        # Room to spare under the pod's request: exact, nothing trimmed.
        (["1", "500m"], "3", "1.18", {1: 1000}, {1: 848}),
    ],
)
def test_a_container_resize_stays_within_a_pod_level_request(
    containers, pod_request, factor, resized, expected
):
    scu_pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [_one(f"c{i}", cpu) for i, cpu in enumerate(containers)],
            "resources": {"requests": {"cpu": pod_request}},
        },
    }
    old = rewrite(scu_pod, factor)
    new = set_values(old, {("containers", i, "requests"): m for i, m in resized.items()})
    result = resize(old, new)
    assert result is not None
    after = jsonpatch.apply_patch(new, result.patch)
    assert validation_errors(after) == []
    for i, millis in expected.items():
        assert to_millis(after["spec"]["containers"][i]["resources"]["requests"]["cpu"]) == millis
    assert after["spec"]["resources"] == old["spec"]["resources"]  # not the resize's to change


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(FACTORS))
def test_property_a_container_resize_under_pod_level_resources_stays_valid(data, factor):
    scu_pod = data.draw(valid_pods())
    assume("resources" in scu_pod["spec"])
    changes = data.draw(resized_values(scu_pod))
    resized_scu = set_values(scu_pod, changes)
    assume(validation_errors(resized_scu) == [])
    assume(pod_qos(resized_scu) == pod_qos(scu_pod))

    old = rewrite(scu_pod, factor)
    new = set_values(old, changes)
    result = resize(old, new)
    after = new if result is None else jsonpatch.apply_patch(new, result.patch)
    assert validation_errors(after) == []
    assert pod_qos(after) == pod_qos(old)
    f = Fraction(factor)
    for (section, index, kind), scu in changes.items():
        got = to_millis(after["spec"][section][index]["resources"][kind]["cpu"])
        assert got >= math.floor(scu / f)  # at most the trimmed millicore below ceil
