"""With ``--kubeconfig`` and no ``--catalog``, every command reads the catalog the cluster
serves (machine_catalog_cli.live), says which on stderr, and notes pods normalized under
another one. Against the loopback fake API server (tests/support/fakeapi.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.fakeapi import FakeApiServer, make_node, make_pod, write_kubeconfig
from support.helpers import CATALOG_A, CATALOG_B, has_no_traceback

from machine_catalog.loading import parse_catalog
from machine_catalog_cli import live
from machine_catalog_cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
A, B = parse_catalog(CATALOG_A), parse_catalog(CATALOG_B)
DOC_A = yaml.safe_load(CATALOG_A)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert has_no_traceback(out + err)
    return code, out, err


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.add("nodes", make_node("gke-1", instance_type="n2-standard-8"))
        server.add("nodes", make_node("eks-1", instance_type="m6i.2xlarge"))
        server.add("nodes", make_node("aks-1", instance_type="Standard_D8s_v5"))
        yield server


@pytest.fixture
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> str:
    return write_kubeconfig(tmp_path / "kubeconfig", fake.url)


def announced(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("catalog: "))


@pytest.mark.parametrize(
    ("published", "source"),
    [
        ([("resource", "hardening")], "machinecatalog/hardening"),
        ([("configmap", None)], "configmap machine-catalog-system/machine-catalog"),
        ([("configmap", None), ("resource", "hardening")], "machinecatalog/hardening"),
    ],
    ids=["the-only-resource", "no-resource-the-configmap", "the-resource-before-the-configmap"],
)
def test_the_catalog_the_cluster_serves_is_found_and_announced(
    capsys: pytest.CaptureFixture[str],
    fake: FakeApiServer,
    kubeconfig: str,
    published: list[tuple[str, str | None]],
    source: str,
) -> None:
    for how, _name in published:
        fake.publish_catalog(DOC_A, how)
    code, out, err = run(capsys, "explain", "--kubeconfig", kubeconfig, "-o", "json")
    assert code == 0, err
    assert announced(err) == f"catalog: {source} (the cluster's), {A.version}"
    result = json.loads(out)
    assert result["catalog"] == A.version
    families = {n["name"]: n["families"] for n in result["nodes"]}  # the cluster's nodes
    assert families == {"gke-1": ["base"], "eks-1": ["m6i"], "aks-1": []}


def test_several_resources_must_be_named(
    capsys: pytest.CaptureFixture[str], fake: FakeApiServer, kubeconfig: str
) -> None:
    fake.publish_catalog(DOC_A)
    fake.publish_catalog({**yaml.safe_load(CATALOG_B), "metadata": {"name": "other"}})
    code, _, err = run(capsys, "explain", "--kubeconfig", kubeconfig, "--labels", "a=b")
    assert code == 2
    assert "2 MachineCatalogs (hardening, other): name the one the server serves" in err
    code, _, err = run(
        capsys,
        "explain",
        "--kubeconfig",
        kubeconfig,
        "--catalog-resource",
        "other",
        "--labels",
        "node.kubernetes.io/instance-type=Standard_D8s_v5",
    )
    assert code == 0, err
    assert announced(err).startswith("catalog: machinecatalog/other (the cluster's), other@")


def test_no_catalog_in_the_cluster_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], kubeconfig: str
) -> None:
    code, out, err = run(capsys, "explain", "--kubeconfig", kubeconfig)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert "no catalog found: machinecatalogs: 404" in err
    assert "configmap machine-catalog-system/machine-catalog: 404" in err


def test_catalog_flag_overrides_the_cluster(
    capsys: pytest.CaptureFixture[str], fake: FakeApiServer, kubeconfig: str, tmp_path: Path
) -> None:
    fake.publish_catalog(DOC_A)
    path = tmp_path / "b.yaml"
    path.write_text(CATALOG_B)
    code, out, err = run(
        capsys, "explain", "--kubeconfig", kubeconfig, "--catalog", str(path), "-o", "json"
    )
    assert code == 0, err
    assert announced(err) == f"catalog: {path} (--catalog), {B.version}"
    assert json.loads(out)["catalog"] == B.version


def test_a_refused_live_catalog_lists_its_errors_and_what_is_served(
    capsys: pytest.CaptureFixture[str], fake: FakeApiServer, kubeconfig: str
) -> None:
    """What CEL cannot check (here: seven decimals) reaches the cluster; the CLI refuses
    it as serve does, and says the server keeps its last good catalog."""
    bad = yaml.safe_load(CATALOG_A.replace("scuPerCore: 1.18", "scuPerCore: 1.1234567"))
    fake.publish_catalog(bad)["status"] = {"catalogHash": A.hash}
    code, _, err = run(capsys, "validate", "--kubeconfig", kubeconfig)
    assert code == 1
    assert "machinecatalog/hardening: spec.families[1].scuPerCore: at most 6 decimal" in err
    code, _, err = run(capsys, "explain", "--kubeconfig", kubeconfig)
    assert code == 1
    assert f"keeps serving its last good catalog (status.catalogHash {A.hash})" in err


def test_validate_the_live_catalog_beside_files(
    capsys: pytest.CaptureFixture[str], fake: FakeApiServer, kubeconfig: str, tmp_path: Path
) -> None:
    fake.publish_catalog(DOC_A)
    path = tmp_path / "b.yaml"
    path.write_text(CATALOG_B)
    code, out, err = run(capsys, "validate", str(path), "--kubeconfig", kubeconfig, "-o", "json")
    assert code == 0, err
    assert [(r["file"], r["catalog"]) for r in json.loads(out)] == [
        (str(path), B.version),
        ("machinecatalog/hardening", A.version),
    ]


def test_diff_against_the_live_catalog_over_the_live_nodes(
    capsys: pytest.CaptureFixture[str], fake: FakeApiServer, kubeconfig: str, tmp_path: Path
) -> None:
    fake.publish_catalog(DOC_A)
    new = tmp_path / "b.yaml"
    new.write_text(CATALOG_B)
    code, out, err = run(capsys, "diff", "--kubeconfig", kubeconfig, str(new), "-o", "json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["old"], result["new"]) == (A.version, B.version)
    changes = {c["after"]["name"] for c in result["nodes"]}
    assert changes == {"eks-1", "aks-1"}  # m6i retired; Standard_D8s_v5 joins base


def test_pods_normalized_under_another_catalog_are_noted(
    capsys: pytest.CaptureFixture[str], fake: FakeApiServer, kubeconfig: str
) -> None:
    fake.publish_catalog(DOC_A)
    marks = {"machine-catalog.io/family": "base"}
    for i, version in enumerate([A.version, B.version, B.version, "old@0123456789abcdef"]):
        fake.add(
            "pods",
            make_pod(
                f"p{i}", node="gke-1", annotations={**marks, "machine-catalog.io/catalog": version}
            ),
        )
    fake.add(
        "pods",
        make_pod(
            "done",
            node="gke-1",
            phase="Succeeded",
            annotations={"machine-catalog.io/catalog": "x@1"},
        ),
    )
    code, _, err = run(capsys, "report", "--kubeconfig", kubeconfig, "-o", "json")
    assert code == 0, err
    (note,) = [line for line in err.splitlines() if line.startswith("note: ")]
    assert f"2 under {B.version}, 1 under old@0123456789abcdef" in note
    assert "x@1" not in note  # finished pods are history


def test_the_configmap_names_are_the_manifests() -> None:
    base = yaml.safe_load((ROOT / "manifests" / "base" / "kustomization.yaml").read_text())
    (generated,) = [g for g in base["configMapGenerator"] if g["files"] == ["catalog.yaml"]]
    assert (generated["name"], generated["namespace"]) == (
        live.CONFIGMAP_NAME,
        live.CONFIGMAP_NAMESPACE,
    )
    assert live.CONFIGMAP_KEY == "catalog.yaml"


def test_catalog_resource_without_a_cluster_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "explain", "--catalog-resource", "x", "--labels", "a=b")
    assert code == 2 and "give --kubeconfig PATH" in err
