"""The scheduling throughput benchmark's ``--quick`` path against a real control plane.

The benchmark starts its own etcd, kube-apiserver, serve and its kube-schedulers (it needs
both schedulers and a webhook installed on a cluster no other test writes to), so this test
runs it as a subprocess and checks the shape of what it reports, not its speed: every pod of
every round bound, both schedulers (and the default one with pinned pods) measured in
alternating rounds and in both modes, pinned pods on nodes of their family, CPU charged to
every component.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "scheduling_throughput.py"
COMPONENTS = {
    "etcd",
    "kube-apiserver",
    "default-scheduler",
    "machine-catalog",
    "machine-catalog load-aware",
    "machine-catalog extender",
    "machine-catalog loopback",
    "machine-catalog serve",
}
CONFIGS = [
    "default-scheduler",
    "default-scheduler pinned",
    "machine-catalog",
    "machine-catalog load-aware",
    "machine-catalog extender",
    "machine-catalog loopback",
]
#: The kube-scheduler process charged with each configuration's rounds.
PROCESS = {c: c for c in CONFIGS} | {"default-scheduler pinned": "default-scheduler"}
#: Configurations that call the extender (over HTTPS, over loopback HTTP).
EXTENDER = {"machine-catalog load-aware", "machine-catalog extender", "machine-catalog loopback"}


def test_quick_run_measures_both_schedulers(tmp_path: Path, binaries: Path) -> None:
    out = tmp_path / "results.json"
    env = {**os.environ, "MC_CONTROLPLANE_BIN": str(binaries), "PYTHONPATH": str(REPO / "e2e")}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--pods",
            "60",
            "--no-readme",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "cluster"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (size,) = data["results"]
    assert size["nodes"] == 100
    rounds = size["rounds"]
    configs = CONFIGS
    # Both modes, 2 rounds each, the configurations alternating: forward, then backward.
    for mode in ("stream", "drain"):
        order = [r["scheduler"] for r in rounds if r["mode"] == mode]
        assert order == configs + configs[::-1], order
    for r in rounds:
        assert r["bound"] == r["pods"] == 60, r
        assert r["failed_creates"] == 0 and r["create_errors"] == {}, r
        assert r["pods_per_second"] > 0 and r["creates_per_second"] > 0
        assert r["wrong_family"] == 0
        assert set(r["cpu"]) >= COMPONENTS
        # The scheduler of the round did the work: it used CPU and reported its cycles.
        assert r["cpu"][PROCESS[r["scheduler"]]] > 0
        assert r["metrics"]["algorithm_ms"] > 0
    for r in rounds:
        if r["scheduler"] in EXTENDER:
            # The extender was called for these pods and serve spent CPU on them.
            assert r["metrics"]["extender_filter_ms"] > 0
            assert r["metrics"]["extender_prioritize_ms"] > 0
            assert r["cpu"]["machine-catalog serve"] > 0
        elif r["scheduler"] == "machine-catalog":
            # As shipped: pinned by the label and scored in-tree, no extender call.
            assert r["metrics"]["extender_filter_ms"] != r["metrics"]["extender_filter_ms"]
    cost = size["create_cost"]
    assert cost["samples"] == 20
    # The opted-in namespace's creates went through the webhook, the plain ones did not.
    assert cost["webhook_apiserver_ms"] > 0 and cost["webhook_server_ms"] > 0
    assert cost["plain_p50_ms"] > 0 and cost["webhook_p50_ms"] > 0
    assert "machine-catalog" in proc.stdout and "default-scheduler" in proc.stdout
