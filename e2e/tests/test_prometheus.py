"""A real Prometheus (Debian's package, started by the test on loopback): live
``calibrate --prometheus``, and the monitoring overlay's alert rules loaded and evaluated
against the session server's real ``/metrics``.

Calibration: three nodes made for this test, aws-m5 (the baseline, 1.0), aws-m7a (the
catalog says 1.45; its true speed here is 1.30) and gcp-c3 (1.25). Four Deployments put one
replica on each. The balancing is least-request: every replica uses the same CPU whatever
its family (the metrics API publishes that), and the faster ones serve more requests, in
proportion to their speed (a loopback exporter publishes ``http_requests_total`` counters
that Prometheus scrapes). From usage alone ``calibrate`` must warn; with
``--prometheus URL --work-query`` it must recover 1.30 and 1.25.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from harness import objects
from harness import prometheus as prom
from harness.controlplane import wait_until
from harness.kube import eventually
from kubernetes import client

TYPES = {
    "m5.xlarge": ("aws-m5", 1.0),
    "m7a.2xlarge": ("aws-m7a", 1.30),
    "c3-standard-8": ("gcp-c3", 1.25),
}
#: Per workload: (millicores every replica uses, requests per second on the baseline).
WORK = {"alpha": (600, 40.0), "beta": (900, 15.0), "gamma": (1200, 70.0), "delta": (450, 5.0)}
#: Per workload, the power of 1.02 each family's replica's usage is multiplied by (in the
#: order of TYPES): the fit has residuals, so an interval, and each family's exponents sum
#: to 0, so the estimates are the truth up to millicore rounding.
NOISE = {"alpha": (1, -1, 0), "beta": (-1, 1, 0), "gamma": (0, 1, -1), "delta": (0, -1, 1)}
WINDOW = 10  # seconds of rate(); Prometheus scrapes every second
QUERY = f"sum by (namespace, pod) (rate(http_requests_total[{WINDOW}s]))"
NAMESPACE = "calibration-work"


def deployment(name: str) -> dict:
    return objects.spread_deployment(name, 3, "1", TYPES)


def calibrate(plane, *extra: str) -> tuple[dict, str]:
    from machine_catalog.loading import default_catalog_path

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "machine_catalog_cli",
            "calibrate",
            "--kubeconfig",
            str(plane.kubeconfig),
            # The packaged catalog the factors above are about; without --catalog,
            # calibrate reads the catalog the cluster serves.
            "--catalog",
            str(default_catalog_path()),
            "--samples",
            "2",
            "--interval",
            "1",
            "--warmup",
            "0",
            "-o",
            "json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def test_calibrate_live_from_prometheus_under_least_request_balancing(
    plane, api, default_scheduler, kubelet, metrics_api, tmp_path
):
    objects.create_nodes(
        plane,
        [objects.node(f"prom-{t.split('.')[0]}", {objects.INSTANCE_TYPE: t}, "16") for t in TYPES],
    )
    api.create_namespace({"metadata": {"name": NAMESPACE}})
    apps = client.AppsV1Api(plane.api_client())
    for name in WORK:
        apps.create_namespaced_deployment(NAMESPACE, deployment(name))
    pods = eventually(
        lambda: api.list_namespaced_pod(NAMESPACE).items,
        lambda items: len(items) == 12 and all(p.status.phase == "Running" for p in items),
        90,
        "twelve running replicas",
    )
    node_type = {
        n.metadata.name: n.metadata.labels.get(objects.INSTANCE_TYPE) for n in api.list_node().items
    }
    published, rates = [], {}
    for pod in pods:
        app = pod.metadata.labels["app"]
        millis, requests = WORK[app]
        instance_type = node_type[pod.spec.node_name]
        speed = TYPES[instance_type][1]
        noise = 1.02 ** NOISE[app][list(TYPES).index(instance_type)]
        published.append(
            {
                "namespace": NAMESPACE,
                "name": pod.metadata.name,
                "labels": pod.metadata.labels,
                # Least-request: the same CPU on every family ...
                "containers": {"app": f"{round(millis * noise)}m"},
                "window": "2s",
            }
        )
        # ... and work in proportion to speed.
        rates[(NAMESPACE, pod.metadata.name)] = requests * speed
    time.sleep(3)
    # Only this test's pods have metrics while it runs: replicas other tests left behind
    # (on several families, with their own usage) would be workloads in the same fit.
    before, nodes = metrics_api.current_pods(), metrics_api.current_nodes()
    metrics_api.publish(pods=published, nodes=nodes)
    try:
        measure(plane, rates, tmp_path)
    finally:
        metrics_api.publish(pods=before, nodes=nodes)
        api.delete_namespace(NAMESPACE)


def measure(plane, rates: dict[tuple[str, str], float], tmp_path: Path) -> None:
    """calibrate from usage alone, then with the work rates a real Prometheus scraped."""
    # From usage alone: speeds near 1.0, and a warning that says why they cannot be trusted.
    alone, stderr = calibrate(plane)
    families = {f["name"]: f for f in alone["families"]}
    assert abs(families["aws-m7a"]["estimate"] - 1.0) < 0.05, families["aws-m7a"]
    assert alone["evenness"]["high"] < 0.5, alone["evenness"]
    assert len(alone["warnings"]) == 1 and "Least-request" in alone["warnings"][0]
    assert "warning: usage per replica hardly differs" in stderr

    with prom.WorkExporter() as exporter:
        exporter.set_rates(rates)
        scrape = [{"job_name": "work", "static_configs": [{"targets": [exporter.target]}]}]
        with prom.running(tmp_path / "prometheus", plane.logs(), scrape) as prometheus:
            # Prometheus has scraped a whole window: the query gives the exporter's rates.
            def seen() -> dict[tuple[str, str], float]:
                return {
                    (s["metric"]["namespace"], s["metric"]["pod"]): float(s["value"][1])
                    for s in prometheus.query(QUERY)
                }

            eventually(
                seen,
                lambda got: (
                    got.keys() == rates.keys()
                    and all(abs(got[k] / rates[k] - 1) < 0.005 for k in rates)
                ),
                60,
                "the work rates, through a whole window",
            )
            result, stderr = calibrate(plane, "--prometheus", prometheus.url, "--work-query", QUERY)
    assert stderr.count("warning") == 0, stderr
    families = {f["name"]: f for f in result["families"]}
    assert result["workSignalWorkloads"] == 4 and result["warnings"] == []
    for family, truth in [("aws-m7a", 1.30), ("gcp-c3", 1.25)]:
        f = families[family]
        assert abs(f["estimate"] - truth) / truth < 0.02, f
        assert f["low"] <= truth <= f["high"], f
        assert f["workloads"] == 4 and f["pods"] == 4, f
        share = result["workShares"][family]
        assert abs(share["value"] - truth) / truth < 0.02, share  # work follows speed


# -- the monitoring overlay's rules ---------------------------------------------------------


def replace_file(path: Path, text: str) -> None:
    """As a ConfigMap update does: the new file appears whole, never half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def overlay_alerts() -> list[dict]:
    return [r for g in yaml.safe_load(prom.RULES.read_text())["spec"]["groups"] for r in g["rules"]]


def test_overlay_rules_pass_promtool(tmp_path):
    rules = prom.overlay_rules(tmp_path)
    out = prom.promtool("check", "rules", str(rules))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(overlay_alerts())} rules found" in out.stdout


def test_every_alert_evaluates_against_the_real_server(plane, api, server, namespace, tmp_path):
    """Prometheus scrapes the session's ``machine-catalog serve`` over TLS and evaluates the
    overlay's rules every second. Every rule is healthy, every metric it names has series,
    the health alerts are quiet, the capacity alerts agree with the server's own gauges, and
    a catalog file that does not validate (a real fault) sets MachineCatalogReloadFailing
    pending (its ``for: 5m`` keeps it from firing within a test)."""
    # A webhook call, so the admission counters have series too.
    api.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "probe"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m"}},
                    }
                ]
            },
        },
    )
    scrape = [
        {
            "job_name": "machine-catalog",
            "scheme": "https",
            "tls_config": {"ca_file": str(plane.pki.ca)},
            "static_configs": [{"targets": [server.url.removeprefix("https://")]}],
        }
    ]
    rules_file = prom.overlay_rules(tmp_path)
    names = sorted(
        {n for a in overlay_alerts() for n in re.findall(r"machine_catalog_[a-z_]+", a["expr"])}
    )
    with prom.running(tmp_path / "prometheus", plane.logs(), scrape, [rules_file]) as prometheus:
        wait_until(prometheus.targets_up, 60, "the server scraped", prometheus.process)

        def evaluated() -> list[dict]:
            return prometheus.rules()

        rules = eventually(
            evaluated,
            lambda rs: (
                len(rs) == len(overlay_alerts())
                and all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in rs)
            ),
            60,
            "every rule evaluated",
        )
        time.sleep(3)  # a few more scrapes and evaluations
        rules = evaluated()
        for rule in rules:
            assert rule["health"] == "ok", rule
            assert not rule.get("lastError"), rule
        for name in names:
            assert prometheus.query(f"count({name})"), f"{name}: no series scraped"

        state = {r["name"]: r["state"] for r in rules}
        for alert in (
            "MachineCatalogReloadFailing",
            "MachineCatalogCacheStale",
            "MachineCatalogFilterErrors",
            "MachineCatalogWebhookDenialsSpike",
        ):
            assert state[alert] == "inactive", (alert, state)
        # The capacity alerts: what PromQL says matches the server's own gauges.
        gauges = server.metrics()

        def per_family(metric: str) -> dict[str, float]:
            return {
                dict(labels)["family"]: v
                for (name, labels), v in gauges.items()
                if name == metric and "family" in dict(labels)
            }

        requested = per_family("machine_catalog_family_requested_scu")
        capacity = per_family("machine_catalog_family_capacity_scu")
        full = any(capacity.get(f, 0) > 0 and r / capacity[f] > 0.9 for f, r in requested.items())
        assert state["MachineCatalogFamilyNearlyFull"] == ("pending" if full else "inactive")
        pending = per_family("machine_catalog_family_pending_scu")
        free = per_family("machine_catalog_family_free_scu")
        waiting = any(p > 0 and p > free.get(f, 0) for f, p in pending.items())
        assert state["MachineCatalogPendingOnFullFamily"] == ("pending" if waiting else "inactive")

        # A real fault: the catalog file stops validating.
        good = server.catalog.read_text()
        try:
            replace_file(server.catalog, good + "\nspec: [this is not a catalog\n")
            eventually(
                lambda: {r["name"]: r for r in evaluated()}["MachineCatalogReloadFailing"],
                lambda r: r["state"] == "pending" and r["health"] == "ok",
                60,
                "MachineCatalogReloadFailing pending",
            )
            alerts = {a["labels"]["alertname"]: a for a in prometheus.api("alerts")["alerts"]}
            # The fault's alert, beside the capacity alerts the gauges above already called
            # (other tests' pods can leave a family nearly full).
            expected = {"MachineCatalogReloadFailing"}
            expected |= {"MachineCatalogFamilyNearlyFull"} if full else set()
            expected |= {"MachineCatalogPendingOnFullFamily"} if waiting else set()
            assert set(alerts) == expected, sorted(alerts)
            assert alerts["MachineCatalogReloadFailing"]["labels"]["severity"] == "warning"
        finally:
            replace_file(server.catalog, good)
        eventually(
            lambda: {r["name"]: r for r in evaluated()}["MachineCatalogReloadFailing"],
            lambda r: r["state"] == "inactive",
            60,
            "MachineCatalogReloadFailing quiet again once the catalog is fixed",
        )
