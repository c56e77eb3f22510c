"""The monitoring overlay: it renders, it scrapes the right pods, and every query it ships
names a metric the server really exports.

The exported names come from a running app's ``/metrics`` after a filter, a prioritize, a
webhook call and a health check, so labelled series exist; a histogram contributes its
``_bucket``, ``_count`` and ``_sum`` samples. Metric names are taken out of PromQL by
:func:`metric_names` (strings, label matchers, ranges and grouping clauses removed; a word
followed by ``(`` is a function), which the tests below also check on its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.helpers import admission_review, extender_args, scheduler_pod, snapshot_objects
from support.tracked import tracked_files

from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from machine_catalog.certs import service_dns_names, write_bundle
from machine_catalog.loading import CatalogSource, load_catalog

REPO = Path(__file__).resolve().parent.parent
OVERLAY = REPO / "manifests" / "overlays" / "monitoring"
BASE = REPO / "manifests" / "base"
NAMESPACE = "machine-catalog-system"

#: Metrics a query may name that the server does not export, each with where it comes from.
#: Only the dashboard's usage panel uses one: usage is measured by the kubelet, not by us.
EXTERNAL = {
    "container_cpu_usage_seconds_total": "kubelet cAdvisor, with a node label "
    "(kube-prometheus-stack's kubelet ServiceMonitor adds it)",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "offset", "bool", "atan2"}


def render(path: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize``; without kubectl, this overlay's own subset (plain resources
    and one configMapGenerator) read directly."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        proc = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]
    kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
    objects = [
        d
        for name in kustomization["resources"]
        for d in yaml.safe_load_all((path / name).read_text())
        if d
    ]
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in generator["files"]:
            key, _, file = entry.partition("=")
            data[key] = (path / (file or key)).read_text()
        labels = generator.get("options", {}).get("labels", {})
        meta = {"name": generator["name"], "namespace": generator["namespace"], "labels": labels}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return objects


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(OVERLAY)


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\b(?:group_left|group_right)\b", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word = match.group()
        if expr[match.end() :].lstrip().startswith("(") or word in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or an operator
        names.add(word)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'max by (family) (machine_catalog_family_free_scu{family="a b"})',
            {"machine_catalog_family_free_scu"},
        ),
        (
            'histogram_quantile(0.99, sum by (le) (rate(x_bucket{route=~"/a/.*"}[5m])))',
            {"x_bucket"},
        ),
        ("a / b > 0.9 and c offset 1h > 3 * d", {"a", "b", "c", "d"}),
        ("sum(rate(e_total[$__rate_interval])) by (route)", {"e_total"}),
        ("f * on (node) group_left (family) max by (node, family) (g)", {"f", "g"}),
        ('h{code!~"2.."} or vector(0)', {"h"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample and family name a running server's /metrics shows."""
    catalog = load_catalog()
    objects = snapshot_objects()
    cluster = ClusterState(catalog)
    cluster.replace(
        [o for o in objects if o["kind"] == "Node"], [o for o in objects if o["kind"] == "Pod"]
    )
    runtime = Runtime(catalogs=CatalogSource(initial=catalog), cluster=cluster, settings=Settings())
    client = create_app(runtime).test_client()
    body = extender_args(scheduler_pod())
    assert client.post("/scheduler/filter", data=body).status_code == 200
    assert client.post("/scheduler/prioritize", data=body).status_code == 200
    review = orjson.dumps(admission_review())
    assert client.post("/webhook/mutate", data=review).status_code == 200
    assert client.get("/healthz").status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def queries(overlay: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(where, expr) of every alert and every dashboard target."""
    rule = one(overlay, "PrometheusRule")
    found = [
        (f"alert {r['alert']}", r["expr"])
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    ]
    dashboard = json.loads(one(overlay, "ConfigMap")["data"]["machine-catalog.json"])
    found += [
        (f"panel {panel['title']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    return found


def test_every_query_names_a_metric_the_server_exports(overlay, exported) -> None:
    assert exported >= {"machine_catalog_family_capacity_scu", "machine_catalog_admissions_total"}
    external_uses = []
    for where, expr in queries(overlay):
        names = metric_names(expr)
        assert names, (where, expr)
        for name in names - exported:
            assert name in EXTERNAL, f"{where}: {name} is not exported by the server"
            external_uses.append(where)
    assert external_uses == ["panel SCU in use per family (kubelet cAdvisor x scuPerCore)"]


def test_the_check_catches_a_misspelt_metric(overlay, exported) -> None:
    misspelt = "max by (family) (machine_catalog_family_capacity_scus)"
    assert metric_names(misspelt) - exported - set(EXTERNAL) == {
        "machine_catalog_family_capacity_scus"
    }


def test_the_alerts_the_issue_asks_for(overlay) -> None:
    rule = one(overlay, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "MachineCatalogReloadFailing",
        "MachineCatalogCacheStale",
        "MachineCatalogFilterErrors",
        "MachineCatalogWebhookDenialsSpike",
        "MachineCatalogFamilyNearlyFull",
        "MachineCatalogPendingOnFullFamily",
        "MachineCatalogExtenderCallsMissing",
    }
    for alert in alerts.values():
        assert alert["for"] and alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    # Per-family gauges are the same on every replica: max, never sum, across pods.
    for name in ("MachineCatalogFamilyNearlyFull", "MachineCatalogPendingOnFullFamily"):
        assert "sum" not in alerts[name]["expr"] and "max by (family)" in alerts[name]["expr"]
    # One replica may get every extender call: missing only when every replica says so.
    assert "min by (namespace)" in alerts["MachineCatalogExtenderCallsMissing"]["expr"]


def test_the_dashboard_shows_what_the_issue_asks_for(overlay) -> None:
    cm = one(overlay, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["machine-catalog.json"])
    exprs = " ".join(expr for where, expr in queries(overlay) if where.startswith("panel"))
    for metric in (
        "machine_catalog_family_capacity_scu",
        "machine_catalog_family_requested_scu",
        "machine_catalog_node_scu_per_core",  # usage in SCU
        "machine_catalog_http_request_duration_seconds_bucket",
        "machine_catalog_filter_rejections_total",
        "machine_catalog_catalog_reloads_total",
    ):
        assert metric in exprs, metric
    assert '{route="/webhook/mutate"}' in exprs and '{route=~"/scheduler/.*"}' in exprs
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"


def test_the_service_monitor_scrapes_each_server_pod_once_over_verified_tls(overlay) -> None:
    base = render(BASE)
    for obj in overlay:
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    monitor = one(overlay, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [o for o in base + overlay if o["kind"] == "Service"]
    selected = [
        s["metadata"]["name"]
        for s in services
        if all(s["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
    ]
    assert selected == ["machine-catalog-metrics"]  # not the extender and webhook Services
    service = one(overlay, "Service")
    (server,) = [
        o for o in base if o["kind"] == "Deployment" and o["metadata"]["name"] == "machine-catalog"
    ]
    pod_labels = server["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    container_ports = {
        p["name"] for c in server["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert port["targetPort"] in container_ports
    assert (endpoint["scheme"], endpoint["path"]) == ("https", "/metrics")
    tls = endpoint["tlsConfig"]
    assert tls["serverName"] in service_dns_names("machine-catalog-extender", NAMESPACE)
    server_volumes = server["spec"]["template"]["spec"]["volumes"]
    secrets = {v["secret"]["secretName"] for v in server_volumes if "secret" in v}
    assert tls["ca"]["secret"]["name"] in secrets
    assert tls["ca"]["secret"]["key"] == "ca.crt"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="content hashes need real kustomize")
def test_with_generated_certs_the_ca_reference_follows_the_hashed_secret(tmp_path) -> None:
    # As docs/operations.md says: one kustomization with both overlays as resources; the
    # monitoring overlay's own kustomizeconfig.yaml teaches kustomize the reference.
    tree = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", tree)
    write_bundle(
        "machine-catalog-webhook",
        NAMESPACE,
        tree / "overlays" / "generated-certs" / "certs",
        extra_services=["machine-catalog-extender"],
    )
    combined = tmp_path / "install"
    combined.mkdir()
    (combined / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../manifests/overlays/generated-certs\n"
        "  - ../manifests/overlays/monitoring\n"
    )
    objects = render(combined)
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith("machine-catalog-tls-")  # hashed
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == secret["metadata"]["name"]


def test_every_metric_the_docs_and_manifests_name_is_exported(exported) -> None:
    # A comment naming machine_catalog_reload_failures_total (no such metric) sent
    # operators looking for a series that never existed.
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    files += [p for p in tracked_files(REPO / "manifests") if p.suffix == ".yaml"]
    files += [REPO / "machine_catalog" / "data" / "default-catalog.yaml"]
    named: dict[str, str] = {}
    for path in files:
        for match in re.finditer(
            r"\bmachine_catalog_[a-z0-9_]*[a-z0-9](?![a-z0-9_*{])", path.read_text()
        ):
            named.setdefault(match.group(), str(path.relative_to(REPO)))
    assert "machine_catalog_catalog_reload_failures_total" in named
    named.pop("machine_catalog_cli", None)  # the package, not a metric
    missing = {name: where for name, where in named.items() if name not in exported}
    assert not missing
