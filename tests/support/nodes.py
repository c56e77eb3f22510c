"""Labelled nodes the placement and webhook tests run against.

The real-world fixture nodes plus, for every instance-type family of the packaged catalog,
one node with the GA instance-type label and one with only the beta label, and two nodes no
family claims.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machine_catalog.loading import load_catalog
from machine_catalog.matching import BETA_INSTANCE_TYPE_LABEL, INSTANCE_TYPE_LABEL
from support.helpers import fixture_nodes

CATALOG = load_catalog()
ZONE = "topology.kubernetes.io/zone"


def synthetic_nodes() -> list[dict[str, Any]]:
    """One node per instance-type family (GA label), one with only the beta label, and odd ones."""
    nodes = []
    for i, family in enumerate(CATALOG.families):
        if not family.instance_types:
            continue
        itype = sorted(family.instance_types)[0]
        nodes.append(node(f"{family.name}-ga", {INSTANCE_TYPE_LABEL: itype, ZONE: f"z{i % 3}"}))
        nodes.append(
            node(f"{family.name}-beta", {BETA_INSTANCE_TYPE_LABEL: itype, ZONE: f"z{(i + 1) % 3}"})
        )
    nodes.append(node("unknown-1", {INSTANCE_TYPE_LABEL: "x9.weird", ZONE: "z0"}))
    nodes.append(node("bare-1", {ZONE: "z1"}))
    return nodes


def node(name: str, labels: Mapping[str, str], cpu: str = "8", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": dict(spec),
        "status": {"allocatable": {"cpu": cpu, "memory": "32Gi"}},
    }


def all_nodes() -> list[dict[str, Any]]:
    return fixture_nodes() + synthetic_nodes()


def family_of(node_obj: Mapping[str, Any]) -> str | None:
    match = CATALOG.match(node_obj["metadata"].get("labels") or {})
    return match.family.name if match.family else None


NODES = all_nodes()
