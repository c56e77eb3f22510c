"""``/healthz``, ``/readyz``, ``/metrics`` and the app's JSON error policy (Flask test client).

Metrics here are the single-process registry; the multiprocess merge under several
gunicorn workers is exercised in test_server.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: health-test}
spec:
  baseline: base
  families:
    - {name: base, scuPerCore: 1.0, instanceTypes: [b.large]}
    - {name: fast, scuPerCore: 1.18, instanceTypes: [f.large]}
    - {name: old, scuPerCore: 0.8, schedulable: false, instanceTypes: [o.large]}
    - {name: twin-a, scuPerCore: 1.1, instanceTypes: [t.large]}
    - {name: twin-b, scuPerCore: 1.2, nodeSelector: {matchLabels: {twin: "yes"}}}
"""


def node(name: str, instance_type: str, cpu: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"node.kubernetes.io/instance-type": instance_type, **labels},
        },
        "status": {"allocatable": {"cpu": cpu}, "capacity": {"cpu": cpu}},
    }


NODES = [
    node("base-1", "b.large", "4"),
    node("fast-1", "f.large", "8"),
    node("fast-2", "f.large", "8"),
    node("old-1", "o.large", "4"),
    node("twin-1", "t.large", "4", twin="yes"),
    node("mystery-1", "x.large", "4"),
]


def pod(name: str, node_name: str | None, cpu: str, family: str | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if family:
        meta["annotations"] = {"machine-catalog.io/family": family}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": meta, "spec": spec, "status": {"phase": "Running"}}


PODS = [pod("a", "fast-1", "7"), pod("b", "base-1", "1500m"), pod("c", "base-1", "500m")]


def make_runtime(tmp_path: Path, *, feed: bool = True, **settings: Any) -> Runtime:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    catalogs = CatalogSource(path, state_dir=tmp_path / "state")
    cluster = ClusterState(catalogs.current)
    catalogs.on_reload(cluster.set_catalog)
    if feed:
        cluster.replace(NODES, PODS, resource_version="77")
        cluster.source = "snapshot test"
    return Runtime(catalogs=catalogs, cluster=cluster, settings=Settings(**settings))


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


# -- health ---------------------------------------------------------------------------------


def test_healthz_is_ok_even_before_the_cache_syncs(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path, feed=False)).test_client()
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_readyz_fails_until_the_cache_syncs_then_reports_everything(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, feed=False)
    client = create_app(runtime).test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    detail = resp.get_json()
    assert detail["status"] == "not ready"
    assert detail["problems"] == ["cluster cache not synced"]
    catalog = runtime.catalogs.current
    assert detail["catalog"] == {
        "name": "health-test",
        "hash": catalog.hash,
        "version": f"health-test@{catalog.hash}",
        "source": str(tmp_path / "catalog.yaml"),
        "families": 5,
        "lastReloadError": None,
        "reloadFailures": 0,
        "reloads": 0,
    }
    assert detail["cache"]["synced"] is False
    assert detail["cache"]["ageSeconds"] is None
    assert detail["worker"] == {"pid": os.getpid()}

    runtime.cluster.replace(NODES, PODS, resource_version="91")
    resp = client.get("/readyz")
    assert resp.status_code == 200
    detail = resp.get_json()
    assert detail["status"] == "ready" and detail["problems"] == []
    cache = detail["cache"]
    assert cache["synced"] is True
    assert cache["resourceVersion"] == "91"
    assert (cache["nodes"], cache["pods"]) == (6, 3)
    assert 0 <= cache["ageSeconds"] < 5


def test_readyz_fails_when_a_watched_cache_goes_stale_but_not_a_snapshot(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, max_cache_age=30.0)
    client = create_app(runtime).test_client()
    runtime.cluster.source = "kubernetes API"
    runtime.cluster.last_activity = time.monotonic() - 45
    resp = client.get("/readyz")
    assert resp.status_code == 503
    (problem,) = resp.get_json()["problems"]
    assert problem.startswith("cluster cache is stale: last heard from its source 45")
    assert "(limit 30s)" in problem
    runtime.cluster.touch("92")  # a bookmark: the watch is alive
    assert client.get("/readyz").status_code == 200
    # A snapshot never changes, so its age is not staleness.
    runtime.cluster.source = "snapshot /tmp/x.json"
    runtime.cluster.last_activity = time.monotonic() - 4500
    assert client.get("/readyz").status_code == 200


def test_readyz_and_metrics_show_a_refused_catalog_and_its_recovery(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    client = create_app(runtime).test_client()
    path = runtime.catalogs.path
    good = path.read_text()
    old = runtime.catalogs.current
    before = scrape(client)

    path.write_text(good.replace("scuPerCore: 1.18", "scuPerCore: 99"))
    assert runtime.catalogs.reload() is False
    resp = client.get("/readyz")
    assert resp.status_code == 200  # still serving the last good catalog
    error = resp.get_json()["catalog"]["lastReloadError"]
    assert error["source"] == str(path)
    assert any(e.startswith("spec.families[1].scuPerCore: ") for e in error["errors"])
    assert resp.get_json()["catalog"]["reloadFailures"] == 1
    during = scrape(client)
    failures = "machine_catalog_catalog_reload_failures_total"
    assert value(during, failures) == value(before, failures) + 1
    assert value(during, "machine_catalog_catalog_last_reload_success") == 0
    info = "machine_catalog_catalog_info"
    assert value(during, info, name="health-test", hash=old.hash) == 1

    path.write_text(good.replace("scuPerCore: 1.18", "scuPerCore: 1.2"))
    assert runtime.catalogs.reload() is True
    new = runtime.catalogs.current
    assert new.hash != old.hash
    assert client.get("/readyz").get_json()["catalog"]["lastReloadError"] is None
    after = scrape(client)
    assert value(after, "machine_catalog_catalog_last_reload_success") == 1
    assert value(after, info, name="health-test", hash=new.hash) == 1
    assert value(after, info, name="health-test", hash=old.hash) == 0
    reloads = "machine_catalog_catalog_reloads_total"
    assert value(after, reloads) == value(before, reloads) + 1


# -- metrics --------------------------------------------------------------------------------


def filter_body(names: list[str], cpu: str, family: str | None = None) -> bytes:
    return orjson.dumps({"Pod": pod("p", None, cpu, family), "NodeNames": names, "Nodes": None})


def test_rejection_counters_move_by_reason(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path)).test_client()
    reason = "machine_catalog_filter_rejections_total"
    before = scrape(client)
    names = [n["metadata"]["name"] for n in NODES] + ["ghost"]
    result = client.post("/scheduler/filter", data=filter_body(names, "2", "fast")).get_json()
    # fast-1 has 1000m free (insufficient), fast-2 passes; base-1 is another family.
    assert result["NodeNames"] == ["fast-2"]
    client.post("/scheduler/filter", data=filter_body(["base-1", "fast-2"], "1", "gone"))
    after = scrape(client)
    expected = {
        "insufficient_scu": 1,
        "family_mismatch": 1,
        "retired_family": 1,
        "ambiguous_node": 1,
        "unknown_node": 1,
        "not_in_cache": 1,
        "pod_family_unknown": 2,
    }
    for name, count in expected.items():
        assert value(after, reason, reason=name) - value(before, reason, reason=name) == count


def test_request_metrics_by_route_and_code(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path)).test_client()
    before = scrape(client)
    for _ in range(3):
        client.post("/scheduler/prioritize", data=filter_body(["fast-2"], "1"))
    client.post("/scheduler/prioritize", data=b"nonsense")
    client.get("/no/such/route")
    after = scrape(client)
    requests = "machine_catalog_http_requests_total"
    route = "/scheduler/prioritize"
    assert (
        value(after, requests, route=route, code="200")
        - value(before, requests, route=route, code="200")
        == 3
    )
    assert (
        value(after, requests, route=route, code="400")
        - value(before, requests, route=route, code="400")
        == 1
    )
    assert (
        value(after, requests, route="other", code="404")
        - value(before, requests, route="other", code="404")
        == 1
    )
    count = "machine_catalog_http_request_duration_seconds_count"
    assert value(after, count, route=route) - value(before, count, route=route) == 4
    fastest = "machine_catalog_http_request_duration_seconds_bucket"
    assert (fastest, (("le", "0.00025"), ("route", route))) in after  # sub-ms buckets


def test_state_gauges_are_computed_at_scrape_time(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    client = create_app(runtime).test_client()
    samples = scrape(client)
    assert value(samples, "machine_catalog_cache_synced") == 1
    assert value(samples, "machine_catalog_cache_nodes") == 6
    assert value(samples, "machine_catalog_cache_pods") == 3
    assert 0 <= value(samples, "machine_catalog_cache_age_seconds") < 5
    capacity = "machine_catalog_family_capacity_scu"
    requested = "machine_catalog_family_requested_scu"
    # fast: 2 x 8000m x 1.18 = 18.88 SCU; 7000m requested x 1.18 = 8.26 SCU.
    assert value(samples, capacity, family="fast") == pytest.approx(18.88)
    assert value(samples, requested, family="fast") == pytest.approx(8.26)
    # base: 4000m at 1.0, 2000m requested; old: 4000m x 0.8 = 3.2 (retired still counts).
    assert value(samples, capacity, family="base") == pytest.approx(4.0)
    assert value(samples, requested, family="base") == pytest.approx(2.0)
    assert value(samples, capacity, family="old") == pytest.approx(3.2)
    # The ambiguous node belongs to neither twin.
    assert value(samples, capacity, family="twin-a") == 0
    runtime.cluster.apply("Pod", "DELETED", PODS[0])
    assert value(scrape(client), requested, family="fast") == 0


def test_pool_gauges_follow_the_report_counting_rules(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    client = create_app(runtime).test_client()
    cordoned = node("fast-2", "f.large", "8")
    cordoned["spec"] = {"unschedulable": True}
    runtime.cluster.apply("Node", "MODIFIED", cordoned)
    pinned = pod("p", None, "2", family="fast")
    pinned["status"]["phase"] = "Pending"
    runtime.cluster.apply("Pod", "ADDED", pinned)
    samples = scrape(client)
    m = "machine_catalog_family_"
    assert value(samples, m + "nodes", family="fast") == 2
    assert value(samples, m + "cordoned_nodes", family="fast") == 1
    # Only fast-1 (8000m, 7000m requested) counts: 9.44 SCU, 8.26 requested, 1.18 free.
    assert value(samples, m + "capacity_scu", family="fast") == pytest.approx(9.44)
    assert value(samples, m + "free_scu", family="fast") == pytest.approx(1.18)
    assert value(samples, m + "largest_free_scu", family="fast") == pytest.approx(1.18)
    assert value(samples, m + "pending_scu", family="fast") == pytest.approx(2.36)
    # base-1: 4000m, 2000m requested.
    assert value(samples, m + "largest_free_scu", family="base") == pytest.approx(2.0)
    per_node = "machine_catalog_node_scu_per_core"
    assert value(samples, per_node, node="fast-2", family="fast") == pytest.approx(1.18)
    assert value(samples, per_node, node="old-1", family="old") == pytest.approx(0.8)
    nodes_with_factor = {dict(labels)["node"] for name, labels in samples if name == per_node}
    assert nodes_with_factor == {"base-1", "fast-1", "fast-2", "old-1"}  # not twin, mystery


def test_admission_decisions_exist_from_the_start(tmp_path: Path) -> None:
    from extender.telemetry import ADMISSIONS

    client = create_app(make_runtime(tmp_path)).test_client()
    before = scrape(client)
    for decision in ("mutated", "skipped", "denied", "error"):
        assert ("machine_catalog_admissions_total", (("decision", decision),)) in before
    ADMISSIONS.labels(decision="denied").inc()
    after = scrape(client)
    name = "machine_catalog_admissions_total"
    assert value(after, name, decision="denied") == value(before, name, decision="denied") + 1


# -- errors ---------------------------------------------------------------------------------


def test_errors_are_json(tmp_path: Path) -> None:
    client = create_app(make_runtime(tmp_path)).test_client()
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "no route /nope"}
    resp = client.get("/scheduler/filter")
    assert resp.status_code == 405
    assert resp.get_json() == {"error": "method GET not allowed on /scheduler/filter"}
    assert "POST" in resp.headers["Allow"]
    resp = client.post("/healthz")
    assert resp.status_code == 405 and resp.is_json


def test_unexpected_exception_is_logged_and_answered_500_without_traceback(
    tmp_path: Path, caplog: Any
) -> None:
    app = create_app(make_runtime(tmp_path))

    @app.get("/explode")
    def explode() -> Any:
        raise ZeroDivisionError("secret detail")

    resp = app.test_client().get("/explode")
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "internal server error (see the server log)"}
    assert "secret detail" not in resp.get_data(as_text=True)
    assert "ZeroDivisionError: secret detail" in caplog.text
    assert "Traceback" in caplog.text
