"""Fleets with known true speeds, written as the objects ``calibrate`` reads.

Shared by the calibration accuracy benchmark (``calibration_accuracy.py``), the fleet
simulation and the unit test of the accuracy target: nodes and pods as ``kubectl get
nodes,pods -A -o json`` lists them (instance-type labels, ``ownerReferences`` to a
ReplicaSet, ``containerStatuses[].state.running.startedAt``), and PodMetricsList documents
as ``kubectl get --raw /apis/metrics.k8s.io/v1beta1/pods`` prints them (CPU in nanocores,
``timestamp`` and ``window``). The estimate is then computed by exactly the code the CLI
runs (:func:`machine_catalog.calibration.calibrate`).

The usage model, with every knob a parameter:

    usage(replica, sample) = work_w / speed_f ** k_w * p_r * (1 + u_rs)

- ``work_w``: per-replica work of workload ``w``, lognormal (sigma 1) around 300m;
- ``speed_f``: the true speed of the replica's family (``true_speed``);
- ``k_w``: the workload's sensitivity to hardware (1 for all unless ``sensitivity`` > 0:
  then uniform in ``[1 - sensitivity, 1 + sensitivity]``; memory-bound work gains less from
  a faster core than compute-bound work);
- ``p_r``: a persistent per-replica factor, uniform in ``[1 - persistent, 1 + persistent]``
  (uneven load balancing that does not average out over samples);
- ``u_rs``: per-replica, per-sample noise, uniform in ``[-noise, +noise]``.

Replicas are spread uniformly at random over the families (each workload has 2 to 12
replicas, at least one not on the baseline when there are 2), and every replica is warm
(started an hour before the first sample), under its limit and busy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from machine_catalog.catalog import Catalog

START = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
SAMPLE_EVERY = timedelta(seconds=60)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class UsageFleet:
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    metrics: list[dict[str, Any]]  # one PodMetricsList per sample
    true_speed: dict[str, float]


def node_object(name: str, instance_type: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": instance_type,
            },
        },
        "status": {"allocatable": {"cpu": "15890m"}, "capacity": {"cpu": "16"}},
    }


def pod_object(
    namespace: str,
    name: str,
    owner: str,
    node: str,
    started: datetime,
    limit_millis: int | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": "500m"}}
    if limit_millis is not None:
        resources["limits"] = {"cpu": f"{limit_millis}m"}
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "controller": True}
            ],
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "resources": resources}],
        },
        "status": {
            "phase": "Running",
            "startTime": _stamp(started),
            "containerStatuses": [
                {"name": "app", "state": {"running": {"startedAt": _stamp(started)}}}
            ],
        },
    }


def pod_metrics(
    usage: Mapping[tuple[str, str], float], at: datetime, window: str = "30s"
) -> dict[str, Any]:
    """A PodMetricsList: ``usage`` maps (namespace, pod) to millicores."""
    return {
        "kind": "PodMetricsList",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": [
            {
                "metadata": {"name": name, "namespace": ns},
                "timestamp": _stamp(at),
                "window": window,
                "containers": [{"name": "app", "usage": {"cpu": f"{round(m * 1e6)}n"}}],
            }
            for (ns, name), m in usage.items()
        ],
    }


def fleet_nodes(
    catalog: Catalog, true_speed: Mapping[str, float], nodes_per_family: int
) -> tuple[list[Any], list[dict[str, Any]], dict[str, list[str]]]:
    """The families given a true speed (with instance types), ``nodes_per_family`` Node
    objects of each, and their names per family: the nodes every simulated fleet runs on."""
    families = [f for f in catalog.families if f.name in true_speed and f.instance_types]
    nodes: list[dict[str, Any]] = []
    node_names: dict[str, list[str]] = {}
    for f in families:
        names = [f"{f.name}-node-{i}" for i in range(nodes_per_family)]
        node_names[f.name] = names
        nodes += [node_object(n, f.instance_types[0]) for n in names]
    return families, nodes, node_names


def usage_fleet(
    catalog: Catalog,
    true_speed: Mapping[str, float],
    *,
    workloads: int = 100,
    samples: int = 1,
    noise: float = 0.2,
    persistent: float = 0.0,
    sensitivity: float = 0.0,
    replicas: tuple[int, int] = (2, 12),
    nodes_per_family: int = 8,
    seed: int = 1,
) -> UsageFleet:
    """A fleet of ``workloads`` whose replicas' usage follows the module's model."""
    rng = random.Random(seed)
    families, nodes, node_names = fleet_nodes(catalog, true_speed, nodes_per_family)
    started = START - timedelta(hours=1)
    pods = []
    per_sample: list[dict[tuple[str, str], float]] = [{} for _ in range(samples)]
    for w in range(workloads):
        owner = f"svc-{w:03d}-7d9f8c6b5"
        work = 300.0 * rng.lognormvariate(0.0, 1.0)
        k = 1.0 + rng.uniform(-sensitivity, sensitivity) if sensitivity else 1.0
        for r in range(rng.randint(*replicas)):
            family = rng.choice(families).name
            name = f"{owner}-{r:02d}x"
            pods.append(pod_object("bench", name, owner, rng.choice(node_names[family]), started))
            level = work / true_speed[family] ** k * (1 + rng.uniform(-persistent, persistent))
            for s in range(samples):
                per_sample[s][("bench", name)] = level * (1 + rng.uniform(-noise, noise))
    metrics = [pod_metrics(u, START + s * SAMPLE_EVERY) for s, u in enumerate(per_sample)]
    return UsageFleet(nodes, pods, metrics, dict(true_speed))


def speeds_with_error(
    catalog: Catalog, families: Sequence[str], error: float, seed: int
) -> dict[str, float]:
    """True speeds: each non-baseline family's catalog factor times ``1 + U(-error, error)``."""
    rng = random.Random(seed)
    out = {}
    for name in families:
        factor = float(catalog.by_name[name].scu_per_core)
        out[name] = (
            1.0 if name == catalog.baseline.name else factor * (1 + rng.uniform(-error, error))
        )
    return out
