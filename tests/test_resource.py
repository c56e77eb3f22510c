"""A MachineCatalog object in, a catalog and a ``status`` out (machine_catalog.resource)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from support.helpers import CATALOG_A, CATALOG_B

from machine_catalog.catalog import Catalog
from machine_catalog.loading import parse_catalog
from machine_catalog.resource import (
    MAX_LISTED_NODES,
    CatalogStatus,
    catalog_from_resource,
    catalog_status,
    manifest_from_resource,
)
from machine_catalog.validation import CatalogInvalid

NOW = "2026-05-01T10:00:00Z"
LATER = "2026-05-01T10:05:00Z"


def resource(text: str = CATALOG_A, generation: int = 3, **meta: Any) -> dict[str, Any]:
    """The object as the API server returns it, with the fields servers and tools add."""
    obj = yaml.safe_load(text)
    obj["metadata"].update(
        uid="6f1c0e7e-8f1a-4a57-9d0e-5c1f1e1d2a3b",
        resourceVersion="4711",
        generation=generation,
        creationTimestamp="2026-04-30T08:00:00Z",
        managedFields=[{"manager": "kubectl-client-side-apply", "operation": "Update"}],
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
        **meta,
    )
    obj["status"] = {"observedGeneration": 1}
    return obj


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


BASE = {"node.kubernetes.io/instance-type": "n2-standard-8"}
M6I = {"node.kubernetes.io/instance-type": "m6i.2xlarge"}
SPR = {"feature.node.kubernetes.io/cpu-model.vendor_id": "Intel"}
NODES = [
    node("gke-1", **BASE),
    node("gke-2", **BASE),
    node("eks-1", **M6I),
    node("aks-1", **{"node.kubernetes.io/instance-type": "Standard_D8s_v5"}),
    node("metal-1", **SPR),
    node("both-1", **BASE, **SPR),  # base by type, spr by selector: ambiguous
]


def test_server_fields_do_not_change_the_hash() -> None:
    """A resource made from a catalog file serves the same version as the file: moving
    from the ConfigMap to the resource keeps name@hash, the one recorded on pods."""
    from_file = parse_catalog(CATALOG_A)
    from_api = catalog_from_resource(resource(labels={"team": "infra"}))
    assert from_api.version == from_file.version
    assert from_api.source == "machinecatalog/hardening"


def test_an_invalid_spec_raises_with_every_error() -> None:
    obj = resource(CATALOG_A.replace("scuPerCore: 1.18", "scuPerCore: 1.1234567"))
    obj["spec"]["baseline"] = "nope"
    with pytest.raises(CatalogInvalid) as err:
        catalog_from_resource(obj)
    paths = {e.path for e in err.value.errors}
    assert paths == {"spec.families[1].scuPerCore", "spec.baseline"}
    assert err.value.source == "machinecatalog/hardening"


def test_manifest_from_resource_is_what_kubectl_apply_takes() -> None:
    obj = resource(labels={"team": "infra"})
    obj["metadata"]["annotations"]["owner"] = "infra@example.com"
    manifest = manifest_from_resource(obj)
    assert manifest == {
        "apiVersion": "machine-catalog.io/v1alpha1",
        "kind": "MachineCatalog",
        "metadata": {
            "name": "hardening",
            "labels": {"team": "infra"},
            "annotations": {"owner": "infra@example.com"},
        },
        "spec": obj["spec"],
    }
    assert manifest_from_resource(obj, {"x": 1})["spec"] == {"x": 1}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


A = parse_catalog(CATALOG_A)
B = parse_catalog(CATALOG_B)
INVALID = CATALOG_A.replace("scuPerCore: 1.18", "scuPerCore: 1.1234567")


@pytest.mark.parametrize(
    ("spec", "served", "accepted", "ready"),
    [
        (CATALOG_A, A, ("True", "Valid"), ("True", "Served")),
        (CATALOG_A, B, ("True", "Valid"), ("False", "Loading")),
        (CATALOG_A, None, ("True", "Valid"), ("False", "NotLoaded")),
        (INVALID, A, ("False", "Invalid"), ("False", "Invalid")),
        (INVALID, None, ("False", "Invalid"), ("False", "NotLoaded")),
    ],
    ids=["served", "loading", "not-loaded", "refused-keeps-last-good", "refused-nothing-loaded"],
)
def test_accepted_and_ready(
    spec: str, served: Catalog | None, accepted: tuple[str, str], ready: tuple[str, str]
) -> None:
    status = catalog_status(resource(spec), served, NODES, NOW)
    assert conditions(status)["Accepted"] == accepted
    assert conditions(status)["Ready"] == ready
    assert status["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["catalogHash"] == (served.hash if served else "")
    CatalogStatus.model_validate(status)  # the shape the CRD's status schema describes


def test_a_refused_spec_says_what_is_wrong_and_what_is_served() -> None:
    status = catalog_status(resource(INVALID), A, NODES, NOW)
    (accepted,) = [c for c in status["conditions"] if c["type"] == "Accepted"]
    assert "spec.families[1].scuPerCore: at most 6 decimal places" in accepted["message"]
    assert f"serving {A.version}, the last good catalog" in accepted["message"]


def test_nodes_per_family_unknown_and_ambiguous() -> None:
    status = catalog_status(resource(), A, NODES, NOW)
    assert {f["name"]: f["nodes"] for f in status["families"]} == {"base": 2, "m6i": 1, "spr": 1}
    assert status["matchedNodes"] == 4
    assert status["familyCount"] == 3
    assert (status["unknownNodeCount"], status["unknownNodes"]) == (1, ["aks-1"])
    assert status["ambiguousNodes"] == [{"name": "both-1", "families": ["base", "spr"]}]
    (matched,) = [c for c in status["conditions"] if c["type"] == "NodesMatched"]
    assert (matched["status"], matched["reason"]) == ("False", "AmbiguousNodes")
    assert "both-1 (base, spr)" in matched["message"]


@pytest.mark.parametrize(
    ("nodes", "reason", "words"),
    [
        (NODES[:3], "AllMatched", "every node belongs to exactly one family"),
        (NODES[:4], "UnknownNodes", "1 nodes match no family and take no normalized pod"),
    ],
)
def test_nodes_matched_condition(nodes: list[dict], reason: str, words: str) -> None:
    status = catalog_status(resource(), A, nodes, NOW)
    (matched,) = [c for c in status["conditions"] if c["type"] == "NodesMatched"]
    assert matched["reason"] == reason
    assert words in matched["message"]


def test_lists_are_capped_and_counts_are_not() -> None:
    many = [
        node(f"t3-{i:03}", **{"node.kubernetes.io/instance-type": "t3.medium"}) for i in range(50)
    ]
    status = catalog_status(resource(), A, many, NOW)
    assert status["unknownNodeCount"] == 50
    assert status["unknownNodes"] == [f"t3-{i:03}" for i in range(MAX_LISTED_NODES)]


def test_last_transition_time_moves_only_when_the_status_does() -> None:
    first = catalog_status(resource(), A, NODES[:3], NOW)
    again = catalog_status(resource(generation=4), A, NODES, LATER, previous=first)
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert times == {"Accepted": NOW, "Ready": NOW, "NodesMatched": LATER}
    assert copy.deepcopy(again) == again
