"""Pods the webhook never rewrites (mirror pods) or never denies (DaemonSet pods on nodes
the catalog cannot map), through the real webhook route."""

from __future__ import annotations

import copy

import pytest
from support.helpers import admission_pod
from support.reviews import Hook, create_review, labelled_node, patched

from extender.admission.exemptions import MIRROR_ANNOTATION, is_daemonset_pod
from extender.admission.patching import FAMILY_ANNOTATION

NODES = [
    labelled_node("known-1", "m6i.2xlarge"),  # aws-m6i, 1.15
    labelled_node("weird-1", "x9.weird"),  # no family; the default catalog rejects unknown
]

DAEMONSET = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "name": "node-agent",
    "uid": "6a7b8c9d-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}


def fixed_to(pod: dict, node: str) -> dict:
    """``pod`` placed the way the DaemonSet controller places its pods."""
    pod = copy.deepcopy(pod)
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            }
        }
    }
    return pod


def daemonset_pod(node: str) -> dict:
    pod = fixed_to(admission_pod(), node)
    pod["metadata"]["ownerReferences"] = [dict(DAEMONSET)]
    return pod


@pytest.fixture(scope="module")
def hook() -> Hook:
    return Hook(NODES)


def test_a_mirror_pod_is_never_mutated(hook):
    pod = admission_pod()
    pod["metadata"]["annotations"][MIRROR_ANNOTATION] = "3f1c0e9a0d5b4c6a"
    pod["spec"]["nodeName"] = "known-1"  # the API server requires it on a mirror pod
    review = create_review(pod)
    response = hook.review(review)
    assert response["allowed"] is True
    assert "patch" not in response and "warnings" not in response
    # even on a node the catalog does not know, even with forged machine-catalog annotations
    pod["spec"]["nodeName"] = "weird-1"
    pod["metadata"]["annotations"][FAMILY_ANNOTATION] = "no-such-family"
    response = hook.review(create_review(pod))
    assert response["allowed"] is True and "patch" not in response


def test_a_daemonset_pod_on_an_unknown_node_is_admitted_unchanged_with_a_warning(hook):
    review = create_review(daemonset_pod("weird-1"))
    response = hook.review(review)
    assert response["allowed"] is True
    assert "patch" not in response
    (warning,) = response["warnings"]
    assert "DaemonSet" in warning and "weird-1" in warning and "x9.weird" in warning
    assert patched(review, response) == review["request"]["object"]


def test_the_same_daemonset_pod_on_a_known_node_is_normalized(hook):
    review = create_review(daemonset_pod("known-1"))
    response = hook.review(review)
    assert response["allowed"] is True
    result = patched(review, response)
    assert result["metadata"]["annotations"][FAMILY_ANNOTATION] == "aws-m6i"
    assert result["spec"]["schedulerName"] == review["request"]["object"]["spec"].get(
        "schedulerName", "default-scheduler"
    )


@pytest.mark.parametrize(
    ("owner", "node", "why"),
    [
        # not a DaemonSet pod: unknownNodes: reject applies
        ({**DAEMONSET, "kind": "ReplicaSet"}, "weird-1", "unknown-node"),
        ({**DAEMONSET, "controller": False}, "weird-1", "unknown-node"),
        # a node the cache has not seen yet: denied, the controller retries
        (DAEMONSET, "joined-a-second-ago", "not in the cluster cache"),
    ],
)
def test_other_pods_on_unknown_nodes_are_still_denied(hook, owner, node, why):
    pod = fixed_to(admission_pod(), node)
    pod["metadata"]["ownerReferences"] = [owner]
    response = hook.review(create_review(pod))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    if why != "unknown-node":
        assert why in response["status"]["message"]
    else:
        assert "weird-1" in response["status"]["message"]


def test_a_daemonset_pod_not_fixed_to_a_node_is_not_exempt(hook):
    pod = admission_pod()
    pod["metadata"]["ownerReferences"] = [dict(DAEMONSET)]
    pod["spec"]["nodeSelector"] = {"node.kubernetes.io/instance-type": "x9.weird"}
    response = hook.review(create_review(pod))
    assert response["allowed"] is False


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        ([DAEMONSET], True),
        ([{**DAEMONSET, "apiVersion": "extensions/v1beta1"}], False),
        ([{**DAEMONSET, "controller": None}], False),
        ([{"kind": "ReplicaSet", "controller": True, "apiVersion": "apps/v1"}, DAEMONSET], True),
        ("not-a-list", False),
        (None, False),
    ],
)
def test_is_daemonset_pod(owners, expected):
    assert is_daemonset_pod({"metadata": {"ownerReferences": owners}}) is expected
