"""The family label on nodes: ``machine-catalog.io/family=<name>``, kept by the leader.

Once every node of a family carries it, the webhook pins pods to the family with that one
label term, which kube-scheduler checks with its own NodeAffinity plugin: nodes of other
families, unknown, ambiguous and retired nodes are then out of a pod's reach without an
extender round trip (the scheduling path's cost is the reason for the label).

What the loop keeps true, from the cluster cache: a node the catalog maps to exactly one
*schedulable* family has that family's name; every other node (unknown, ambiguous, of a
retired family) has no such label. It follows node events and catalog reloads (the cache
re-matches every node on a reload, and the next cycle patches what changed), touches no
other label, and only runs in the replica holding the Lease. Each change is one strategic
merge patch of ``metadata.labels`` (RBAC: ``patch`` on nodes), at most ``max_per_cycle``
per cycle so a catalog that relabels the whole fleet turns into a steady trickle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from extender import telemetry
from extender.loops.periodic import Periodic
from extender.state.cluster import ClusterState
from machine_catalog.annotations import FAMILY_LABEL

log = logging.getLogger(__name__)

INTERVAL = 2.0
MAX_PER_CYCLE = 200
REQUEST_TIMEOUT = (5.0, 10.0)


def label_patch(value: str | None) -> dict[str, Any]:
    """The strategic merge patch that sets the label, or removes it (``null``)."""
    return {"metadata": {"labels": {FAMILY_LABEL: value}}}


class Labeller(Periodic):
    """The loop; :meth:`run_once` is one cycle (the tests call it directly)."""

    thread_name = "family-labels"

    def __init__(
        self,
        cluster: ClusterState,
        api_client: Any,
        *,
        leader: Callable[[], bool] = lambda: True,
        interval: float = INTERVAL,
        max_per_cycle: int = MAX_PER_CYCLE,
    ) -> None:
        from kubernetes import client

        self.cluster = cluster
        self.api = client.CoreV1Api(api_client)
        self.leader = leader
        self.interval = interval
        self.max_per_cycle = max_per_cycle
        self._init_loop()

    def run_once(self) -> int:
        """Patch the nodes whose label is wrong (up to ``max_per_cycle``); how many."""
        if not self.cluster.synced or not self.leader():
            return 0
        from kubernetes.client.exceptions import ApiException

        done = 0
        for name, value in self.cluster.labels_to_fix()[: self.max_per_cycle]:
            if not self.leader():
                break
            try:
                self.api.patch_node(name, label_patch(value), _request_timeout=REQUEST_TIMEOUT)
            except ApiException as exc:
                outcome = "gone" if exc.status == 404 else "error"
                telemetry.NODE_LABELS.labels(outcome=outcome).inc()
                if outcome == "error":
                    log.warning("label %s on node %s: %s %s", value, name, exc.status, exc.reason)
                continue
            except Exception as exc:  # the API server unreachable: next cycle
                telemetry.NODE_LABELS.labels(outcome="error").inc()
                log.warning("label %s on node %s: %s", value, name, exc)
                break
            telemetry.NODE_LABELS.labels(outcome="set" if value else "removed").inc()
            log.info("node %s: %s=%s", name, FAMILY_LABEL, value if value else "(removed)")
            done += 1
        return done
