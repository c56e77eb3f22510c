"""The benchmark harnesses run end to end on a tiny fleet (no timing is asserted).

The fleet simulation is also checked for the mechanism its README claims, on a fleet small
enough to take a second: true speeds are apart from the catalog; with raw vCPU requests the
HPA's average hides how much hotter one family runs, with the packaged factors less so, and
after calibrate (run on the simulation's own pods and metrics) least.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import (
    fleet_simulation,
    load_simulation,
)

ROOT = Path(__file__).resolve().parent.parent

SMALL = [
    "--nodes-per-family", "6", "--deployments", "20", "--step", "0.05", "--seed", "3",
    "--seeds", "2", "--sweep-seeds", "1",
]  # fmt: skip


def _section(readme: Path, name: str) -> str:
    text = readme.read_text()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    assert begin in text and end in text
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_fleet_simulation_writes_its_section_and_plot(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# intro\n\n<!-- BEGIN other -->\nkept\n<!-- END other -->\n")
    argv = [*SMALL, "--targets", "60,70", "--readme", str(readme), "--out", str(tmp_path)]
    assert fleet_simulation.main(argv) == 0
    section = _section(readme, "fleet_simulation")
    for mode in fleet_simulation.MODES:
        assert f"| `{mode}` |" in section
        assert f"**`{mode}`**" in _section(readme, "fleet_simulation_summary")
    assert "kept" in _section(readme, "other")  # another harness's section is untouched
    assert (tmp_path / "fleet_simulation.png").stat().st_size > 10_000
    # Running again replaces the section instead of appending a second one.
    fleet_simulation.main(argv)
    assert readme.read_text().count("<!-- BEGIN fleet_simulation -->") == 1


def test_true_speed_is_apart_from_the_catalog() -> None:
    catalog = fleet_simulation.packaged_catalog()
    fleet = fleet_simulation.build_fleet(catalog, 4, seed=3, catalog_error=0.1)
    assert set(fleet.true_speed) == set(fleet_simulation.FAMILY_PREFIXES)
    assert fleet.true_speed["aws-m5"] == 1.0  # the baseline is the unit
    off = [abs(fleet.true_speed[n] / float(catalog.by_name[n].scu_per_core) - 1) for n in
           ("aws-m6i", "aws-m7i")]  # fmt: skip
    assert all(0 < e <= 0.1 for e in off)
    assert not np.allclose(fleet.speed, fleet.factor)


def test_fleet_simulation_shows_the_mechanism() -> None:
    """raw hides hot families from the HPA; packaged less; calibrated least."""
    args = fleet_simulation.parse_args([*SMALL, "--catalog-error", "0.1", "--sensitivity", "0"])
    catalog = fleet_simulation.packaged_catalog()
    calibrated = fleet_simulation.calibrate_fleet(args, catalog, args.seed)
    assert calibrated.applied  # the simulated usage went through calibrate + propose
    runs = {
        mode: fleet_simulation.run(mode, args, cat, 60, until_pending=False)
        for mode, cat in (
            ("raw", catalog),
            ("packaged", catalog),
            ("calibrated", calibrated.catalog),
        )
    }
    bias = {mode: r.operating.worst_bias() for mode, r in runs.items()}
    assert bias["raw"] > 0.1  # vCPU requests: the faster families run cooler than the average
    assert bias["calibrated"] < bias["packaged"] < bias["raw"]
    assert bias["calibrated"] < 0.03
    for r in runs.values():
        assert r.stopped_by == "first node saturated" and r.operating.pending == 0


def test_simulation_pins_every_normalized_replica_to_its_nodes_family() -> None:
    args = fleet_simulation.parse_args(SMALL)
    catalog = fleet_simulation.packaged_catalog()
    fleet = fleet_simulation.build_fleet(catalog, args.nodes_per_family, args.seed)
    deployments = fleet_simulation.build_deployments(8, fleet, 0.3, seed=1)
    sim = fleet_simulation.Simulation("packaged", catalog, fleet, seed=2)
    sim.converge(deployments, 1.0)
    replicas = [r for d in deployments for r in d.replicas]
    assert replicas and all(r.node >= 0 for r in replicas)
    for dep in deployments:
        for r in dep.replicas:
            family = catalog.families[r.family]
            assert r.pod["metadata"]["annotations"]["machine-catalog.io/family"] == family.name
            # The request is the SCU rewritten for the family the pod runs on.
            assert r.request == -(-dep.cpu * family.factor.denominator // family.factor.numerator)
    # The cache's per-node totals are the sum of the replicas placed there.
    view = sim.state.view(fleet.names)
    for i in range(len(fleet.names)):
        assert view.requested[i] == sum(r.request for r in replicas if r.node == i)


def test_calibration_accuracy_writes_its_section(tmp_path: Path) -> None:
    from benchmarks import calibration_accuracy

    readme = tmp_path / "README.md"
    readme.write_text("")
    assert calibration_accuracy.main(["--seeds", "2", "--readme", str(readme)]) == 0
    section = _section(readme, "calibration_accuracy")
    rows = [line for line in section.splitlines() if line.startswith("| 3 | 100 | 3 |")]
    assert rows and "seeds with every family within 2%" in section


@pytest.mark.slow
def test_latency_harness_runs_on_a_tiny_fleet(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "extender_latency.py"),
        "--quick",
        "--sizes",
        "60",
        "--workers",
        "1",
        "--duration",
        "0.02",
        "--min-calls",
        "2",
        "--readme",
        str(readme),
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    section = _section(readme, "extender_latency")
    for call in ("| filter |", "| prioritize |", "| webhook |"):
        assert call in section
    assert "NodeNames" in section and "Nodes 20" in section  # both extender modes
    assert "worker RSS MB, loaded" in section and "100 pods/node" in section
    assert (tmp_path / "extender_latency.png").stat().st_size > 10_000
    strategies = _section(readme, "load_aware_latency")  # loadAware beside balanced
    assert "`loadAware, 5% hot`" in strategies and "| prioritize |" in strategies


def test_load_simulation_writes_its_section_on_a_tiny_fleet(tmp_path: Path) -> None:
    """The smoke check: both strategies run through the real scoring and filter, and the
    section carries the table and the per-seed ratio (no number is asserted)."""
    readme = tmp_path / "README.md"
    code = load_simulation.main(
        [
            "--nodes-per-family",
            "4",
            "--minutes",
            "20",
            "--seeds",
            "1,2",
            "--sweep-seeds",
            "1",
            "--sweep-churn",
            "0.02",
            "--sweep-ratio-high",
            "1.2",
            "--sweep-request-weight",
            "0.1",
            "--readme",
            str(readme),
        ]
    )
    assert code == 0
    section = _section(readme, "load_simulation")
    assert "| `balanced` |" in section and "| `loadAware` |" in section
    assert "per seed:" in section and "Sensitivity" in section


def test_load_simulation_places_through_the_hot_spot_filter() -> None:
    """A node above hotSpotUsage gets no pod under loadAware, and may under balanced."""
    args = load_simulation.parse_args(["--nodes-per-family", "3", "--minutes", "1"])
    world = load_simulation.build_world(args, 1, load_simulation.catalog_for("balanced"))
    for strategy, expect_hot_allowed in (("loadAware", False), ("balanced", True)):
        sim = load_simulation.Run(strategy, world, seed=1)
        family = world.dep_family[0]
        members = sim.family_nodes[family]
        hot = members[0]
        alloc = int(world.allocatable[sim.position[hot]])
        samples = {n: load_simulation.UsageSample(0, sim.now) for n in members}
        samples[hot] = load_simulation.UsageSample(alloc * 95 // 100, sim.now)
        sim.state.set_usage(samples)
        sim.current_usage = None
        placed = []
        for _ in range(3 * len(members)):
            pod = sim.new_pod(0)
            assert sim.schedule(pod, 0)
            placed.append(world.names[pod.node])
        assert (hot in placed) is expect_hot_allowed, (strategy, placed)
