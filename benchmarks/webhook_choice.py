"""In-process latency of the webhook's decision (``Admitter.admit``) at fleet scale.

The family choice counts fragmentation (:func:`extender.admission.placement.holdable_scu`): per
candidate family one comparison over the allowed nodes with room, on top of the per-family
``bincount``. This measures the whole decision (decode already done, patch built) so the
cost is seen where the webhook's budget is (p99 < 2 ms at 5,000 nodes), not in isolation.

Assumptions, and which side they favour:

- in-process, one thread, no HTTP, no JSON decode of the review (favours us: the HTTP
  numbers are in ``extender_latency.py``); the loaded cache is frozen out of the cyclic GC
  and young collections run every 20,000 allocations, as ``serve`` tunes its workers
  (``extender.server.serve._tune_gc``); collections still run during the calls (against us);
- the machine is shared (2 cores, other builds running): the load average is printed with
  the numbers, and the tails move with it (against us);
- the fleet of ``fleets.py`` (three families, EKS-shaped nodes, pods as a ReplicaSet makes
  them) with ``--pods-per-node`` bound pods; three kinds of call: ``same`` (no event since
  the last call), ``pending`` (an event of a pod created Pending before each call: a burst
  of creates, what ``serve`` sees during ``scheduling_throughput.py``'s create-cost
  measurement; it leaves the capacity generation, so the per-family totals are reused
  and only the pending totals are read again) and ``bound`` (an event of a pod on a node
  before each call: the arrays and per-family totals are rebuilt, the worst case);
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
from extender.admission.patching import FAMILY_ANNOTATION
from extender.admission.webhook import Admitter, decode_review
from extender.server.serve import GC_GEN0_THRESHOLD
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource

CHURN = ("same", "pending", "bound")


def measure(n_nodes: int, pods_per_node: int, calls: int, seed: int, churn: str) -> dict:
    catalog = fleets.bench_catalog()
    nodes = fleets.make_nodes(n_nodes, seed=seed)
    pods = fleets.make_pods(nodes, pods_per_node, seed=seed + 1)
    cluster = ClusterState(catalog)
    cluster.replace(nodes, pods)
    del nodes
    gc.collect()
    gc.freeze()  # as serve does once the cache has synced
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    source = CatalogSource.__new__(CatalogSource)  # the admitter reads the cluster's catalog
    runtime = Runtime(catalogs=source, cluster=cluster, settings=Settings("machine-catalog"))
    admitter = Admitter(runtime)
    plain = decode_review(fleets.admission_review(seed=seed + 4, cpu_millis=4000))
    zoned = copy.deepcopy(plain)
    zoned["object"]["spec"]["nodeSelector"] = {"topology.kubernetes.io/zone": fleets.ZONES[0]}
    bound_pod = pods[0]
    pending_pod = copy.deepcopy(pods[0])
    pending_pod["spec"].pop("nodeName", None)
    pending_pod["status"] = {"phase": "Pending"}
    pending_pod["metadata"]["name"] += "-pending"
    pending_pod["metadata"]["uid"] = pending_pod["metadata"].get("uid", "") + "-pending"
    pending_pod["metadata"].setdefault("annotations", {})[FAMILY_ANNOTATION] = catalog.families[
        0
    ].name
    churn_pod = {"same": None, "pending": pending_pod, "bound": bound_pod}[churn]
    out = {}
    for label, req in (("unconstrained", plain), ("nodeSelector", zoned)):
        wall = np.empty(calls)
        cpu = np.empty(calls)
        for i in range(calls):
            if i % 200 == 0:
                admitter.ledger = type(admitter.ledger)(ttl=5.0)
            if churn_pod is not None:
                cluster.apply("Pod", "MODIFIED", churn_pod)
            start, start_cpu = time.perf_counter(), time.thread_time()
            verdict = admitter.admit(req)
            wall[i] = time.perf_counter() - start
            cpu[i] = time.thread_time() - start_cpu
            assert verdict.decision == "mutated", verdict
        out[label] = tuple(np.percentile(x * 1000, q) for x in (wall, cpu) for q in (50, 99))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods-per-node", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    gc.collect()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"{args.nodes} nodes, {args.pods_per_node} pods/node, {args.calls} calls per case; "
        f"load average {load}"
    )
    # Wall time includes time the thread waited for a core (other processes); CPU time is
    # the work itself. On a shared machine the wall tail is the other processes' doing.
    print(f"{'seed':>4} {'event':>7} {'pod':>14}  wall p50  wall p99   cpu p50   cpu p99 (ms)")
    for seed in range(args.seeds):
        for churn in CHURN:
            result = measure(args.nodes, args.pods_per_node, args.calls, 10 + seed, churn)
            for label, values in result.items():
                cells = "".join(f"{v:10.3f}" for v in values)
                print(f"{seed:>4} {churn:>7} {label:>14}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
