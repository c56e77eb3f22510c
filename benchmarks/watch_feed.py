"""The live watch under the latency benchmark: a fake API server pushing pod and node events.

A deployed ``machine-catalog serve`` keeps its cache from a watch, and every event it
applies costs its workers CPU and moves the cache's generation (the webhook's per-family
totals, for one, are recomputed after each change), on the same CPUs that answer
kube-scheduler. So the benchmark feeds ``serve`` from ``tests/support/fakeapi.py``'s loopback fake
API server (a real HTTP list + watch that the official ``kubernetes`` client talks to; no
TLS, no authentication) holding the whole fleet, and pushes events at a stated rate while
the requests are timed:

- **pod churn**, ``pod_events_per_s`` events per second in cycles of four, as a
  ReplicaSet's pod goes through the API server: ADDED (pending, unbound), MODIFIED (bound
  to a random node, as kube-scheduler's binding does), MODIFIED (Running, as the kubelet
  reports it), and DELETED of the oldest running pod, so the pod count stays level;
- **node status**, every node MODIFIED once per ``node_status_period_s`` (the kubelet's
  ``nodeStatusReportFrequency``, 5 minutes by default, when nothing changes), spread
  evenly: a new ``lastHeartbeatTime`` on each condition, a full 6 KB Node on the wire.

The fake runs in a child process forked from the benchmark (it inherits the generated
fleet, so it is not generated twice) and takes no CPU from the client processes' GIL.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.fakeapi import FakeApiServer  # noqa: E402

from benchmarks import fleets  # noqa: E402

LOAD_TIMEOUT = 600.0  # seconds for the child to store a 150,000-pod fleet


@dataclass(frozen=True, slots=True)
class Churn:
    """How many events per second the fake pushes while the requests are timed."""

    pod_events_per_s: float = 100.0
    node_status_period_s: float = 300.0

    def node_events_per_s(self, nodes: int) -> float:
        return nodes / self.node_status_period_s if self.node_status_period_s > 0 else 0.0

    def describe(self, nodes: int) -> str:
        return (
            f"{self.pod_events_per_s:g} pod events/s ({self.pod_events_per_s / 4:g} pods/s "
            f"created, bound, started and as many deleted) + {self.node_events_per_s(nodes):.1f}"
            f" node status updates/s (each node every {self.node_status_period_s:g} s)"
        )


class Feed:
    """The fake API server with a fleet, in a child process; churn on :meth:`start_churn`.

    The child stores ``nodes`` and ``pods`` (inherited through the fork; the caller may drop
    its own references once this returns) and listens before this constructor returns.
    """

    def __init__(
        self,
        nodes: Sequence[dict[str, Any]],
        pods: Sequence[dict[str, Any]],
        churn: Churn,
        seed: int,
    ) -> None:
        ctx = mp.get_context("fork")
        self._pipe, there = ctx.Pipe()
        self.process = ctx.Process(
            target=_child, args=(there, nodes, pods, churn, seed), name="watch-feed", daemon=True
        )
        self.process.start()
        there.close()
        if not self._pipe.poll(LOAD_TIMEOUT):
            self.process.kill()
            raise RuntimeError("the fake API server did not start")
        self.port: int = self._pipe.recv()
        self.churn = churn
        self.stats: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for ``serve --kubeconfig`` (plain HTTP; the fake checks no token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "bench", "user": {"token": "benchmark"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "bench"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def start_churn(self) -> None:
        self._pipe.send("go")

    def stop(self) -> dict[str, float]:
        """Stop the churn and the server; returns what was pushed (``events``, ``seconds``)."""
        if self.process.is_alive():
            try:
                self._pipe.send("stop")
                if self._pipe.poll(30):
                    self.stats = self._pipe.recv()
            except (OSError, EOFError):
                pass
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        return self.stats


def _child(
    pipe: Any,
    nodes: Sequence[dict[str, Any]],
    pods: Sequence[dict[str, Any]],
    churn: Churn,
    seed: int,
) -> None:
    fake = FakeApiServer()
    fake.load("nodes", nodes)
    fake.load("pods", pods)
    node_names = [n["metadata"]["name"] for n in nodes]
    running = deque(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods)
    del nodes, pods
    fake.start()
    pipe.send(fake.port)
    stats: dict[str, float] = {}
    try:
        if pipe.recv() == "go":
            stats = _churn(fake, pipe, node_names, running, churn, random.Random(seed))
            pipe.recv()  # "stop" (already waiting in the pipe)
    except (EOFError, OSError):
        pass
    finally:
        fake.stop()
    with contextlib.suppress(OSError):
        pipe.send(stats)


def _churn(
    fake: FakeApiServer,
    pipe: Any,
    node_names: list[str],
    running: deque[str],
    churn: Churn,
    rng: random.Random,
) -> dict[str, float]:
    """Push events on schedule until the parent writes to the pipe; return the counts."""
    inf = float("inf")
    pod_gap = 1 / churn.pod_events_per_s if churn.pod_events_per_s > 0 else inf
    node_rate = churn.node_events_per_s(len(node_names))
    node_gap = 1 / node_rate if node_rate > 0 else inf
    started = time.monotonic()
    next_pod = started if pod_gap < inf else inf
    next_node = started + node_gap / 2 if node_gap < inf else inf
    counts: Counter[str] = Counter()
    step, current, node_index = 0, None, rng.randrange(len(node_names))
    status_running = fleets.make_pod(rng, "x", "x", 100, node_names[0])["status"]
    while True:
        due = min(next_pod, next_node)
        wait = None if due == inf else max(due - time.monotonic(), 0.0)  # None: no churn
        if pipe.poll(wait):
            break
        if next_pod <= next_node:
            next_pod += pod_gap
            current, sent = _pod_step(
                fake, step % 4, current, node_names, running, status_running, rng
            )
            counts["pod"] += sent
            step += 1
        else:
            next_node += node_gap
            name = node_names[node_index % len(node_names)]
            node_index += 1
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fake.modify("nodes", name, functools.partial(_heartbeat, stamp=stamp))
            counts["node"] += 1
    seconds = time.monotonic() - started
    return {
        "seconds": seconds,
        "pod_events": counts["pod"],
        "node_events": counts["node"],
        "events_per_s": (counts["pod"] + counts["node"]) / seconds if seconds > 0 else 0.0,
    }


def _pod_step(
    fake: FakeApiServer,
    phase: int,
    current: str | None,
    node_names: list[str],
    running: deque[str],
    status_running: dict[str, Any],
    rng: random.Random,
) -> tuple[str | None, bool]:
    """One event of a pod's life: (the key of the pod being created or None, event sent)."""
    if phase == 0:
        cpu = rng.choice(fleets.CPU_REQUESTS)
        pod = fleets.make_pod(rng, f"svc-{rng.randrange(400):03d}", "churn", cpu)
        try:
            stored = fake.add("pods", pod)
        except KeyError:  # a name drawn twice: skip this cycle
            return None, False
        return f"churn/{stored['metadata']['name']}", True
    if phase == 1 and current is not None:
        node = rng.choice(node_names)
        fake.modify("pods", current, lambda pod: pod["spec"].__setitem__("nodeName", node))
        return current, True
    if phase == 2 and current is not None:
        fake.modify("pods", current, lambda pod: pod.__setitem__("status", dict(status_running)))
        running.append(current)
        return current, True
    if phase == 3 and running:
        fake.delete("pods", running.popleft())
        return None, True
    return None, False


def _heartbeat(node: dict[str, Any], stamp: str) -> None:
    for condition in node.get("status", {}).get("conditions", []):
        condition["lastHeartbeatTime"] = stamp
