"""The benchmark harnesses run end to end on a tiny fleet (no timing is asserted).

The fleet simulation is also checked for the mechanisms its README claims, on fleets small
enough to take seconds: true speeds are apart from the catalog (and 8% below it when the
vendor is optimistic); with raw vCPU requests the HPA's average hides how much hotter one
family runs, with the packaged factors less so, after calibrate (run out of sample on the
simulation's own pods and metrics) least, and with hand-pinned pools not at all;
least-request balancing evens CPU use out; the workload-aware choice keeps a Deployment on
one family while it has room. The load simulation's in-tree scores are kube-scheduler's.
"""

from __future__ import annotations

import gc
import math
import subprocess
import sys
import time
from collections.abc import Sequence
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
    "--seeds", "2", "--refine", "1",
]  # fmt: skip


def _section(readme: Path, name: str) -> str:
    text = readme.read_text()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    assert begin in text and end in text
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_fleet_simulation_writes_its_section_and_plot(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# intro\n\n<!-- BEGIN other -->\nkept\n<!-- END other -->\n")
    argv = [
        *SMALL, "--targets", "56,62,68", "--scenarios", "unbiased,no-limit",
        "--readme", str(readme), "--out", str(tmp_path),
    ]  # fmt: skip
    assert fleet_simulation.main(argv) == 0
    section = _section(readme, "fleet_simulation")
    for mode in fleet_simulation.MODES:
        assert f"| `unbiased` | `{mode}` |" in section
        assert f"| `no-limit` * | `{mode}` |" in section
    headline = _section(readme, "fleet_simulation_headline")
    assert "Goal, stated before the run" in headline and "`no-limit` (realistic)" in headline
    assert "`aware` minus `packaged`" in _section(readme, "fleet_simulation_summary")
    assert "kept" in _section(readme, "other")  # another harness's section is untouched
    assert (tmp_path / "fleet_simulation.png").stat().st_size > 10_000
    # Running again replaces the section instead of appending a second one.
    fleet_simulation.main(argv)
    assert readme.read_text().count("<!-- BEGIN fleet_simulation -->") == 1


@pytest.mark.parametrize(
    ("error", "bias", "low", "high"),
    [
        (0.1, 0.0, 0.9, 1.1),  # apart from the catalog, within its claimed accuracy
        (0.0, 0.08, 0.92, 0.92),  # the vendor's claim 8% optimistic, on every family
        (0.1, 0.08, 0.92 * 0.9, 0.92 * 1.1),
    ],
)
def test_true_speed_is_apart_from_the_catalog(
    error: float, bias: float, low: float, high: float
) -> None:
    catalog = fleet_simulation.packaged_catalog()
    fleet = fleet_simulation.build_fleet(catalog, 4, seed=3, catalog_error=error, bias=bias)
    assert set(fleet.true_speed) == set(fleet_simulation.FAMILY_PREFIXES)
    assert fleet.true_speed["aws-m5"] == 1.0  # the baseline is the unit
    for name in ("aws-m6i", "aws-m7i"):
        ratio = fleet.true_speed[name] / float(catalog.by_name[name].scu_per_core)
        assert low - 1e-9 <= ratio <= high + 1e-9 and ratio != 1.0
    assert not np.allclose(fleet.speed, fleet.factor)


def _world(scenario: fleet_simulation.Scenario, extra: Sequence[str] = ()) -> tuple:
    args = fleet_simulation.parse_args([*SMALL, *extra])
    return args, fleet_simulation.setup(args, scenario, args.seed)


def test_fleet_simulation_shows_the_mechanism() -> None:
    """raw hides hot families from the HPA; packaged less; calibrated (out of sample) least;
    pinned pools none at all."""
    scenario = fleet_simulation.Scenario("t", 0.1)
    args, world = _world(scenario, ["--sensitivity", "0"])
    catalog = fleet_simulation.packaged_catalog()
    calibrated = fleet_simulation.calibrate_fleet(args, catalog, world)
    assert calibrated.applied  # the simulated usage went through calibrate + propose
    runs = {
        mode: fleet_simulation.run(mode, args, cat, 60, world)
        for mode, cat in (
            ("raw", catalog),
            ("pinned", catalog),
            ("packaged", catalog),
            ("calibrated", calibrated.catalog),
        )
    }
    bias = {mode: r.operating.worst_bias() for mode, r in runs.items()}
    assert bias["raw"] > 0.1  # vCPU requests: the faster families run cooler than the average
    assert bias["calibrated"] < bias["packaged"] < bias["raw"]
    assert bias["calibrated"] < 0.03
    assert bias["pinned"] < 1e-9
    for r in runs.values():
        assert r.stopped_by == "first Pending pod" and r.operating.pending == 0


def test_calibration_is_out_of_sample() -> None:
    """calibrate sees other Deployments than the ones scored (same fleet, other seed)."""
    scenario = fleet_simulation.Scenario("t", 0.1)
    args, world = _world(scenario)
    scored = {(d.work, d.cpu) for d in fleet_simulation._deployments(args, world.fleet, 4)}
    seen = fleet_simulation._deployments(
        args, world.fleet, args.seed + fleet_simulation.CALIBRATION_SET
    )
    assert not scored & {(d.work, d.cpu) for d in seen}


@pytest.mark.parametrize("drift", [0.0, 0.25])
def test_pinned_pools_keep_each_deployment_on_one_family(drift: float) -> None:
    """Hand-pinned pools: every replica of a Deployment on its pool's family, pools balanced
    by the usage the team observed, no within-Deployment skew whatever the balancing."""
    for balancing in fleet_simulation.BALANCING:
        scenario = fleet_simulation.Scenario("t", 0.1, balancing=balancing, drift=drift)
        args, world = _world(scenario)
        fleet = world.fleet
        deployments = fleet_simulation._deployments(args, fleet, args.seed + 1, drift)
        sim = fleet_simulation.Simulation(
            "pinned", fleet_simulation.packaged_catalog(), fleet, pools=world.pools,
            balancing=balancing,
        )  # fmt: skip
        sim.converge(deployments, 1.0)
        for dep in deployments:
            assert {r.family for r in dep.replicas} == {world.pools[dep.name]}
        step = fleet_simulation.measure(sim, deployments, 1.0)
        assert step.worst_bias() < 1e-9
        # The pools' observed usage (at balancing time) is level up to one Deployment:
        # greedy packing leaves pools apart by at most the share of the largest one.
        used = dict.fromkeys(set(world.pools.values()), 0.0)
        largest = 0.0
        for dep in deployments:
            f = world.pools[dep.name]
            speed = float(fleet.speed[fleet.family == f][0])
            cores = fleet.allocatable[fleet.family == f].sum()
            used[f] += dep.observed / speed**dep.sensitivity / cores
            largest = max(largest, dep.observed / speed**dep.sensitivity / cores)
        assert len(used) == 3 and max(used.values()) - min(used.values()) <= largest


def test_least_request_balancing_evens_out_cpu_use() -> None:
    """Least-request sends faster replicas more work: raw shows no skew any more."""
    catalog = fleet_simulation.packaged_catalog()
    bias = {}
    for balancing in fleet_simulation.BALANCING:
        args, world = _world(fleet_simulation.Scenario("t", 0.1, balancing=balancing))
        bias[balancing] = fleet_simulation.run("raw", args, catalog, 60, world).operating
    assert bias["round-robin"].worst_bias() > 0.1
    assert bias["least-request"].worst_bias() < 1e-9


def test_biased_catalog_makes_packaged_skew_more() -> None:
    """Vendor factors 8% optimistic: packaged replicas on newer families run hotter."""
    catalog = fleet_simulation.packaged_catalog()
    skew = {}
    for scenario in (
        fleet_simulation.Scenario("exact", 0.0),
        fleet_simulation.Scenario("biased", 0.0, bias=0.08),
    ):
        args, world = _world(scenario, ["--sensitivity", "0"])
        op = fleet_simulation.run("packaged", args, catalog, 60, world).operating
        skew[scenario.name] = op.family_bias()
    assert max(abs(b) for b in skew["exact"].values()) < 0.02
    m5, m7i = catalog.family_index["aws-m5"], catalog.family_index["aws-m7i"]
    # Slower than claimed: aws-m7i's replicas hotter than the baseline's by ~1/0.92 - 1.
    assert skew["biased"][m7i] - skew["biased"][m5] > 0.06


def test_aware_keeps_a_deployment_together_while_it_has_room() -> None:
    """The workload-aware choice: one family per Deployment at low fill; packaged spreads."""
    catalog = fleet_simulation.packaged_catalog()
    args, world = _world(fleet_simulation.Scenario("t", 0.1))
    families = {}
    for mode in ("packaged", "aware"):
        deployments = fleet_simulation._deployments(args, world.fleet, args.seed + 1)
        sim = fleet_simulation.Simulation(mode, catalog, world.fleet)
        sim.converge(deployments, 1.0)
        families[mode] = [len({r.family for r in d.replicas}) for d in deployments]
    assert max(families["aware"]) == 1
    assert max(families["packaged"]) > 1


@pytest.mark.parametrize(
    ("limit", "demand", "node", "surge", "hot"),
    [
        # limit 1000m: 850m is under 90% of it; +25% throttles it (usage capped at 1000m)
        (1000.0, 850.0, 1, 0.0, 0.0),
        (1000.0, 850.0, 1, 0.25, 0.5),
        # no limit: never throttled; hot when its node is crowded (> 90% of 2000m), and then
        # so is every replica there
        (math.inf, 1300.0, 1, 0.25, 0.0),
        (math.inf, 1300.0, 0, 0.25, 1.0),
        (math.inf, 1300.0, 0, 0.0, 0.0),
    ],
)
def test_hot_share_counts_throttled_and_crowded_replicas(
    limit: float, demand: float, node: int, surge: float, hot: float
) -> None:
    """The replica under test on ``node``, and a quiet one (200m, limit 1000m) on node 0;
    both nodes have 2000m allocatable."""
    step = fleet_simulation.Step(
        load=1.0, fleet_util=0.0, requested=0.0, max_node=0.0, pending=0,
        demand=np.array([demand, 200.0]), limit=np.array([limit, 1000.0]),
        node=np.array([node, 0]), allocatable=np.array([2000.0, 2000.0]),
        replica_family=np.zeros(2, dtype=np.int64), relative=np.ones(2),
    )  # fmt: skip
    assert step.hot_share(surge) == pytest.approx(hot)


@pytest.mark.parametrize(
    ("highest_safe", "start", "expected"),
    [(62, 62, 62), (62, 40, 62), (41, 62, 41), (39, 62, None), (90, 62, 90), (75, 90, 75)],
)
def test_safest_run_finds_the_highest_safe_target(
    highest_safe: int, start: int, expected: int | None
) -> None:
    targets = list(range(40, 91))
    tried: list[int] = []

    def attempt(target: int) -> int:
        tried.append(target)
        return target

    best, runs = fleet_simulation.safest_run(
        targets, attempt, lambda t: t <= highest_safe, targets.index(start)
    )
    assert best == expected and runs == len(set(tried)) <= 14


@pytest.mark.parametrize("mode", ["packaged", "aware"])
def test_simulation_pins_every_normalized_replica_to_its_nodes_family(mode: str) -> None:
    args = fleet_simulation.parse_args(SMALL)
    catalog = fleet_simulation.packaged_catalog()
    fleet = fleet_simulation.build_fleet(catalog, args.nodes_per_family, args.seed)
    deployments = fleet_simulation.build_deployments(8, fleet, 0.3, seed=1)
    sim = fleet_simulation.Simulation(mode, catalog, fleet, seed=2)
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
    """The smoke check: both strategies and the noise floor run through the real scoring and
    filter, and the section carries the table and the per-seed changes (no number is
    asserted)."""
    readme = tmp_path / "README.md"
    argv = [
        "--nodes-per-family", "4", "--minutes", "20", "--seeds", "1,2",
        "--churn", "0.001,0.01", "--readme", str(readme),
    ]  # fmt: skip
    code = load_simulation.main(argv)
    assert code == 0
    section = _section(readme, "load_simulation")
    for churn in ("0.1%", "1%"):
        for variant in load_simulation.VARIANTS:
            assert f"| {churn} | `{variant}` |" in section
    assert "| >70% |" in section and "| >90% |" in section  # per seed, both measures
    assert "NodeResourcesBalancedAllocation" in section
    closing = _section(readme, "load_simulation_summary")
    assert "0.1% churn" in closing and "noise floor" in closing


def test_hot_spot_measures_are_not_the_filters_threshold() -> None:
    threshold = load_simulation.catalog_for("loadAware").scoring.hot_spot_usage
    assert threshold is not None and float(threshold) not in load_simulation.HOT_LEVELS


@pytest.mark.parametrize(
    ("cpu", "mem", "expected"),
    [
        # (allocatable, requested, pod) per resource; LeastAllocated = mean of the two
        # (free after the pod) * 100 // allocatable; BalancedAllocation = (1 - |f_cpu -
        # f_mem| / 2) * 100 with f = requested share after the pod.
        ((1000, 0, 0), (1000, 0, 0), 100 + 100),
        ((1000, 0, 500), (1000, 0, 500), 50 + 100),
        ((1000, 0, 500), (1000, 0, 100), (50 + 90) // 2 + 80),
        ((1000, 900, 100), (1000, 0, 0), (0 + 100) // 2 + 50),
        ((1000, 1000, 500), (1000, 0, 0), (0 + 100) // 2 + 50),  # over: fraction capped at 1
    ],
)
def test_in_tree_scores_are_kube_schedulers_defaults(
    cpu: tuple[int, int, int], mem: tuple[int, int, int], expected: int
) -> None:
    score = load_simulation.in_tree_scores(
        np.array([cpu[0]]), np.array([cpu[1]]), cpu[2], np.array([mem[0]]), np.array([mem[1]]),
        mem[2],
    )  # fmt: skip
    assert int(score[0]) == expected


@pytest.mark.parametrize(
    ("load_aware", "extender", "cpu", "mem", "expected"),
    [
        # balanced, the base configuration: LeastAllocated on cpu x 5 + BalancedAllocation;
        # the extender's score is not called for, so it does not count.
        (False, 7, (1000, 0, 500), (1000, 0, 500), 5 * 50 + 100),
        (False, 0, (1000, 0, 500), (1000, 0, 100), 5 * 50 + 80),
        (False, 3, (1000, 900, 100), (1000, 0, 0), 5 * 0 + 50),
        # loadAware, components/scheduler-load-aware: the extender's score x 10 x 5 alone.
        (True, 7, (1000, 0, 500), (1000, 0, 500), 350),
        (True, 0, (1000, 900, 100), (1000, 0, 0), 0),
    ],
)
def test_shipped_scores_are_the_shipped_configurations_sums(
    load_aware: bool,
    extender: int,
    cpu: tuple[int, int, int],
    mem: tuple[int, int, int],
    expected: int,
) -> None:
    score = load_simulation.shipped_scores(
        load_aware, np.array([extender]), np.array([cpu[0]]), np.array([cpu[1]]), cpu[2],
        np.array([mem[0]]), np.array([mem[1]]), mem[2],
    )  # fmt: skip
    assert int(score[0]) == expected


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
