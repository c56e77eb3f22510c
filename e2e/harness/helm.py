"""The ``helm`` the chart tests run, built from its Go module by ``e2e/helm/build.sh``.

Built once into ``~/.cache/machine-catalog/helm`` (as the control plane is); ``MC_HELM``
names a binary to use instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from harness.controlplane import REPO

BUILD = REPO / "e2e" / "helm" / "build.sh"
CHART = REPO / "charts" / "machine-catalog"


def build_helm() -> Path:
    """The path of the helm binary, building it first when it is missing."""
    env = os.environ.get("MC_HELM")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(BUILD)], stdout=subprocess.PIPE, text=True, check=True, timeout=3600
    )
    return Path(out.stdout.strip().splitlines()[-1])


def helm(binary: Path, *args: str, kubeconfig: Path | None = None, check: bool = True):
    """Run helm with its state (cache, config, data) in a directory of its own."""
    home = REPO / ".pytest_cache" / "helm-home"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, check=False, timeout=300
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done
