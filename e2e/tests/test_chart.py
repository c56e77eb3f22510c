"""The Helm chart against the real API server, with a ``helm`` built from its Go module.

``helm lint``; ``helm template`` for several value sets through ``kubectl apply
--dry-run=server``; and one ``helm install`` whose objects, read back from the API server,
are the objects the kustomize install (overlays/generated-certs) leaves there, once the
fields that differ by design are normalised: Helm's own labels and annotations, kustomize's
content-hash name suffixes, the checksum annotation that replaces them, and the random
certificate material (each side's caBundle must still equal its own Secret's ca.crt).
Both run on bare control planes of their own, so the session's cluster is not touched.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import objects
from harness.controlplane import REPO, running
from harness.helm import CHART, build_helm, helm

# Kinds served by CRDs a bare cluster does not have: (apiVersion group, kind).
CRD_KINDS = {
    ("cert-manager.io", "Issuer"),
    ("cert-manager.io", "Certificate"),
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
}
NAMESPACE = "machine-catalog-system"
VALUE_SETS = {
    "defaults": [],
    "hostNetwork": ["--set", "hostNetwork=true", "--set", "server.port=10443"],
    "cert-manager+monitoring": [
        "--set",
        "certificates.mode=cert-manager",
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.labels.release=kube-prometheus-stack",
    ],
}


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    return build_helm()


@pytest.fixture(scope="module")
def bare(binaries, tmp_path_factory):
    """An empty control plane with the namespace and the MachineCatalog CRD created for
    real, as the install docs say (:func:`harness.objects.first_install_prerequisites`)."""
    with running(tmp_path_factory.mktemp("bare"), binaries) as plane:
        objects.first_install_prerequisites(plane)
        yield plane


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_helm_lint(helm_bin) -> None:
    for name, values in VALUE_SETS.items():
        result = helm(helm_bin, "lint", "--strict", str(CHART), *values, check=False)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", VALUE_SETS, ids=list(VALUE_SETS))
def test_helm_template_passes_server_side_dry_run(helm_bin, bare, values) -> None:
    rendered = docs(
        helm(helm_bin, "template", "machine-catalog", str(CHART), *VALUE_SETS[values]).stdout
    )
    applied = [d for d in rendered if (d["apiVersion"].split("/")[0], d["kind"]) not in CRD_KINDS]
    result = bare.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(applied), check=False
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(applied), result.stdout
    assert all("(server dry run)" in line for line in lines), result.stdout
    if values == "cert-manager+monitoring":
        skipped = {(d["kind"], d["metadata"]["name"]) for d in rendered} - {
            (d["kind"], d["metadata"]["name"]) for d in applied
        }
        assert len(skipped) == 6, skipped  # 2 Issuers, 2 Certificates, monitor, rule
        assert not any(d["kind"] == "Secret" for d in rendered)  # cert-manager writes it


# -- helm install vs kustomize install ---------------------------------------------------

DROP_META = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"}
DROP_ANNOTATIONS = re.compile(
    r"^(kubectl\.kubernetes\.io/last-applied-configuration|meta\.helm\.sh/.*"
    r"|deployment\.kubernetes\.io/revision|checksum/.*)$"
)
DROP_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
HASHED = re.compile(r"\b(machine-catalog-scheduler-config|machine-catalog-tls)-[a-z0-9]{10}\b")


def live(plane, rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects of ``rendered`` as the API server holds them."""
    out = plane.kubectl("get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(rendered))
    return json.loads(out.stdout)["items"]


def normalise(obj: dict[str, Any]) -> tuple[tuple[str, str, str], dict[str, Any]]:
    obj = json.loads(HASHED.sub(r"\1", json.dumps(obj)))
    obj.pop("status", None)
    meta = obj["metadata"]
    for key in DROP_META:
        meta.pop(key, None)

    def clean(m: dict[str, Any]) -> None:
        for field, drop in (("annotations", None), ("labels", DROP_LABELS)):
            kept = {
                k: v
                for k, v in (m.get(field) or {}).items()
                if not (DROP_ANNOTATIONS.match(k) if drop is None else k in drop)
            }
            if kept:
                m[field] = kept
            else:
                m.pop(field, None)

    clean(meta)
    template = obj.get("spec", {}).get("template", {}).get("metadata")
    if template is not None:
        clean(template)
    if obj["kind"] == "Secret":
        obj["data"] = sorted(obj.get("data", {}))
    if obj["kind"] == "Service":  # allocated by each API server
        for field in ("clusterIP", "clusterIPs"):
            obj["spec"].pop(field, None)
    if obj["kind"] == "MutatingWebhookConfiguration":
        for hook in obj["webhooks"]:
            hook["clientConfig"]["caBundle"] = "<the Secret's ca.crt>"
    return (obj["kind"], meta.get("namespace", ""), meta["name"]), obj


def ca_agrees(objs: list[dict[str, Any]]) -> bool:
    """The webhook's caBundle is the ca.crt of the TLS Secret the server mounts."""
    secret = next(o for o in objs if o["kind"] == "Secret")
    hook = next(o for o in objs if o["kind"] == "MutatingWebhookConfiguration")
    bundle = base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"])
    return bundle == base64.b64decode(secret["data"]["ca.crt"])


@pytest.fixture(scope="module")
def kustomize_install(bare, tmp_path_factory) -> list[dict[str, Any]]:
    manifests = tmp_path_factory.mktemp("kustomize") / "manifests"
    shutil.copytree(REPO / "manifests", manifests)
    objects.write_certs(manifests / "overlays" / "generated-certs" / "certs")
    overlay = manifests / "overlays" / "generated-certs"
    rendered = docs(
        subprocess.run(
            ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
        ).stdout
    )
    bare.kubectl("apply", "-k", str(overlay))
    return live(bare, rendered)


def test_helm_install_creates_the_objects_of_the_kustomize_install(
    helm_bin, binaries, tmp_path, kustomize_install
) -> None:
    with running(tmp_path / "helm", binaries) as plane:
        result = helm(
            helm_bin, "install", "machine-catalog", str(CHART), kubeconfig=plane.kubeconfig
        )
        assert "STATUS: deployed" in result.stdout, result.stdout
        rendered = docs(
            helm(helm_bin, "get", "manifest", "machine-catalog", kubeconfig=plane.kubeconfig).stdout
        )
        installed = live(plane, rendered)
        crds = plane.kubectl("get", "crd", "machinecatalogs.machine-catalog.io", "-o", "json")
    assert ca_agrees(installed)
    assert ca_agrees(kustomize_install)
    # Helm installs the CRD from crds/ (not part of the release's manifest): same spec.
    kustomize_crd = next(o for o in kustomize_install if o["kind"] == "CustomResourceDefinition")
    assert json.loads(crds.stdout)["spec"] == kustomize_crd["spec"]
    by_helm = dict(map(normalise, installed))
    by_kustomize = dict(
        map(normalise, (o for o in kustomize_install if o["kind"] != "CustomResourceDefinition"))
    )
    assert sorted(by_helm) == sorted(by_kustomize)
    assert len(by_helm) >= 20
    for key, obj in by_kustomize.items():
        assert by_helm[key] == obj, key
