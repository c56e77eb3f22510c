"""SCU <-> millicore arithmetic, exact.

Everything is integer millis (of SCU or of physical vCPU) and exact fractions for the
factor. Floats would drift: ``2000 / 1.18`` in binary floating point is not the same
number as the decimal the infra team wrote, and a one-millicore error decides whether a
pod fits a nearly full node.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

from kubernetes.utils.quantity import parse_quantity as _k8s_parse_quantity


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity, or a negative one where none is allowed."""


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """Parse Kubernetes quantity syntax (``"1.5"``, ``"1500m"``, ``2``) into an exact Decimal."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, float):
        value = Decimal(repr(value))
    try:
        return _k8s_parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from exc


def to_millis(value: str | int | float | Decimal) -> int:
    """A CPU quantity in millis, rounded up like ``resource.Quantity.MilliValue()``."""
    quantity = parse_quantity(value)
    if quantity < 0:
        raise QuantityError(f"{value!r} is negative")
    return math.ceil(quantity * 1000)


def scu_to_physical_millis(scu_millis: int, factor: Fraction) -> int:
    """Physical millicores that deliver at least ``scu_millis`` on a family of ``factor``.

    ``ceil(scu / factor)``: rounding up guarantees the pod gets at least what it asked
    for, and never more than one millicore beyond it.
    """
    return -(-scu_millis * factor.denominator // factor.numerator)


def physical_to_scu_millis(physical_millis: int, factor: Fraction) -> int:
    """SCU millis that ``physical_millis`` deliver on a family of ``factor``, rounded down.

    Rounding down keeps capacity honest: a node never advertises SCU it cannot deliver.
    """
    return physical_millis * factor.numerator // factor.denominator


def format_millis(millis: int) -> str:
    """Render millis as the shortest Kubernetes quantity: ``2`` for 2000, ``1695m`` otherwise."""
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def format_scu(scu_millis: int | float) -> str:
    """Human-readable SCU for reasons and CLI output (``12.5 SCU``)."""
    return f"{scu_millis / 1000:.3f}".rstrip("0").rstrip(".") + " SCU"
