"""``serve --catalog-resource NAME`` against the real API server: the catalog is a watched
MachineCatalog, hot-reloaded with keep-last-good, and the leader writes its status.

A server of its own (its own Lease, so it leads at once; the session server keeps the
session's Lease) serves ``e2e-live``: m5 as the baseline, m6i, and two families that both
claim the session's ``twin-ambiguous`` node. The session cluster's other nodes (real-world
fixtures, ``t3-unknown``) match none of them: the status must say so, with a reason.
"""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import eventually
from harness.server import Server
from kubernetes import client

CATALOGS = ("machine-catalog.io", "v1alpha1", "machinecatalogs")
NAME = "e2e-live"


def manifest(m6i: float = 1.18) -> dict:
    return {
        "apiVersion": "machine-catalog.io/v1alpha1",
        "kind": "MachineCatalog",
        "metadata": {"name": NAME},
        "spec": {
            "baseline": "m5",
            "families": [
                {"name": "m5", "scuPerCore": 1.0, "instanceTypes": ["m5.2xlarge"]},
                {"name": "m6i", "scuPerCore": m6i, "instanceTypes": ["m6i.2xlarge"]},
                {
                    "name": "pool-a",
                    "scuPerCore": 1.0,
                    "nodeSelector": {"matchLabels": {objects.TWIN_LABEL: "twin"}},
                },
                {
                    "name": "pool-b",
                    "scuPerCore": 1.0,
                    "nodeSelector": {"matchLabels": {objects.TWIN_LABEL: "twin"}},
                },
            ],
        },
    }


@pytest.fixture(scope="module")
def live(plane, crd, server, tmp_path_factory):
    custom = client.CustomObjectsApi(plane.api_client())
    custom.create_cluster_custom_object(*CATALOGS, manifest())
    srv = Server(
        plane,
        tmp_path_factory.mktemp("resource") / "unused.yaml",
        server.kubeconfig,
        name="mc-resource",
        catalog_resource=NAME,
        extra=("--lease-name", "mc-resource-test"),
    ).start()
    try:
        yield srv, custom
    finally:
        srv.stop()
        custom.delete_cluster_custom_object(*CATALOGS, NAME)


def stored(custom) -> dict:
    return custom.get_cluster_custom_object(*CATALOGS, NAME)


def condition(obj: dict, kind: str) -> dict:
    return next(c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind)


def test_the_leader_writes_status_that_kubectl_get_shows(plane, live):
    srv, custom = live
    assert srv.readyz()["catalog"]["name"] == NAME
    obj = eventually(
        lambda: stored(custom),
        lambda o: "status" in o and condition(o, "Ready")["status"] == "True",
        30,
        "the status written, Ready",
    )
    assert condition(obj, "Accepted")["reason"] == "Valid"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["catalogHash"] == srv.readyz()["catalog"]["hash"]
    # m5-a and m5-b are m5; the cordoned m6i node is still an m6i node.
    per_family = {f["name"]: f["nodes"] for f in obj["status"]["families"]}
    assert per_family["m5"] >= 2 and per_family["m6i"] >= 1
    nodes = condition(obj, "NodesMatched")
    assert nodes["status"] == "False" and nodes["reason"] == "AmbiguousNodes"
    assert "twin-ambiguous" in nodes["message"] and "pool-a" in nodes["message"]
    assert obj["status"]["unknownNodeCount"] >= 1  # t3-unknown and the real-world fixtures
    assert "t3-unknown" in obj["status"]["unknownNodes"]
    table = plane.kubectl("get", "machinecatalogs", NAME).stdout
    assert "True" in table.splitlines()[1], table


def test_an_edit_is_served_and_a_deletion_keeps_the_last_good_catalog(plane, live):
    srv, custom = live
    before = srv.readyz()["catalog"]["hash"]
    plane.kubectl(
        "apply", "-f", "-", input=json.dumps(manifest(m6i=1.2))
    )  # a valid edit: hot-reloaded
    after = eventually(
        lambda: srv.readyz()["catalog"]["hash"], lambda h: h != before, 30, "the edit served"
    )
    eventually(
        lambda: stored(custom),
        lambda o: o.get("status", {}).get("catalogHash") == after,
        30,
        "status follows the edit",
    )
    # A bad edit never reaches the server: the API server refuses it.
    bad = manifest()
    bad["spec"]["families"][1]["scuPerCore"] = 0
    refused = plane.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "scuPerCore" in refused.stderr
    assert srv.readyz()["catalog"]["hash"] == after
    # Deleted: the server keeps serving the last good catalog and says why.
    custom.delete_cluster_custom_object(*CATALOGS, NAME)
    detail = eventually(
        srv.readyz, lambda r: r["catalog"]["lastReloadError"] is not None, 30, "deletion seen"
    )
    assert detail["catalog"]["hash"] == after and detail["status"] == "ready"
    assert "does not exist" in json.dumps(detail["catalog"]["lastReloadError"])
    # Back again: served and the error clears.
    custom.create_cluster_custom_object(*CATALOGS, manifest(m6i=1.2))
    eventually(
        srv.readyz, lambda r: r["catalog"]["lastReloadError"] is None, 30, "the object is back"
    )
