"""The tour's sample metrics are what their generator writes (``tools/gen_demo_metrics.py``),
and ``calibrate`` finds in them the slower families the generator built in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "gen_demo_metrics.py"
METRICS = ROOT / "examples" / "pod-metrics.json"
SNAPSHOT = ROOT / "machine_catalog" / "data" / "demo-snapshot.json"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_sample_metrics_are_what_the_generator_writes(tmp_path: Path) -> None:
    assert run(str(GENERATOR), "--check").returncode == 0
    edited = tmp_path / "pod-metrics.json"
    edited.write_text(METRICS.read_text().replace('"cpu": "', '"cpu": "1', 1))
    result = run(str(GENERATOR), "--check", "--out", str(edited))
    assert result.returncode == 1 and "rerun it" in result.stderr


def test_calibrate_reads_them_offline_and_sees_the_slower_families() -> None:
    result = run(
        "-m",
        "machine_catalog_cli",
        "calibrate",
        "--snapshot",
        str(SNAPSHOT),
        "--pod-metrics",
        str(METRICS),
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    families = {f["name"]: f for f in json.loads(result.stdout)["families"]}
    # The generator made aws-m7g 5% slower than its catalog factor (1.25): below it.
    assert families["aws-m7g"]["estimate"] < 1.25
    assert abs(families["aws-m5"]["estimate"] - 1.0) < 1e-9  # the baseline
