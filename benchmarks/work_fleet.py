"""Fleets behind a load balancer that may send more work to faster replicas, with the work
each replica served, as the objects ``calibrate`` reads.

Nodes, pods and PodMetricsLists are those of :mod:`benchmarks.metrics_fleet`; the work
rates come as the body of a Prometheus instant query (``/api/v1/query`` of
``sum by (namespace, pod) (rate(http_requests_total[5m]))``), which is what
``calibrate --work-metrics`` reads.

The model, with every knob a parameter::

    work_r            = Q_w * speed_f ** evening * (1 + v_r)
    usage(r, sample)  = work_r * c_w / speed_f * (1 + u_rs)
    reported rate_r   = work_r * (1 + m_r)

- ``Q_w``: the workload's requests per second per replica, lognormal (sigma 1) around 50;
- ``c_w``: CPU-milliseconds per request on the baseline, lognormal (sigma 0.5) around 6 ms,
  so a replica uses ~300m;
- ``evening``: 0 is round-robin (every replica gets the same work, as ``usage_fleet``);
  1 is least-request or latency-aware balancing at steady load, which sends work to a
  replica in proportion to how fast it finishes it, so that every replica's CPU use is the
  same and usage alone shows no difference between families; values between are partial;
- ``v_r``: per-replica imbalance of the balancer, uniform in ``[-imbalance, +imbalance]``;
- ``u_rs``: per-replica, per-sample noise of the usage sample, uniform in ``[-noise, +noise]``;
- ``m_r``: the mismatch between the rate's window and the usage samples' windows, uniform in
  ``[-mismatch, +mismatch]``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from benchmarks.metrics_fleet import (
    SAMPLE_EVERY,
    START,
    fleet_nodes,
    pod_metrics,
    pod_object,
)
from machine_catalog.catalog import Catalog


@dataclass(frozen=True, slots=True)
class WorkFleet:
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    metrics: list[dict[str, Any]]  # one PodMetricsList per sample
    work: dict[str, Any]  # a Prometheus instant-query response: rate per (namespace, pod)
    true_speed: dict[str, float]


def vector(rates: Mapping[tuple[str, str], float], at: float = 0.0) -> dict[str, Any]:
    """The body Prometheus answers an instant query with: one sample per (namespace, pod)."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"namespace": ns, "pod": pod}, "value": [at, repr(rate)]}
                for (ns, pod), rate in rates.items()
            ],
        },
    }


def balanced_fleet(
    catalog: Catalog,
    true_speed: Mapping[str, float],
    *,
    evening: float,
    workloads: int = 100,
    samples: int = 3,
    noise: float = 0.2,
    imbalance: float = 0.1,
    mismatch: float = 0.05,
    replicas: tuple[int, int] = (2, 12),
    nodes_per_family: int = 8,
    seed: int = 1,
) -> WorkFleet:
    """A fleet of ``workloads`` behind balancers of the given ``evening`` (see module)."""
    rng = random.Random(seed)
    families, nodes, node_names = fleet_nodes(catalog, true_speed, nodes_per_family)
    started = START - timedelta(hours=1)
    pods = []
    rates: dict[tuple[str, str], float] = {}
    per_sample: list[dict[tuple[str, str], float]] = [{} for _ in range(samples)]
    for w in range(workloads):
        owner = f"svc-{w:03d}-7d9f8c6b5"
        requests = 50.0 * rng.lognormvariate(0.0, 1.0)
        cpu_per_request = 6.0 * rng.lognormvariate(0.0, 0.5)
        for r in range(rng.randint(*replicas)):
            family = rng.choice(families).name
            speed = true_speed[family]
            name = f"{owner}-{r:02d}x"
            pods.append(pod_object("bench", name, owner, rng.choice(node_names[family]), started))
            work = requests * speed**evening * (1 + rng.uniform(-imbalance, imbalance))
            rates[("bench", name)] = work * (1 + rng.uniform(-mismatch, mismatch))
            level = work * cpu_per_request / speed
            for s in range(samples):
                per_sample[s][("bench", name)] = level * (1 + rng.uniform(-noise, noise))
    metrics = [pod_metrics(u, START + s * SAMPLE_EVERY) for s, u in enumerate(per_sample)]
    at = (START + samples * SAMPLE_EVERY).timestamp()
    return WorkFleet(nodes, pods, metrics, vector(rates, at), dict(true_speed))
