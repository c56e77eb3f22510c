"""``loadAware`` live: ``machine-catalog serve --kubeconfig`` against the loopback fake API
server, with its ``metrics.k8s.io`` endpoint: hot-spot filter, anti-herding from the pod
watch, and the fall back to requests when the metrics API goes away."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.fakeapi import FakeApiServer, make_node, make_node_metrics, make_pod
from support.helpers import serve, wait_until

pytestmark = pytest.mark.slow

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: live}
spec:
  baseline: old
  scoring: {strategy: loadAware, sampleIntervalSeconds: 1, maxSampleAgeSeconds: 4}
  families:
    - {name: old, scuPerCore: 1, instanceTypes: [m5.2xlarge]}
    - {name: new, scuPerCore: 1.5, instanceTypes: [m7i.2xlarge]}
"""
NAMES = ["old-a", "old-b", "new-c"]


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n"
        "users: [{name: fake, user: {token: t}}]\n"
    )
    return path


def _filter(server: Any) -> dict[str, Any]:
    pod = make_pod(cpu="500m")
    reply = server.post("/scheduler/filter", orjson.dumps({"Pod": pod, "NodeNames": NAMES}))
    assert reply.status == 200, reply.body
    return reply.json()


def test_load_aware_served_live(tmp_path: Path) -> None:
    usage = {"old-a": "6", "old-b": "7500m", "new-c": "2"}
    with FakeApiServer() as fake:
        fake.add("nodes", make_node("old-a", cpu="8", instance_type="m5.2xlarge"))
        fake.add("nodes", make_node("old-b", cpu="8", instance_type="m5.2xlarge"))
        fake.add("nodes", make_node("new-c", cpu="8", instance_type="m7i.2xlarge"))
        fake.node_metrics = lambda: [make_node_metrics(n, c) for n, c in usage.items()]
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(CATALOG)
        server = serve(
            tmp_path,
            "--catalog",
            str(catalog),
            "--kubeconfig",
            str(_kubeconfig(tmp_path / "kubeconfig", fake.url)),
        )
        try:
            wait_until(lambda: server.readyz()[0] == 200, "ready")
            # old-b: 7.5 of 8 SCU measured, a hot spot; the others pass.
            wait_until(
                lambda: "old-b" in (_filter(server)["FailedAndUnresolvableNodes"] or {}), "sampled"
            )
            result = _filter(server)
            assert result["NodeNames"] == ["old-a", "new-c"]
            assert result["FailedAndUnresolvableNodes"]["old-b"].startswith(
                "hot spot: usage 7.5 SCU (94%) of 8 SCU on family old"
            )
            # A pod bound to old-a (6 of 8 SCU) through the watch: its 1-core request
            # counts until a sample covers it, so old-a is hot now (7 of 8 = 88%).
            fake.add("pods", make_pod("bound", cpu="1", node="old-a"))
            wait_until(
                lambda: "old-a" in (_filter(server)["FailedAndUnresolvableNodes"] or {}),
                "anti-herding",
            )
            assert (
                "(6 SCU measured + 1 SCU requested by pods bound since the sample)"
                in (_filter(server)["FailedAndUnresolvableNodes"]["old-a"])
            )
            # prioritize ranks by usage in SCU: new-c (3 of 12 SCU used) first.
            reply = server.post(
                "/scheduler/prioritize",
                orjson.dumps({"Pod": make_pod(cpu="500m"), "NodeNames": NAMES}),
            )
            scores = {h["Host"]: h["Score"] for h in reply.json()}
            assert scores["new-c"] > scores["old-a"] and scores["new-c"] > scores["old-b"]
            # The metrics API goes away: requests keep being answered; once the samples
            # are older than maxSampleAgeSeconds no node is a hot spot any more.
            fake.node_metrics = None
            began = time.monotonic()
            wait_until(
                lambda: _filter(server)["FailedAndUnresolvableNodes"] in ({}, None), "stale", 20
            )
            assert time.monotonic() - began > 1.0  # the last samples held until stale
            wait_until(lambda: "no fresh sample" in server.log_text(), "the staleness log line", 20)
            log = server.log_text()
            assert "metrics.k8s.io NodeMetrics: unavailable (HTTP 404" in log
            metrics = server.metrics()
            assert metrics[("machine_catalog_usage_nodes", (("state", "stale"),))] == 3
            assert (
                metrics[("machine_catalog_node_metrics_polls_total", (("outcome", "unavailable"),))]
                >= 1
            )
            assert (
                metrics[("machine_catalog_filter_rejections_total", (("reason", "hot_spot"),))] >= 2
            )
        finally:
            assert server.stop() == 0
    assert "Traceback" not in server.log_text()
