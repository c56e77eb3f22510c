"""The throughput benchmark's arithmetic: ratios paired by round, refused creates counted
and shown, on made-up rounds (the run itself is e2e/tests/test_throughput_smoke.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scheduling_throughput as st  # noqa: E402


def rnd(config: str, index: int, rate: float, failed: int = 0) -> st.Round:
    return st.Round(
        scheduler=config,
        nodes=100,
        index=index,
        pods=100,
        bound=100 - failed,
        failed_creates=failed,
        seconds=1.0,
        create_seconds=1.0,
        pods_per_second=rate,
        creates_per_second=rate,
        create_p50_ms=1.0,
        create_p99_ms=2.0,
        bind_p50_ms=1.0,
        cpu=dict.fromkeys(st.COMPONENTS, 0.1),
        wrong_family=0,
        metrics={"algorithm_ms": 1.0},
        create_errors={"403 Forbidden": failed} if failed else {},
    )


def test_ratios_are_paired_by_round():
    # The machine slows down in round 2 for both: paired ratios stay at 0.5 each time,
    # while the ratio of the medians would be 0.6 / 1.0.
    num = [rnd(st.MC_SCHEDULER, 1, 50), rnd(st.MC_SCHEDULER, 2, 5), rnd(st.MC_SCHEDULER, 3, 60)]
    den = [rnd(st.PINNED, 1, 100), rnd(st.PINNED, 2, 10), rnd(st.PINNED, 3, 120)]
    mid, lo, hi = st.paired_ratio(num, den, seed=1)
    assert mid == lo == hi == 0.5


def test_a_round_without_its_pair_is_left_out():
    num = [rnd(st.MC_SCHEDULER, 1, 50), rnd(st.MC_SCHEDULER, 2, 80)]
    den = [rnd(st.PINNED, 1, 100)]
    assert st.paired_ratio(num, den, seed=1)[0] == 0.5


def test_refused_creates_are_reported_in_the_table():
    rounds = [
        rnd(config, i, 100.0, failed=3 if config == st.MC_SCHEDULER and i == 1 else 0)
        for i in (1, 2)
        for config in (st.DEFAULT_SCHEDULER, st.PINNED, st.MC_SCHEDULER)
    ]
    cost = st.CreateCost(100, 10, 1.0, 2.0, 2.0, 3.0, 1.0, 0.5)
    meta = {
        "stamp": "now",
        "machine": "test",
        "load_before": "0",
        "load_after": "0",
        "seconds": 60,
        "command": "x",
        "settings": {},
        "pods": 100,
        "rounds": 2,
        "clients": 4,
    }
    body, summary = st.render([st.SizeResult(100, 1.0, rounds, cost)], meta, seed=1)
    assert "197 / 200 (3 refused)" in body
    assert "machine-catalog **100%**" in summary


@pytest.mark.parametrize(
    ("configs", "processes"),
    [
        ([st.PINNED], [st.DEFAULT_SCHEDULER]),
        ([st.MC_SCHEDULER], [st.MC_SCHEDULER]),
        (list(st.CONFIGS), list(st.SCHEDULERS)),
        ([st.MC_EXTENDER, st.PINNED], [st.DEFAULT_SCHEDULER, st.MC_EXTENDER]),
    ],
)
def test_only_the_schedulers_the_configurations_use_are_started(configs, processes):
    assert st.schedulers_for(configs) == processes


def test_a_run_of_some_configurations_renders_and_plots_the_components_it_had(tmp_path):
    """Only the kube-schedulers of the configurations run exist: their CPU is what the
    tables and the plot show (a run of four configurations once crashed in the render)."""
    run = (st.DEFAULT_SCHEDULER, st.PINNED, st.MC_SCHEDULER)
    absent = {st.MC_EXTENDER, st.MC_LOOPBACK}
    rounds = []
    for i in (1, 2):
        for config in run:
            r = rnd(config, i, 100.0)
            r.cpu = {c: v for c, v in r.cpu.items() if c not in absent}
            rounds.append(r)
    cost = st.CreateCost(100, 10, 1.0, 2.0, 2.0, 3.0, 1.0, 0.5)
    meta = {
        "stamp": "now", "machine": "test", "load_before": "0", "load_after": "0",
        "seconds": 60, "command": "x", "settings": {}, "pods": 100, "rounds": 2, "clients": 4,
    }  # fmt: skip
    results = [st.SizeResult(100, 1.0, rounds, cost)]
    assert st.measured_components(results) == [c for c in st.COMPONENTS if c not in absent]
    body, _ = st.render(results, meta, seed=1)
    assert st.MC_LOOPBACK not in body
    st.plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_settings_come_from_the_configurations_the_run_wrote(tmp_path):
    """A run without the extender configuration reads the shipped one's settings (a run of
    the shipped configuration alone once crashed at the end, reading a file never written)."""
    extender = tmp_path / "extender.yaml"
    shipped = tmp_path / "shipped.yaml"
    client = {"clientConnection": {"qps": 500, "burst": 1000}}
    shipped.write_text(yaml.safe_dump({"profiles": [{"schedulerName": "x"}], **client}))
    assert st.settings_of([extender, shipped]) == {
        "percentageOfNodesToScore": "unset (adaptive)",
        "parallelism": "unset (16)",
        "qps/burst": "500/1000",
    }
    extender.write_text(
        yaml.safe_dump({"extenders": [{"weight": 5, "httpTimeout": "2s"}], **client})
    )
    assert st.settings_of([extender, shipped])["extender weight"] == 5
    assert st.settings_of([tmp_path / "none.yaml"]) == {}
