"""The control plane is the Kubernetes release asked for (``MC_KUBERNETES_VERSION``).

``make e2e-oldest`` only tests v1.34 if the binaries it starts are v1.34: the API server's
``/version`` and kube-scheduler's ``--version`` must name the release the selected
module pins (``e2e/controlplane/go.mod``, or ``v<minor>/go.mod``), which ``build.sh``
stamps into them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from harness.controlplane import REPO

pytestmark = pytest.mark.every_version


def pinned() -> str:
    """k8s.io/kubernetes of the module ``build.sh`` builds for ``MC_KUBERNETES_VERSION``."""
    want = os.environ.get("MC_KUBERNETES_VERSION", "").removeprefix("v")
    root = REPO / "e2e" / "controlplane"
    gomod = root / f"v{want}" / "go.mod" if want else root / "go.mod"
    if not gomod.is_file():
        gomod = root / "go.mod"
    (version,) = re.findall(r"^\s*k8s\.io/kubernetes (v\S+)", gomod.read_text(), re.M)
    if want:
        assert version.startswith(f"v{want}."), (want, version)
    return version


def test_the_api_server_and_kube_scheduler_are_the_pinned_release(plane, binaries) -> None:
    version = pinned()
    served = json.loads(plane.kubectl("get", "--raw", "/version").stdout)
    assert served["gitVersion"] == version, served
    out = subprocess.run(
        [str(binaries / "kube-scheduler"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.strip() == f"Kubernetes {version}", out.stdout
