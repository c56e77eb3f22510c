"""The shipped scheduler configurations against the catalog's strategy: which pairings
``doctor`` accepts, and what kube-scheduler's sum of scores does with a loadAware lead.

Configurations: the base (balanced, in-tree) and the three components in
``manifests/components/`` (``extender``: every pod through the extender). Scores: the
extender's ``loadAware`` (the product's function) x 10 x the configuration's weight, plus
kube-scheduler's NodeResourcesFit LeastAllocated (cpu, memory) and
NodeResourcesBalancedAllocation unless the profile turns them off, computed here by
upstream's formulas (``least_allocated.go``, ``balanced_allocation.go``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from extender.scheduler.scoring import load_aware_scores
from machine_catalog.doctoring import _profile, check_scheduler, score_plugins

REPO = Path(__file__).resolve().parent.parent
URL = "https://machine-catalog-extender.machine-catalog-system.svc:443/scheduler"
CONFIGS = {
    "extender": REPO / "manifests/components/scheduler-extender/scheduler-config.yaml",
    "balanced": REPO / "manifests/base/scheduler-config.yaml",
    "binpack": REPO / "manifests/components/scheduler-binpack/scheduler-config.yaml",
    "loadAware": REPO / "manifests/components/scheduler-load-aware/scheduler-config.yaml",
}


def pairing(config: str, strategy: str) -> str:
    findings = check_scheduler({config: CONFIGS[config].read_text()}, {URL}, strategy=strategy)
    (finding,) = [f for f in findings if f.check == "pairing"]
    return finding.status


@pytest.mark.parametrize(
    ("config", "balanced", "binpack", "load_aware"),
    [
        ("extender", "ok", "ok", "warn"),  # right, a round trip per pod; loadAware outvoted
        ("balanced", "ok", "fault", "fault"),
        ("binpack", "fault", "ok", "fault"),
        ("loadAware", "ok", "ok", "ok"),
    ],
)
def test_which_configuration_answers_which_strategy(config, balanced, binpack, load_aware):
    assert pairing(config, "balanced") == balanced
    assert pairing(config, "binpack") == binpack
    assert pairing(config, "loadAware") == load_aware


def test_the_in_tree_configurations_call_no_extender_and_score_cpu_with_weight_5():
    for name, kind in (("balanced", "LeastAllocated"), ("binpack", "MostAllocated")):
        config = yaml.safe_load(CONFIGS[name].read_text())
        assert not config.get("extenders")
        profile = _profile(config)
        assert score_plugins(profile)[1] == {"NodeResourcesFit": 5}
        (fit,) = profile["pluginConfig"]
        assert fit["args"]["scoringStrategy"] == {
            "type": kind,
            "resources": [{"name": "cpu", "weight": 1}],
        }


# -- loadAware's lead against the in-tree scorers -------------------------------------------

CORES = 8000  # physical millicores of each node
MEMORY = 32 * 1024  # MiB
POD_CPU, POD_MEMORY = 1000, 64
WEIGHT = Fraction(1, 5)  # requestWeight's default


def in_tree(requested: np.ndarray) -> np.ndarray:
    """NodeResourcesFit LeastAllocated (cpu, memory) + NodeResourcesBalancedAllocation for
    the pod on nodes of CORES and MEMORY with ``requested`` cpu and no memory requested."""
    cpu_after = requested + POD_CPU
    least = ((CORES - cpu_after) * 100 // CORES + (MEMORY - POD_MEMORY) * 100 // MEMORY) // 2
    std = np.abs(cpu_after / CORES - POD_MEMORY / MEMORY) / 2
    return least + ((1 - std) * 100).astype(np.int64)


def totals(config: str, extender: np.ndarray, requested: np.ndarray) -> np.ndarray:
    """kube-scheduler's sum for each node under ``config``."""
    doc = yaml.safe_load(CONFIGS[config].read_text())
    (ext,) = doc["extenders"]
    disabled, _ = score_plugins(_profile(doc))
    total = extender * 10 * int(ext["weight"])
    if not {"NodeResourcesFit", "NodeResourcesBalancedAllocation"} & disabled:
        total = total + in_tree(requested)
    return total


def two_nodes(factor: Fraction, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """``light``: 1000m requested, busy; ``heavy``: 6000m requested, measured at 1000m.
    ``light``'s usage is the smallest (in 10m steps) that puts it exactly ``gap`` extender
    points behind ``heavy``: the narrowest lead of ``gap`` points. (scores, requested)."""
    requested = np.array([1000, 6000])
    capacity = requested * 0 + int(CORES * factor)
    scu = (requested * factor).astype(np.int64)
    pod = int(POD_CPU * factor)
    for used in range(1000, CORES, 10):
        load = np.array([int(used * factor), int(1000 * factor)])
        scores = load_aware_scores(capacity, scu, load, pod, pod, WEIGHT)
        if scores[1] - scores[0] == gap:
            return scores, requested
    raise AssertionError(f"no usage gives a lead of {gap} at factor {factor}")


FACTORS = [Fraction(1), Fraction(5, 4), Fraction(3, 2), Fraction(17, 20)]


@pytest.mark.parametrize("factor", FACTORS, ids=str)
@pytest.mark.parametrize("gap", [1, 3])
def test_the_load_aware_configuration_gives_every_usage_lead_to_the_less_used_node(factor, gap):
    scores, requested = two_nodes(factor, gap)
    total = totals("loadAware", scores, requested)
    assert total[1] > total[0], (scores, total)


@pytest.mark.parametrize("factor", FACTORS, ids=str)
def test_with_the_in_tree_request_scorers_on_a_one_point_lead_loses(factor):
    """The defect of issue 19.2, kept as a fact about the extender configuration: its in-tree
    request scorers favour ``light`` by more than one extender point (50), less than
    three (150)."""
    scores, requested = two_nodes(factor, 1)
    total = totals("extender", scores, requested)
    assert total[0] > total[1], (scores, total)
    scores, requested = two_nodes(factor, 3)
    total = totals("extender", scores, requested)
    assert total[1] > total[0], (scores, total)
