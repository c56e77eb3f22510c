"""Catalog validation: every rule fails with the exact path, and one run reports them all."""

from __future__ import annotations

import copy
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from machine_catalog.catalog import Catalog
from machine_catalog.loading import load_catalog
from machine_catalog.model import MAX_SCU_PER_CORE, Family, json_schema
from machine_catalog.validation import CatalogInvalid, validate_document


def valid() -> dict[str, Any]:
    """A small valid catalog: a baseline by instance type, a family by NFD selector."""
    return {
        "apiVersion": "machine-catalog.io/v1alpha1",
        "kind": "MachineCatalog",
        "metadata": {"name": "test"},
        "spec": {
            "baseline": "base",
            "families": [
                {"name": "base", "scuPerCore": 1.0, "instanceTypes": ["b.large", "b.xlarge"]},
                {
                    "name": "amd",
                    "scuPerCore": 1.25,
                    "nodeSelector": {
                        "matchLabels": {"feature.node.kubernetes.io/cpu-model.vendor_id": "AMD"},
                        "matchExpressions": [
                            {
                                "key": "feature.node.kubernetes.io/cpu-model.family",
                                "operator": "In",
                                "values": ["25"],
                            }
                        ],
                    },
                },
            ],
        },
    }


def errors_of(data: Any) -> list[tuple[str, str]]:
    document, errors = validate_document(data)
    assert document is None, "an invalid catalog must not yield a document"
    assert errors, "an invalid catalog must report at least one error"
    return [(e.path, e.message) for e in errors]


def _fam(data: dict[str, Any], i: int) -> dict[str, Any]:
    return data["spec"]["families"][i]


def _expr(data: dict[str, Any], **req: Any) -> dict[str, Any]:
    _fam(data, 1)["nodeSelector"]["matchExpressions"] = [req]
    return data


def test_valid_catalog_has_no_errors() -> None:
    document, errors = validate_document(valid())
    assert errors == []
    assert document is not None
    assert document.spec.unknown_nodes == "reject"  # the documented defaults
    assert document.spec.scoring.strategy == "balanced"


SELECTOR = "spec.families[1].nodeSelector"

# (mutation, exact path, a fragment of the message)
CASES: list[tuple[str, Any, str, str]] = [
    (
        "duplicate name",
        lambda d: _fam(d, 1).update(name="base"),
        "spec.families[1].name",
        "duplicate family name 'base'",
    ),
    (
        "baseline missing",
        lambda d: d["spec"].update(baseline="nope"),
        "spec.baseline",
        "is not a family",
    ),
    (
        "baseline not 1.0",
        lambda d: _fam(d, 0).update(scuPerCore=1.1),
        "spec.families[0].scuPerCore",
        "must have scuPerCore 1.0",
    ),
    (
        "factor zero",
        lambda d: _fam(d, 1).update(scuPerCore=0),
        "spec.families[1].scuPerCore",
        "must be in (0, 16]",
    ),
    (
        "factor negative",
        lambda d: _fam(d, 1).update(scuPerCore=-0.5),
        "spec.families[1].scuPerCore",
        "must be in (0, 16]",
    ),
    (
        "factor above 16",
        lambda d: _fam(d, 1).update(scuPerCore=16.001),
        "spec.families[1].scuPerCore",
        "must be in (0, 16]",
    ),
    (
        "factor millicores typed as cores",
        lambda d: _fam(d, 1).update(scuPerCore="1250"),
        "spec.families[1].scuPerCore",
        "must be in (0, 16]",
    ),
    (
        "factor finer than a millionth",
        lambda d: _fam(d, 1).update(scuPerCore="1e-400"),
        "spec.families[1].scuPerCore",
        "at most 6 decimal places",
    ),
    (
        "factor not a number",
        lambda d: _fam(d, 1).update(scuPerCore="fast"),
        "spec.families[1].scuPerCore",
        "not a Kubernetes quantity",
    ),
    (
        "factor a boolean",
        lambda d: _fam(d, 1).update(scuPerCore=True),
        "spec.families[1].scuPerCore",
        "not a boolean",
    ),
    (
        "factor infinite",
        lambda d: _fam(d, 1).update(scuPerCore=float("inf")),
        "spec.families[1].scuPerCore",
        "finite number",
    ),
    (
        "instance type in two families",
        lambda d: _fam(d, 1).update(instanceTypes=["x.large", "b.xlarge"]),
        "spec.families[1].instanceTypes[1]",
        "already listed by family 'base'",
    ),
    (
        "typo scuPerCor",
        lambda d: _fam(d, 1).update(scuPerCor=_fam(d, 1).pop("scuPerCore")),
        "spec.families[1].scuPerCor",
        "unknown field",
    ),
    (
        "empty nodeSelector",
        lambda d: _fam(d, 1).update(nodeSelector={}),
        SELECTOR,
        "empty nodeSelector",
    ),
    (
        "neither instanceTypes nor nodeSelector",
        lambda d: _fam(d, 1).pop("nodeSelector"),
        "spec.families[1]",
        "needs instanceTypes or a nodeSelector",
    ),
    (
        "In without values",
        lambda d: _expr(d, key="a", operator="In", values=[]),
        f"{SELECTOR}.matchExpressions[0]",
        "operator In needs at least one value",
    ),
    (
        "NotIn without values",
        lambda d: _expr(d, key="a", operator="NotIn"),
        f"{SELECTOR}.matchExpressions[0]",
        "operator NotIn needs at least one value",
    ),
    (
        "Exists with values",
        lambda d: _expr(d, key="a", operator="Exists", values=["x"]),
        f"{SELECTOR}.matchExpressions[0]",
        "operator Exists takes no values",
    ),
    (
        "DoesNotExist with values",
        lambda d: _expr(d, key="a", operator="DoesNotExist", values=["x"]),
        f"{SELECTOR}.matchExpressions[0]",
        "operator DoesNotExist takes no values",
    ),
    (
        "Gt with a non-integer",
        lambda d: _expr(d, key="a", operator="Gt", values=["1.5"]),
        f"{SELECTOR}.matchExpressions[0]",
        "operator Gt needs exactly one integer value",
    ),
    (
        "Lt with two values",
        lambda d: _expr(d, key="a", operator="Lt", values=["1", "2"]),
        f"{SELECTOR}.matchExpressions[0]",
        "operator Lt needs exactly one integer value",
    ),
    (
        "Lt without values",
        lambda d: _expr(d, key="a", operator="Lt"),
        f"{SELECTOR}.matchExpressions[0]",
        "operator Lt needs exactly one integer value",
    ),
    (
        "unknown operator",
        lambda d: _expr(d, key="a", operator="Equals", values=["x"]),
        f"{SELECTOR}.matchExpressions[0].operator",
        "'In', 'NotIn', 'Exists', 'DoesNotExist', 'Gt' or 'Lt'",
    ),
    (
        "bad label key in an expression",
        lambda d: _expr(d, key="cpu model!", operator="Exists"),
        f"{SELECTOR}.matchExpressions[0].key",
        "label key 'cpu model!'",
    ),
    (
        "label key prefix not a DNS subdomain",
        lambda d: _expr(d, key="Feature_NFD/cpu", operator="Exists"),
        f"{SELECTOR}.matchExpressions[0].key",
        "prefix must be a DNS subdomain",
    ),
    (
        "bad label value in an expression",
        lambda d: _expr(d, key="a", operator="In", values=["-leading-dash"]),
        f"{SELECTOR}.matchExpressions[0]",
        "label value '-leading-dash'",
    ),
    (
        "bad label key in matchLabels",
        lambda d: _fam(d, 1)["nodeSelector"]["matchLabels"].update({"/no-name": "x"}),
        f"{SELECTOR}.matchLabels",
        "label key '/no-name'",
    ),
    (
        "label value too long in matchLabels",
        lambda d: _fam(d, 1)["nodeSelector"]["matchLabels"].update({"a": "x" * 64}),
        f"{SELECTOR}.matchLabels",
        "at most 63",
    ),
    (
        "instance type not a label value",
        lambda d: _fam(d, 0)["instanceTypes"].append("m5 large"),
        "spec.families[0].instanceTypes",
        "label value 'm5 large'",
    ),
    (
        "wrong apiVersion",
        lambda d: d.update(apiVersion="machine-catalog.io/v1"),
        "apiVersion",
        "machine-catalog.io/v1alpha1",
    ),
    ("wrong kind", lambda d: d.update(kind="ConfigMap"), "kind", "'MachineCatalog'"),
    (
        "unknownNodes typo",
        lambda d: d["spec"].update(unknownNodes="ignore"),
        "spec.unknownNodes",
        "'reject' or 'allow'",
    ),
    (
        "scoring strategy typo",
        lambda d: d["spec"].update(scoring={"strategy": "spread"}),
        "spec.scoring.strategy",
        "'binpack' or 'loadAware'",
    ),
    (
        "hotSpotUsage above 1",
        lambda d: d["spec"].update(scoring={"strategy": "loadAware", "hotSpotUsage": 1.2}),
        "spec.scoring.hotSpotUsage",
        "must be in (0, 1]",
    ),
    (
        "hotSpotUsage zero",
        lambda d: d["spec"].update(scoring={"hotSpotUsage": "0"}),
        "spec.scoring.hotSpotUsage",
        "must be in (0, 1]",
    ),
    (
        "hotSpotUsage too precise",
        lambda d: d["spec"].update(scoring={"hotSpotUsage": 0.123456}),
        "spec.scoring.hotSpotUsage",
        "at most 4 decimal places",
    ),
    (
        "requestWeight above 0.5",
        lambda d: d["spec"].update(scoring={"requestWeight": 0.6}),
        "spec.scoring.requestWeight",
        "must be in [0, 0.5]",
    ),
    (
        "sampleIntervalSeconds zero",
        lambda d: d["spec"].update(scoring={"sampleIntervalSeconds": 0}),
        "spec.scoring.sampleIntervalSeconds",
        "greater than or equal to 1",
    ),
    (
        "sample age below the interval",
        lambda d: d["spec"].update(
            scoring={"sampleIntervalSeconds": 60, "maxSampleAgeSeconds": 30}
        ),
        "spec.scoring",
        "must be at least sampleIntervalSeconds",
    ),
    (
        "scoring key typo",
        lambda d: d["spec"].update(scoring={"hotspotUsage": 0.9}),
        "spec.scoring.hotspotUsage",
        "unknown field",
    ),
    (
        "no families",
        lambda d: d["spec"].update(families=[]),
        "spec.families",
        "at least 1",
    ),
    (
        "metadata without a name",
        lambda d: d["metadata"].pop("name"),
        "metadata.name",
        "required field is missing",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_rule_fails_with_its_path(mutate: Any, path: str, fragment: str) -> None:
    data = valid()
    mutate(data)
    errors = errors_of(data)
    at_path = [message for p, message in errors if p == path]
    assert at_path, f"no error at {path}; got {errors}"
    assert any(fragment in m for m in at_path), f"{fragment!r} not in {at_path}"


def test_catalog_must_be_a_mapping() -> None:
    assert errors_of(["not", "a", "mapping"]) == [("", "a catalog must be a mapping, got list")]
    assert errors_of(None)[0][0] == ""


@pytest.mark.parametrize(
    ("written", "exact"),
    [
        (1.18, Fraction(59, 50)),
        ("1.18", Fraction(59, 50)),
        ("1180m", Fraction(59, 50)),
        (16, Fraction(16)),
        ("0.001", Fraction(1, 1000)),
        (2, Fraction(2)),
    ],
)
def test_factor_accepts_numbers_and_quantity_strings_exactly(written: Any, exact: Fraction) -> None:
    family = Family(name="f", scu_per_core=written, instance_types=["t"])
    assert family.factor == exact
    assert family.scu_per_core <= MAX_SCU_PER_CORE


def test_factor_has_one_spelling_per_value() -> None:
    """1.1, "1.10" and "1100m" are one value: the dump (hence the content hash) agrees."""
    dumps = {
        Family(name="f", scu_per_core=v, instance_types=["t"]).model_dump(mode="json")[
            "scu_per_core"
        ]
        for v in (1.1, "1.10", "1100m", Decimal("1.100"))
    }
    assert dumps == {"1.1"}
    ten = Family(name="f", scu_per_core=10, instance_types=["t"])
    assert str(ten.scu_per_core) == "10"  # not 1E+1


def test_one_run_reports_every_error_of_a_file() -> None:
    data = valid()
    data["kind"] = "Catalog"
    data["spec"]["baseline"] = "missing"
    fams = data["spec"]["families"]
    fams[1]["scuPerCore"] = 0  # bad factor AND no match rules in the same family
    fams[1].pop("nodeSelector")
    fams.append({"name": "base", "scuPerCor": 1.2, "instanceTypes": ["b.large"]})
    fams.append(
        {
            "name": "sel",
            "scuPerCore": 99,
            "nodeSelector": {
                "matchExpressions": [
                    {"key": "a", "operator": "Gt", "values": ["x"]},
                    {"key": "b", "operator": "Exists", "values": ["y"]},
                ]
            },
        }
    )
    paths = {path for path, _ in errors_of(data)}
    assert paths == {
        "kind",
        "spec.baseline",
        "spec.families[1].scuPerCore",
        "spec.families[1]",
        "spec.families[2].scuPerCore",  # missing, because of the typo
        "spec.families[2].scuPerCor",
        "spec.families[2].name",
        "spec.families[2].instanceTypes[0]",
        "spec.families[3].scuPerCore",
        "spec.families[3].nodeSelector.matchExpressions[0]",
        "spec.families[3].nodeSelector.matchExpressions[1]",
    }


def test_errors_are_not_reported_twice() -> None:
    data = valid()
    _fam(data, 1).pop("nodeSelector")
    errors = errors_of(data)
    assert len(errors) == len(set(errors)) == 1


def test_when_every_family_fails_the_list_is_not_also_called_empty() -> None:
    data = valid()
    _fam(data, 0)["scuPerCore"] = 0
    _fam(data, 1)["scuPerCore"] = -1
    paths = [path for path, _ in errors_of(data)]
    assert "spec.families" not in paths  # pydantic's "at least 1 item ... not 0"
    assert "spec.families[0].scuPerCore" in paths and "spec.families[1].scuPerCore" in paths


def test_an_empty_family_list_says_so_plainly() -> None:
    data = valid()
    data["spec"]["families"] = []
    assert ("spec.families", "needs at least 1 item, got none") in errors_of(data)


def test_catalog_invalid_carries_every_error() -> None:
    data = valid()
    data["spec"]["baseline"] = "x"
    _fam(data, 1)["scuPerCore"] = 0
    with pytest.raises(CatalogInvalid) as info:
        Catalog.from_data(data, "cat.yaml")
    assert {e.path for e in info.value.errors} == {"spec.baseline", "spec.families[1].scuPerCore"}
    assert str(info.value).startswith("cat.yaml: invalid catalog (2 errors)")


def test_catalog_lookups() -> None:
    catalog = Catalog.from_data(valid())
    assert catalog.baseline.name == "base"
    assert catalog.by_instance_type["b.xlarge"].name == "base"
    assert catalog.factor("amd") == Fraction(5, 4)
    assert catalog.family_index == {"base": 0, "amd": 1}
    assert catalog.version == f"test@{catalog.hash}"


def test_models_are_immutable() -> None:
    catalog = Catalog.from_data(valid())
    with pytest.raises(Exception, match="frozen"):
        catalog.baseline.scu_per_core = Decimal(2)  # type: ignore[misc]


def test_json_schema_describes_the_file_format() -> None:
    schema = json_schema()
    assert schema["title"] == "MachineCatalog"
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    family = schema["$defs"]["Family"]
    assert "scuPerCore" in family["properties"]
    assert family["additionalProperties"] is False  # typos are errors for editors too


def test_the_packaged_default_catalog_is_valid() -> None:
    catalog = load_catalog()
    assert catalog.baseline.scu_per_core == 1
    assert catalog.families
    # Re-validating its own dump finds nothing: the file and the model agree.
    dumped = copy.deepcopy(catalog.document.model_dump(mode="json", by_alias=True))
    assert validate_document(dumped)[1] == []
