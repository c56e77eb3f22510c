"""SCU <-> millicore arithmetic: exact, and rounding that never shortchanges a pod."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machine_catalog.quantities import (
    QuantityError,
    format_millis,
    format_scu,
    parse_quantity,
    physical_to_scu_millis,
    scu_to_physical_millis,
    to_millis,
)


@pytest.mark.parametrize(
    ("scu_millis", "factor", "physical"),
    [
        (2000, "1.18", 1695),  # 2000 / 1.18 = 1694.9...
        (1500, "1.25", 1200),  # exact: no extra millicore
        (1000, "1", 1000),
        (2000, "0.8", 2500),  # an old family needs more physical CPU
        (1, "16", 1),  # never rounds a request down to nothing
        (0, "1.18", 0),
    ],
)
def test_scu_to_physical_examples(scu_millis: int, factor: str, physical: int) -> None:
    assert scu_to_physical_millis(scu_millis, Fraction(factor)) == physical


def test_float_factor_would_drift_exact_one_does_not() -> None:
    # 1.1 as a binary float is 1.100000000000000088817..., so 1100 * (1/1.1) lands just
    # below 1000 and ceil() would be right by luck only; the exact fraction is exact.
    assert scu_to_physical_millis(1100, Fraction(Decimal("1.1"))) == 1000


# Factors as an infra team writes them: decimals with up to three places, in (0, 16].
factors = st.integers(1, 16_000).map(lambda n: Fraction(n, 1000))
scu = st.integers(0, 10**8)


@given(scu_millis=scu, factor=factors)
def test_physical_delivers_at_least_the_scu_and_not_a_millicore_more(
    scu_millis: int, factor: Fraction
) -> None:
    physical = scu_to_physical_millis(scu_millis, factor)
    assert physical * factor >= scu_millis
    assert (physical - 1) * factor < scu_millis or physical == 0


@given(physical=st.integers(0, 10**8), factor=factors)
def test_scu_capacity_rounds_down(physical: int, factor: Fraction) -> None:
    capacity = physical_to_scu_millis(physical, factor)
    assert capacity <= physical * factor < capacity + 1


@given(scu_millis=scu, factor=factors)
def test_round_trip_never_loses_scu(scu_millis: int, factor: Fraction) -> None:
    physical = scu_to_physical_millis(scu_millis, factor)
    assert physical_to_scu_millis(physical, factor) >= scu_millis


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        ("1.5", 1500),
        ("1500m", 1500),
        ("2", 2000),
        (2, 2000),
        (1.5, 1500),
        (Decimal("0.25"), 250),
        ("0.1m", 1),  # rounds up, like resource.Quantity.MilliValue()
        ("100u", 1),
        ("1001u", 2),
        ("1k", 1_000_000),
        ("1Ki", 1_024_000),
        ("0", 0),
        ("1e3", 1_000_000),
        ("+1", 1000),
        (".5", 500),
        ("1.", 1000),
    ],
)
def test_to_millis(value: object, millis: int) -> None:
    assert to_millis(value) == millis  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "-100m"])
def test_negative_cpu_is_refused(value: str) -> None:
    with pytest.raises(QuantityError, match="negative"):
        to_millis(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "two",
        "1.5.0",
        "1 m",
        " 1",
        "m",
        "1e",
        "1e3m",
        "1ki",
        "NaN",
        "inf",
        "Infinity",
        "\u0661",
        "1e999999",
        float("nan"),
        True,
        None,
        [1],
    ],
)
def test_bad_quantities_raise_quantity_error(value: object) -> None:
    with pytest.raises(QuantityError):
        to_millis(value)  # type: ignore[arg-type]


def test_parse_quantity_is_exact() -> None:
    assert parse_quantity("1.18") == Decimal("1.18")
    assert parse_quantity(1.18) == Decimal("1.18")  # float goes through repr, not binary
    assert parse_quantity("1180m") == Decimal("1.18")


@pytest.mark.parametrize(
    ("millis", "text"), [(2000, "2"), (1695, "1695m"), (0, "0"), (500, "500m"), (12000, "12")]
)
def test_format_millis_is_a_kubernetes_quantity(millis: int, text: str) -> None:
    assert format_millis(millis) == text
    assert to_millis(text) == millis


@pytest.mark.parametrize(
    ("millis", "text"), [(2000, "2 SCU"), (12500, "12.5 SCU"), (1, "0.001 SCU"), (0, "0 SCU")]
)
def test_format_scu(millis: int, text: str) -> None:
    assert format_scu(millis) == text


def test_to_millis_memo_holds_no_reference_to_the_callers_string() -> None:
    # A parsed snapshot's strings must be freeable: a memo keyed by them would pin the
    # memory they sit in long after the document is dropped.
    value = "".join(["7", "77m"])  # a fresh object, as a parsed document holds
    before = sys.getrefcount(value)
    assert to_millis(value) == 777
    assert to_millis(value) == 777  # answered from the memo
    assert sys.getrefcount(value) == before
    bad = "".join(["7", "7x"])
    for _ in range(2):  # errors are not remembered as values
        with pytest.raises(QuantityError):
            to_millis(bad)


# -- the parser without the kubernetes client ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "exact"),
    [
        ("1n", "0.000000001"),
        ("250u", "0.00025"),
        ("1500m", "1.5"),
        ("3k", "3000"),
        ("2M", "2000000"),
        ("1G", "1000000000"),
        ("1T", "1e12"),
        ("1P", "1e15"),
        ("1E", "1e18"),  # the exa suffix, not an exponent
        ("512Ki", "524288"),
        ("1.5Mi", "1572864"),
        ("1Gi", "1073741824"),
        ("1Ti", "1099511627776"),
        ("1Pi", "1125899906842624"),
        ("1Ei", "1152921504606846976"),
        ("2e3", "2000"),
        ("2E-3", "0.002"),
        ("-1.5k", "-1500"),
    ],
)
def test_every_suffix_multiplies_as_resource_quantity_does(value: str, exact: str) -> None:
    assert parse_quantity(value) == Decimal(exact)


@given(
    number=st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False),
    suffix=st.sampled_from(["", "n", "u", "m", "k", "M", "G", "T", "P", "E"])
    | st.sampled_from(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
)
def test_parse_agrees_with_the_kubernetes_clients_parser(number: Decimal, suffix: str) -> None:
    from kubernetes.utils.quantity import parse_quantity as client_parse

    text = f"{number:f}{suffix}"
    assert parse_quantity(text) == client_parse(text)


def test_validate_loads_neither_the_kubernetes_client_nor_the_server(tmp_path) -> None:
    # The catalog writes its factor as a quantity string, so validate parses quantities.
    catalog = tmp_path / "c.yaml"
    catalog.write_text(
        "apiVersion: machine-catalog.io/v1alpha1\nkind: MachineCatalog\n"
        "metadata: {name: q}\nspec:\n  baseline: b\n  families:\n"
        "    - {name: b, scuPerCore: '1', instanceTypes: [b.large]}\n"
        "    - {name: f, scuPerCore: '1250m', instanceTypes: [f.large]}\n"
    )
    code = (
        "import sys\n"
        "from machine_catalog_cli.main import main\n"
        f"assert main(['validate', {str(catalog)!r}]) == 0\n"
        "heavy = ('kubernetes', 'extender', 'flask', 'gunicorn', 'numpy')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
