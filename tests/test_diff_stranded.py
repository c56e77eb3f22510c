"""``diff --snapshot`` flags nodes a catalog change leaves without a family while pods run
on them (removing a family instead of retiring it first), and only those."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "machine_catalog" / "data" / "demo-snapshot.json"
BEFORE, AFTER = ROOT / "examples" / "catalog-before.yaml", ROOT / "examples" / "catalog-after.yaml"


def diff(old: Path, new: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "machine_catalog_cli", "diff", str(old), str(new), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_removing_a_family_whose_node_runs_pods_is_flagged():
    result = diff(BEFORE, AFTER, "--snapshot", str(SNAPSHOT), "-o", "json")
    assert result.returncode == 0, result.stderr
    (stranded,) = json.loads(result.stdout)["strandedNodes"]
    assert stranded["family"] == "aws-m4" and stranded["pods"] >= 1
    assert f"node {stranded['node']} leaves family aws-m4" in result.stderr


def test_retiring_the_family_instead_is_not_flagged(tmp_path: Path):
    retired = tmp_path / "retired.yaml"
    text = BEFORE.read_text()
    assert "name: aws-m4" in text
    # The same family kept but retired: its node stays matched, nothing is stranded.
    retired.write_text(
        text.replace("scuPerCore: 0.85", "scuPerCore: 0.85\n      schedulable: false", 1)
    )
    result = diff(BEFORE, retired, "--snapshot", str(SNAPSHOT), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["strandedNodes"] == []
    assert "warning" not in result.stderr
