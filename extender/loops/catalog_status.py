"""The MachineCatalog's ``status``, written by the leader (``serve --catalog-resource``).

``kubectl get machinecatalogs`` shows whether the catalog is accepted and served and how
many nodes each family matched; the conditions say why an edit was refused (the last good
catalog keeps serving) and which nodes match no family or two. The body is computed by
:func:`machine_catalog.resource.catalog_status` (pure) from the object as last watched,
the catalog this replica serves and the nodes in its cache.

Written only by the Lease holder, only when something it is computed from changed (the
object's generation, the served catalog, the node set or labels) and only when the body
differs from the stored one: a status write is a write to etcd, and every watcher of the
object gets it. A conflict (someone wrote the object since we read it) is retried on the
next cycle with the newer object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from extender.feeds.catalog_resource import GROUP, PLURAL, VERSION, ResourceCatalogSource
from extender.loops.periodic import Periodic
from extender.state.cluster import ClusterState
from machine_catalog.resource import catalog_status

log = logging.getLogger(__name__)

INTERVAL = 2.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter(Periodic):
    """The loop; :meth:`run_once` is one cycle (the tests call it directly)."""

    thread_name = "catalog-status"

    def __init__(
        self,
        source: ResourceCatalogSource,
        cluster: ClusterState,
        *,
        leader: Callable[[], bool] = lambda: True,
        interval: float = INTERVAL,
    ) -> None:
        from kubernetes import client

        self.source = source
        self.cluster = cluster
        self.leader = leader
        self.interval = interval
        self.api = client.CustomObjectsApi(source.api_client)
        self._written: tuple[Any, ...] | None = None
        self._init_loop()

    def _nodes(self) -> list[dict[str, Any]]:
        names = [n for n in self.cluster.all_nodes().names if n]
        labels = self.cluster.labels_of(names)
        return [
            {"metadata": {"name": name, "labels": dict(found)}}
            for name, found in zip(names, labels, strict=True)
            if found is not None
        ]

    def run_once(self) -> bool:
        """Write the status if it changed; True when written."""
        obj = self.source.object
        if obj is None or not self.cluster.synced or not self.leader():
            return False
        meta = obj.get("metadata") or {}
        served = self.cluster.catalog
        key = (
            meta.get("resourceVersion"),
            served.hash if served is not None else None,
            self.cluster.node_generation,
            self.source.last_failure is None,
        )
        if key == self._written:
            return False
        previous = obj.get("status") or None
        status = catalog_status(obj, served, self._nodes(), _now(), previous)
        if previous is not None and _same(previous, status):
            self._written = key
            return False
        from kubernetes.client.exceptions import ApiException

        body = {**obj, "status": status}
        try:
            self.api.replace_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, meta["name"], body, _request_timeout=(5.0, 10.0)
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # gone or changed since: the watch brings the news
                return False
            raise
        self._written = key
        log.info("machinecatalog/%s status written", meta.get("name"))
        return True


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the conditions' lastTransitionTime, which ``now`` alone changes."""

    def strip(status: dict[str, Any]) -> dict[str, Any]:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ]
        return {**status, "conditions": conditions}

    return strip(a) == strip(b)
