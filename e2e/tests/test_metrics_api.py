"""The aggregated metrics.k8s.io test server answers through the real API server."""

from __future__ import annotations

import json


def test_pod_and_node_metrics_are_served_through_the_aggregator(plane, metrics_api):
    metrics_api.publish(
        pods=[
            {"namespace": "ns", "name": "p", "labels": {"app": "x"}, "containers": {"a": "250m"}}
        ],
        nodes={"m5-a": "1500m"},
    )
    pods = json.loads(
        plane.kubectl(
            "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods?labelSelector=app%3Dx"
        ).stdout
    )
    assert [p["containers"][0]["usage"]["cpu"] for p in pods["items"]] == ["250m"]
    nodes = json.loads(plane.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes").stdout)
    assert {n["metadata"]["name"]: n["usage"]["cpu"] for n in nodes["items"]} == {"m5-a": "1500m"}
    top = plane.kubectl("top", "node", "m5-a", "--no-headers").stdout
    assert "1500m" in top
