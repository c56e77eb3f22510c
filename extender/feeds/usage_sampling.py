"""Reading what ``calibrate`` needs from a live cluster: nodes, pods and PodMetrics samples.

metrics-server (or any ``metrics.k8s.io`` provider) reports each pod's CPU usage averaged
over a short window (``window``, 15-30 s) and refreshes it every ``--metric-resolution``
(15 s by default). One sample is one noisy moment; several samples taken ``interval``
seconds apart average that noise out (the calibration's accuracy benchmark shows by how
much). The PodMetricsList is read with the client's ``CustomObjectsApi`` (group
``metrics.k8s.io``, version ``v1beta1``, plural ``pods``), nodes and pods with
``CoreV1Api``, every LIST paginated; the raw JSON is kept (``_preload_content=False``) so
the objects have exactly the shape of a ``kubectl get -o json`` snapshot and the file path
and the live path feed the same estimator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from kubernetes import client

PAGE_SIZE = 500
REQUEST_TIMEOUT = (5.0, 60.0)  # connect, read seconds

Progress = Callable[[str], None]


def _pages(list_func: Callable[..., Any]) -> list[dict[str, Any]]:
    """Every item of a paginated LIST."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        response = list_func(**kwargs, _request_timeout=REQUEST_TIMEOUT)
        try:
            page = orjson.loads(response.data)
        finally:
            response.release_conn()
        items.extend(page.get("items") or ())
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


def list_nodes_and_pods(api: client.ApiClient) -> tuple[list[dict], list[dict]]:
    core = client.CoreV1Api(api)
    return _pages(core.list_node), _pages(core.list_pod_for_all_namespaces)


def pod_metrics(api: client.ApiClient) -> dict[str, Any]:
    """One PodMetricsList of every namespace, as ``kubectl get --raw`` prints it."""
    custom = client.CustomObjectsApi(api)
    items = _pages(
        lambda **kw: custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods", **kw)
    )
    return {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "items": items}


def sample(
    api: client.ApiClient,
    samples: int,
    interval: float,
    progress: Progress = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[dict], list[dict], list[dict[str, Any]]]:
    """(nodes, pods, PodMetricsLists): ``samples`` metrics reads ``interval`` s apart.

    Nodes and pods are listed after the last sample, so pods started during the sampling
    are known (their early samples are dropped by the warm-up rule) and pods deleted during
    it are not (their samples match no pod and are ignored).
    """
    documents = []
    for i in range(samples):
        if i:
            sleep(interval)
        document = pod_metrics(api)
        documents.append(document)
        when = f"; next in {interval:g} s" if i + 1 < samples else ""
        progress(f"sample {i + 1}/{samples}: {len(document['items'])} pods{when}")
    nodes, pods = list_nodes_and_pods(api)
    progress(f"listed {len(nodes)} nodes and {len(pods)} pods")
    return nodes, pods, documents
