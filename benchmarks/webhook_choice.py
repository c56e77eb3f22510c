"""In-process latency of the webhook's decision (``Admitter.admit``) at fleet scale.

The family choice counts fragmentation (:func:`extender.placement.holdable_scu`): per
candidate family one comparison over the allowed nodes with room, on top of the per-family
``bincount``. This measures the whole decision (decode already done, patch built) so the
cost is seen where the webhook's budget is (p99 < 2 ms at 5,000 nodes), not in isolation.

Assumptions, and which side they favour:

- in-process, one thread, no HTTP, no JSON decode of the review (favours us: the HTTP
  numbers are in ``extender_latency.py``); the GC is left on (against us);
- the fleet of ``fleets.py`` (three families, EKS-shaped nodes, pods as a ReplicaSet makes
  them) with ``--pods-per-node`` bound pods; every call is a new cache generation when
  ``--churn`` (a pod event between admissions: the per-generation caches are rebuilt, the
  worst case), otherwise the same generation (the common case within a burst);
- two pods: unconstrained, and one with a ``nodeSelector`` on a zone (a per-constraints node
  mask, cached per node generation);
- reservations accumulate as in a burst (``dryRun`` is off), reset every 200 calls.

Run: ``python benchmarks/webhook_choice.py [--nodes 5000] [--calls 3000] [--seeds 3]``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import fleets
from extender.admission import Admitter, decode_review
from extender.cluster import ClusterState
from extender.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource


def measure(n_nodes: int, pods_per_node: int, calls: int, seed: int, churn: bool) -> dict:
    catalog = fleets.bench_catalog()
    nodes = fleets.make_nodes(n_nodes, seed=seed)
    pods = fleets.make_pods(nodes, pods_per_node, seed=seed + 1)
    cluster = ClusterState(catalog)
    cluster.replace(nodes, pods)
    source = CatalogSource.__new__(CatalogSource)  # the admitter reads the cluster's catalog
    runtime = Runtime(catalogs=source, cluster=cluster, settings=Settings("machine-catalog"))
    admitter = Admitter(runtime)
    plain = decode_review(fleets.admission_review(seed=seed + 4, cpu_millis=4000))
    zoned = copy.deepcopy(plain)
    zoned["object"]["spec"]["nodeSelector"] = {"topology.kubernetes.io/zone": fleets.ZONES[0]}
    churn_pod = pods[0]
    out = {}
    for label, req in (("unconstrained", plain), ("nodeSelector", zoned)):
        samples = np.empty(calls)
        for i in range(calls):
            if i % 200 == 0:
                admitter.ledger = type(admitter.ledger)(ttl=5.0)
            if churn:
                cluster.apply("Pod", "MODIFIED", churn_pod)
            start = time.perf_counter()
            verdict = admitter.admit(req)
            samples[i] = time.perf_counter() - start
            assert verdict.decision == "mutated", verdict
        ms = samples * 1000
        out[label] = (np.percentile(ms, 50), np.percentile(ms, 99))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    gc.collect()
    print(f"{args.nodes} nodes, {args.pods_per_node} pods/node, {args.calls} calls per case")
    print(f"{'seed':>4} {'churn':>5} {'pod':>14} {'p50 ms':>8} {'p99 ms':>8}")
    for seed in range(args.seeds):
        for churn in (False, True):
            result = measure(args.nodes, args.pods_per_node, args.calls, 10 + seed, churn)
            for label, (p50, p99) in result.items():
                print(f"{seed:>4} {churn!s:>5} {label:>14} {p50:8.3f} {p99:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
