"""Validate a catalog document and report *every* error with its path.

Two passes over the same input. The first is structural (pydantic: types, ranges, unknown
keys). The second checks rules across families on the raw mapping, tolerant of whatever
the first pass rejected, so one run shows an infra team all its mistakes at once instead
of one per CI round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from machine_catalog.model import NO_MATCH_RULES, MachineCatalogDocument


@dataclass(frozen=True, slots=True)
class CatalogError:
    """One problem in a catalog file: where (``spec.families[2].scuPerCore``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CatalogInvalid(ValueError):
    """A catalog that must not be used; carries every error found."""

    def __init__(self, errors: Sequence[CatalogError], source: str = "") -> None:
        self.errors = tuple(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}invalid catalog ({len(self.errors)} errors): " + "; ".join(map(str, errors))
        )


def format_path(loc: Sequence[str | int]) -> str:
    """``("spec", "families", 2, "scuPerCore")`` -> ``spec.families[2].scuPerCore``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _structural_errors(exc: ValidationError) -> list[CatalogError]:
    raw = exc.errors(include_url=False)
    # A list whose every item failed is then also "too short" (pydantic drops the failed
    # items and checks the length of what is left): that says nothing the item errors do
    # not, so it is reported only for a list that is really empty.
    parents_of_item_errors = {
        tuple(e["loc"][:i]) for e in raw for i, part in enumerate(e["loc"]) if isinstance(part, int)
    }
    errors = []
    for err in raw:
        if err["type"] == "too_short" and tuple(err["loc"]) in parents_of_item_errors:
            continue
        # pydantic prefixes messages raised by our validators with "Value error, ".
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `machine-catalog schema`)"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "too_short":
            message = f"needs at least {err.get('ctx', {}).get('min_length', 1)} item, got none"
        loc = [p for p in err["loc"] if p not in ("function-before[_to_decimal(), decimal]",)]
        errors.append(CatalogError(format_path(loc), message))
    return errors


def _families(data: Any) -> list[tuple[int, Mapping[str, Any]]]:
    spec = data.get("spec") if isinstance(data, Mapping) else None
    families = spec.get("families") if isinstance(spec, Mapping) else None
    if not isinstance(families, list):
        return []
    return [(i, f) for i, f in enumerate(families) if isinstance(f, Mapping)]


def _cross_family_errors(data: Any) -> list[CatalogError]:
    errors: list[CatalogError] = []
    families = _families(data)
    first_by_name: dict[str, int] = {}
    owner_of_type: dict[str, tuple[str, int]] = {}
    for i, fam in families:
        if not fam.get("instanceTypes") and fam.get("nodeSelector") is None:
            errors.append(CatalogError(f"spec.families[{i}]", NO_MATCH_RULES))
        name = fam.get("name")
        if isinstance(name, str):
            if name in first_by_name:
                errors.append(
                    CatalogError(
                        f"spec.families[{i}].name",
                        f"duplicate family name {name!r} "
                        f"(first defined at spec.families[{first_by_name[name]}])",
                    )
                )
            else:
                first_by_name[name] = i
        types = fam.get("instanceTypes")
        if isinstance(types, list):
            for k, itype in enumerate(types):
                if not isinstance(itype, str):
                    continue
                if itype in owner_of_type:
                    owner, j = owner_of_type[itype]
                    errors.append(
                        CatalogError(
                            f"spec.families[{i}].instanceTypes[{k}]",
                            f"instance type {itype!r} is already listed by family {owner!r} "
                            f"(spec.families[{j}]); an instance type belongs to one family",
                        )
                    )
                else:
                    owner_of_type[itype] = (str(name), i)

    spec = data.get("spec") if isinstance(data, Mapping) else None
    baseline = spec.get("baseline") if isinstance(spec, Mapping) else None
    if isinstance(baseline, str) and families:
        if baseline not in first_by_name:
            known = ", ".join(first_by_name) or "none"
            errors.append(
                CatalogError(
                    "spec.baseline", f"baseline {baseline!r} is not a family (families: {known})"
                )
            )
        else:
            i = first_by_name[baseline]
            factor = dict(families)[i].get("scuPerCore")
            if not _is_one(factor):
                errors.append(
                    CatalogError(
                        f"spec.families[{i}].scuPerCore",
                        f"baseline family {baseline!r} must have scuPerCore 1.0 (1 SCU is one vCPU "
                        f"of the baseline), got {factor!r}",
                    )
                )
    return errors


def _is_one(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return Decimal(repr(value)) == 1
    if isinstance(value, str):
        from machine_catalog.quantities import QuantityError, parse_quantity

        try:
            return parse_quantity(value) == 1
        except QuantityError:
            return True  # the structural pass already reports the bad quantity
    return True  # missing or wrong type: reported by the structural pass


def validate_document(data: Any) -> tuple[MachineCatalogDocument | None, list[CatalogError]]:
    """Check a parsed catalog file; the document is returned only when there is no error."""
    if not isinstance(data, Mapping):
        return None, [CatalogError("", f"a catalog must be a mapping, got {type(data).__name__}")]
    errors: list[CatalogError] = []
    document = None
    try:
        document = MachineCatalogDocument.model_validate(data)
    except ValidationError as exc:
        errors.extend(_structural_errors(exc))
    # The passes overlap on rules pydantic may skip (see NO_MATCH_RULES): report once.
    for error in _cross_family_errors(data):
        if error not in errors:
            errors.append(error)
    return (document if not errors else None), errors
