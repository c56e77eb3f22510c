"""The benchmark harnesses run end to end on a tiny fleet (no timing is asserted).

The fleet simulation is also checked for the mechanism its README claims, on a fleet small
enough to take a second: true speeds are apart from the catalog; with raw vCPU requests the
HPA's average hides how much hotter one family runs, with the packaged factors less so, and
after calibrate (run on the simulation's own pods and metrics) least.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent

from benchmarks import extender_latency, fleet_simulation, fleets, load_simulation  # noqa: E402
from benchmarks.floor_app import tune_worker_memory  # noqa: E402
from benchmarks.watch_feed import Churn, Feed  # noqa: E402
from extender.feeds.watching import ClusterWatcher, load_api_client  # noqa: E402
from extender.server.serve import GC_GEN0_THRESHOLD  # noqa: E402
from extender.state.cluster import ClusterState  # noqa: E402

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
    balancing = _section(readme, "calibration_balancing")
    assert "`python benchmarks/calibration_accuracy.py --seeds 2 --readme" in balancing
    assert "**With the work signal** (`--work-metrics`), the worst error is at most" in balancing
    assert "| 3 | unbiased | least-request (1) |" in balancing


@pytest.mark.slow
def test_latency_harness_runs_on_a_tiny_fleet(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "extender_latency.py"),
        "--quick",
        "--sizes",
        "60",
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
    assert "worker RSS MB, synced" in section and "100 pods/node" in section
    assert (tmp_path / "extender_latency.png").stat().st_size > 10_000
    # loadAware (cool, and with 5% of the nodes hot) beside balanced, each its own serve.
    assert "Scoring strategies" in section
    assert "loadAware" in section and "loadAware-5%-hot" in section


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


# kube-scheduler's numFeasibleNodesToFind (pkg/scheduler/schedule_one.go), by hand:
# under 100 nodes all; else percentage (0 = 50 - nodes/125, at least 5) of the nodes, at
# least 100.
@pytest.mark.parametrize(
    ("nodes", "percentage", "expected"),
    [
        (0, 0, 0),
        (60, 0, 60),
        (99, 0, 99),
        (100, 0, 100),  # 50% of 100 = 50 -> the minimum of 100
        (500, 0, 230),  # 50 - 4 = 46%
        (1000, 0, 420),  # 50 - 8 = 42%
        (5000, 0, 500),  # 50 - 40 = 10%
        (6000, 0, 300),  # 50 - 48 = 2% -> 5%
        (15000, 0, 750),  # 5%
        (1000, 100, 1000),
        (15000, 100, 15000),
        (1000, 5, 100),  # 50 -> the minimum
        (5000, 30, 1500),
    ],
)
def test_num_feasible_nodes_to_find(nodes: int, percentage: int, expected: int) -> None:
    assert extender_latency.num_feasible_nodes_to_find(nodes, percentage) == expected


@pytest.mark.parametrize(
    ("nodes", "family", "percentage", "expected"),
    [
        (1000, 333, 0, 333),  # wants 420, only 333 of the pod's family pass its filters
        (5000, 1667, 0, 500),
        (15000, 5000, 0, 750),
        (15000, 5000, 100, 5000),
        (60, 20, 0, 20),
    ],
)
def test_names_sent_is_capped_by_the_feasible_nodes(
    nodes: int, family: int, percentage: int, expected: int
) -> None:
    assert extender_latency.names_sent(nodes, family, percentage) == expected


def _sample(rounds: list[np.ndarray]) -> extender_latency.Sample:
    return extender_latency.Sample(rounds=list(rounds))


def test_round_interval_pairs_rounds_so_shared_drift_cancels() -> None:
    rng = np.random.default_rng(1)
    # Background load moves every round's level; the project costs 1.5x the floor throughout.
    levels = [1.0, 1.6, 0.8, 2.5, 1.1, 1.9]
    floor = [level * (1 + 0.01 * rng.random(80)) for level in levels]
    project = [1.5 * r for r in floor]
    a, b = _sample(project), _sample(floor)
    low, high = extender_latency.round_interval([a, b], extender_latency.median_ratio)
    assert 1.49 < low <= high < 1.51
    # Unpaired, the same data gives a wide interval: the drift is not shared any more.
    low_u, high_u = extender_latency.round_interval(
        [a, b], extender_latency.median_ratio, paired=False
    )
    assert high_u - low_u > 0.5


def test_round_interval_reflects_round_to_round_spread() -> None:
    steady = _sample([np.full(50, 1.0) for _ in range(6)])
    drifting = _sample([np.full(50, level) for level in (1.0, 1.0, 1.0, 3.0, 3.0, 3.0)])
    assert extender_latency.round_interval([steady], extender_latency.p99) == (1.0, 1.0)
    # Half the rounds ran three times slower: the median of a resample can be either.
    low, high = extender_latency.round_interval([drifting], lambda a: float(np.median(a)))
    assert (low, high) == (1.0, 3.0)


def test_floor_workers_get_serves_gc_settings() -> None:
    before = gc.get_threshold()
    try:
        app = Flask("floor-test")
        tune_worker_memory(app)
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert app.after_request_funcs[None]  # malloc_trim after large bodies (glibc)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_watch_feed_churns_pods_and_nodes_into_a_real_watcher(tmp_path: Path) -> None:
    nodes = fleets.make_nodes(6, seed=5)
    pods = fleets.make_pods(nodes, 2, seed=6)
    feed = Feed(nodes, pods, Churn(pod_events_per_s=200, node_status_period_s=0.3), seed=7)
    state = ClusterState(fleets.bench_catalog())
    watcher = ClusterWatcher(state, load_api_client(str(feed.write_kubeconfig(tmp_path / "kc"))))
    try:
        watcher.start()
        assert watcher.wait_synced(30)
        assert state.counts()["pods"] == 12
        first = state.generation
        feed.start_churn()
        time.sleep(1.0)
    finally:
        stats = feed.stop()
        watcher.stop()
    # 200 pod events and 20 node updates a second (6 nodes, each every 0.3 s), on schedule
    # (a late loop catches up, never runs ahead), applied by the watcher as they came.
    seconds = stats["seconds"]
    assert seconds >= 0.9
    assert 0.5 * 200 * seconds <= stats["pod_events"] <= 200 * seconds + 2
    assert 0.5 * 20 * seconds <= stats["node_events"] <= 20 * seconds + 2
    assert state.generation - first >= 50
    # Every cycle adds one pod and deletes an old one: the count stays level (give or take
    # the cycle in flight), and the oldest pods are the ones gone.
    assert 11 <= state.counts()["pods"] <= 14
