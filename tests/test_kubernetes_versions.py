"""The Kubernetes versions the project claims, builds and pins agree.

The end-to-end suite builds one control plane per supported minor: the newest from
``e2e/controlplane/go.mod``, the oldest from ``e2e/controlplane/v<minor>/go.mod``. The
manifests pin the kube-scheduler users run; the README states the range. A pin outside
what is built, a module whose staging replaces lag its release, or a README that names
other ends would each claim support nobody tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTROLPLANE = ROOT / "e2e" / "controlplane"


def version(text: str) -> tuple[int, int, int]:
    major, minor, patch = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", text).groups()
    return int(major), int(minor), int(patch)


def built() -> dict[Path, tuple[int, int, int]]:
    """k8s.io/kubernetes of every control-plane module, by go.mod."""
    out = {}
    for gomod in [CONTROLPLANE / "go.mod", *sorted(CONTROLPLANE.glob("v*/go.mod"))]:
        (pin,) = re.findall(r"^\s*k8s\.io/kubernetes (v\S+)", gomod.read_text(), re.M)
        out[gomod] = version(pin)
    return out


def scheduler_pin() -> tuple[int, int, int]:
    text = (ROOT / "manifests" / "base" / "scheduler.yaml").read_text()
    images = [
        c["image"]
        for doc in yaml.safe_load_all(text)
        if doc and doc.get("kind") == "Deployment"
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]
    (image,) = [i for i in images if i.startswith("registry.k8s.io/kube-scheduler:")]
    return version(image.split(":")[1])


def test_two_minors_are_built_the_oldest_in_a_directory_of_its_own() -> None:
    versions = built()
    assert len({v[:2] for v in versions.values()}) == len(versions) >= 2
    assert versions[CONTROLPLANE / "go.mod"] == max(versions.values())
    for gomod, (_, minor, _) in versions.items():
        if gomod.parent != CONTROLPLANE:
            assert gomod.parent.name == f"v1.{minor}"


def test_every_staging_module_is_replaced_by_its_own_release() -> None:
    for gomod, (_, minor, patch) in built().items():
        replaces = re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", gomod.read_text(), re.M)
        assert len(replaces) > 25, gomod
        assert {v for _, v in replaces} == {f"v0.{minor}.{patch}"}, gomod


def test_the_manifests_pin_lies_in_the_tested_range_the_readme_states() -> None:
    versions = sorted(built().values())
    oldest, newest = versions[0], versions[-1]
    assert oldest <= scheduler_pin() <= newest
    readme = (ROOT / "README.md").read_text()
    stated = f"**Supported Kubernetes: v1.{oldest[1]} to v1.{newest[1]}**"
    assert stated in readme
    makefile = (ROOT / "Makefile").read_text()
    assert f"OLDEST_KUBERNETES := 1.{oldest[1]}\n" in makefile
