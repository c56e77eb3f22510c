"""SCU <-> millicore arithmetic, exact.

Everything is integer millis (of SCU or of physical vCPU) and exact fractions for the
factor. Floats would drift: ``2000 / 1.18`` in binary floating point is not the same
number as the decimal the infra team wrote, and a one-millicore error decides whether a
pod fits a nearly full node.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity, or a negative one where none is allowed."""


#: ``resource.Quantity`` grammar: sign, digits with an optional fraction, then at most one
#: of a decimal exponent, a binary suffix or a decimal suffix. The client library's parser
#: alone also takes ``"NaN"``, ``"inf"``, ``" 1"`` and non-ASCII digits.
_QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$"
)
#: What each suffix multiplies by, as ``resource.Quantity`` (and the kubernetes client's
#: ``utils.quantity``) define them. The client's parser is not imported: importing any
#: ``kubernetes`` module runs ``kubernetes/__init__.py``, which loads the whole API client
#: (about 0.07 s of a 0.18 s CLI start), and ``machine-catalog validate`` needs none of it.
_DECIMAL_EXPONENTS = {"n": -3, "u": -2, "m": -1, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_SUFFIXES = {
    **{s: Decimal(1000) ** e for s, e in _DECIMAL_EXPONENTS.items()},
    **{f"{s}i": Decimal(1024) ** e for e, s in enumerate("KMGTPE", start=1)},
}
#: Far beyond any CPU or memory amount (1 Ei is about 1.2e18); refusing larger values
#: keeps ``1e999999`` from turning into a million-digit integer or a Decimal overflow.
_MAX_ADJUSTED_EXPONENT = 24


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """Parse Kubernetes quantity syntax (``"1.5"``, ``"1500m"``, ``2``) into an exact Decimal."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    try:
        quantity = _parse(value)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from exc
    if not isinstance(quantity, Decimal) or not quantity.is_finite():
        raise QuantityError(f"{value!r} is not a finite quantity")
    if quantity and quantity.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise QuantityError(f"{value!r} is out of range")
    return quantity


def _parse(value: str | int | Decimal) -> Decimal:
    """The number of a string that matched :data:`_QUANTITY`, times its suffix's factor."""
    if not isinstance(value, str):
        return Decimal(value)
    if value[-1] == "i":
        number, suffix = value[:-2], value[-2:]
    elif value[-1] in _DECIMAL_EXPONENTS:
        number, suffix = value[:-1], value[-1]
    else:
        return Decimal(value)
    return Decimal(number) * _SUFFIXES[suffix]


def to_millis(value: str | int | float | Decimal) -> int:
    """A CPU quantity in millis, rounded up like ``resource.Quantity.MilliValue()``."""
    if type(value) is str:
        millis = _MILLIS.get(value)
        if millis is None:
            millis = _to_millis(value)
            if len(_MILLIS) < _MILLIS_MAX:
                # Keyed by a copy: a key taken from a parsed document would pin the
                # allocator block it sits in, and with it much of the freed document
                # (measured: 130 MB of a worker that loaded a 50,000-pod snapshot).
                _MILLIS[value.encode().decode()] = millis
        return millis
    if type(value) is int and value >= 0:  # e.g. the default 0 of an absent overhead
        return value * 1000
    return _to_millis(value)


def _to_millis(value: str | int | float | Decimal) -> int:
    quantity = parse_quantity(value)
    if quantity < 0:
        raise QuantityError(f"{value!r} is negative")
    return math.ceil(quantity * 1000)


#: Every pod the cache, the extender and the webhook read goes through ``to_millis``, and
#: a cluster writes a few dozen distinct CPU strings ("500m", "1", "250m"): parsing one
#: with the grammar check and Decimal arithmetic costs ~5 µs, a hit ~0.1 µs. Bounded,
#: since request bodies are untrusted (once full, new strings are parsed every time);
#: errors are not cached.
_MILLIS: dict[str, int] = {}
_MILLIS_MAX = 4096


def to_units(value: str | int | float | Decimal) -> int:
    """A quantity in whole units (bytes, devices), rounded up like
    ``resource.Quantity.Value()``: how kube-scheduler counts every resource but CPU."""
    if type(value) is str:
        units = _UNITS.get(value)
        if units is None:
            units = _to_units(value)
            if len(_UNITS) < _MILLIS_MAX:
                _UNITS[value.encode().decode()] = units  # a copy, as in to_millis
        return units
    return _to_units(value)


def _to_units(value: str | int | float | Decimal) -> int:
    quantity = parse_quantity(value)
    if quantity < 0:
        raise QuantityError(f"{value!r} is negative")
    return math.ceil(quantity)


_UNITS: dict[str, int] = {}


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
