"""The MachineCatalog CRD: generated from the model, structural, and carrying the rules.

Whether the API server accepts it and what ``kubectl apply`` then refuses is checked on
the real control plane (e2e/tests/test_crd.py); here, the shape the API server requires
and that the committed file is what the model generates.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from machine_catalog.crd import crd
from machine_catalog.model import MAX_SCU_PER_CORE

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "gen_crd.py"
COMMITTED = ROOT / "manifests" / "base" / "crd.yaml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60
    )


def test_the_committed_crd_is_what_the_model_generates() -> None:
    result = run("--check")
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_hand_edited_crd(tmp_path: Path) -> None:
    edited = tmp_path / "crd.yaml"
    edited.write_text(COMMITTED.read_text().replace("maxItems: 60", "maxItems: 65", 1))
    result = run("--check", "--out", str(edited))
    assert result.returncode == 1
    assert "differs from what the model generates" in result.stderr
    assert "maxItems: 65" in result.stderr  # the diff shows the hand edit


def test_the_kustomize_base_installs_the_crd() -> None:
    base = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    assert "crd.yaml" in base["resources"]


def schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, prop in (node.get("properties") or {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_the_schema_is_structural() -> None:
    """The API server's rules for a structural schema, over every node of it."""
    for path, node in walk(schema()):
        assert "type" in node, f"{path}: every node needs a type"
        for key in ("$ref", "anyOf", "allOf", "oneOf", "not", "$defs", "title", "default"):
            assert key not in node, f"{path}: {key}"
        if node["type"] == "object" and path.count(".") > 0 and path != ".metadata":
            assert "properties" in node or "additionalProperties" in node, path
        assert node.get("additionalProperties") is not False, path


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    missing = [
        path
        for path, node in walk(schema())
        if path.startswith(".spec") and not node.get("description")
    ]
    # Items of string lists and map values are described by their list or map.
    assert [p for p in missing if not p.endswith(("[]", "{}"))] == []
    families = schema()["properties"]["spec"]["properties"]["families"]["items"]
    assert "baseline" in families["properties"]["scuPerCore"]["description"]


def rules(node: dict[str, Any]) -> str:
    return " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))


def test_the_cross_field_rules_are_cel_on_the_spec() -> None:
    spec = schema()["properties"]["spec"]
    text = rules(spec)
    assert "exists_one(g, g.name == f.name)" in text  # unique family names
    assert "t in g.instanceTypes" in text  # an instance type in one family
    assert "f.name == self.baseline" in text  # the baseline exists
    assert "f.scuPerCore == 1.0" in text  # with scuPerCore 1.0
    factor = spec["properties"]["families"]["items"]["properties"]["scuPerCore"]
    assert rules(factor) == f"self > 0.0 && self <= {MAX_SCU_PER_CORE}.0"
    for rule in spec["x-kubernetes-validations"]:
        assert rule.get("message") or rule.get("messageExpression"), rule


def test_messages_quote_only_fields_reached_by_a_path() -> None:
    """The API server bounds a messageExpression's cost by the size of the strings it
    joins; a string made by string(), join() or taken from a filter() result has no bound,
    and the CRD is refused ("exceeds budget by factor of more than 100x")."""
    for path, node in walk(schema()):
        for rule in node.get("x-kubernetes-validations", []):
            expression = rule.get("messageExpression", "")
            for unbounded in ("string(", "join(", "filter(", "map("):
                assert unbounded not in expression, (path, expression)


@pytest.mark.parametrize(
    "path",
    [".spec.families", ".spec.families[].instanceTypes", ".spec.families[].instanceTypes[]"],
)
def test_lists_and_strings_a_rule_walks_are_bounded(path: str) -> None:
    """The API server estimates a rule's cost from maxItems/maxLength; unbounded, the
    instance-type rule's estimate would exceed the limit and the CRD be refused."""
    node = dict(walk(schema()))[path]
    assert ("maxItems" if node["type"] == "array" else "maxLength") in node


def test_printer_columns_and_status_subresource() -> None:
    (version,) = crd()["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Baseline"] == ".spec.baseline"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Families", "Matched", "Age"} <= set(columns)
    assert crd()["spec"]["scope"] == "Cluster"


def test_null_is_kept_only_where_it_means_something() -> None:
    """hotSpotUsage: null turns the filter off (default 0.8): nullable. nodeSelector: null
    is only "not given" (default None): not nullable, the API server prunes it."""
    nodes = dict(walk(schema()))
    assert nodes[".spec.scoring.hotSpotUsage"].get("nullable") is True
    assert "nullable" not in nodes[".spec.families[].nodeSelector"]
    assert nodes[".spec.families[].scuPerCore"]["type"] == "number"


def test_schema_crd_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    from machine_catalog_cli.main import main

    assert main(["schema", "--crd"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text()
