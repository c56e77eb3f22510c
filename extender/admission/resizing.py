"""In-place resize (``pods/resize``, GA in 1.35) of a normalized pod: pure functions, no I/O.

In an opted-in namespace a resize is written in SCU like the pod was
(``kubectl patch pod web --subresource resize -p '{"spec":{"containers":[{"name":"app",
"resources":{"requests":{"cpu":"3"}}}]}}'`` means 3 SCU). The API server sends the webhook
an ``UPDATE`` of subresource ``resize`` with the whole pod after the patch (``object``)
and before it (``oldObject``); the webhook answers with a JSON patch turning the changed
values into physical millicores of the pod's family.

**Which values are SCU.** A strategic-merge or JSON patch of one container leaves every
other value as it is in ``oldObject``, i.e. physical. So a CPU value *equal to the old
one* is left alone, and a value that differs (or is new) is the user's SCU, converted with
the same rules as at creation (:mod:`extender.admission.converting`: limits kept above requests,
whole cores for whole requests of Guaranteed pods unless opted out; unchanged values are
fixed and only read). The factor is the pod's own ``machine-catalog.io/scu-per-core``
annotation: the one its other values were converted with, even if the catalog has changed
since. One ambiguity is accepted: a new SCU value equal to the old physical value is
read as "unchanged" (the user can write it in another form, ``"1"`` versus ``"1000m"``,
only if the millis differ; they do not, so the value then stays as it is).

**What the resize can change, and the SCU record.** The resize strategy
(``pkg/registry/core/pod/strategy.go``, ``dropNonResizeUpdates``) keeps only the
containers' ``resources`` and ``resizePolicy`` (and pod-level ``resources`` behind the
``InPlacePodLevelResourcesVerticalScaling`` gate) and resets the metadata to the old
object's (``ResetObjectMetaForStatus``). Mutating admission runs before that, so a patch of
``machine-catalog.io/standard-resources`` would be accepted and then silently dropped. The
annotation therefore cannot follow a resize; instead it is defined to stay true:

- the SCU value of a CPU value is the recorded one while it still explains the physical
  value (``ceil(r / f) <= physical <= max(whole cores of it, ceil(r / f) + 1)``: what the
  webhook could have written for it), and ``floor(physical * f)`` (what the pod holds, in
  SCU) once a resize made it stale: :func:`scu_values`;
- every resize is recorded where it can be: the admission response carries the SCU values
  of the whole pod after the resize as the audit annotation
  ``pods.machine-catalog.io/standard-resources`` (in the API server's audit log), and a
  warning tells the user the values were converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import orjson

from extender.admission.converting import convert, keeps_whole_cores
from extender.admission.patching import (
    FAMILY_ANNOTATION,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
    CpuValue,
    Op,
    PatchError,
    read_cpu_values,
    standard_resources_annotation,
    was_normalized,
)
from machine_catalog.quantities import (
    QuantityError,
    format_millis,
    physical_to_scu_millis,
    scu_to_physical_millis,
    to_millis,
)

AUDIT_KEY = "standard-resources"

Key = tuple[str, str | None, str]  # section ("containers", "initContainers", "pod"), name, kind


@dataclass(frozen=True, slots=True)
class Resize:
    """The webhook's rewrite of one resize request."""

    patch: list[Op]
    converted: int  # CPU values converted from SCU
    family: str
    factor: Fraction
    standard: str  # the pod's SCU values after the resize (standard-resources JSON)


def is_resize(req: Mapping[str, Any]) -> bool:
    """An ``UPDATE`` of a pod's ``resize`` subresource."""
    kind = req.get("kind") if isinstance(req.get("kind"), dict) else {}
    return (
        req.get("operation") == "UPDATE"
        and req.get("subResource") == "resize"
        and kind.get("kind") == "Pod"
        and kind.get("group", "") == ""
    )


def _key(v: CpuValue) -> Key:
    return (v.section, v.container, v.kind)


def _record(annotations: Mapping[str, Any]) -> dict[Key, int]:
    """The standard-resources annotation as ``{key: scu millis}`` (bad entries skipped)."""
    try:
        doc = orjson.loads(str(annotations.get(STANDARD_RESOURCES_ANNOTATION) or "{}"))
    except orjson.JSONDecodeError:
        return {}
    out: dict[Key, int] = {}
    if not isinstance(doc, dict):
        return out
    scopes: list[tuple[str, str | None, Any]] = [("pod", None, doc.get("pod"))]
    for section in ("containers", "initContainers"):
        containers = doc.get(section)
        if isinstance(containers, dict):
            scopes += [(section, name, values) for name, values in containers.items()]
    for section, name, values in scopes:
        if not isinstance(values, dict):
            continue
        for kind in ("requests", "limits"):
            cpu = (
                (values.get(kind) or {}).get("cpu") if isinstance(values.get(kind), dict) else None
            )
            if cpu is None:
                continue
            try:
                out[(section, name, kind)] = to_millis(cpu)
            except QuantityError:
                continue
    return out


def _factor(annotations: Mapping[str, Any]) -> Fraction:
    try:
        factor = Fraction(Decimal(str(annotations[SCU_PER_CORE_ANNOTATION])))
    except (KeyError, InvalidOperation, ValueError) as exc:
        raise PatchError(f"annotation {SCU_PER_CORE_ANNOTATION} is not a factor") from exc
    if factor <= 0:
        raise PatchError(f"annotation {SCU_PER_CORE_ANNOTATION} is not a factor")
    return factor


def explains(scu: int, physical: int, factor: Fraction) -> bool:
    """Could the webhook have written ``physical`` for ``scu``? (exact, whole cores, +1)."""
    exact = scu_to_physical_millis(scu, factor)
    return exact <= physical <= max(-(-exact // 1000) * 1000, exact + 1)


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def scu_values(pod: Mapping[str, Any]) -> dict[Key, int]:
    """The SCU each CPU value of a normalized pod stands for now (see the module docstring):
    the record while it explains the physical value, ``floor(physical * f)`` after that."""
    annotations = _annotations(pod)
    factor = _factor(annotations)
    record = _record(annotations)
    out = {}
    for v in read_cpu_values(pod):
        recorded = record.get(_key(v))
        if recorded is not None and explains(recorded, v.scu_millis, factor):
            out[_key(v)] = recorded
        else:
            out[_key(v)] = physical_to_scu_millis(v.scu_millis, factor)
    return out


def scu_cpu_values(pod: Mapping[str, Any]) -> tuple[CpuValue, ...]:
    """The CPU values of a normalized pod as SCU (:func:`scu_values`), each at its place in
    the spec: the values the pod's controller would write for a replacement, to be
    converted again for another family."""
    scu = scu_values(pod)
    return tuple(_with_scu(v, scu[_key(v)]) for v in read_cpu_values(pod))


def resize(old: Mapping[str, Any], new: Mapping[str, Any]) -> Resize | None:
    """The rewrite of a resize of ``old`` into ``new``; None when the pod is not one the
    webhook normalized (its values are physical already). :class:`PatchError` on a value
    that is not a quantity or a broken factor annotation."""
    annotations = _annotations(old)
    if not was_normalized(annotations):
        return None
    factor = _factor(annotations)
    current = scu_values(old)
    before = {_key(v): v.scu_millis for v in read_cpu_values(old)}  # physical millis
    values = read_cpu_values(new)  # physical where unchanged, SCU where changed

    view: list[CpuValue] = []  # every value in SCU, for the conversion rules
    fixed: dict[str, int] = {}
    changed: list[CpuValue] = []
    for v in values:
        key = _key(v)
        if before.get(key) == v.scu_millis:
            fixed[v.pointer] = v.scu_millis
            view.append(_with_scu(v, current[key]))
        else:
            changed.append(v)
            view.append(v)
    if not changed:
        return None
    physical = convert(view, factor, whole_cores=keeps_whole_cores(old), fixed=fixed)
    patch = [
        {"op": "replace", "path": v.pointer, "value": format_millis(physical[v.pointer])}
        for v in changed
    ]
    return Resize(
        patch=patch,
        converted=len(changed),
        family=str(annotations.get(FAMILY_ANNOTATION)),
        factor=factor,
        standard=standard_resources_annotation(view),
    )


def _with_scu(v: CpuValue, scu: int) -> CpuValue:
    return CpuValue(v.section, v.container, v.kind, v.pointer, scu, v.index, v.sidecar)
