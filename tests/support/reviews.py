"""A webhook under test through the real Flask app, for admission tests of any module.

Shared here (not in a test module) so no test imports another.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jsonpatch

from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.catalog import Catalog
from machine_catalog.loading import CatalogSource, load_catalog
from machine_catalog.matching import INSTANCE_TYPE_LABEL
from support.helpers import admission_review

DEFAULT_CATALOG = load_catalog()


def labelled_node(name: str, instance_type: str, cpu: str = "8") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {INSTANCE_TYPE_LABEL: instance_type}},
        "spec": {},
        "status": {"allocatable": {"cpu": cpu}, "capacity": {"cpu": cpu}},
    }


class Hook:
    """The app's webhook route over a cache holding ``nodes`` (and ``pods``)."""

    def __init__(
        self,
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]] = (),
        catalog: Catalog = DEFAULT_CATALOG,
        scheduler_name: str | None = "machine-catalog",
    ) -> None:
        self.cluster = ClusterState(catalog)
        self.cluster.replace(list(nodes), list(pods))
        runtime = Runtime(
            catalogs=CatalogSource(initial=catalog),
            cluster=self.cluster,
            settings=Settings(scheduler_name=scheduler_name),
        )
        self.client = create_app(runtime).test_client()

    def review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """POST a review, check the envelope, return its ``response``."""
        reply = self.client.post(
            "/webhook/mutate", data=json.dumps(review).encode(), content_type="application/json"
        )
        assert reply.status_code == 200, reply.data
        response = reply.get_json()["response"]
        assert response["uid"] == review["request"]["uid"]
        assert ("patch" in response) == ("patchType" in response)
        for warning in response.get("warnings", []):
            assert 0 < len(warning) <= 120
        return response


def create_review(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A pod CREATE review (the real ReplicaSet fixture's envelope) for ``pod``."""
    return admission_review(copy.deepcopy(dict(pod)), uid=str(uuid.uuid4()))


def patched(review: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """The review's object with the response's patch applied (unchanged without one)."""
    obj = copy.deepcopy(review["request"]["object"])
    if "patch" not in response:
        return obj
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    return jsonpatch.JsonPatch(ops).apply(obj)


def running(pod: Mapping[str, Any], node: str, name: str = "checkout-5d8f7b9c4-x2x9z") -> dict:
    """``pod`` (as admitted) as the API server holds it once bound and running: name, uid,
    nodeName, status with QoS class and container statuses reporting their resources."""
    pod = copy.deepcopy(dict(pod))
    pod["metadata"]["name"] = name
    pod["metadata"]["uid"] = str(uuid.uuid4())
    pod["metadata"]["resourceVersion"] = "48213"
    pod["spec"]["nodeName"] = node
    statuses = []
    for section, key in (
        ("containers", "containerStatuses"),
        ("initContainers", "initContainerStatuses"),
    ):
        entries = []
        for c in pod["spec"].get(section, []):
            res = c.get("resources") or {}
            entries.append(
                {
                    "name": c["name"],
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": "2026-11-29T08:00:00Z"}},
                    "allocatedResources": dict(res.get("requests") or {}),
                    "resources": copy.deepcopy(res),
                }
            )
        statuses.append((key, entries))
    pod["status"] = {
        "phase": "Running",
        "qosClass": "Burstable",
        "conditions": [{"type": "Ready", "status": "True"}],
        **{key: entries for key, entries in statuses if entries},
    }
    return pod


def resize_review(old: Mapping[str, Any], new: Mapping[str, Any], **request: Any) -> dict:
    """The AdmissionReview the API server sends for ``kubectl patch pod --subresource
    resize``: an UPDATE of subresource ``resize`` with the whole pod before and after."""
    meta = old["metadata"]
    body = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": "resize",
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "requestSubResource": "resize",
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "operation": "UPDATE",
        "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "object": copy.deepcopy(dict(new)),
        "oldObject": copy.deepcopy(dict(old)),
        "dryRun": False,
        "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
        **request,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}
