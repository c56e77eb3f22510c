"""``machine-catalog report --kubeconfig`` against the real API server, and the same
numbers in the session server's ``/metrics``.

tencent-sa3 (1.15) gets two 8-vCPU nodes made for this test, rp-b cordoned, and pods bound
by ``nodeName``: normalized ones in an opted-in namespace, one that opted out with the
``machine-catalog.io/normalize: disabled`` label, and one created before its namespace
opted in. An unknown node is made too; twin-ambiguous is already in the cluster.
Every expected number is computed here from the pods as the API server holds them
(physical millicores times scuPerCore, rounded down), not read from the product.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

from harness import objects
from harness.kube import eventually, pod_manifest

FAMILY = "machine-catalog.io/family"
FACTOR = Fraction("1.15")  # tencent-sa3's scuPerCore in the packaged catalog
ALLOCATABLE = 8000  # millicores of each node


def scu(millis: int | Fraction) -> float:
    """Physical millicores as SCU, rounded down to a millicore of SCU (the report's rule)."""
    return int(millis * FACTOR) / 1000


def report(plane, server) -> dict:
    """``report --kubeconfig`` without ``--catalog``: it reads the catalog the cluster serves
    (the MachineCatalog of the ``served_catalog`` fixture) and says so."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "machine_catalog_cli",
            "report",
            "--kubeconfig",
            str(plane.kubeconfig),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    served = server.readyz()["catalog"]
    announced = f"(the cluster's), {served['name']}@{served['hash']}"
    assert announced in out.stderr.splitlines()[0], out.stderr
    return json.loads(out.stdout)


def physical(pod) -> int:
    return sum(objects.millis(c.resources.requests["cpu"]) for c in pod.spec.containers)


def test_report_of_a_live_cluster_counts_as_the_server_does(
    plane, api, server, kubelet, metrics_api, namespace, served_catalog
):
    objects.create_nodes(
        plane,
        [
            objects.node("rp-a", {objects.INSTANCE_TYPE: "SA3.2XLARGE16"}, "8"),
            objects.node("rp-b", {objects.INSTANCE_TYPE: "SA3.2XLARGE16"}, "8", unschedulable=True),
            objects.node("rp-unknown", {objects.INSTANCE_TYPE: "zz1.e2e-report"}, "4"),
        ],
    )
    server.wait_for_nodes(["rp-a", "rp-b", "rp-unknown"])
    # Normalized: asked in SCU, rewritten to tencent-sa3's vCPUs by the webhook.
    for name, cpu, node in [("n0", "2", "rp-a"), ("n1", "500m", "rp-a"), ("n2", "1", "rp-b")]:
        api.create_namespaced_pod(namespace, pod_manifest(name, cpu, nodeName=node))
    # Opted out: its 1 vCPU is physical, counts as requested, and is no problem.
    api.create_namespaced_pod(
        namespace,
        pod_manifest(
            "own", "1", labels={"machine-catalog.io/normalize": "disabled"}, nodeName="rp-a"
        ),
    )
    # Created before its namespace opted in: never normalized, listed as a problem.
    late = "report-late-opt-in"
    api.create_namespace({"metadata": {"name": late}})
    api.create_namespaced_pod(late, pod_manifest("early", "250m", nodeName="rp-a"))
    api.patch_namespace(late, {"metadata": {"labels": {"machine-catalog.io/normalize": "enabled"}}})

    pods = {p.metadata.name: p for p in api.list_namespaced_pod(namespace).items}
    for name in ("n0", "n1", "n2"):
        assert pods[name].metadata.annotations.get(FAMILY) == "tencent-sa3", name
    assert physical(pods["n0"]) < 2000  # 2 SCU on a 1.15 family: fewer vCPUs
    assert FAMILY not in (pods["own"].metadata.annotations or {})
    early = api.read_namespaced_pod("early", late)
    on_a = [pods["n0"], pods["n1"], pods["own"], early]
    requested = sum(physical(p) for p in on_a)

    n0_usage = {"namespace": namespace, "name": "n0", "containers": {"app": "1200m"}}
    metrics_api.publish(
        pods=[*metrics_api.current_pods(), n0_usage],
        nodes={
            **json.loads(metrics_api.data.read_text()).get("nodes", {}),
            "rp-a": "3000m",
            "rp-b": "1000m",  # cordoned: in no total
        },
    )

    result = report(plane, server)
    family = {f["name"]: f for f in result["families"]}["tencent-sa3"]
    expected = {
        "nodes": 2,
        "cordoned": 1,
        "capacityScu": scu(ALLOCATABLE),  # rp-a only: 9.2
        "requestedScu": scu(requested),  # n2 is on the cordoned node
        "freeScu": scu(ALLOCATABLE - requested),
        "largestFreeScu": scu(ALLOCATABLE - requested),
        "pendingPods": 0,
        "pendingScu": 0,
        "usageScu": scu(3000),
        "podUsageScu": scu(1200),
    }
    assert {k: family[k] for k in expected} == expected, family
    assert "rp-unknown" in result["unknownNodes"], result["unknownNodes"]
    assert "twin-ambiguous" in result["ambiguousNodes"], result["ambiguousNodes"]
    assert "rp-unknown" not in result["ambiguousNodes"]
    unknown = {p["name"]: p for p in result["problems"]["unknownNodes"]}["rp-unknown"]
    assert unknown["labels"] == {objects.INSTANCE_TYPE: "zz1.e2e-report"}
    not_normalized = {
        (p["namespace"], p["name"]): p["node"] for p in result["problems"]["notNormalizedPods"]
    }
    assert not_normalized.get((late, "early")) == "rp-a", not_normalized
    for name in ("n0", "n1", "n2", "own"):
        assert (namespace, name) not in not_normalized, name

    # The session server counts the same pool the same way (both workers: a scrape lands
    # on either, and each has its own cache fed by its own watch).
    gauges = {
        "machine_catalog_family_nodes": expected["nodes"],
        "machine_catalog_family_cordoned_nodes": expected["cordoned"],
        "machine_catalog_family_capacity_scu": expected["capacityScu"],
        "machine_catalog_family_requested_scu": expected["requestedScu"],
        "machine_catalog_family_free_scu": expected["freeScu"],
        "machine_catalog_family_largest_free_scu": expected["largestFreeScu"],
        "machine_catalog_family_pending_scu": expected["pendingScu"],
    }
    label = (("family", "tencent-sa3"),)
    streak = [0]

    def scrape() -> dict[str, float]:
        metrics = server.metrics()
        got = {name: metrics[(name, label)] for name in gauges}
        agree = all(abs(got[n] - want) < 1e-9 for n, want in gauges.items())
        streak[0] = streak[0] + 1 if agree else 0
        return got

    eventually(scrape, lambda _: streak[0] >= 6, 30, f"/metrics gauges equal to {gauges}")
