"""How close ``calibrate`` gets to the true speeds, against workloads, samples and families.

Each cell generates fleets with known true speeds (:mod:`benchmarks.metrics_fleet`: the
packaged factors x ``1 + U(-10%, +10%)``, ±20% per-replica-and-sample noise, 2-12 replicas
per workload spread uniformly over the families), runs the estimator the command runs
(:func:`machine_catalog.calibration.calibrate`) and records, per seed, the worst relative
error over the families and whether each true speed fell inside its 95% interval.
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

from benchmarks import metrics_fleet, report
from machine_catalog.calibration import calibrate
from machine_catalog.loading import load_catalog

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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seeds", type=int, default=40)
    p.add_argument("--readme", type=Path, default=report.README)
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
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
