"""Generated packaged data is what its generator writes (``tools/gen_demo_snapshot.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.helpers import run_tool

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "gen_demo_snapshot.py"
SNAPSHOT = ROOT / "machine_catalog" / "data" / "demo-snapshot.json"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_tool(GENERATOR, *args)


def test_the_packaged_demo_snapshot_is_what_the_generator_writes() -> None:
    result = run("--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"12 nodes, 44 pods, {SNAPSHOT.stat().st_size} bytes"


def test_check_fails_on_a_hand_edited_file(tmp_path: Path) -> None:
    edited = tmp_path / "demo-snapshot.json"
    edited.write_text(SNAPSHOT.read_text().replace('"cpu": "7910m"', '"cpu": "7911m"', 1))
    result = run("--check", "--out", str(edited))
    assert result.returncode == 1
    assert "differs from what this script generates" in result.stderr
