"""One pod's whole journey through the real app, as docs/design.md tells it.

Admission (the webhook picks a family and rewrites CPU) -> the API server applies the patch
-> kube-scheduler asks the extender to filter and prioritize -> the pod binds and the
cache sees it -> the next pods see less room, pending pods count, and a full family sends
new pods to the next one. Finally the reason this exists: the HPA's utilisation of the
same work is the same on every family.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import uuid
from fractions import Fraction
from typing import Any

import jsonpatch
import pytest

from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource, parse_catalog
from machine_catalog.matching import INSTANCE_TYPE_LABEL
from machine_catalog.quantities import to_millis

CATALOG = parse_catalog(
    """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: e2e}
spec:
  baseline: std
  families:
    - {name: old, scuPerCore: 0.8, instanceTypes: [old.2xlarge]}
    - {name: std, scuPerCore: 1.0, instanceTypes: [std.2xlarge]}
    - {name: new, scuPerCore: 1.35, instanceTypes: [new.2xlarge]}
    - {name: gone, scuPerCore: 0.7, schedulable: false, instanceTypes: [gone.2xlarge]}
"""
)
FAMILY_OF = {
    "old": "old.2xlarge",
    "std": "std.2xlarge",
    "new": "new.2xlarge",
    "gone": "gone.2xlarge",
}


def node(name: str, family: str, cpu: str = "8") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {INSTANCE_TYPE_LABEL: FAMILY_OF[family], "kubernetes.io/hostname": name},
        },
        "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"}},
    }


NODES = [
    node("old-a", "old"),
    node("old-b", "old"),
    node("std-a", "std"),
    node("new-a", "new"),
    node("gone-a", "gone"),
]
NAMES = [n["metadata"]["name"] for n in NODES]


class Cluster:
    """The app with a cache we feed like the watch would."""

    def __init__(self) -> None:
        self.state = ClusterState(CATALOG)
        self.state.replace(NODES, [])
        runtime = Runtime(
            catalogs=CatalogSource(initial=CATALOG),
            cluster=self.state,
            settings=Settings(scheduler_name="machine-catalog"),
        )
        self.client = create_app(runtime).test_client()

    def post(self, path: str, body: Any) -> Any:
        reply = self.client.post(path, data=json.dumps(body), content_type="application/json")
        assert reply.status_code == 200, reply.data
        return reply.get_json()

    def admit(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The API server's side of admission: send the review, apply the patch."""
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
            },
        }
        response = self.post("/webhook/mutate", review)["response"]
        assert response["allowed"], response
        ops = json.loads(base64.b64decode(response["patch"]))
        return jsonpatch.JsonPatch(ops).apply(copy.deepcopy(pod))

    def filter(self, pod: dict[str, Any]) -> dict[str, Any]:
        return self.post("/scheduler/filter", {"Pod": pod, "Nodes": None, "NodeNames": NAMES})

    def prioritize(self, pod: dict[str, Any], names: list[str]) -> dict[str, int]:
        body = {"Pod": pod, "Nodes": None, "NodeNames": names}
        return {h["Host"]: h["Score"] for h in self.post("/scheduler/prioritize", body)}

    def bind(self, pod: dict[str, Any], node_name: str, n: int) -> None:
        bound = copy.deepcopy(pod)
        bound["metadata"].update(name=f"web-{n}", uid=f"uid-{n}")
        bound["spec"]["nodeName"] = node_name
        bound["status"] = {"phase": "Running"}
        self.state.apply("Pod", "ADDED", bound)


def web_pod(scu: str = "2", exact: bool = True) -> dict[str, Any]:
    """A Guaranteed web pod; ``exact`` opts it out of whole-core rounding (the HPA then
    sees the same utilisation everywhere, see test_whole_cores_trade_hpa_equivalence)."""
    annotations = {"machine-catalog.io/cpu-conversion": "exact"} if exact else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9c5b8f4-",
            "namespace": "shop",
            "labels": {"app": "web"},
            "annotations": annotations,
        },
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [
                {
                    "name": "app",
                    "image": "nginx",
                    "resources": {
                        "requests": {"cpu": scu, "memory": "1Gi"},
                        "limits": {"cpu": scu, "memory": "1Gi"},
                    },
                }
            ],
        },
    }


def family_factor(family: str) -> Fraction:
    return CATALOG.by_name[family].factor


def test_one_pod_from_admission_to_binding() -> None:
    cluster = Cluster()
    pod = cluster.admit(web_pod("2"))

    # The webhook chose the family with the most free SCU: old has 2 x 8 x 0.8 = 12.8,
    # std 8, new 10.8; gone is retired.
    family = pod["metadata"]["annotations"]["machine-catalog.io/family"]
    assert family == "old"
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "2500m"  # 2 / 0.8
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2500m"
    assert pod["spec"]["schedulerName"] == "machine-catalog"

    verdict = cluster.filter(pod)
    assert verdict["Error"] == ""
    assert verdict["NodeNames"] == ["old-a", "old-b"]
    assert set(verdict["FailedAndUnresolvableNodes"]) == {"std-a", "new-a", "gone-a"}
    assert "pinned to family old" in verdict["FailedAndUnresolvableNodes"]["new-a"]
    assert verdict["FailedNodes"] == {}

    # Bind three pods to old-a: 7.5 of its 8 vCPUs are taken.
    for n in range(3):
        cluster.bind(pod, "old-a", n)
    scores = cluster.prioritize(pod, ["old-a", "old-b"])
    # balanced = floor(10 * free after placing / capacity), in SCU or vCPU alike.
    assert scores == {"old-a": 0, "old-b": math.floor(10 * (8000 - 2500) / 8000)}
    verdict = cluster.filter(pod)
    assert verdict["NodeNames"] == ["old-b"]
    assert verdict["FailedNodes"] == {}  # see filtering.py: preemption never resolves ours
    assert verdict["FailedAndUnresolvableNodes"]["old-a"].startswith(
        "needs 2 SCU (2500m on family old"
    )


def test_a_full_family_sends_new_pods_to_the_next_one_counting_pending_pods() -> None:
    cluster = Cluster()
    first = cluster.admit(web_pod("2"))
    assert first["metadata"]["annotations"]["machine-catalog.io/family"] == "old"

    # Four admitted pods of old wait unbound (2500m each = 8 SCU of old's 12.8): the
    # webhook counts them, so old now has 4.8 SCU left and new (10.8) wins.
    for n in range(4):
        pending = copy.deepcopy(first)
        pending["metadata"].update(name=f"pending-{n}", uid=f"pending-{n}")
        cluster.state.apply("Pod", "ADDED", pending)
    second = cluster.admit(web_pod("2"))
    assert second["metadata"]["annotations"]["machine-catalog.io/family"] == "new"
    assert second["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1482m"  # 2/1.35
    assert cluster.filter(second)["NodeNames"] == ["new-a"]


@pytest.mark.parametrize("family", ["old", "std", "new"])
def test_the_hpa_sees_the_same_utilisation_on_every_family(family: str) -> None:
    """Same work, any family: usage / request is the same (to within one millicore's rounding).

    The work of one replica is 1.2 SCU-seconds per second; on a family of factor f it burns
    1.2 / f vCPU-seconds per second, and its request is ceil(2 SCU / f) millicores.
    """
    cluster = Cluster()
    pod = web_pod("2")
    pod["metadata"]["annotations"]["machine-catalog.io/families"] = family
    admitted = cluster.admit(pod)
    assert admitted["metadata"]["annotations"]["machine-catalog.io/family"] == family
    request = to_millis(admitted["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    usage = Fraction(1200) / family_factor(family)
    utilisation = usage / request
    assert abs(utilisation - Fraction(60, 100)) < Fraction(1, 1000)  # 60% of 2 SCU everywhere
    # Without normalization the same 2-vCPU request would read 1.2 / f / 2: 75% on old,
    # 44% on new -- the HPA's average hides the hot old replicas.
    assert abs(usage / 2000 - Fraction(60, 100)) > Fraction(5, 100) or family == "std"


def test_whole_cores_trade_hpa_equivalence_for_exclusive_cores() -> None:
    """Without the opt-out a Guaranteed ``cpu: 2`` keeps whole cores for the static CPU
    manager: 2 / 0.8 = 2.5 -> 3 cores on old, so the same work reads 50% there, not 60%."""
    cluster = Cluster()
    pod = web_pod("2", exact=False)
    pod["metadata"]["annotations"]["machine-catalog.io/families"] = "old"
    admitted = cluster.admit(pod)
    resources = admitted["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "3"
    usage = Fraction(1200) / family_factor("old")
    assert usage / 3000 == Fraction(1, 2)
