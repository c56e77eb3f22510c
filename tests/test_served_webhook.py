"""The issue-11 webhook behaviours through a real ``machine-catalog serve --snapshot``
(gunicorn on loopback): pod-level resources, a Guaranteed whole-CPU pod, a mirror pod, a
DaemonSet pod on a node the catalog does not know, and an in-place resize.

Catalog A: m6i at 1.18 SCU/core; the Karpenter node (m7g.4xlarge) matches no family and
``unknownNodes: reject``.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import orjson
import pytest
from support.helpers import (
    CATALOG_A,
    EKS,
    KARPENTER,
    Served,
    admission_pod,
    ready,
    serve,
    write_snapshot,
)
from support.reviews import create_review, resize_review, running

from extender.admission.exemptions import MIRROR_ANNOTATION
from extender.admission.placement import FAMILIES_ANNOTATION


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served-webhook")
    catalog = tmp / "catalog.yaml"
    catalog.write_text(CATALOG_A)
    served = serve(
        tmp,
        "--catalog",
        str(catalog),
        "--snapshot",
        str(write_snapshot(tmp / "snapshot.json")),
    )
    try:
        ready(served)
        yield served
    finally:
        assert served.stop() == 0
        assert "Traceback" not in served.log_text()


def answer(server: Served, review: dict[str, Any]) -> dict[str, Any]:
    reply = server.post("/webhook/mutate", orjson.dumps(review))
    assert reply.status == 200, reply.body
    return reply.json()["response"]


def apply(review: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(review["request"]["object"])
    if "patch" not in response:
        return obj
    return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))


def on_m6i(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"]["annotations"][FAMILIES_ANNOTATION] = "m6i"
    return pod


def container(name: str, cpu: str, memory: str | None = None) -> dict[str, Any]:
    values = {"cpu": cpu} if memory is None else {"cpu": cpu, "memory": memory}
    return {"name": name, "image": "x", "resources": {"requests": values, "limits": dict(values)}}


def test_pod_level_resources_come_out_valid(server):
    pod = on_m6i(admission_pod())
    pod["spec"].pop("initContainers")
    pod["spec"]["containers"] = [
        {"name": n, "image": "x", "resources": {"requests": {"cpu": "1"}}} for n in "abc"
    ]
    pod["spec"]["resources"] = {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}
    review = create_review(pod)
    result = apply(review, answer(server, review))
    cpus = [c["resources"]["requests"]["cpu"] for c in result["spec"]["containers"]]
    assert cpus == ["848m"] * 3  # ceil(1000 / 1.18)
    # ceil(3000 / 1.18) = 2543m would be below the containers' 2544m: raised
    assert result["spec"]["resources"] == {"requests": {"cpu": "2544m"}, "limits": {"cpu": "2544m"}}


def test_a_guaranteed_whole_cpu_pod_keeps_whole_cores(server):
    pod = on_m6i(admission_pod())
    pod["spec"].pop("initContainers")
    pod["spec"]["containers"] = [container("app", "2", "1Gi")]
    review = create_review(pod)
    result = apply(review, answer(server, review))
    resources = result["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "2"  # not 1695m


def test_a_mirror_pod_is_admitted_as_it_is(server):
    pod = admission_pod()
    pod["metadata"]["annotations"][MIRROR_ANNOTATION] = "f3a1"
    pod["spec"]["nodeName"] = EKS
    response = answer(server, create_review(pod))
    assert response["allowed"] is True and "patch" not in response


def test_a_daemonset_pod_on_an_unknown_node_is_admitted_with_a_warning(server):
    pod = admission_pod()
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "name": "node-agent",
            "uid": "00000000-0000-4000-8000-0000000000ds",
            "controller": True,
        }
    ]
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": [KARPENTER]}
                        ]
                    }
                ]
            }
        }
    }
    response = answer(server, create_review(pod))
    assert response["allowed"] is True and "patch" not in response
    (warning,) = response["warnings"]
    assert "DaemonSet" in warning and KARPENTER[:20] in warning


def test_an_in_place_resize_is_converted(server):
    review = create_review(on_m6i(admission_pod()))
    old = running(apply(review, answer(server, review)), EKS)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1"  # 1 SCU
    response = answer(server, resize_review(old, new))
    assert response["allowed"] is True
    result = apply(resize_review(old, new), response)
    assert result["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "848m"
    assert (
        result["spec"]["containers"][0]["resources"]["limits"]
        == (old["spec"]["containers"][0]["resources"]["limits"])
    )
    audit = orjson.loads(response["auditAnnotations"]["standard-resources"])
    assert audit["containers"]["checkout"]["requests"] == {"cpu": "1"}
