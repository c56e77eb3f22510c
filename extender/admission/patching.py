"""The rewrite of one pod, as an RFC 6902 JSON patch: pure functions, no I/O.

The API server applies the patch to the object it sent, so every operation is written
against exactly that object: ``replace`` only where a value exists, ``add`` on the deepest
parent that exists (an ``add`` under a missing parent fails the whole admission), and
keys escaped per RFC 6901 (``machine-catalog.io/family`` is ``machine-catalog.io~1family``).

What changes:

- every CPU request and limit of ``containers`` and ``initContainers`` (restartable
  sidecars included), and of pod-level ``spec.resources``, becomes physical millicores:
  ``ceil(scu_millis / scuPerCore)``, raised where the API server's validation needs it
  (pod-level requests cover the containers' aggregate, limits stay above requests) and
  whole cores for whole requests of Guaranteed pods (static CPU manager), all in
  :mod:`extender.admission.converting`. ``request <= limit``, ``request == limit`` and
  ``request < limit`` survive, so the QoS class never changes. Memory, other resources,
  ``ephemeralContainers`` and ``spec.overhead`` (set by RuntimeClass admission, in
  physical units) are not touched;
- the pod is pinned to the family. Once every node of the family carries the family
  label (``labelled``; the leader keeps it, :mod:`extender.loops.labelling`), the pin is
  one ``spec.nodeSelector`` entry, ``machine-catalog.io/family: <name>``: kube-scheduler
  ANDs a nodeSelector with the pod's own affinity, and checks it per node with a plain
  label lookup, where a node-affinity term costs a field-set allocation per node in its
  Filter (``LazyErrorNodeSelector.Match``), which the throughput benchmark measured as a
  gap to the hand-pinned pod's one-label nodeSelector. Until then the pin is a required
  node affinity: the family's ORed terms are ANDed into *every* existing required term (a
  cross product), never appended as a new OR branch, which would let the pod escape its
  own constraints. The term for the deprecated beta instance-type label is there only
  when the cluster has a node that only it selects (``beta``), so ordinary pods draw no
  deprecation warning;
- ``spec.schedulerName`` (only when asked to, see :mod:`extender.admission.webhook`);
- four annotations that record the decision (see :func:`standard_resources_annotation`),
  and a fifth, ``machine-catalog.io/family-source: user``, when the user named the family
  (in the family annotation, or the family label in the nodeSelector).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from extender.admission.converting import CpuValue, convert, keeps_whole_cores
from machine_catalog.annotations import (
    CATALOG_ANNOTATION,
    FAMILY_ANNOTATION,
    FAMILY_LABEL,
    FAMILY_SOURCE_ANNOTATION,
    FAMILY_SOURCE_USER,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
)
from machine_catalog.matching import family_selector_terms
from machine_catalog.model import Family
from machine_catalog.quantities import QuantityError, format_millis, to_millis
from machine_catalog.resources import is_sidecar

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
DEFAULT_SCHEDULER = "default-scheduler"

#: Container lists whose CPU is rewritten, with their key in the standard-resources JSON.
SECTIONS = ("containers", "initContainers")
KINDS = ("requests", "limits")

Op = dict[str, Any]


class PatchError(ValueError):
    """The pod cannot be rewritten (a CPU value that is not a quantity); shown to the user."""


def escape(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901): ``~`` -> ``~0``, then ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PatchError(f"{where} must be an object")
    return value


def _read(
    resources: Any,
    where: str,
    base: str,
    section: str,
    container: str | None,
    index: int = 0,
    sidecar: bool = False,
) -> list[CpuValue]:
    out = []
    resources = _mapping(resources, where)
    for kind in KINDS:
        values = _mapping(resources.get(kind), f"{where}.{kind}")
        if "cpu" not in values:
            continue
        try:
            millis = to_millis(values["cpu"])
        except QuantityError as exc:
            raise PatchError(f"{where}.{kind}.cpu: {exc}") from None
        out.append(CpuValue(section, container, kind, f"{base}/{kind}/cpu", millis, index, sidecar))
    return out


def read_cpu_values(pod: Mapping[str, Any]) -> tuple[CpuValue, ...]:
    """Every CPU request/limit of the pod, parsed; a bad one is denied naming its container."""
    spec = _mapping(pod.get("spec"), "spec")
    values: list[CpuValue] = []
    for section in SECTIONS:
        containers = spec.get(section) or []
        if not isinstance(containers, list):
            raise PatchError(f"spec.{section} must be a list")
        for i, container in enumerate(containers):
            if not isinstance(container, dict):
                raise PatchError(f"spec.{section}[{i}] must be an object")
            name = container.get("name")
            name = name if isinstance(name, str) and name else f"#{i}"
            values += _read(
                container.get("resources"),
                f"{section[:-1]} {name[:63]}: resources",
                f"/spec/{section}/{i}/resources",
                section,
                name,
                i,
                section == "initContainers" and is_sidecar(container),
            )
    values += _read(spec.get("resources"), "pod spec.resources", "/spec/resources", "pod", None)
    return tuple(values)


def standard_resources_annotation(values: Sequence[CpuValue]) -> str:
    """Compact JSON of what the user asked for, in SCU, so the original stays readable.

    Shape: ``{"containers": {NAME: {"requests": {"cpu": Q}, "limits": {"cpu": Q}}},
    "initContainers": {NAME: ...}, "pod": {"requests": {"cpu": Q}, "limits": {"cpu": Q}}}``
    where ``Q`` is the SCU quantity in canonical form (``"2"``, ``"1500m"``). Only CPU is
    recorded (memory is never rewritten); a section, container or kind without a CPU value
    is omitted, so a pod without any CPU value gets ``{}``.
    """
    doc: dict[str, Any] = {}
    for v in values:
        if v.section == "pod":
            target = doc.setdefault("pod", {})
        else:
            target = doc.setdefault(v.section, {}).setdefault(v.container, {})
        target.setdefault(v.kind, {})["cpu"] = format_millis(v.scu_millis)
    return orjson.dumps(doc).decode()


def cpu_ops(values: Sequence[CpuValue], family: Family, *, whole_cores: bool = False) -> list[Op]:
    physical = convert(values, family.factor, whole_cores=whole_cores)
    return [
        {"op": "replace", "path": v.pointer, "value": format_millis(physical[v.pointer])}
        for v in values
    ]


def pin_terms(
    existing: Sequence[Mapping[str, Any]],
    family: Family,
    *,
    beta: bool = True,
) -> list[dict[str, Any]]:
    """Each existing required term ANDed with each family term (their cross product).

    ``(A or B) and (F1 or F2)`` = ``A&F1 or A&F2 or B&F1 or B&F2``: match expressions are
    concatenated, ``matchFields`` (DaemonSet pods' node name) and any other key are kept.
    ``beta``: include the beta instance-type term (see :func:`family_selector_terms`).
    """
    family_terms = family_selector_terms(family, beta=beta)
    out = []
    for term in existing:
        expressions = list(term.get("matchExpressions") or [])
        if not expressions and not term.get("matchFields"):
            # An empty term selects no node; ANDing rules into it would make it select the
            # family's nodes. Keep it as it is: it still selects nothing.
            out.append(dict(term))
            continue
        for extra in family_terms:
            new = dict(term)
            new["matchExpressions"] = expressions + extra
            out.append(new)
    return out


def selector_pinned(spec: Mapping[str, Any], family: Family) -> bool:
    """The nodeSelector names ``family``'s label: the pod is pinned whatever its affinity."""
    selector = spec.get("nodeSelector")
    return isinstance(selector, dict) and selector.get(FAMILY_LABEL) == family.name


def selector_pin_ops(spec: Mapping[str, Any], family: Family) -> list[Op]:
    """Require the family label in ``spec.nodeSelector`` (the pin once the family is
    labelled). ``add`` on an existing member replaces it; placement already checked that a
    value the user wrote there is this family's, so it never changes a user's choice."""
    if selector_pinned(spec, family):
        return []
    if not isinstance(spec.get("nodeSelector"), dict):
        return [{"op": "add", "path": "/spec/nodeSelector", "value": {FAMILY_LABEL: family.name}}]
    return [
        {"op": "add", "path": f"/spec/nodeSelector/{escape(FAMILY_LABEL)}", "value": family.name}
    ]


def affinity_pin_ops(spec: Mapping[str, Any], family: Family, *, beta: bool = True) -> list[Op]:
    """Require the family's nodes by their match rules in the required node affinity,
    creating only the missing part of the affinity tree."""
    fresh = [{"matchExpressions": t} for t in family_selector_terms(family, beta=beta)]
    required: dict[str, Any] = {"nodeSelectorTerms": fresh}
    affinity = spec.get("affinity")
    if not isinstance(affinity, dict):
        return [
            {"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": {REQUIRED: required}}}
        ]
    node_affinity = affinity.get("nodeAffinity")
    if not isinstance(node_affinity, dict):
        return [{"op": "add", "path": "/spec/affinity/nodeAffinity", "value": {REQUIRED: required}}]
    base = f"/spec/affinity/nodeAffinity/{REQUIRED}"
    current = node_affinity.get(REQUIRED)
    if not isinstance(current, dict):
        return [{"op": "add", "path": base, "value": required}]
    terms = current.get("nodeSelectorTerms")
    if not isinstance(terms, list):
        return [{"op": "add", "path": f"{base}/nodeSelectorTerms", "value": fresh}]
    return [
        {
            "op": "replace",
            "path": f"{base}/nodeSelectorTerms",
            "value": pin_terms(terms, family, beta=beta),
        }
    ]


def pinning_ops(
    spec: Mapping[str, Any], family: Family, *, beta: bool = True, labelled: bool = False
) -> list[Op]:
    """Require the family's nodes: by the family label's nodeSelector once every node of
    the family carries it (``labelled``), by their match rules in the affinity until then."""
    if labelled:
        return selector_pin_ops(spec, family)
    return affinity_pin_ops(spec, family, beta=beta)


def annotation_ops(pod: Mapping[str, Any], annotations: Mapping[str, str]) -> list[Op]:
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": dict(annotations)}}]
    if not isinstance(metadata.get("annotations"), dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(annotations)}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{escape(k)}", "value": v}
        for k, v in annotations.items()
    ]


def scheduler_ops(spec: Mapping[str, Any], scheduler_name: str | None) -> list[Op]:
    """Point the pod at ``scheduler_name`` only if it asked for the default scheduler."""
    if not scheduler_name or spec.get("schedulerName") not in (None, "", DEFAULT_SCHEDULER):
        return []
    if spec.get("schedulerName") == scheduler_name:
        return []
    return [{"op": "add", "path": "/spec/schedulerName", "value": scheduler_name}]


def normalize_ops(
    pod: Mapping[str, Any],
    values: Sequence[CpuValue],
    family: Family,
    catalog_version: str,
    scheduler_name: str | None = None,
    *,
    beta: bool = True,
    labelled: bool = False,
) -> list[Op]:
    """The whole rewrite of ``pod`` for ``family`` (``values`` from :func:`read_cpu_values`).

    ``beta``: pin with the beta instance-type term too; the webhook passes whether the
    cluster has a node of the family that only the beta label selects (the API server
    warns about every pod that names the deprecated label). ``labelled``: every node of
    the family carries the family label, so the pin is that label in the nodeSelector.
    """
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    annotations = {
        FAMILY_ANNOTATION: family.name,
        SCU_PER_CORE_ANNOTATION: str(family.scu_per_core),
        STANDARD_RESOURCES_ANNOTATION: standard_resources_annotation(values),
        CATALOG_ANNOTATION: catalog_version,
    }
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    own = metadata.get("annotations") if isinstance(metadata.get("annotations"), dict) else {}
    selector = spec.get("nodeSelector")
    if FAMILY_ANNOTATION in own or (isinstance(selector, dict) and FAMILY_LABEL in selector):
        # The user named the family (placement checked it is this one): say so, since our
        # own family annotation replaces theirs, and our nodeSelector pin is theirs to the
        # letter (see machine_catalog.annotations).
        annotations[FAMILY_SOURCE_ANNOTATION] = FAMILY_SOURCE_USER
    return (
        cpu_ops(values, family, whole_cores=keeps_whole_cores(pod))
        + pinning_ops(spec, family, beta=beta, labelled=labelled)
        + scheduler_ops(spec, scheduler_name)
        + annotation_ops(pod, annotations)
    )


def was_normalized(annotations: Mapping[str, Any]) -> bool:
    """The pod carries the webhook's four annotations, each well formed: leave it alone.

    A bare ``machine-catalog.io/family`` is not enough: anyone can write one on a new pod,
    and trusting it would let a pod skip normalization onto any family. Forging all four
    consistently only gets what the ``normalize: disabled`` label gives anyway.
    """
    family = annotations.get(FAMILY_ANNOTATION)
    factor = annotations.get(SCU_PER_CORE_ANNOTATION)
    standard = annotations.get(STANDARD_RESOURCES_ANNOTATION)
    catalog = annotations.get(CATALOG_ANNOTATION)
    if not all(isinstance(v, str) and v for v in (family, factor, standard, catalog)):
        return False
    try:
        if not Decimal(factor) > 0:  # type: ignore[arg-type]
            return False
        parsed = orjson.loads(standard)  # type: ignore[arg-type]
    except (InvalidOperation, orjson.JSONDecodeError):
        return False
    return isinstance(parsed, dict) and "@" in catalog  # type: ignore[operator]
