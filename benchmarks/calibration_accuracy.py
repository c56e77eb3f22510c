"""How close ``calibrate`` gets to the true speeds, against workloads, samples and families.

Each cell generates fleets with known true speeds (:mod:`benchmarks.metrics_fleet`: the
packaged factors x ``1 + U(-10%, +10%)``, ±20% per-replica-and-sample noise, 2-12 replicas
per workload spread uniformly over the families), runs the estimator the command runs
(:func:`machine_catalog.calibration.calibrate`) and records, per seed, the worst relative
error over the families and whether each true speed fell inside its 95% interval.

The second grid (:func:`balancing_cell`, README section ``calibration_balancing``) hides
the true speeds behind load balancers that send more work to faster replicas
(:mod:`benchmarks.work_fleet`: ``evening`` 0 is round-robin, 1 least-request at steady
load, where every replica's CPU use is the same), and runs ``calibrate`` twice per fleet:
from usage alone, and with the per-pod work rates (``--work-metrics``). It records the
worst error of each and whether ``calibrate`` warned. The prose above that table is
computed from the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import metrics_fleet, report, work_fleet
from machine_catalog.calibration import calibrate
from machine_catalog.catalog import Catalog
from machine_catalog.loading import load_catalog
from machine_catalog.work_rates import parse_vector

THREE = ("aws-m5", "aws-m6i", "aws-m7i")
FIVE = ("aws-m5", "aws-c5", "aws-m6i", "aws-c6i", "aws-m7i")


def cell(
    families: Sequence[str],
    workloads: int,
    samples: int,
    seeds: int,
    persistent: float = 0.0,
    sensitivity: float = 0.0,
) -> dict[str, float]:
    catalog = load_catalog()
    worst, covered, width = [], [], []
    for seed in range(seeds):
        truth = metrics_fleet.speeds_with_error(catalog, families, 0.10, seed)
        fleet = metrics_fleet.usage_fleet(
            catalog,
            truth,
            workloads=workloads,
            samples=samples,
            persistent=persistent,
            sensitivity=sensitivity,
            seed=seed,
        )
        result = calibrate(catalog, fleet.nodes, fleet.pods, fleet.metrics)
        errors = []
        for name, speed in truth.items():
            f = result.family(name)
            if f.estimate is None:
                errors.append(float("inf"))
                continue
            errors.append(abs(f.estimate / speed - 1))
            if name != catalog.baseline.name and f.low is not None:
                covered.append(f.low <= speed <= f.high)
                width.append(f.halfwidth)
        worst.append(max(errors))
    w = np.array(worst)
    return {
        "median": float(np.median(w)),
        "p95": float(np.quantile(w, 0.95)),
        "max": float(w.max()),
        "within2": float((w < 0.02).mean()),
        "coverage": float(np.mean(covered)) if covered else float("nan"),
        "halfwidth": float(np.mean(width)) if width else float("nan"),
    }


#: The 3% target of the issue: with a work signal, every family within it on every seed.
TARGET = 0.03
#: Vendor claims 8% optimistic: every non-baseline family's true speed is 8% under the
#: catalog, +-5% per family.
BIAS = 0.08


def hidden_speeds(
    catalog: Catalog, families: Sequence[str], scenario: str, seed: int
) -> dict[str, float]:
    """True speeds ``calibrate`` never sees: ``unbiased`` (catalog x U(+-10%)) or ``biased``."""
    if scenario == "unbiased":
        return metrics_fleet.speeds_with_error(catalog, families, 0.10, seed)
    around = metrics_fleet.speeds_with_error(catalog, families, 0.05, seed)
    base = catalog.baseline.name
    return {n: 1.0 if n == base else s * (1 - BIAS) for n, s in around.items()}


def _worst(result: object, truth: dict[str, float]) -> float:
    errors = []
    for name, speed in truth.items():
        estimate = result.family(name).estimate  # type: ignore[attr-defined]
        errors.append(float("inf") if estimate is None else abs(estimate / speed - 1))
    return max(errors)


def balancing_cell(
    families: Sequence[str], scenario: str, evening: float, seeds: int
) -> dict[str, np.ndarray]:
    """Per seed: worst error and warned, from usage alone and with the work signal."""
    catalog = load_catalog()
    out: dict[str, list[float]] = {k: [] for k in ("usage", "usage_warned", "work", "work_warned")}
    out["evenness"] = []
    for seed in range(seeds):
        truth = hidden_speeds(catalog, families, scenario, seed)
        fleet = work_fleet.balanced_fleet(catalog, truth, evening=evening, seed=seed)
        alone = calibrate(catalog, fleet.nodes, fleet.pods, fleet.metrics)
        work = parse_vector(fleet.work, "work")
        with_work = calibrate(catalog, fleet.nodes, fleet.pods, fleet.metrics, work=work)
        out["usage"].append(_worst(alone, truth))
        out["usage_warned"].append(bool(alone.warnings))
        out["work"].append(_worst(with_work, truth))
        out["work_warned"].append(bool(with_work.warnings))
        out["evenness"].append(alone.evenness.value if alone.evenness else float("nan"))
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def balancing_section(seeds: int, command: str) -> str:
    """The balancing grid as a README section: prose from the numbers, then the table."""
    started = time.perf_counter()
    grid = [
        (THREE, "unbiased", 0.0),
        (THREE, "unbiased", 0.5),
        (THREE, "unbiased", 1.0),
        (THREE, "biased", 0.0),
        (THREE, "biased", 1.0),
        (FIVE, "unbiased", 0.0),
        (FIVE, "unbiased", 1.0),
    ]
    cells = [(f, sc, e, balancing_cell(f, sc, e, seeds)) for f, sc, e in grid]
    pct = "{:.1%}".format
    rows = [
        [
            len(f),
            sc,
            {0.0: "round-robin (0)", 0.5: "partial (0.5)", 1.0: "least-request (1)"}[e],
            pct(np.median(c["usage"])),
            pct(c["usage"].max()),
            f"{np.nanmedian(c['evenness']):.2f}",
            f"{c['usage_warned'].mean():.0%}",
            pct(np.median(c["work"])),
            pct(np.quantile(c["work"], 0.95)),
            pct(c["work"].max()),
            f"{(c['work'] < TARGET).mean():.0%}",
            f"{c['work_warned'].mean():.0%}",
        ]
        for f, sc, e, c in cells
    ]
    header = [
        "families",
        "true speeds",
        "balancing (evening)",
        "usage alone: worst error, median",
        "max",
        "evenness λ, median",
        "warned",
        "with work signal: worst error, median",
        "p95",
        "max",
        f"seeds within {TARGET:.0%}",
        "warned",
    ]
    work_all = np.concatenate([c["work"] for *_, c in cells])
    lr = [c for f, sc, e, c in cells if e == 1.0]
    rr = [c for f, sc, e, c in cells if e == 0.0]
    partial = [c for f, sc, e, c in cells if e == 0.5]
    lr_usage = np.concatenate([c["usage"] for c in lr])
    lr_warned = np.concatenate([c["usage_warned"] for c in lr])
    rr_warned = np.concatenate([c["usage_warned"] for c in rr])
    work_warned = np.concatenate([c["work_warned"] for *_, c in cells])
    prose = [
        f"Run {report.stamp()} on {report.machine()}: `{command}` "
        f"({time.perf_counter() - started:.0f} s for this table). Per row, "
        f"{seeds} seeds of 100 workloads, 3 usage samples (±20% noise each), ±10% balancer "
        "imbalance per replica, ±5% between the rate's window and the usage samples; "
        "'biased' true speeds are 8% under the catalog (±5%). 'worst error' = the largest "
        "|estimate / truth - 1| over the families of one seed.",
        "",
        f"**With the work signal** (`--work-metrics`), the worst error is at most "
        f"{pct(work_all.max())} over all {len(work_all)} fleets (median "
        f"{pct(np.median(work_all))}); the {TARGET:.0%} target holds on "
        f"{(work_all < TARGET).sum()} of {len(work_all)}, whatever the balancing. It warns on "
        f"{work_warned.mean():.0%} of them.",
        f"**From usage alone under least-request balancing**, the estimates collapse toward "
        f"1.0 (worst error median {pct(np.median(lr_usage))}, up to {pct(lr_usage.max())}) and "
        f"`calibrate` warns on {lr_warned.sum():.0f} of {len(lr_warned)} fleets; under "
        f"round-robin it warns on {rr_warned.sum():.0f} of {len(rr_warned)} (false alarms).",
    ]
    if partial:
        p_usage = np.concatenate([c["usage"] for c in partial])
        p_warned = np.concatenate([c["usage_warned"] for c in partial])
        p_even = np.concatenate([c["evenness"] for c in partial])
        prose.append(
            f"**Partial evening (0.5) is not caught**: usage alone is off by "
            f"{pct(np.median(p_usage))} (median worst error) and warns on "
            f"{p_warned.mean():.0%} of fleets, since its evenness (median λ "
            f"{np.nanmedian(p_even):.2f}) is what a catalog overstating every difference by "
            "about half would give with round-robin balancing; only a work signal tells the "
            "two apart."
        )
    return "\n".join([prose[0], "", " ".join(prose[2:]), "", report.table(header, rows)])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--readme", type=Path, default=report.README)
    p.add_argument("--no-readme", action="store_true")
    p.add_argument(
        "--only",
        choices=("accuracy", "balancing"),
        help="run one of the two grids (both by default)",
    )
    args = p.parse_args(argv)
    if args.only != "accuracy":
        command = " ".join(["python benchmarks/calibration_accuracy.py", *(argv or sys.argv[1:])])
        balancing = balancing_section(args.seeds, command)
        print(balancing)
        if not args.no_readme:
            report.replace_section(args.readme, "calibration_balancing", balancing)
        if args.only == "balancing":
            return 0
    started = time.perf_counter()
    rows = []
    grid = [(THREE, w, s, 0.0, 0.0) for w in (10, 25, 50, 100, 200) for s in (1, 3)] + [
        (THREE, 100, 6, 0.0, 0.0),
        (FIVE, 100, 1, 0.0, 0.0),
        (FIVE, 100, 3, 0.0, 0.0),
        (FIVE, 100, 6, 0.0, 0.0),
        (THREE, 100, 3, 0.1, 0.0),
        (THREE, 100, 12, 0.1, 0.0),
        (THREE, 100, 3, 0.0, 0.2),
    ]
    for families, workloads, samples, persistent, sensitivity in grid:
        c = cell(families, workloads, samples, args.seeds, persistent, sensitivity)
        rows.append(
            [
                len(families),
                workloads,
                samples,
                f"±{persistent:.0%}" if persistent else "-",
                f"±{sensitivity:g}" if sensitivity else "-",
                f"{100 * c['median']:.2f}%",
                f"{100 * c['p95']:.2f}%",
                f"{100 * c['max']:.2f}%",
                f"{100 * c['within2']:.0f}%",
                f"{100 * c['coverage']:.1f}%",
                f"±{100 * c['halfwidth']:.1f}%",
            ]
        )
    header = [
        "families",
        "workloads",
        "samples",
        "persistent per-replica skew",
        "sensitivity k",
        "worst error: median",
        "p95",
        "max",
        "seeds with every family within 2%",
        "95% intervals holding the truth",
        "mean interval half-width",
    ]
    text = "\n".join(
        [
            f"Run {report.stamp()} on {report.machine()}: "
            f"`python benchmarks/calibration_accuracy.py --seeds {args.seeds}` "
            f"({time.perf_counter() - started:.0f} s). Per row, {args.seeds} seeds; "
            "'worst error' = the largest |estimate / truth - 1| over the families of one "
            "seed; noise ±20% per replica and sample throughout.",
            "",
            report.table(header, rows),
        ]
    )
    print(text)
    if not args.no_readme:
        report.replace_section(args.readme, "calibration_accuracy", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
