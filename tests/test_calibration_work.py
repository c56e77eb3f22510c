"""Calibration from work, and the warning when usage alone cannot be trusted.

The hidden fleet (``benchmarks/work_fleet.py``): true speeds off the catalog by up to 10%,
100 workloads, ±20% usage noise per sample, ±10% balancer imbalance, ±5% mismatch between
the rate's window and the usage samples. Under least-request balancing every replica's CPU
use is the same on every family; the work signal must recover the true speeds within 3%,
and without it ``calibrate`` must warn rather than report speeds near 1.0 as measured.
``benchmarks/calibration_accuracy.py`` shows the same over many seeds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import metrics_fleet as mf  # noqa: E402
from benchmarks import work_fleet as wf  # noqa: E402
from machine_catalog.calibration import calibrate  # noqa: E402
from machine_catalog.loading import load_catalog  # noqa: E402
from machine_catalog.work_rates import WorkSignalError, parse_vector  # noqa: E402

CATALOG = load_catalog()
THREE = ("aws-m5", "aws-m6i", "aws-m7i")
FIVE = ("aws-m5", "aws-c5", "aws-m6i", "aws-c6i", "aws-m7i")


def series(ns: str = "shop", pod: str = "web-1", value: Any = "12.5") -> dict[str, Any]:
    return {"metric": {"namespace": ns, "pod": pod}, "value": [1764417600.0, value]}


def response(result: Any, kind: str = "vector") -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": result}}


def test_a_vector_gives_one_rate_per_pod() -> None:
    doc = response([series(pod="a", value="12.5"), series(pod="b", value="0")])
    doc["data"]["result"][0]["metric"] |= {"job": "web", "instance": "10.0.0.1:8080"}
    assert parse_vector(doc, "f") == {("shop", "a"): 12.5, ("shop", "b"): 0.0}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a Prometheus API response"),
        (
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
            "Prometheus answered bad_data: parse error at char 5",
        ),
        ({"status": "pending"}, "status is 'pending'"),
        (response([], "matrix"), "resultType is 'matrix', not 'vector'"),
        (response("3", "scalar"), "resultType is 'scalar'"),
        ({"status": "success"}, "resultType is None"),
        (response({"a": 1}), "data.result is not a list"),
        (response([]), "matched no series"),
        (response([{"value": [0, "1"]}]), "no 'metric' labels"),
        (
            response([{"metric": {"namespace": "shop"}, "value": [0, "1"]}]),
            "lack pod; aggregate by pod, e.g. sum by (namespace, pod)",
        ),
        (response([series(value=12.5)]), "'value' is not [timestamp, \"number\"]"),
        (response([series(value="twelve")]), "value 'twelve' is not a number"),
        (response([series(value="NaN")]), "shop/web-1): value NaN is not a finite rate"),
        (response([series(value="+Inf")]), "value +Inf is not a finite rate"),
        (response([series(value="-2")]), "value -2 is not a finite rate >= 0"),
        (response([series(), series()]), "a second series for shop/web-1"),
    ],
)
def test_bad_work_signals_are_refused_with_the_reason(document: Any, message: str) -> None:
    with pytest.raises(WorkSignalError) as err:
        parse_vector(document, "work.json")
    assert str(err.value).startswith("work.json")
    assert message in str(err.value)


def worst(result: Any, truth: dict[str, float]) -> float:
    return max(abs(result.family(n).estimate / s - 1) for n, s in truth.items())


@pytest.mark.parametrize("families", [THREE, FIVE])
@pytest.mark.parametrize("seed", [0, 1])
def test_least_request_balancing_hidden_fleet(families: tuple[str, ...], seed: int) -> None:
    truth = mf.speeds_with_error(CATALOG, families, 0.10, seed)
    fleet = wf.balanced_fleet(CATALOG, truth, evening=1.0, seed=seed)
    work = parse_vector(fleet.work, "work")

    usage_only = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics)
    # Usage alone reads the evened usage as equal speeds ...
    assert worst(usage_only, truth) > 0.15
    # ... and says so, with the interval of how much of the catalog's spread it sees.
    assert usage_only.evenness is not None and usage_only.evenness.high < 0.5
    assert len(usage_only.warnings) == 1
    assert "Least-request or latency-aware load balancing" in usage_only.warnings[0]
    assert "95% interval" in usage_only.warnings[0]

    with_work = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics, work=work)
    assert worst(with_work, truth) < 0.03
    assert with_work.work_workloads == len(with_work.workloads) > 90
    assert with_work.warnings == []
    # The work shares follow the true speeds (evening 1: work per replica ~ speed).
    for name, share in with_work.work_shares.items():
        assert share.low <= truth[name] * 1.03 and share.high >= truth[name] / 1.03
    assert with_work.notes and "disagrees with equal work per replica" in with_work.notes[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_robin_gives_no_warning_and_the_same_speeds_with_or_without_work(
    seed: int,
) -> None:
    truth = mf.speeds_with_error(CATALOG, THREE, 0.10, seed)
    fleet = wf.balanced_fleet(CATALOG, truth, evening=0.0, seed=seed)
    work = parse_vector(fleet.work, "work")
    usage_only = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics)
    with_work = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics, work=work)
    for result in (usage_only, with_work):
        assert worst(result, truth) < 0.03
        assert result.warnings == [] and result.notes == []
    assert usage_only.evenness is not None and usage_only.evenness.low > 0.5
    for share in with_work.work_shares.values():
        assert share.low <= 1 <= share.high


def test_workloads_without_a_signal_keep_the_usage_model_and_are_warned_about() -> None:
    truth = mf.speeds_with_error(CATALOG, THREE, 0.10, 3)
    fleet = wf.balanced_fleet(CATALOG, truth, evening=1.0, seed=3)
    work = parse_vector(fleet.work, "work")
    # Only the first 30 workloads export a rate.
    signalled = {f"svc-{w:03d}-7d9f8c6b5" for w in range(30)}
    some = {k: v for k, v in work.items() if k[1].rsplit("-", 1)[0] in signalled}
    result = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics, work=some)
    assert 20 < result.work_workloads < 30 < len(result.workloads)
    # Both checks speak: the work shares disagree, and usage alone looks even.
    assert len(result.warnings) == 2
    assert "hardly differs across families" in result.warnings[0]
    assert "workloads without a work signal were fitted from usage alone" in result.warnings[1]


@pytest.mark.parametrize(("rate", "expected"), [(None, "no work rate"), (0.0, "no work rate")])
def test_a_replica_without_a_rate_in_a_signalled_workload_is_left_out(
    rate: float | None, expected: str
) -> None:
    truth = {"aws-m5": 1.0, "aws-m7i": 1.3}
    fleet = wf.balanced_fleet(CATALOG, truth, evening=1.0, seed=5)
    work = parse_vector(fleet.work, "work")
    victim = next(iter(work))
    if rate is None:
        del work[victim]
    else:
        work[victim] = rate
    result = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics, work=work)
    assert result.excluded == {expected: 1}
    assert math.isclose(result.family("aws-m7i").estimate, 1.3, rel_tol=0.03)


def test_one_workload_gives_no_evenness_rather_than_an_infinite_interval() -> None:
    """One workload leaves no degrees of freedom for the clustered interval: no verdict."""
    fleet = wf.balanced_fleet(
        CATALOG, dict.fromkeys(THREE, 1.0), evening=1.0, workloads=1, replicas=(9, 9), seed=2
    )
    result = calibrate(CATALOG, fleet.nodes, fleet.pods, fleet.metrics)
    assert len(result.workloads) == 1 and result.dof == 0
    assert result.evenness is None and result.warnings == []
