"""Every overlay as the real API server validates it: ``kubectl apply --dry-run=server``.

Kinds whose CRDs a bare cluster lacks (cert-manager's, the Prometheus operator's) cannot be
dry-run; they are listed by name, and everything else in the overlay must pass. The list
is exact: a kind newly missing from the cluster fails the test instead of being skipped.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from harness import objects
from harness.controlplane import REPO, running

# Kinds served by CRDs this cluster does not have: (apiVersion group, kind).
CRD_KINDS = {
    ("cert-manager.io", "Issuer"),
    ("cert-manager.io", "Certificate"),
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
}


@pytest.fixture(scope="module")
def bare(binaries, tmp_path_factory):
    """A second, empty control plane: the dry-runs see a cluster as a user's first install
    does, not the session's cluster with the tests' own webhook configuration in it.

    The Namespace and the MachineCatalog CRD are created for real first: a server-side
    dry-run does not persist the namespace or the kind it would create, so every object
    in them would fail (docs/operations.md tells users the same).
    """
    with running(tmp_path_factory.mktemp("bare"), binaries) as plane:
        objects.first_install_prerequisites(plane)
        yield plane


def overlays() -> list[str]:
    return sorted(p.name for p in (REPO / "manifests" / "overlays").iterdir() if p.is_dir())


def render(path) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", overlays())
def test_every_overlay_passes_server_side_dry_run(bare, overlay, tmp_path):
    manifests = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", manifests)
    if overlay == "generated-certs":
        # The overlay's component is what `machine-catalog certs` writes, as its docs say.
        objects.write_certs(manifests / "overlays" / "generated-certs" / "certs")
    docs = render(manifests / "overlays" / overlay)
    skipped = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in docs
        if (d["apiVersion"].split("/")[0], d["kind"]) in CRD_KINDS
    ]
    applied = [d for d in docs if (d["apiVersion"].split("/")[0], d["kind"]) not in CRD_KINDS]
    assert applied, overlay
    result = bare.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump_all(applied),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(applied), result.stdout
    assert all("(server dry run)" in line for line in lines), result.stdout
    print(f"{overlay}: {len(applied)} objects dry-run; CRD kinds not checked: {skipped}")


def test_the_base_renders_and_passes_server_side_dry_run(bare):
    docs = render(REPO / "manifests")
    result = bare.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs), check=False
    )
    assert result.returncode == 0, result.stderr
