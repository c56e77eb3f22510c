"""A second look at a pod the webhook already normalized: pure functions, no I/O.

The webhook is installed with ``reinvocationPolicy: IfNeeded``: when a webhook that runs
after ours changes the pod (a sidecar injector adds a container, a policy webhook adds a
nodeSelector, the VPA admission controller sets requests), the API server calls us once
more with the changed pod. Such a pod carries our four annotations, and
``machine-catalog.io/standard-resources`` (the *SCU record*) says what every CPU value we
converted was in SCU. This module works out what the second call must change, so that the
pod that is stored is normalized throughout and its record is true.

How each CPU value of the reinvoked pod is read (a value is identified by its section,
``containers`` / ``initContainers`` / pod-level ``resources``, its container name and its
kind, ``requests`` / ``limits``):

- **a container absent from the record is new** (added after us, typically a sidecar):
  its values are SCU, as the user's were, and are converted on the pinned family with the
  factor recorded in ``machine-catalog.io/scu-per-core`` (the one every other value of the
  pod was converted with). The record gains the container.
- **a recorded value that still equals what we wrote** is ours: unchanged. "What we wrote"
  is worked out by the rule that wrote it, :func:`extender.admission.converting.convert`
  over the recorded SCU values, not ``ceil(scu / factor)``: whole cores for a whole request
  (a Guaranteed pod's ``2`` SCU on a 1.3 family is ``2``, not ``1539m``) and a limit kept
  above its request are ours too. Both readings, exact and whole cores, are accepted
  (unless the pod opted out, ``machine-catalog.io/cpu-conversion: exact``): whether the
  first call gave whole cores depended on the pod's QoS class *then*, and a container a
  sidecar injector adds after us usually makes the pod Burstable *now*.
- **a recorded container whose value differs from what we wrote, or that gained a kind we
  did not record**, was changed after us by another webhook. The one that does this in
  practice is the VPA admission controller, whose recommendations are measured usage in
  physical cores: the value is kept as physical millicores (converting it again would
  apply the factor twice) and the record is rewritten to its SCU equivalent
  ``floor(physical * factor)``, with a warning.
- a recorded value that is gone is dropped from the record.
- pod-level ``spec.resources`` CPU that is recorded is ours whatever its value (it is
  rounded so that it stays at least the sum of the containers', not value by value); one
  that is not recorded is SCU, like a new container's.

A container that had no CPU value at all when we first saw it is not in the record, so a
CPU value a later webhook gives it is read as SCU (as a new container's). VPA does that
for containers without requests; the documented advice is to let VPA control memory only
in opted-in namespaces (docs/operations.md, "Other admission plugins and webhooks").

The pin is checked too: the family label in ``spec.nodeSelector`` (the pin once the family
is labelled), or else every required node-affinity term still carrying one of the
family's terms. A later webhook that dropped the pin, replaced the affinity or ORed in a
term of its own gets the family back (a term without the pin would let the pod escape its
family, whose factor its requests were converted with): as the nodeSelector entry if the
family is labelled now, ANDed into the terms that lost it if not. Whether the
pod's node rules still leave a node of the family is a question about nodes, answered by
the caller (:mod:`extender.admission.webhook`), which denies the pod if none is left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson

from extender.admission.converting import CPU_CONVERSION_ANNOTATION, EXACT, convert
from extender.admission.patching import (
    FAMILY_LABEL,
    REQUIRED,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
    CpuValue,
    Op,
    escape,
    pin_terms,
    pinning_ops,
    selector_pin_ops,
    selector_pinned,
    standard_resources_annotation,
)
from machine_catalog.matching import family_label_term, family_selector_terms
from machine_catalog.model import Family
from machine_catalog.quantities import (
    QuantityError,
    format_millis,
    physical_to_scu_millis,
    scu_to_physical_millis,
    to_millis,
)

Key = tuple[str, str | None, str]  # section, container (None: pod level), kind


@dataclass(frozen=True, slots=True)
class Second:
    """What a reinvocation changes: JSON patch operations and warnings for the user."""

    ops: tuple[Op, ...]
    warnings: tuple[str, ...]


def recorded_factor(annotations: Mapping[str, Any]) -> Fraction:
    """The factor the pod's values were converted with (``was_normalized`` checked it)."""
    return Fraction(Decimal(str(annotations[SCU_PER_CORE_ANNOTATION])))


def read_record(annotations: Mapping[str, Any]) -> tuple[dict[Key, int], set[tuple[str, str]]]:
    """The SCU record as {(section, container, kind): SCU millis}, and the recorded
    containers as (section, name). Entries that are not quantities are left out: they
    cannot be what we wrote, so the values they stand for are treated as new."""
    doc = orjson.loads(annotations[STANDARD_RESOURCES_ANNOTATION])
    values: dict[Key, int] = {}
    containers: set[tuple[str, str]] = set()

    def take(section: str, name: str | None, entry: Any) -> None:
        if not isinstance(entry, dict):
            return
        if name is not None:
            containers.add((section, name))
        for kind, resources in entry.items():
            if isinstance(resources, dict) and "cpu" in resources:
                try:
                    values[(section, name, kind)] = to_millis(resources["cpu"])
                except QuantityError:
                    continue

    for section in ("containers", "initContainers"):
        by_name = doc.get(section) if isinstance(doc, dict) else None
        if isinstance(by_name, dict):
            for name, entry in by_name.items():
                take(section, name, entry)
    if isinstance(doc, dict) and "pod" in doc:
        take("pod", None, doc["pod"])
    return values, containers


def _where(v: CpuValue) -> str:
    who = "pod spec.resources" if v.container is None else f"{v.section[:-1]} {v.container}"
    return f"{who} {v.kind[:-1]} cpu"


def written_by_us(
    values: Sequence[CpuValue],
    record: Mapping[Key, int],
    factor: Fraction,
    *,
    whole_cores_possible: bool = True,
) -> dict[str, frozenset[int]]:
    """Per pointer of a recorded container value, the physical millis the first call could
    have written for it: :func:`convert` over the recorded SCU values, exact and (when
    ``whole_cores_possible``) with whole cores. Container values only: each is converted
    from its own container's values, so the containers added since do not matter."""
    recorded = [
        CpuValue(v.section, v.container, v.kind, v.pointer, scu, v.index, v.sidecar)
        for v in values
        if v.section != "pod" and (scu := record.get((v.section, v.container, v.kind))) is not None
    ]
    out: dict[str, set[int]] = {}
    for whole in (False, True) if whole_cores_possible else (False,):
        for pointer, millis in convert(recorded, factor, whole_cores=whole).items():
            out.setdefault(pointer, set()).add(millis)
    return {pointer: frozenset(millis) for pointer, millis in out.items()}


def reconcile_cpu(
    values: Sequence[CpuValue],
    record: Mapping[Key, int],
    recorded_containers: set[tuple[str, str]],
    factor: Fraction,
    family: str,
    *,
    whole_cores_possible: bool = True,
) -> tuple[list[Op], list[CpuValue], list[str]]:
    """Ops for the CPU values, the new record (as CpuValues in SCU) and warnings."""
    ours = written_by_us(values, record, factor, whole_cores_possible=whole_cores_possible)
    ops: list[Op] = []
    new_record: list[CpuValue] = []
    warnings: list[str] = []
    for v in values:  # v.scu_millis holds the value as it is on the pod now
        key = (v.section, v.container, v.kind)
        known = v.section == "pod" and any(k[0] == "pod" for k in record)
        known = known or (v.section, v.container) in recorded_containers
        if not known:
            physical = scu_to_physical_millis(v.scu_millis, factor)
            ops.append({"op": "replace", "path": v.pointer, "value": format_millis(physical)})
            new_record.append(v)
            continue
        scu = record.get(key)
        if scu is not None and (v.section == "pod" or v.scu_millis in ours.get(v.pointer, ())):
            # Pod-level values are not rounded one by one (they must stay at least the sum
            # of the containers'), so "what we wrote" is not ceil(scu / factor) there; and
            # no webhook in use sets them after us. A recorded one is ours.
            new_record.append(CpuValue(v.section, v.container, v.kind, v.pointer, scu))
            continue
        scu = physical_to_scu_millis(v.scu_millis, factor)
        new_record.append(CpuValue(v.section, v.container, v.kind, v.pointer, scu))
        # Short: a warning is cut at 120 characters.
        warnings.append(
            f"{_where(v)} {format_millis(v.scu_millis)} set after us (VPA?): kept as physical, "
            f"recorded as {format_millis(scu)} SCU"
        )
    return ops, new_record, warnings


def _canonical(expressions: Any) -> frozenset[tuple[str, str, tuple[str, ...]]]:
    out = set()
    for e in expressions if isinstance(expressions, list) else ():
        if isinstance(e, dict):
            values = e.get("values") or []
            out.add((str(e.get("key")), str(e.get("operator")), tuple(map(str, values))))
    return frozenset(out)


def _has_pin(term: Mapping[str, Any], family_terms: Sequence[frozenset[Any]]) -> bool:
    expressions = _canonical(term.get("matchExpressions"))
    return any(ft <= expressions for ft in family_terms)


def repin_ops(
    spec: Mapping[str, Any], family: Family, *, beta: bool = True, labelled: bool = False
) -> list[Op]:
    """Ops that put the family back where the pin was lost; [] if it holds.

    The family label in the nodeSelector pins whatever the affinity says (kube-scheduler
    ANDs the two). Otherwise every required term must carry a family term: one recognized
    with or without the beta instance-type term (the first call wrote it only if a node
    needed it then), or the family label's (pods admitted before the pin moved to the
    nodeSelector). An empty term (it selects no node) is left alone, as
    :func:`patching.pin_terms` does. A lost pin comes back as :func:`pinning_ops` writes
    one now: the nodeSelector entry if ``labelled``, the family ANDed into the terms that
    lost it if not (its beta term only when ``beta``).
    """
    if selector_pinned(spec, family):
        return []
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = node_affinity.get(REQUIRED) if isinstance(node_affinity, dict) else None
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(terms, list) or not terms:
        return pinning_ops(spec, family, beta=beta, labelled=labelled)
    family_terms = [
        _canonical(t) for t in (*family_selector_terms(family), family_label_term(family))
    ]
    if not all(isinstance(term, dict) for term in terms):
        # malformed: the API server says so
        return pinning_ops(spec, family, beta=beta, labelled=labelled)

    def holds(term: Mapping[str, Any]) -> bool:
        empty = not term.get("matchExpressions") and not term.get("matchFields")
        return empty or _has_pin(term, family_terms)

    if all(holds(term) for term in terms):
        return []
    if labelled:  # one nodeSelector entry pins every term
        return selector_pin_ops(spec, family)
    new_terms: list[Any] = []
    for term in terms:
        new_terms.extend([term] if holds(term) else pin_terms([term], family, beta=beta))
    path = f"/spec/affinity/nodeAffinity/{REQUIRED}/nodeSelectorTerms"
    return [{"op": "replace", "path": path, "value": new_terms}]


def second_look(
    pod: Mapping[str, Any],
    annotations: Mapping[str, Any],
    values: Sequence[CpuValue],
    family: Family,
    *,
    beta: bool = True,
    labelled: bool = False,
) -> Second:
    """Everything a reinvocation changes on ``pod`` (see the module docstring); ``beta`` and
    ``labelled`` as for :func:`extender.admission.patching.normalize_ops`."""
    factor = recorded_factor(annotations)
    record, containers = read_record(annotations)
    opted_out = str(annotations.get(CPU_CONVERSION_ANNOTATION, "")).strip().lower() == EXACT
    ops, new_record, warnings = reconcile_cpu(
        values, record, containers, factor, family.name, whole_cores_possible=not opted_out
    )
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    ops += repin_ops(spec, family, beta=beta, labelled=labelled)
    text = standard_resources_annotation(new_record)
    if orjson.loads(text) != orjson.loads(annotations[STANDARD_RESOURCES_ANNOTATION]):
        path = f"/metadata/annotations/{escape(STANDARD_RESOURCES_ANNOTATION)}"
        ops.append({"op": "replace", "path": path, "value": text})
    return Second(ops=tuple(ops), warnings=tuple(warnings))


def without_pin(spec: Mapping[str, Any], family: Family) -> dict[str, Any]:
    """``spec`` with the family's pin taken out of its required terms: the node rules the
    pod had before the webhook (used to ask which family it would get now).

    The nodeSelector loses the family label if it names this family (the nodeSelector
    goes if that was all of it). Each term loses the expressions of the family term it
    carries; terms that become the same are merged; if every term was only the pin, the
    required affinity goes. Terms without the pin are kept as they are. A family the user
    named is not lost this way: the webhook records it (``family-source: user``), and the
    caller keeps it as a restriction.
    """
    out = dict(spec)
    if selector_pinned(spec, family):
        selector = {k: v for k, v in spec["nodeSelector"].items() if k != FAMILY_LABEL}
        if selector:
            out["nodeSelector"] = selector
        else:
            del out["nodeSelector"]
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, dict) else None
    required = node_affinity.get(REQUIRED) if isinstance(node_affinity, dict) else None
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(terms, list):
        return out
    family_terms = [
        _canonical(t) for t in (*family_selector_terms(family), family_label_term(family))
    ]
    kept: list[dict[str, Any]] = []
    for term in terms:
        if not isinstance(term, dict):
            return out
        expressions = term.get("matchExpressions")
        present = _canonical(expressions)
        pin = next((ft for ft in family_terms if ft <= present), None)
        if pin is not None:
            rest = [
                e
                for e in expressions  # type: ignore[union-attr]
                if not isinstance(e, dict) or next(iter(_canonical([e]))) not in pin
            ]
            term = {**term, "matchExpressions": rest}
            if not rest:
                del term["matchExpressions"]
        if term and term not in kept:
            kept.append(term)
    new_affinity = dict(affinity)  # type: ignore[arg-type]
    new_node_affinity = dict(node_affinity)  # type: ignore[arg-type]
    if kept:
        new_node_affinity[REQUIRED] = {**required, "nodeSelectorTerms": kept}  # type: ignore[dict-item]
    else:
        new_node_affinity.pop(REQUIRED, None)
    new_affinity["nodeAffinity"] = new_node_affinity
    out["affinity"] = new_affinity
    return out
