"""What a catalog change does: to the families, and to every node of a fleet.

A factor edit is a one-line diff in git, but it resizes every pod on that family at its
next admission and changes every node's SCU capacity. Reviewers need the consequence, not
the line: which nodes change family or capacity, and what the fleet holds before and
after. Everything here is pure (catalogs and node dicts in, dataclasses out); the CLI
reads the files and prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from machine_catalog.catalog import Catalog
from machine_catalog.matching import MatchStatus
from machine_catalog.model import Family
from machine_catalog.quantities import QuantityError, physical_to_scu_millis
from machine_catalog.resources import node_allocatable_millis

# -- one node under one catalog ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """What one catalog makes of one node.

    ``scu_millis`` is the SCU the node offers under this catalog: allocatable CPU times the
    family's factor, rounded down as the extender counts it. An unknown node under
    ``unknownNodes: allow`` gets the baseline factor (the extender treats it as baseline).
    ``None`` when the catalog gives the node no SCU (unknown under ``reject``, ambiguous)
    or its allocatable CPU is not known. A retiring family (``schedulable: false``) keeps
    its capacity for the pods already there, but :attr:`schedulable` is False.
    """

    name: str
    instance_type: str | None
    status: MatchStatus
    families: tuple[str, ...]  # every family that claims the node (exactly one when matched)
    factor: Decimal | None
    schedulable: bool
    allocatable_millis: int | None  # None: labels only (explain --labels), or unparsable cpu
    scu_millis: int | None
    reason: str  # NodeMatch.describe(): one line a person can act on

    @property
    def family(self) -> str | None:
        return self.families[0] if self.status == "matched" else None

    def verdict(self) -> tuple[Any, ...]:
        """Everything that matters to scheduling; a node "changes" when this does."""
        return (self.status, self.families, self.factor, self.schedulable, self.scu_millis)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instanceType": self.instance_type,
            "status": self.status,
            "family": self.family,
            "families": list(self.families),
            "scuPerCore": _number(self.factor),
            "schedulable": self.schedulable,
            "allocatableMillis": self.allocatable_millis,
            "scuMillis": self.scu_millis,
            "reason": self.reason,
        }


def node_name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def node_labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def assess_labels(
    catalog: Catalog,
    labels: Mapping[str, str],
    *,
    name: str = "",
    allocatable_millis: int | None = None,
) -> NodeCapacity:
    """The catalog's verdict on a node given by its labels (and allocatable CPU, if known)."""
    match = catalog.match(labels)
    family = match.family
    factor: Decimal | None
    if family is not None:
        factor, schedulable = family.scu_per_core, family.schedulable
    elif match.status == "unknown" and catalog.unknown_nodes == "allow":
        factor, schedulable = catalog.baseline.scu_per_core, True
    else:
        factor, schedulable = None, False
    scu = None
    if factor is not None and allocatable_millis is not None:
        scu = physical_to_scu_millis(allocatable_millis, Fraction(factor))
    return NodeCapacity(
        name=name,
        instance_type=match.instance_type,
        status=match.status,
        families=tuple(f.name for f in match.families),
        factor=factor,
        schedulable=schedulable,
        allocatable_millis=allocatable_millis,
        scu_millis=scu,
        reason=match.describe(),
    )


def assess_node(catalog: Catalog, node: Mapping[str, Any]) -> NodeCapacity:
    """The catalog's verdict on a Node object, as the API server serves it."""
    try:
        allocatable: int | None = node_allocatable_millis(node)
    except QuantityError:
        allocatable = None
    return assess_labels(
        catalog, node_labels(node), name=node_name(node), allocatable_millis=allocatable
    )


# -- the catalogs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FactorChange:
    family: str
    old: Decimal
    new: Decimal

    @property
    def percent(self) -> float:
        """Relative change of the factor; pods on the family shrink by about as much."""
        return float((self.new - self.old) / self.old * 100)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """A setting that differs; ``family`` is None for catalog-wide settings.

    ``field`` is spelled as in the catalog file (``schedulable``, ``scoring.strategy``) and
    the values are its JSON form, so the CLI can print them and ``-o json`` can emit them.
    """

    family: str | None
    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class CatalogDiff:
    old_version: str
    new_version: str
    added: tuple[Family, ...]
    removed: tuple[Family, ...]
    factors: tuple[FactorChange, ...]
    fields: tuple[FieldChange, ...]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.factors or self.fields)


#: Family settings compared besides the factor, in the order a reviewer reads them.
_FAMILY_FIELDS = ("schedulable", "instanceTypes", "nodeSelector", "generation", "description")
#: Catalog-wide settings: (label, path into the JSON form of the document).
_CATALOG_FIELDS = (
    ("metadata.name", ("metadata", "name")),
    ("baseline", ("spec", "baseline")),
    ("unknownNodes", ("spec", "unknownNodes")),
    ("scoring.strategy", ("spec", "scoring", "strategy")),
    ("scoring.hotSpotUsage", ("spec", "scoring", "hotSpotUsage")),
    ("scoring.requestWeight", ("spec", "scoring", "requestWeight")),
    ("scoring.sampleIntervalSeconds", ("spec", "scoring", "sampleIntervalSeconds")),
    ("scoring.maxSampleAgeSeconds", ("spec", "scoring", "maxSampleAgeSeconds")),
)


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _family_json(family: Family) -> dict[str, Any]:
    data = family.model_dump(mode="json", by_alias=True)
    # Order of instance types carries no meaning; compare and show them as sets.
    data["instanceTypes"] = sorted(data["instanceTypes"])
    return data


def diff_catalogs(old: Catalog, new: Catalog) -> CatalogDiff:
    """Families added/removed, factors and settings changed (family order is ignored)."""
    old_doc = old.document.model_dump(mode="json", by_alias=True)
    new_doc = new.document.model_dump(mode="json", by_alias=True)
    fields = [
        FieldChange(None, label, _dig(old_doc, path), _dig(new_doc, path))
        for label, path in _CATALOG_FIELDS
        if _dig(old_doc, path) != _dig(new_doc, path)
    ]
    factors = []
    for family in new.families:
        before = old.by_name.get(family.name)
        if before is None:
            continue
        if before.scu_per_core != family.scu_per_core:
            factors.append(FactorChange(family.name, before.scu_per_core, family.scu_per_core))
        a, b = _family_json(before), _family_json(family)
        fields += [FieldChange(family.name, k, a[k], b[k]) for k in _FAMILY_FIELDS if a[k] != b[k]]
    return CatalogDiff(
        old_version=old.version,
        new_version=new.version,
        added=tuple(f for f in new.families if f.name not in old.by_name),
        removed=tuple(f for f in old.families if f.name not in new.by_name),
        factors=tuple(factors),
        fields=tuple(fields),
    )


# -- a fleet -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetTotals:
    """Node counts by verdict and SCU capacity of a fleet under one catalog."""

    nodes: int
    matched: int
    unknown: int
    ambiguous: int
    scu_millis: int  # every node with SCU, retiring families included
    schedulable_scu_millis: int  # only where new pods may go

    @classmethod
    def of(cls, capacities: Iterable[NodeCapacity]) -> FleetTotals:
        counts = {"matched": 0, "unknown": 0, "ambiguous": 0}
        total = schedulable = nodes = 0
        for cap in capacities:
            nodes += 1
            counts[cap.status] += 1
            total += cap.scu_millis or 0
            schedulable += (cap.scu_millis or 0) if cap.schedulable else 0
        return cls(
            nodes, counts["matched"], counts["unknown"], counts["ambiguous"], total, schedulable
        )


@dataclass(frozen=True, slots=True)
class NodeChange:
    before: NodeCapacity
    after: NodeCapacity

    @property
    def name(self) -> str:
        return self.after.name


@dataclass(frozen=True, slots=True)
class FleetDiff:
    changes: tuple[NodeChange, ...]
    before: FleetTotals
    after: FleetTotals


def diff_fleet(old: Catalog, new: Catalog, nodes: Iterable[Mapping[str, Any]]) -> FleetDiff:
    """Every node whose family, factor, schedulability or SCU capacity changes."""
    before, after, changes = [], [], []
    for node in nodes:
        a, b = assess_node(old, node), assess_node(new, node)
        before.append(a)
        after.append(b)
        if a.verdict() != b.verdict():
            changes.append(NodeChange(a, b))
    return FleetDiff(tuple(changes), FleetTotals.of(before), FleetTotals.of(after))


def _number(value: Decimal | None) -> float | int | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


__all__ = [
    "CatalogDiff",
    "FactorChange",
    "FieldChange",
    "FleetDiff",
    "FleetTotals",
    "NodeCapacity",
    "NodeChange",
    "assess_labels",
    "assess_node",
    "diff_catalogs",
    "diff_fleet",
    "node_labels",
    "node_name",
]


@dataclass(frozen=True, slots=True)
class StrandedNode:
    """A node a catalog change takes out of every family while pods still run on it."""

    name: str
    family: str
    pods: int


def stranded_nodes(fleet: FleetDiff, pods_per_node: Mapping[str, int]) -> list[StrandedNode]:
    """Nodes that belonged to a family before and to none after (the family removed, its
    instance type dropped) and still run pods: those pods keep requests converted for a
    factor the new catalog no longer has, and nothing new can join them. The safe order is
    to retire the family (``schedulable: false``), drain its nodes, then remove it."""
    out = []
    for change in fleet.changes:
        before, after = change.before, change.after
        running = pods_per_node.get(change.name, 0)
        if before.status == "matched" and after.status != "matched" and running:
            out.append(StrandedNode(change.name, before.families[0], running))
    return out
