"""What the container image runs: the built wheel, installed into a clean venv, serving.

The Dockerfile cannot be built on this machine, so this test does its two steps by hand:
build the wheel (``pip wheel .``) and install it alone into a new venv, then start
``machine-catalog serve`` from that venv with no arguments but the bind address. That
catches what an editable install hides: a package or data file (the default catalog, the
demo snapshot) missing from the wheel, or a console script that does not resolve.

Offline: the build runs without isolation (setuptools comes from the test extra), and the
new venv gets its third-party dependencies from the current environment through a
``.pth`` file, so the only thing installed into it is this project's wheel.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from support.helpers import ready, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_in_a_clean_venv_serves_the_packaged_catalog_and_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ".")
    (wheel,) = dist.glob("machine_catalog-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    target = Path(run(python, "-c", "import site; print(site.getsitepackages()[0])").strip())
    # Dependencies only: the project itself must come from the wheel, not the source tree.
    (target / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel, cwd=tmp_path,
    )  # fmt: skip
    where = run(
        python, "-c", "import machine_catalog; print(machine_catalog.__file__)", cwd=tmp_path
    )
    assert where.startswith(str(env_dir)), where

    server = serve(tmp_path, program=[str(env_dir / "bin" / "machine-catalog")])
    try:
        ready(server)
        status, detail = server.readyz()
        assert status == 200, detail
        assert detail["catalog"]["name"] == "default"
        assert detail["catalog"]["source"].startswith(str(env_dir))  # the wheel's data file
        assert detail["cache"]["nodes"] > 0  # the packaged demo snapshot
        body = json.dumps(
            {
                "Pod": {"metadata": {"name": "p"}, "spec": {"containers": []}},
                "NodeNames": ["ip-10-0-15-96.eu-west-1.compute.internal"],
            }
        ).encode()
        reply = server.post("/scheduler/filter", body)
        assert reply.status == 200
        reason = reply.json()["FailedAndUnresolvableNodes"][
            "ip-10-0-15-96.eu-west-1.compute.internal"
        ]
        assert "t3.medium matches no family" in reason
    finally:
        assert server.stop() == 0
