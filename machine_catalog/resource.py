"""The catalog as a Kubernetes object: a ``MachineCatalog`` resource in, a catalog and a
``status`` out.

Pure functions, no client: ``serve`` (watching the resource) and the CLI (reading it once)
hand in the object as the API server returns it and write back what comes out.

- :func:`catalog_from_resource` turns the object into the :class:`~machine_catalog.catalog.
  Catalog` the core validates. Only ``metadata.name`` and ``spec`` count: the API server
  and tools add uid, resourceVersion, managedFields, ``kubectl.kubernetes.io/last-applied-
  configuration`` and more, and none of that may change the content hash (``name@hash``,
  recorded on every normalized pod). A catalog file with only a name in its metadata
  hashes the same as the resource made from it, so moving from the ConfigMap to the
  resource (docs/operations.md) keeps the version pods were normalized under.
- :func:`manifest_from_resource` is the object as a person would ``kubectl apply`` it.
- :func:`catalog_status` computes ``status``: conditions ``Accepted`` (the spec passed the
  full validation), ``Ready`` (this generation is what the server serves) and
  ``NodesMatched`` (every node is claimed by exactly one family), the hash being served,
  and per family the nodes it matched. The conditions follow ``metav1.Condition``:
  ``lastTransitionTime`` changes only when ``status`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from machine_catalog.catalog import Catalog
from machine_catalog.model import API_VERSION, KIND
from machine_catalog.validation import CatalogInvalid

GROUP = "machine-catalog.io"
VERSION = "v1alpha1"
PLURAL = "machinecatalogs"
SINGULAR = "machinecatalog"
LIST_KIND = "MachineCatalogList"

#: Node names listed in ``status`` per problem (the counts are exact): an object must stay
#: well under etcd's 1.5 MiB request limit at 5,000 nodes, and 20 names are enough to act on.
MAX_LISTED_NODES = 20
#: Errors quoted in the ``Accepted`` message; the rest are counted.
MAX_LISTED_ERRORS = 10


def source_of(obj: Mapping[str, Any]) -> str:
    """How the object is named in messages: ``machinecatalog/NAME``."""
    return f"{SINGULAR}/{(obj.get('metadata') or {}).get('name', '?')}"


def document_from_resource(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The catalog document of the object: apiVersion, kind, ``metadata.name``, spec."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", KIND),
        "metadata": {"name": meta.get("name")},
        "spec": obj.get("spec"),
    }


def catalog_from_resource(obj: Mapping[str, Any]) -> Catalog:
    """Validate the object's catalog; raise :class:`CatalogInvalid` with every error."""
    return Catalog.from_data(document_from_resource(obj), source_of(obj))


def manifest_from_resource(obj: Mapping[str, Any], spec: Any = None) -> dict[str, Any]:
    """The object as a manifest for ``kubectl apply``: name, labels, the annotations
    people write, and ``spec`` (``spec`` replaces it when given); no server fields."""
    meta = obj.get("metadata") or {}
    out_meta: dict[str, Any] = {"name": meta.get("name")}
    if meta.get("labels"):
        out_meta["labels"] = dict(meta["labels"])
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("kubectl.kubernetes.io/")
    }
    if annotations:
        out_meta["annotations"] = annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": out_meta,
        "spec": obj.get("spec") if spec is None else spec,
    }


# -- status ------------------------------------------------------------------------------


class _Status(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Status):
    """``metav1.Condition``: one aspect of the catalog's state."""

    type: str = Field(max_length=316, description="Accepted, Ready or NodesMatched.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024, description="One CamelCase word for programs, e.g. Invalid."
    )
    message: str = Field(default="", max_length=32768, description="What happened, for people.")
    observed_generation: int = Field(
        default=0, ge=0, description="metadata.generation the condition was computed for."
    )
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class FamilyNodes(_Status):
    name: str = Field(max_length=63, description="Family name.")
    nodes: int = Field(ge=0, description="Nodes that belong to this family and no other.")


class AmbiguousNode(_Status):
    name: str = Field(max_length=253, description="Node name.")
    families: list[str] = Field(
        max_length=64, description="The families that claim it (at least two)."
    )


class CatalogStatus(_Status):
    """What the server made of the catalog: accepted or not, served or not, and how it
    matches the cluster's nodes. Written by the serving leader."""

    observed_generation: int = Field(
        default=0, ge=0, description="metadata.generation of the spec this status describes."
    )
    catalog_hash: str = Field(
        default="",
        max_length=64,
        description=(
            "Content hash of the catalog the server serves (the last good one when this "
            "spec was refused); pods record name@hash in machine-catalog.io/catalog."
        ),
    )
    family_count: int = Field(default=0, ge=0, description="Families of the served catalog.")
    matched_nodes: int = Field(default=0, ge=0, description="Nodes that exactly one family claims.")
    unknown_node_count: int = Field(default=0, ge=0, description="Nodes no family claims.")
    ambiguous_node_count: int = Field(
        default=0, ge=0, description="Nodes two or more families claim."
    )
    families: list[FamilyNodes] = Field(
        default_factory=list, max_length=64, description="Nodes matched, per family."
    )
    unknown_nodes: list[str] = Field(
        default_factory=list,
        max_length=MAX_LISTED_NODES,
        description=f"Names of nodes no family claims (the first {MAX_LISTED_NODES}).",
    )
    ambiguous_nodes: list[AmbiguousNode] = Field(
        default_factory=list,
        max_length=MAX_LISTED_NODES,
        description=f"Nodes several families claim (the first {MAX_LISTED_NODES}).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Accepted, Ready and NodesMatched.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def _node_name_labels(node: Mapping[str, Any]) -> tuple[str, Mapping[str, str]]:
    meta = node.get("metadata") or {}
    return str(meta.get("name", "")), meta.get("labels") or {}


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _errors_message(exc: CatalogInvalid) -> str:
    errors = [str(e) for e in exc.errors]
    more = len(errors) - MAX_LISTED_ERRORS
    return "; ".join(errors[:MAX_LISTED_ERRORS]) + (f"; and {more} more" if more > 0 else "")


def catalog_status(
    obj: Mapping[str, Any],
    served: Catalog | None,
    nodes: Iterable[Mapping[str, Any]],
    now: str,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``status`` of a MachineCatalog object, as the body of a status update.

    ``obj`` is the object as the API server returns it; ``served`` the catalog the server
    serves now (the last good one when ``obj``'s spec is refused; None before any loaded);
    ``nodes`` the cluster's Node objects (only ``metadata.name`` and ``metadata.labels``
    are read); ``now`` an RFC 3339 time; ``previous`` the object's current status, whose
    ``lastTransitionTime`` is kept for every condition whose status did not change.
    """
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    try:
        wanted: Catalog | None = catalog_from_resource(obj)
        refused: CatalogInvalid | None = None
    except CatalogInvalid as exc:
        wanted, refused = None, exc

    conditions: list[tuple[str, ConditionStatus, str, str]] = []
    keeps = f"; serving {served.version}, the last good catalog" if served else ""
    if refused is not None:
        conditions.append(("Accepted", "False", "Invalid", f"{_errors_message(refused)}{keeps}"))
    else:
        assert wanted is not None
        conditions.append(("Accepted", "True", "Valid", f"catalog {wanted.version} is valid"))

    if served is None:
        conditions.append(("Ready", "False", "NotLoaded", "the server has loaded no catalog yet"))
    elif wanted is not None and served.hash == wanted.hash:
        conditions.append(("Ready", "True", "Served", f"serving {served.version}"))
    elif wanted is None:
        conditions.append(("Ready", "False", "Invalid", f"this spec was refused{keeps}"))
    else:
        conditions.append(
            (
                "Ready",
                "False",
                "Loading",
                f"serving {served.version}, not yet {wanted.version} of this spec",
            )
        )

    body = CatalogStatus(observed_generation=generation)
    if served is not None:
        counts = {f.name: 0 for f in served.families}
        unknown: list[str] = []
        ambiguous: list[AmbiguousNode] = []
        unknown_count = ambiguous_count = 0
        for node in nodes:
            node_name, labels = _node_name_labels(node)
            match = served.match(labels)
            if match.status == "matched":
                counts[match.families[0].name] += 1
            elif match.status == "unknown":
                unknown_count += 1
                unknown.append(node_name)
            else:
                ambiguous_count += 1
                families = [f.name for f in match.families]
                ambiguous.append(AmbiguousNode(name=node_name, families=families))
        unknown.sort()
        ambiguous.sort(key=lambda a: a.name)
        body = CatalogStatus(
            observed_generation=generation,
            catalog_hash=served.hash,
            family_count=len(served.families),
            matched_nodes=sum(counts.values()),
            unknown_node_count=unknown_count,
            ambiguous_node_count=ambiguous_count,
            families=[FamilyNodes(name=n, nodes=c) for n, c in counts.items()],
            unknown_nodes=unknown[:MAX_LISTED_NODES],
            ambiguous_nodes=ambiguous[:MAX_LISTED_NODES],
        )
        conditions.append(
            _nodes_condition(served, unknown, unknown_count, ambiguous, ambiguous_count)
        )
    else:
        conditions.append(("NodesMatched", "Unknown", "NotLoaded", "no catalog is served yet"))

    before = {
        c.get("type"): c for c in (previous or {}).get("conditions") or () if isinstance(c, Mapping)
    }
    out = []
    for kind, status, reason, message in conditions:
        old = before.get(kind)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        out.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message[:32768],
                observed_generation=generation,
                last_transition_time=since or now,
            )
        )
    body = body.model_copy(update={"conditions": out})
    return body.model_dump(mode="json", by_alias=True)


def _nodes_condition(
    served: Catalog,
    unknown: list[str],
    unknown_count: int,
    ambiguous: list[AmbiguousNode],
    ambiguous_count: int,
) -> tuple[str, ConditionStatus, str, str]:
    """``NodesMatched``: what only the cluster can tell about a valid catalog."""
    if ambiguous_count:
        claims = "; ".join(f"{a.name} ({', '.join(a.families)})" for a in ambiguous[:5])
        return (
            "NodesMatched",
            "False",
            "AmbiguousNodes",
            f"{ambiguous_count} nodes are claimed by several families and take no normalized "
            f"pod: {claims}; narrow the nodeSelectors or instanceTypes so one family claims "
            "each",
        )
    if unknown_count:
        effect = (
            "are scheduled as the baseline (unknownNodes: allow)"
            if served.unknown_nodes == "allow"
            else "take no normalized pod (unknownNodes: reject)"
        )
        return (
            "NodesMatched",
            "False",
            "UnknownNodes",
            f"{unknown_count} nodes match no family and {effect}: {_names(unknown)}; list "
            "their instance types in a family, or give a family a nodeSelector for them",
        )
    return ("NodesMatched", "True", "AllMatched", "every node belongs to exactly one family")


def status_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``status`` (the CRD's status schema is generated from it)."""
    return CatalogStatus.model_json_schema(by_alias=True)


__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "CatalogStatus",
    "catalog_from_resource",
    "catalog_status",
    "document_from_resource",
    "manifest_from_resource",
    "status_json_schema",
]
