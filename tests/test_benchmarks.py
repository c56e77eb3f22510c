"""The benchmark harnesses run end to end on a tiny fleet (no timing is asserted).

The fleet simulation is also checked for the mechanism its README claims, on a fleet small
enough to take a second: with raw vCPU requests the slow family runs hotter than the fast
one and the first node saturates earlier; with SCU-normalized requests node usage is even
across families.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fleet_simulation, fleets

ROOT = Path(__file__).resolve().parent.parent

SMALL = ["--nodes-per-family", "6", "--deployments", "20", "--step", "0.05", "--seed", "3"]


def _section(readme: Path, name: str) -> str:
    text = readme.read_text()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    assert begin in text and end in text
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_fleet_simulation_writes_its_section_and_plot(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# intro\n\n<!-- BEGIN other -->\nkept\n<!-- END other -->\n")
    code = fleet_simulation.main(
        [*SMALL, "--targets", "60", "--readme", str(readme), "--out", str(tmp_path)]
    )
    assert code == 0
    section = _section(readme, "fleet_simulation")
    assert "| `raw` |" in section and "| `normalized` |" in section
    assert "kept" in _section(readme, "other")  # another harness's section is untouched
    assert (tmp_path / "fleet_simulation.png").stat().st_size > 10_000
    # Running again replaces the section instead of appending a second one.
    fleet_simulation.main(
        [*SMALL, "--targets", "60", "--readme", str(readme), "--out", str(tmp_path)]
    )
    assert readme.read_text().count("<!-- BEGIN fleet_simulation -->") == 1


def test_fleet_simulation_shows_the_mechanism() -> None:
    args = fleet_simulation.parse_args(SMALL)
    catalog = fleets.bench_catalog()
    fleet = fleet_simulation.build_fleet(catalog, args.nodes_per_family, args.seed)
    raw = fleet_simulation.run("raw", args, catalog, 60, until_pending=False)
    norm = fleet_simulation.run("normalized", args, catalog, 60, until_pending=False)
    slow, fast = (catalog.family_index[n] for n in ("m4", "m7i"))

    def mean(run: fleet_simulation.Run, family: int) -> float:
        return float(run.operating.node_util[fleet.family == family].mean())

    # vCPU requests: the same requests put more real load on the slow family's nodes.
    assert mean(raw, slow) > 1.2 * mean(raw, fast)
    # SCU requests: usage follows capacity, so the families are within a few points.
    assert abs(mean(norm, slow) - mean(norm, fast)) < 0.1
    assert norm.operating.node_util.std() < raw.operating.node_util.std()
    # Both runs end on a saturated node, the normalized one at a fuller fleet.
    assert raw.stopped_by == norm.stopped_by == "first node saturated"
    assert norm.ceiling.fleet_util > raw.ceiling.fleet_util
    # The HPA's average hides the slow replicas only with vCPU requests.
    raw_ratio = raw.operating.replicas / raw.operating.needed
    norm_ratio = norm.operating.replicas / norm.operating.needed
    assert raw_ratio < norm_ratio


def test_simulation_pins_every_normalized_replica_to_its_nodes_family() -> None:
    args = fleet_simulation.parse_args(SMALL)
    catalog = fleets.bench_catalog()
    fleet = fleet_simulation.build_fleet(catalog, args.nodes_per_family, args.seed)
    deployments = fleet_simulation.build_deployments(8, fleet, 0.3, seed=1)
    sim = fleet_simulation.Simulation("normalized", catalog, fleet, seed=2)
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
