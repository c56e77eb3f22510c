"""``/healthz`` and ``/readyz``: is the process alive, and should it get traffic.

Liveness answers 200 as long as the process serves HTTP: restarting a worker whose cache is
stale would not make the cache fresher, it would only drop the in-flight requests.

Readiness is the stricter question kube-scheduler and the API server care about: a
catalog is loaded, the cluster cache holds a full list, and the cache heard from its
source recently (``--max-cache-age``; a snapshot never changes, so it never goes stale).
When it fails, the Service takes this replica out of rotation and the others answer.
Both answers carry the whole picture as JSON, so ``kubectl get --raw`` on the pod tells an
operator why without reading logs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import orjson

from extender.server.responses import json_response

if TYPE_CHECKING:
    from flask import Flask

    from extender.state.runtime import Runtime


def readiness(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    """Whether this worker is ready, and the detail ``/readyz`` shows either way."""
    catalogs = runtime.catalogs
    cluster = runtime.cluster
    # The version answers are computed from: the cache's, which the reload listener swaps
    # a moment after the source's (once every node is re-matched).
    catalog = cluster.catalog
    failure = catalogs.last_failure
    age = cluster.age()
    counts = cluster.counts()
    problems = []
    if catalog is None:
        problems.append("no catalog loaded")
    # A snapshot is read once and never changes: its age says nothing about staleness.
    static = cluster.source.startswith("snapshot")
    if not cluster.synced:
        problems.append("cluster cache not synced")
    elif not static and (age is None or age > runtime.settings.max_cache_age):
        problems.append(
            f"cluster cache is stale: last heard from its source {age:.1f}s ago"
            f" (limit {runtime.settings.max_cache_age:g}s)"
            if age is not None
            else "cluster cache has never heard from its source"
        )
    detail = {
        "status": "ready" if not problems else "not ready",
        "problems": problems,
        "catalog": None
        if catalog is None
        else {
            "name": catalog.name,
            "hash": catalog.hash,
            "version": catalog.version,
            "source": str(catalogs.path),
            "families": len(catalog.families),
            "lastReloadError": failure.to_json() if failure is not None else None,
            "reloadFailures": catalogs.reload_failures,
            "reloads": catalogs.reloads,
        },
        "cache": {
            "source": cluster.source,
            "synced": cluster.synced,
            "ageSeconds": None if age is None else round(age, 3),
            "maxAgeSeconds": runtime.settings.max_cache_age,
            "resourceVersion": cluster.resource_version,
            "nodes": counts["nodes"],
            "pods": counts["pods"],
        },
        "worker": {"pid": os.getpid()},
        # Not a readiness problem: taking this replica out of rotation fixes nothing.
        "scheduling": runtime.pairing() if catalog is not None else None,
        "leader": {
            "identity": runtime.identity,
            "leading": runtime.leadership.is_leader(),
            "holder": runtime.leadership.holder,
        },
    }
    return not problems, detail


def register(app: Flask, runtime: Runtime) -> None:
    def json(status: int, payload: dict[str, Any]) -> Any:
        return json_response(orjson.dumps(payload), status)

    @app.get("/healthz")
    def healthz() -> Any:
        return json(200, {"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        ready, detail = readiness(runtime)
        return json(200 if ready else 503, detail)
