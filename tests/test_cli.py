"""The ``machine-catalog`` CLI: every verb's success and failure paths, never a traceback."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.state.runtime import DEFAULT_MAX_BODY
from machine_catalog.quantities import format_scu, physical_to_scu_millis, to_millis
from machine_catalog_cli import main as cli

FIXTURES = Path(__file__).parent / "fixtures"
NODES = FIXTURES / "nodes-real-world.json"

CATALOG = """\
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata:
  name: test
spec:
  baseline: base
  families:
    - name: base
      description: Tencent S5
      scuPerCore: 1.0
      instanceTypes: [S5.2XLARGE16]
    - name: m6i
      scuPerCore: 1.18
      instanceTypes: [m6i.2xlarge, m6i.4xlarge]
    - name: graviton
      scuPerCore: "1250m"
      instanceTypes: [m7g.4xlarge]
    - name: old
      scuPerCore: 0.8
      schedulable: false
      instanceTypes: [Standard_D8s_v5]
    - name: spr
      scuPerCore: 1.3
      nodeSelector:
        matchLabels:
          feature.node.kubernetes.io/cpu-model.vendor_id: Intel
        matchExpressions:
          - {key: node.kubernetes.io/instance-type, operator: DoesNotExist}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def edit(text: str, **changes: Any) -> str:
    """The catalog with spec-level or per-family changes (``family__field=value``)."""
    data = yaml.safe_load(text)
    for key, value in changes.items():
        if "__" in key:
            name, field = key.split("__")
            family = next(f for f in data["spec"]["families"] if f["name"] == name)
            family[field] = value
        else:
            data["spec"][key] = value
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return path


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    text = edit(CATALOG, baseline="nope", m6i__scuPerCore=0)
    path.write_text(text.replace("schedulable:", "schedulabel:"))
    return path


def nodes() -> list[dict[str, Any]]:
    return json.loads(NODES.read_text())["items"]


def node_file(tmp_path: Path, name: str) -> Path:
    node = next(n for n in nodes() if n["metadata"]["name"] == name)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(node))
    return path


# -- validate ----------------------------------------------------------------------------


def test_validate_ok_summary_line(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, err = run(capsys, "validate", str(catalog))
    assert code == 0
    assert err == ""
    assert re.fullmatch(
        rf"{re.escape(str(catalog))}: ok — catalog test@[0-9a-f]{{16}}, 5 families "
        r"\(4 schedulable\), baseline base\n",
        out,
    )


def test_validate_reports_every_error_and_still_the_valid_files(
    capsys: pytest.CaptureFixture[str], catalog: Path, broken: Path
) -> None:
    code, out, err = run(capsys, "validate", str(broken), str(catalog))
    assert code == 1
    assert f"{catalog}: ok" in out
    lines = err.splitlines()
    assert all(line.startswith(f"{broken}: ") for line in lines)
    paths = {line.split(": ")[1] for line in lines}
    assert paths == {
        "spec.baseline",
        "spec.families[1].scuPerCore",
        "spec.families[3].schedulabel",
    }


def test_validate_json(capsys: pytest.CaptureFixture[str], catalog: Path, broken: Path) -> None:
    code, out, _ = run(capsys, "validate", "-o", "json", str(catalog), str(broken))
    assert code == 1
    ok, bad = json.loads(out)
    assert ok["ok"] and ok["families"] == 5 and ok["schedulable"] == 4 and ok["baseline"] == "base"
    assert not bad["ok"]
    assert {e["path"] for e in bad["errors"]} == {
        "spec.baseline",
        "spec.families[1].scuPerCore",
        "spec.families[3].schedulabel",
    }


def test_validate_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CATALOG.encode())))
    code, out, _ = run(capsys, "validate", "-")
    assert code == 0
    assert out.startswith("-: ok — catalog test@")


def test_validate_the_packaged_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    from machine_catalog.loading import default_catalog_path

    code, out, _ = run(capsys, "validate", str(default_catalog_path()))
    assert code == 0
    assert ": ok — catalog " in out


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read: No such file or directory"),
        ("spec: [oops\n", "not valid YAML/JSON at line 2"),
        ("", "a catalog must be a mapping"),
    ],
)
def test_validate_bad_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1
    assert out == ""
    assert err.startswith(f"{path}: ") and fragment in err


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "validate")
    assert code == 2
    assert "give catalog files, or --kubeconfig PATH" in err


# -- schema ------------------------------------------------------------------------------


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"] == "MachineCatalog"
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert out.startswith("{\n  ")  # pretty, for humans and diffs


# -- explain -----------------------------------------------------------------------------


def test_explain_labels_matched(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "--catalog",
        str(catalog),
        "--labels",
        "node.kubernetes.io/instance-type=m6i.4xlarge, kubernetes.io/arch=amd64",
    )
    assert code == 0
    assert re.search(r"^family:\s+m6i$", out, re.M)
    assert re.search(r"^scuPerCore:\s+1\.18 ", out, re.M)
    assert "instanceTypes lists m6i.4xlarge" in out
    assert "allocatable" not in out  # labels alone say nothing about capacity


def test_explain_labels_unknown_exits_3(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, _ = run(
        capsys, "explain", "--catalog", str(catalog), "--labels", "kubernetes.io/arch=amd64"
    )
    assert code == 3
    assert "matches no family" in out
    assert "reject" in out  # what the extender will do with it


def test_explain_ambiguous_exits_3_and_says_who_claims_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = yaml.safe_load(CATALOG)
    # a selector on the architecture also claims every amd64 cloud node, m6i included
    data["spec"]["families"][4]["nodeSelector"] = {"matchLabels": {"kubernetes.io/arch": "amd64"}}
    path = tmp_path / "amb.yaml"
    path.write_text(yaml.safe_dump(data))
    node = node_file(tmp_path, "ip-10-0-1-23.ec2.internal")
    code, out, _ = run(capsys, "explain", "--catalog", str(path), "--node", str(node))
    assert code == 3
    assert "ambiguous — claimed by m6i (instanceTypes lists m6i.2xlarge), spr (nodeSelector" in out
    assert "SCU capacity" not in out  # an ambiguous node offers no SCU
    code, out, _ = run(capsys, "explain", "--catalog", str(path), "--node", str(NODES))
    assert code == 0
    assert "<ambiguous: m6i,spr>" in out


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ("a=b=c", "cannot contain '='"),
        ("novalue", "'novalue' is not key=value"),
        ("a=1,,b=2", "empty item"),
        ("bad key!=x", "label key 'bad key!'"),
        ("a=-x", "label value '-x'"),
        ("a=1,a=2", "key 'a' given twice"),
    ],
)
def test_explain_bad_labels(capsys: pytest.CaptureFixture[str], labels: str, fragment: str) -> None:
    code, out, err = run(capsys, "explain", "--labels", labels)
    assert code == 1
    assert out == ""
    assert err.startswith("machine-catalog: error: ") and fragment in err


def test_explain_one_node_shows_scu_capacity(
    capsys: pytest.CaptureFixture[str], catalog: Path, tmp_path: Path
) -> None:
    path = node_file(tmp_path, "rack12-node07")
    code, out, _ = run(capsys, "explain", "--catalog", str(catalog), "--node", str(path))
    assert code == 0
    node = json.loads(path.read_text())
    allocatable = to_millis(node["status"]["allocatable"]["cpu"])
    scu = physical_to_scu_millis(allocatable, Fraction("1.3"))
    assert re.search(r"^family:\s+spr$", out, re.M)
    assert "nodeSelector matches" in out
    assert re.search(rf"^allocatable:\s+{allocatable}m$", out, re.M)
    assert re.search(rf"^SCU capacity:\s+{re.escape(format_scu(scu))}$", out, re.M)


def test_explain_one_node_reads_yaml_as_json(
    capsys: pytest.CaptureFixture[str], catalog: Path, tmp_path: Path
) -> None:
    """``kubectl get node X -o yaml`` is explained as its ``-o json`` twin is."""
    path = node_file(tmp_path, "rack12-node07")
    as_yaml = tmp_path / "node.yaml"
    as_yaml.write_text(yaml.safe_dump(json.loads(path.read_text())))
    got = [
        run(capsys, "explain", "--catalog", str(catalog), "--node", str(p)) for p in (path, as_yaml)
    ]
    assert got[0][0] == 0 and re.search(r"^family:\s+spr$", got[0][1], re.M)
    assert got[1] == got[0]


def test_explain_a_retiring_family(
    capsys: pytest.CaptureFixture[str], catalog: Path, tmp_path: Path
) -> None:
    path = node_file(tmp_path, "aks-d8sv5-31415926-vmss000004")
    code, out, _ = run(capsys, "explain", "--catalog", str(catalog), "--node", str(path))
    assert code == 0
    assert re.search(r"^schedulable:\s+no — retired", out, re.M)


def test_explain_a_node_list_as_a_table(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, _ = run(capsys, "explain", "--catalog", str(catalog), "--node", str(NODES))
    assert code == 0  # an unknown node in a list is a finding, not a failure
    lines = out.splitlines()
    assert lines[0].split() == [
        "NODE",
        "INSTANCE",
        "TYPE",
        "FAMILY",
        "SCU/CORE",
        "ALLOCATABLE",
        "SCU",
    ]
    rows = {line.split()[0]: line for line in lines[1:7]}
    assert set(rows) == {n["metadata"]["name"] for n in nodes()}
    assert "<unknown>" in rows["gke-prod-pool-n2-8f7c2a1b-x7k2"]
    assert "old (retired)" in rows["aks-d8sv5-31415926-vmss000004"]
    assert lines[-1].startswith("6 nodes: 5 matched, 1 unknown, 0 ambiguous;")


def test_explain_node_list_json(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, _ = run(
        capsys, "explain", "--catalog", str(catalog), "--node", str(NODES), "-o", "json"
    )
    assert code == 0
    data = json.loads(out)
    by_name = {n["name"]: n for n in data["nodes"]}
    m6i = by_name["ip-10-0-1-23.ec2.internal"]
    assert m6i["family"] == "m6i" and m6i["scuPerCore"] == 1.18
    assert m6i["scuMillis"] == physical_to_scu_millis(m6i["allocatableMillis"], Fraction("1.18"))
    assert by_name["gke-prod-pool-n2-8f7c2a1b-x7k2"]["status"] == "unknown"
    assert by_name["gke-prod-pool-n2-8f7c2a1b-x7k2"]["scuMillis"] is None
    summary = data["summary"]
    assert summary["schedulableScuMillis"] == sum(
        n["scuMillis"] for n in data["nodes"] if n["schedulable"] and n["scuMillis"]
    )


def test_explain_unknown_node_under_allow_is_treated_as_baseline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "allow.yaml"
    path.write_text(edit(CATALOG, unknownNodes="allow"))
    code, out, _ = run(
        capsys,
        "explain",
        "--catalog",
        str(path),
        "--node",
        str(node_file(tmp_path, "gke-prod-pool-n2-8f7c2a1b-x7k2")),
        "-o",
        "json",
    )
    assert code == 3  # still matches no family: scripts can tell
    data = json.loads(out)
    assert data["status"] == "unknown" and data["schedulable"] is True
    assert data["scuMillis"] == data["allocatableMillis"]  # baseline factor 1.0


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ('{"kind": "List", "items": [', "not valid JSON or YAML"),
        ('{"kind": "Pod", "metadata": {"name": "p"}}', "got a single Pod object"),
        ('{"kind": "List", "items": [{"kind": "Pod"}]}', "no Node objects"),
    ],
)
def test_explain_bad_node_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "node.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "explain", "--node", str(path))
    assert code == 1
    assert out == ""
    assert fragment in err


def test_explain_needs_node_or_labels_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "explain")[0] == 2
    assert run(capsys, "explain", "--node", "x", "--labels", "a=b")[0] == 2


def test_explain_with_an_invalid_catalog(capsys: pytest.CaptureFixture[str], broken: Path) -> None:
    code, out, err = run(capsys, "explain", "--catalog", str(broken), "--labels", "a=b")
    assert code == 1
    assert out == ""
    assert f"{broken}: spec.baseline: " in err
    assert f"{broken}: spec.families[1].scuPerCore: " in err


# -- convert -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--family", "m6i", "2"], "2 SCU on m6i (1.18 SCU/core) = 1695m"),
        (["--family", "graviton", "1500m"], "1.5 SCU on graviton (1.25 SCU/core) = 1200m"),
        (["--family", "m6i", "--reverse", "1695m"], "1695m on m6i (1.18 SCU/core) = 2 SCU"),
        (["--family", "base", "0.25"], "0.25 SCU on base (1 SCU/core) = 250m"),
    ],
)
def test_convert(
    capsys: pytest.CaptureFixture[str], catalog: Path, argv: list[str], line: str
) -> None:
    code, out, err = run(capsys, "convert", "--catalog", str(catalog), *argv)
    assert code == 0
    assert out == line + "\n"
    assert err == ""


def test_convert_json(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, _ = run(
        capsys, "convert", "--catalog", str(catalog), "--family", "m6i", "2", "-o", "json"
    )
    assert code == 0
    assert json.loads(out) | {"catalog": None} == {
        "family": "m6i",
        "scuPerCore": 1.18,
        "scuMillis": 2000,
        "physicalMillis": 1695,
        "catalog": None,
    }


def test_convert_notes_a_retiring_family(capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
    code, out, err = run(capsys, "convert", "--catalog", str(catalog), "--family", "old", "2")
    assert code == 0
    assert out == "2 SCU on old (0.8 SCU/core) = 2500m\n"
    assert "retired" in err


def test_convert_unknown_family_lists_the_families(
    capsys: pytest.CaptureFixture[str], catalog: Path
) -> None:
    code, out, err = run(capsys, "convert", "--catalog", str(catalog), "--family", "m7i", "2")
    assert code == 1
    assert out == ""
    assert "unknown family 'm7i'" in err
    assert "base, m6i, graviton, old, spr" in err


@pytest.mark.parametrize("quantity", ["two", "2 cores", "-1", "NaN", "1e99"])
def test_convert_bad_quantity(
    capsys: pytest.CaptureFixture[str], catalog: Path, quantity: str
) -> None:
    code, out, err = run(
        capsys, "convert", "--catalog", str(catalog), "--family", "m6i", "--", quantity
    )
    assert code == 1
    assert out == ""
    assert "bad quantity" in err


# -- diff --------------------------------------------------------------------------------


def _diff(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, new_text: str, *extra: str
) -> tuple[int, str, str]:
    old = tmp_path / "old.yaml"
    old.write_text(CATALOG)
    new = tmp_path / "new.yaml"
    new.write_text(new_text)
    return run(capsys, "diff", str(old), str(new), *extra)


def test_diff_without_changes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    reformatted = "# reformatted\n" + yaml.safe_dump(yaml.safe_load(CATALOG), sort_keys=True)
    code, out, _ = _diff(capsys, tmp_path, reformatted, "--exit-code")
    assert code == 0
    assert "no changes to families or settings" in out


def test_diff_lists_every_kind_of_change(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = yaml.safe_load(
        edit(
            CATALOG,
            m6i__scuPerCore=1.3,
            old__schedulable=True,
            graviton__instanceTypes=["m7g.4xlarge", "m7g.8xlarge"],
            unknownNodes="allow",
            scoring={"strategy": "binpack"},
        )
    )
    families = data["spec"]["families"]
    families[4]["nodeSelector"]["matchLabels"]["feature.node.kubernetes.io/cpu-model.family"] = "6"
    families.append({"name": "c7i", "scuPerCore": 1.4, "instanceTypes": ["c7i.large"]})
    families[:] = [f for f in families if f["name"] != "base"]
    families[0]["scuPerCore"] = 1.0
    data["spec"]["baseline"] = "m6i"
    code, out, _ = _diff(capsys, tmp_path, yaml.safe_dump(data))
    assert code == 0  # changes do not fail without --exit-code
    for line in [
        "+ family c7i (scuPerCore 1.4)",
        "- family base (scuPerCore 1)",
        "family m6i: scuPerCore 1.18 -> 1 (-15.3%)",
        "baseline: base -> m6i",
        "unknownNodes: reject -> allow",
        "scoring.strategy: balanced -> binpack",
        "family old: schedulable: false -> true",
        "family graviton: instanceTypes + m7g.8xlarge",
    ]:
        assert f"  {line}\n" in out, line
    assert "family spr: nodeSelector: " in out


def test_diff_exit_code_signals_changes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _diff(capsys, tmp_path, edit(CATALOG, m6i__scuPerCore=1.2), "--exit-code")
    assert code == 1
    assert "family m6i: scuPerCore 1.18 -> 1.2 (+1.7%)" in out


def test_diff_with_a_snapshot_shows_each_node_and_the_fleet(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    new_text = edit(CATALOG, m6i__scuPerCore=1.3, old__instanceTypes=["Standard_D4s_v5"])
    code, out, _ = _diff(capsys, tmp_path, new_text, "--snapshot", str(NODES))
    assert code == 0
    assert "nodes: 2 of 6 change" in out
    by_name = {n["metadata"]["name"]: n for n in nodes()}
    m6i_alloc = to_millis(by_name["ip-10-0-1-23.ec2.internal"]["status"]["allocatable"]["cpu"])
    before = physical_to_scu_millis(m6i_alloc, Fraction("1.18"))
    after = physical_to_scu_millis(m6i_alloc, Fraction("1.3"))
    row = next(line for line in out.splitlines() if "ip-10-0-1-23.ec2.internal" in line)
    assert "1.18 -> 1.3" in row
    assert f"{format_scu(before)} -> {format_scu(after)}" in row
    aks = next(line for line in out.splitlines() if "aks-d8sv5" in line)
    assert "old (retired) -> <unknown>" in aks and "loses SCU" in aks
    assert "unmatched nodes: unknown 1 -> 2, ambiguous 0 -> 0" in out
    assert re.search(r"^fleet SCU:\s+[\d.]+ SCU -> [\d.]+ SCU \([+-]\d+\.\d%\)$", out, re.M)


def test_diff_json_totals_add_up(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new_text = edit(CATALOG, graviton__scuPerCore=1.5)
    code, out, _ = _diff(capsys, tmp_path, new_text, "--snapshot", str(NODES), "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["changed"] is True
    assert data["factors"] == [{"family": "graviton", "old": 1.25, "new": 1.5, "percent": 20.0}]
    (change,) = data["nodes"]
    gained = change["after"]["scuMillis"] - change["before"]["scuMillis"]
    fleet = data["fleet"]
    assert fleet["after"]["scuMillis"] - fleet["before"]["scuMillis"] == gained
    assert fleet["before"]["nodes"] == fleet["after"]["nodes"] == 6


def test_diff_invalid_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = edit(CATALOG, m6i__scuPerCore=99)
    code, out, err = _diff(capsys, tmp_path, bad)
    assert code == 1
    assert out == ""
    assert "new.yaml: spec.families[1].scuPerCore: must be in (0, 16]" in err
    # with --exit-code, 1 means "changed"; trouble is 2, as diff(1) does
    assert _diff(capsys, tmp_path, bad, "--exit-code")[0] == 2
    code, _, err = _diff(capsys, tmp_path, CATALOG, "--snapshot", str(tmp_path / "none.json"))
    assert code == 1
    assert "cannot read" in err


# -- certs -------------------------------------------------------------------------------


def test_certs_writes_the_bundle_and_says_what_next(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "certs"
    code, out, _ = run(
        capsys,
        "certs",
        "--service",
        "machine-catalog-webhook",
        "--extra-service",
        "machine-catalog-extender",
        "--namespace",
        "mc-system",
        "--out",
        str(out_dir),
        "--days",
        "30",
    )
    assert code == 0
    for name in ("ca.crt", "ca.key", "tls.crt", "tls.key", "kustomization.yaml"):
        assert (out_dir / name).is_file()
        assert str(out_dir / name) in out
    assert "machine-catalog-extender.mc-system.svc" in out
    assert "kubectl apply -k" in out
    code, out, _ = run(
        capsys, "certs", "--service", "s", "--namespace", "mc-system", "--out", str(out_dir)
    )
    assert code == 0
    assert "kept the existing CA" in out


def test_certs_failures(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    argv = ["certs", "--service", "s", "--namespace", "ns", "--out"]
    code, _, err = run(capsys, *argv, str(a_file / "sub"))
    assert code == 1
    assert "cannot write" in err
    assert run(capsys, *argv, str(tmp_path / "d"), "--days", "0")[0] == 2
    assert run(capsys, "certs", "--namespace", "ns", "--out", str(tmp_path))[0] == 2


# -- serve (argument parsing only; the server's own tests run it) ----------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import extender.server.serve

    configs: list[Any] = []

    def fake_serve(config: Any) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(extender.server.serve, "serve", fake_serve)
    return configs


def test_serve_maps_every_flag(capsys: pytest.CaptureFixture[str], served: list[Any]) -> None:
    code, _, _ = run(
        capsys,
        "serve",
        "--catalog",
        "c.yaml",
        "--snapshot",
        "s.json",
        "--bind",
        "0.0.0.0:8443",
        "--threads",
        "8",
        "--certfile",
        "tls.crt",
        "--keyfile",
        "tls.key",
        "--scheduler-name",
        "machine-catalog",
        "--state-dir",
        "/var/run/mc",
        "--max-body",
        "64Mi",
        "--max-cache-age",
        "30",
        "--reload-interval",
        "0.5",
        "--log-level",
        "debug",
        "--access-log",
        "--recreate-stranded-after",
        "900",
        "--recreate-max-per-cycle",
        "2",
    )
    assert code == 0
    (config,) = served
    assert (config.recreate_stranded_after, config.recreate_max_per_cycle) == (900.0, 2)
    assert (config.catalog, config.snapshot, config.kubeconfig) == ("c.yaml", "s.json", None)
    assert config.in_cluster is False
    assert (config.bind, config.threads) == ("0.0.0.0:8443", 8)
    assert (config.certfile, config.keyfile) == ("tls.crt", "tls.key")
    assert config.scheduler_name == "machine-catalog"
    assert config.state_dir == "/var/run/mc"
    assert config.max_body == 64 * 1024 * 1024
    assert (config.max_cache_age, config.reload_interval) == (30.0, 0.5)
    assert (config.log_level, config.access_log) == ("debug", True)


def test_serve_defaults(capsys: pytest.CaptureFixture[str], served: list[Any]) -> None:
    assert run(capsys, "serve", "--in-cluster")[0] == 0
    (config,) = served
    assert config.in_cluster is True
    assert (config.bind, config.threads) == ("127.0.0.1:8080", 4)
    assert (config.max_cache_age, config.reload_interval, config.log_level) == (120.0, 1.0, "info")
    assert config.catalog is None
    assert config.recreate_stranded_after is None  # the stranded-pod remedy is opt-in
    assert config.settings.max_body == DEFAULT_MAX_BODY  # the server's default, not ours


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--certfile", "tls.crt"], "certfile and keyfile go together"),
        (["--snapshot", "s.json", "--kubeconfig", "k"], "not allowed with argument --snapshot"),
        (["--kubeconfig", "k", "--in-cluster"], "not allowed with argument --kubeconfig"),
        (["--bind", "localhost"], "is not HOST:PORT"),
        (["--bind", "h:99999"], "is not HOST:PORT"),
        (["--threads", "0"], "must be at least 1"),
        (["--workers", "2"], "unrecognized arguments: --workers"),
        (["--threads", "many"], "is not an integer"),
        (["--max-body", "lots"], "is not a size"),
        (["--max-body", "0.5"], "whole number of bytes"),
        (["--max-cache-age", "-1"], "positive number of seconds"),
        (["--reload-interval", "nan"], "positive number of seconds"),
        (["--log-level", "loud"], "invalid choice"),
        (["--recreate-stranded-after", "0"], "positive number of seconds"),
        (["--recreate-max-per-cycle", "0"], "must be at least 1"),
    ],
)
def test_serve_rejects_bad_flags(
    capsys: pytest.CaptureFixture[str], served: list[Any], argv: list[str], fragment: str
) -> None:
    code, _, err = run(capsys, "serve", *argv)
    assert code == 2
    assert fragment in err
    assert served == []


# -- the wrapper -------------------------------------------------------------------------


def test_version_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert re.fullmatch(r"machine-catalog \S+\n", out)
    assert run(capsys)[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "--help")[0] == 0


def test_serve_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0
    text = " ".join(out.split("options:", 1)[1].split())  # help wraps at the terminal width
    for option, default in [
        ("--bind HOST:PORT", "127.0.0.1:8080"),
        ("--threads THREADS", "4"),
        ("--max-body BYTES", "512Mi"),
        ("--max-cache-age SECONDS", "120.0"),
        ("--body-timeout SECONDS", "10.0"),
        ("--reload-interval SECONDS", "1.0"),
        ("--log-level", "info"),
        ("--certfile FILE", "plain HTTP"),
    ]:
        after = text.split(option, 1)[1]
        shown = after.split(" --", 1)[0]  # up to the next option
        assert f"(default: {default}" in shown, (option, shown)
    assert "(default: None)" not in text and "(default: False)" not in text
    # The --max-body default written in the help is the server's.
    assert cli.parse_quantity("512Mi") == DEFAULT_MAX_BODY


def test_an_internal_error_is_one_line_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "json_schema", boom)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    code, _, err = run(capsys, "schema")
    assert code == 70
    assert err.startswith("machine-catalog: error: internal error: RuntimeError: kaboom")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("how", ["flag", "flag-after", "env"])
def test_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "json_schema", boom)
    argv = {"flag": ["--debug", "schema"], "flag-after": ["schema", "--debug"], "env": ["schema"]}
    if how == "env":
        monkeypatch.setenv(cli.DEBUG_ENV, "1")
    code = cli.main(argv[how])
    err = capsys.readouterr().err
    assert code == 70
    assert "Traceback" in err and "kaboom" in err


# -- the installed console script ------------------------------------------------------------


def _script() -> str:
    script = Path(sys.executable).parent / "machine-catalog"
    assert script.exists(), "the package must be installed with its console script"
    return str(script)


def test_console_script_end_to_end(catalog: Path, broken: Path) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop(cli.DEBUG_ENV, None)
    ok = subprocess.run(
        [_script(), "validate", str(catalog)], capture_output=True, text=True, timeout=60, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert ": ok — catalog test@" in ok.stdout
    bad = subprocess.run(
        [_script(), "validate", str(broken)], capture_output=True, text=True, timeout=60, env=env
    )
    assert bad.returncode == 1
    assert "spec.families[1].scuPerCore" in bad.stderr
    assert "Traceback" not in bad.stderr
    module = subprocess.run(
        [sys.executable, "-m", "machine_catalog_cli", "convert", "--catalog", str(catalog),
         "--family", "m6i", "2"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert module.returncode == 0, module.stderr
    assert module.stdout == "2 SCU on m6i (1.18 SCU/core) = 1695m\n"


def test_diff_says_when_a_node_turns_schedulable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = _diff(
        capsys, tmp_path, edit(CATALOG, old__schedulable=True), "--snapshot", str(NODES)
    )
    assert code == 0
    (row,) = [line for line in out.splitlines() if "aks-d8sv5" in line]
    assert "old (retired) -> old" in row and row.endswith("now schedulable")
    assert re.search(r"^schedulable SCU:.*\(\+\d+\.\d%\)$", out, re.M)


def test_certs_into_the_generated_certs_overlay(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    overlay = tmp_path / "manifests" / "overlays" / "generated-certs"
    argv = ["certs", "--service", "s", "--namespace", "ns", "--out", str(overlay / "certs")]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert f"  kubectl apply -k {overlay}\n" in out
