"""The Helm chart is what ``tools/gen_chart.py`` generates from ``manifests/``.

The chart has no hand-kept copy of an object: a manifest edit without a regenerated chart
fails here, and so does a hand edit of a generated template. An object added to the base
becomes a template with no change to the generator (other helpers' CRDs and RBAC ride
along). That the chart renders, lints and installs is e2e/tests/test_chart.py's job: it
needs a ``helm`` built from its Go module.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.helpers import run_tool

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "gen_chart.py"
CHART = ROOT / "charts" / "machine-catalog"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_tool(GENERATOR, *args)


def test_the_committed_chart_is_what_the_generator_writes() -> None:
    result = run("--check")
    assert result.returncode == 0, result.stderr
    templates = len([p for p in (CHART / "templates").glob("*.yaml")])
    # values.yaml, Chart.yaml and the MachineCatalog CRD in crds/ (Helm installs it first).
    assert list((CHART / "crds").glob("*.yaml")) == [
        CHART / "crds" / "machinecatalogs.machine-catalog.io.yaml"
    ]
    assert (
        result.stdout.splitlines()[-1]
        == f"{templates} templates, 7 other files in machine-catalog"  # crds/ + 4 configs
    )


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        # A hand edit of a generated template.
        ("templates/service_machine-catalog-webhook.yaml", "port: 443", "port: 444"),
        # A default that no longer matches the manifest it stands for.
        ("values.yaml", "replicas: 2", "replicas: 3"),
    ],
)
def test_check_fails_on_a_hand_edited_chart(tmp_path: Path, path: str, old: str, new: str) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / path).read_text()
    assert old in text
    (chart / path).write_text(text.replace(old, new, 1))
    result = run("--check", "--out", str(chart))
    assert result.returncode == 1
    assert f"{path} differs from what this script generates" in result.stderr


def test_check_fails_on_a_stale_extra_template(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "configmap_gone.yaml").write_text("kind: ConfigMap\n")
    result = run("--check", "--out", str(chart))
    assert result.returncode == 1
    assert "templates/configmap_gone.yaml" in result.stderr


def test_an_object_added_to_the_base_becomes_a_template(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    (manifests / "base" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ServiceAccount\n"
        "metadata: {name: machine-catalog-extra, namespace: machine-catalog-system}\n"
    )
    kustomization = manifests / "base" / "kustomization.yaml"
    spec = yaml.safe_load(kustomization.read_text())
    spec["resources"].append("extra.yaml")
    kustomization.write_text(yaml.safe_dump(spec))
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    assert run("--check", "--manifests", str(manifests), "--out", str(chart)).returncode == 1
    result = run("--manifests", str(manifests), "--out", str(chart))
    assert result.returncode == 0, result.stderr
    text = (chart / "templates" / "serviceaccount_machine-catalog-extra.yaml").read_text()
    assert "name: machine-catalog-extra" in text
    assert "app.kubernetes.io/managed-by: {{ .Release.Service }}" in text


def test_a_substitution_whose_target_is_gone_stops_the_generator(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", manifests)
    deployment = manifests / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("      - --bind\n", "", 1))
    result = run("--check", "--manifests", str(manifests))
    assert result.returncode == 1
    assert "Deployment/machine-catalog" in result.stderr
    assert "--bind" in result.stderr


def test_values_defaults_are_the_manifests_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    catalog = (ROOT / "manifests" / "base" / "catalog.yaml").read_text()
    assert values["catalog"] == catalog
    deployment = (ROOT / "manifests" / "base" / "deployment.yaml").read_text()
    assert f"image: {values['image']['repository']}:{values['image']['tag']}" in deployment
    assert f"containerPort: {values['server']['port']}" in deployment
    assert values["certificates"]["mode"] == "generate"
    assert values["monitoring"]["enabled"] is False


def test_prometheus_templates_are_escaped_for_helm() -> None:
    """Alert texts use Prometheus' own {{ $labels... }}: Helm must print them, not run them."""
    rule = (CHART / "templates" / "prometheusrule_machine-catalog.yaml").read_text()
    source = (ROOT / "manifests" / "overlays" / "monitoring" / "prometheusrule.yaml").read_text()
    assert "{{ $labels" in source
    assert "{{ $labels" not in rule
    assert '{{ "{{" }} $labels' in rule
