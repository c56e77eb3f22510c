"""``machine-catalog report``: from files and from a live (fake) API server.

The fleet below is small enough to work every number out by hand; the same objects go
into a snapshot file and into the loopback fake API server, and both must give the same
report. The report's pool numbers must also be the server's own ``/metrics`` gauges for
the same cache (one set of counting rules).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from support.fakeapi import FakeApiServer, make_node, make_pod, write_kubeconfig
from support.strategies import pods

from extender.server.app import create_app
from extender.state.cluster import ClusterState, pod_entry
from extender.state.runtime import Runtime, Settings
from machine_catalog.loading import CatalogSource, parse_catalog
from machine_catalog_cli import main as cli
from machine_catalog_cli import report

REPO = Path(__file__).resolve().parent.parent
PHASES = ["Pending", "Running", "Succeeded", "Failed", "Unknown", None]

CATALOG = """\
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: report}
spec:
  baseline: base
  families:
    - {name: base, scuPerCore: 1, instanceTypes: [b.large]}
    - {name: fast, scuPerCore: 1.18, instanceTypes: [f.large]}
    - {name: old, scuPerCore: 0.8, schedulable: false, instanceTypes: [o.large]}
    - {name: empty, scuPerCore: 2, instanceTypes: [e.large]}
    - {name: twin-a, scuPerCore: 1.1, instanceTypes: [t.large]}
    - {name: twin-b, scuPerCore: 1.2, nodeSelector: {matchLabels: {twin: "yes"}}}
"""

NORMALIZED = {
    "machine-catalog.io/family": "fast",
    "machine-catalog.io/scu-per-core": "1.18",
    "machine-catalog.io/standard-resources": '{"containers":{"app":{"requests":{"cpu":"1"}}}}',
    "machine-catalog.io/catalog": "report@0123456789abcdef",
}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def labelled(pod: dict[str, Any], **labels: str) -> dict[str, Any]:
    pod["metadata"]["labels"] = labels
    return pod


def mirror(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "0123abcd"
    return pod


def daemon(pod: dict[str, Any], node: str) -> dict[str, Any]:
    """A DaemonSet's pod, fixed to ``node`` as its controller does it."""
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True}
    ]
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }
    return pod


def fleet() -> tuple[list[dict], list[dict], list[dict]]:
    cordoned = make_node("fast-3", "8", "f.large")
    cordoned["spec"]["unschedulable"] = True
    nodes = [
        make_node("base-1", "4", "b.large"),
        make_node("fast-1", "8", "f.large"),
        make_node("fast-2", "8", "f.large"),
        cordoned,
        make_node("old-1", "4", "o.large"),
        make_node("twin-1", "4", "t.large", labels={"twin": "yes", "zone": "z1"}),
        make_node("mystery-1", "4", "x.large"),
    ]
    pods = [
        make_pod("a", "2", "fast-1", namespace="team", annotations=NORMALIZED),
        make_pod("b", "7", "fast-2", namespace="team", annotations=NORMALIZED),
        make_pod("on-cordoned", "4", "fast-3", namespace="other"),
        make_pod("done", "8", "fast-1", phase="Succeeded", namespace="team"),
        make_pod("base-pod", "1500m", "base-1", namespace="other"),
        # Pinned, not bound: two on fast, one on the retired family, one on a gone family.
        make_pod("wait-1", "1", namespace="team", annotations={**NORMALIZED}, phase="Pending"),
        make_pod("wait-2", "500m", namespace="team", annotations={**NORMALIZED}, phase="Pending"),
        make_pod(
            "stuck-old",
            "1",
            namespace="team",
            annotations={**NORMALIZED, "machine-catalog.io/family": "old"},
            phase="Pending",
        ),
        make_pod(
            "stuck-gone",
            "1",
            namespace="team",
            annotations={**NORMALIZED, "machine-catalog.io/family": "gone"},
            phase="Pending",
        ),
        # In the opted-in namespace but not normalized: reported, unless opted out or done.
        make_pod("raw", "1", "base-1", namespace="team"),
        labelled(
            make_pod("opted-out", "1", "base-1", namespace="team"),
            **{"machine-catalog.io/normalize": "disabled"},
        ),
        make_pod("raw-done", "1", "base-1", namespace="team", phase="Failed"),
        make_pod("system", "1", "base-1", namespace="kube-system"),
        # Left alone by the webhook on purpose, so not reported: a mirror pod, DaemonSet
        # pods fixed to a node of no family (bound, or still pending). A DaemonSet pod on
        # a node of a family is normalized by the webhook, so it is reported.
        mirror(make_pod("static-proxy", "0", "base-1", namespace="team")),
        daemon(make_pod("agent-mystery", "100m", "mystery-1", namespace="team"), "mystery-1"),
        daemon(make_pod("agent-waits", "100m", namespace="team", phase="Pending"), "mystery-1"),
        daemon(make_pod("agent-base", "0", "base-1", namespace="team"), "base-1"),
    ]
    namespaces = [
        namespace("team", **{"machine-catalog.io/normalize": "enabled"}),
        namespace("other"),
        namespace("kube-system", **{"machine-catalog.io/normalize": "enabled"}),
    ]
    return nodes, pods, namespaces


NODE_METRICS = {
    "kind": "NodeMetricsList",
    "apiVersion": "metrics.k8s.io/v1beta1",
    "metadata": {},
    "items": [
        {"metadata": {"name": "fast-1"}, "usage": {"cpu": "1500000000n", "memory": "1Gi"}},
        {"metadata": {"name": "fast-2"}, "usage": {"cpu": "2500m"}},
        {"metadata": {"name": "fast-3"}, "usage": {"cpu": "8"}},  # cordoned: not counted
        {"metadata": {"name": "base-1"}, "usage": {"cpu": "750m"}},
        {"metadata": {"name": "mystery-1"}, "usage": {"cpu": "3"}},  # no family
    ],
}
POD_METRICS = {
    "kind": "PodMetricsList",
    "apiVersion": "metrics.k8s.io/v1beta1",
    "metadata": {},
    "items": [
        {
            "metadata": {"name": "a", "namespace": "team"},
            "containers": [{"name": "app", "usage": {"cpu": "1"}}],
        },
        {
            "metadata": {"name": "b", "namespace": "team"},
            "containers": [
                {"name": "app", "usage": {"cpu": "700m"}},
                {"name": "sidecar", "usage": {"cpu": "300m"}},
            ],
        },
        {
            "metadata": {"name": "on-cordoned", "namespace": "other"},
            "containers": [{"name": "app", "usage": {"cpu": "4"}}],
        },
        {
            "metadata": {"name": "gone-pod", "namespace": "team"},  # not in the snapshot
            "containers": [{"name": "app", "usage": {"cpu": "9"}}],
        },
    ],
}


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    nodes, pods, namespaces = fleet()
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    return {
        "catalog": str(catalog),
        "snapshot": write(
            tmp_path, "snap.json", {"kind": "List", "items": [*nodes, *pods, *namespaces]}
        ),
        "nodes-only": write(tmp_path, "nodes.json", {"kind": "List", "items": [*nodes, *pods]}),
        "node-metrics": write(tmp_path, "nm.json", NODE_METRICS),
        "pod-metrics": write(tmp_path, "pm.json", POD_METRICS),
    }


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: Any, *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, *argv, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in data["families"]}


# -- from files ------------------------------------------------------------------------------


def test_family_pools_from_a_snapshot(files, capsys) -> None:
    data = run_json(
        capsys, "report", "--catalog", files["catalog"], "--snapshot", files["snapshot"]
    )
    families = by_name(data)
    assert list(families) == ["base", "fast", "old", "empty", "twin-a", "twin-b"]
    # fast: fast-1 and fast-2 uncordoned (16000m x 1.18 = 18.88 SCU); fast-3 cordoned, its
    # pod not requested; the finished pod nowhere. Requested 9000m = 10.62; free fast-1 6000m
    # + fast-2 1000m = 7000m = 8.26; largest fast-1 = 7.08. Pending: wait-1 and wait-2.
    assert families["fast"] == {
        "name": "fast",
        "schedulable": True,
        "scuPerCore": "1.18",
        "nodes": 3,
        "cordoned": 1,
        "capacityScu": 18.88,
        "requestedScu": 10.62,
        "freeScu": 8.26,
        "largestFreeScu": 7.08,
        "pendingPods": 2,
        "pendingScu": 1.77,
    }
    # base-1: 4000m; base-pod 1500m + raw 1000m + opted-out 1000m + system 1000m bound.
    base = families["base"]
    assert (base["capacityScu"], base["requestedScu"], base["freeScu"]) == (4, 4.5, 0)
    assert families["old"]["schedulable"] is False
    assert families["old"]["pendingPods"] == 1
    assert families["empty"]["nodes"] == 0 and families["empty"]["capacityScu"] == 0
    assert data["unknownNodes"] == ["mystery-1"]
    assert data["ambiguousNodes"] == ["twin-1"]
    assert "usageScu" not in families["fast"] and "podUsageScu" not in families["fast"]


def test_problems_name_each_node_and_pod_with_why(files, capsys) -> None:
    data = run_json(
        capsys, "report", "--catalog", files["catalog"], "--snapshot", files["snapshot"]
    )
    problems = data["problems"]
    assert problems["unknownNodes"] == [
        {
            "name": "mystery-1",
            "reason": "instance type x.large: matches no family of the catalog",
            "labels": {"node.kubernetes.io/instance-type": "x.large"},
        }
    ]
    (ambiguous,) = problems["ambiguousNodes"]
    assert (
        ambiguous["reason"] == "instance type t.large: ambiguous, matches families twin-a, twin-b"
    )
    # The labels that decided it, not the node's every label (zone, hostname).
    assert ambiguous["labels"] == {"node.kubernetes.io/instance-type": "t.large", "twin": "yes"}
    assert sorted((p["name"], p["family"], p["why"]) for p in problems["strandedPods"]) == [
        ("stuck-gone", "gone", "not in the catalog"),
        ("stuck-old", "old", "retired"),
    ]
    # Not: opted-out, finished, kube-system (never matched), other ns, and the pods the
    # webhook leaves alone on purpose (mirror pods, DaemonSet pods on nodes of no family).
    assert problems["notNormalizedPods"] == [
        {"namespace": "team", "name": "agent-base", "node": "base-1"},
        {"namespace": "team", "name": "raw", "node": "base-1"},
    ]


def test_without_namespaces_the_normalization_check_says_it_was_skipped(files, capsys) -> None:
    data = run_json(
        capsys, "report", "--catalog", files["catalog"], "--snapshot", files["nodes-only"]
    )
    assert data["problems"]["notNormalizedPods"] is None
    code, out, _ = run(
        capsys, "report", "--catalog", files["catalog"], "--snapshot", files["nodes-only"]
    )
    assert code == 0
    assert "normalization not checked: the source holds no Namespaces" in out


def test_usage_from_metrics_files_counts_uncordoned_family_nodes(files, capsys) -> None:
    data = run_json(
        capsys,
        "report",
        "--catalog",
        files["catalog"],
        "--snapshot",
        files["snapshot"],
        "--node-metrics",
        files["node-metrics"],
        "--pod-metrics",
        files["pod-metrics"],
    )
    families = by_name(data)
    # Nodes: fast-1 1500m + fast-2 2500m = 4000m x 1.18 = 4.72 SCU (fast-3 is cordoned).
    assert families["fast"]["usageScu"] == 4.72
    assert families["base"]["usageScu"] == 0.75
    # Pods: a 1000m + b 1000m on fast = 2.36 SCU; on-cordoned and unknown pods left out.
    assert families["fast"]["podUsageScu"] == 2.36
    assert families["base"]["podUsageScu"] == 0
    assert families["empty"]["usageScu"] == 0


def test_the_table(files, capsys) -> None:
    code, out, err = run(
        capsys,
        "report",
        "--catalog",
        files["catalog"],
        "--snapshot",
        files["snapshot"],
        "--node-metrics",
        files["node-metrics"],
    )
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("catalog report@")
    header = lines[2].split()
    assert header[:3] == ["FAMILY", "SCU/CORE", "NODES"] and header[-1] == "USAGE"
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert list(rows) == ["base", "fast", "old"]  # no node and no pending pod: hidden
    assert rows["fast"][1:] == ["1.18", "3", "1", "18.88", "10.62", "8.26", "7.08", "2", "4.72"]
    assert lines[5].startswith("old (retired)")
    assert lines[6] == "(3 more families without nodes or pending pods: --all lists them)"
    assert "  mystery-1: instance type x.large: matches no family of the catalog" in out
    assert "  team/stuck-old: family old (retired)" in out
    assert (
        "pods in opted-in namespaces that are not normalized (2):\n"
        "  team/agent-base on base-1\n  team/raw on base-1"
    ) in out
    _, everything, _ = run(
        capsys, "report", "--catalog", files["catalog"], "--snapshot", files["snapshot"], "--all"
    )
    assert any(line.startswith("empty ") for line in everything.splitlines())


def test_the_pools_are_the_servers_metrics(files, capsys) -> None:
    data = run_json(
        capsys, "report", "--catalog", files["catalog"], "--snapshot", files["snapshot"]
    )
    catalog = parse_catalog(CATALOG)
    nodes, pods, _ = fleet()
    cluster = ClusterState(catalog)
    cluster.replace(nodes, pods)
    runtime = Runtime(catalogs=CatalogSource(initial=catalog), cluster=cluster, settings=Settings())
    text = create_app(runtime).test_client().get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, s.labels.get("family")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    fields = {
        "nodes": "nodes",
        "cordoned": "cordoned_nodes",
        "capacityScu": "capacity_scu",
        "requestedScu": "requested_scu",
        "freeScu": "free_scu",
        "largestFreeScu": "largest_free_scu",
        "pendingScu": "pending_scu",
    }
    for family in data["families"]:
        for field, metric in fields.items():
            key = (f"machine_catalog_family_{metric}", family["name"])
            assert samples[key] == pytest.approx(family[field]), (family["name"], field)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--node-metrics", "pod-metrics"], "expected a NodeMetricsList"),
        (["--pod-metrics", "node-metrics"], "expected a PodMetricsList"),
        (["--pod-metrics", "missing"], "cannot read"),
        (["--node-metrics", "catalog"], "not JSON"),
    ],
)
def test_a_bad_metrics_file_is_one_line_and_exit_1(files, capsys, extra, message) -> None:
    flag, which = extra
    path = files.get(which, str(Path(files["catalog"]).parent / which))
    code, out, err = run(capsys, "report", "--snapshot", files["snapshot"], flag, path)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and message in err


def test_source_errors(files, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "report")
    assert code == 2 and "one of the arguments --snapshot --kubeconfig is required" in err
    code, _, err = run(capsys, "report", "--snapshot", files["snapshot"], "--kubeconfig", "k")
    assert code == 2 and "not allowed with argument" in err
    empty = write(tmp_path, "empty.json", {"kind": "List", "items": []})
    code, _, err = run(capsys, "report", "--snapshot", empty)
    assert (
        code == 1 and err.strip() == f"machine-catalog: error: {empty}: no Node objects in the file"
    )
    code, _, err = run(capsys, "report", "--kubeconfig", str(tmp_path / "absent"))
    assert code == 1 and "cannot load kubeconfig" in err and len(err.splitlines()) == 1


def test_the_opt_in_rule_is_the_webhooks_namespace_selector() -> None:
    webhook = yaml.safe_load((REPO / "manifests/base/webhook.yaml").read_text())["webhooks"][0]
    selector = webhook["namespaceSelector"]
    assert selector["matchLabels"] == {"machine-catalog.io/normalize": report.OPT_IN_VALUE}
    (never,) = selector["matchExpressions"]
    assert (never["key"], never["operator"]) == ("kubernetes.io/metadata.name", "NotIn")
    assert tuple(never["values"]) == report.NEVER_NORMALIZED
    (opt_out,) = webhook["objectSelector"]["matchExpressions"]
    assert (opt_out["key"], opt_out["values"]) == ("machine-catalog.io/normalize", ["disabled"])


# -- live ------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Any:
    with FakeApiServer() as server:
        nodes, pods, namespaces = fleet()
        for obj in nodes:
            server.add("nodes", obj)
        for obj in pods:
            server.add("pods", obj)
        for obj in namespaces:
            server.add("namespaces", obj)
        server.publish_catalog(yaml.safe_load(CATALOG))  # the catalog the cluster serves
        yield server


def test_live_gives_the_report_of_the_same_objects_in_a_file(
    files, fake, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(report, "PAGE_SIZE", 3)  # several pages of each list
    for item in NODE_METRICS["items"]:
        fake.add("nodemetrics", item)
    for item in POD_METRICS["items"]:
        fake.add("podmetrics", item)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    live = run_json(capsys, "report", "--catalog", files["catalog"], "--kubeconfig", kubeconfig)
    from_files = run_json(
        capsys,
        "report",
        "--catalog",
        files["catalog"],
        "--snapshot",
        files["snapshot"],
        "--node-metrics",
        files["node-metrics"],
        "--pod-metrics",
        files["pod-metrics"],
    )
    assert live["source"] == f"cluster {fake.url}"
    for key in ("families", "unknownNodes", "ambiguousNodes", "problems"):
        assert live[key] == from_files[key], key
    pod_lists = fake.list_requests("pods")
    assert len(pod_lists) > 1 and all(r.query.get("limit") == "3" for r in pod_lists)


def test_live_without_a_metrics_api_reports_no_usage(files, fake, tmp_path, capsys) -> None:
    fake.fail_next(1, 404, resource="nodemetrics")
    fake.fail_next(1, 503, resource="podmetrics")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    data = run_json(capsys, "report", "--catalog", files["catalog"], "--kubeconfig", kubeconfig)
    assert "usageScu" not in data["families"][0] and "podUsageScu" not in data["families"][0]
    assert by_name(data)["fast"]["capacityScu"] == 18.88


def test_live_api_errors_are_one_line(files, fake, tmp_path, capsys) -> None:
    fake.fail_next(1, 403, resource="pods")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
    code, out, err = run(capsys, "report", "--kubeconfig", kubeconfig)
    assert code == 1 and out == ""
    announced, error = err.splitlines()  # which catalog, then the one-line error
    assert announced.startswith("catalog: machinecatalog/report (the cluster's), report@")
    assert error.startswith(f"machine-catalog: error: {fake.url}: 403")
    fake.stop()
    code, _, err = run(capsys, "report", "--kubeconfig", kubeconfig)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err


@settings(max_examples=150, deadline=None)
@given(
    pod=pods(),
    node_name=st.none() | st.just("n1"),
    phase=st.sampled_from(PHASES),
    pinned=st.booleans(),
)
def test_a_slimmed_pod_counts_as_the_full_one(pod, node_name, phase, pinned) -> None:
    pod["metadata"].update(name="p", namespace="ns", labels={"a": "b"})
    if pinned:
        pod["metadata"].setdefault("annotations", {})["machine-catalog.io/family"] = "fast"
    pod["spec"]["overhead"] = {"cpu": "250m"}
    pod["spec"]["schedulerName"] = "x"  # dropped: the report never reads it
    if node_name:
        pod["spec"]["nodeName"] = node_name
    pod["status"] = {"phase": phase, "conditions": [{"type": "Ready"}]}
    slim = report.slim_pod(pod)
    assert pod_entry(slim) == pod_entry(pod)
    for key in ("name", "namespace", "labels", "annotations"):
        assert slim["metadata"].get(key) == pod["metadata"].get(key)
    assert "schedulerName" not in slim["spec"] and not slim["status"].get("conditions")


def mid_resize(cpu: str = "1") -> dict[str, Any]:
    """A pod bound to fast-1 whose spec asks ``cpu`` while the kubelet still holds 2 cores
    (a downsize not yet applied): kube-scheduler counts 2 until it is."""
    pod = make_pod("shrinking", cpu, "fast-1", namespace="team", annotations=NORMALIZED)
    pod["status"]["containerStatuses"] = [
        {
            "name": "app",
            "resources": {"requests": {"cpu": "2"}},
            "allocatedResources": {"cpu": "2"},
            "state": {"running": {}},
            "image": "app:1",
        }
    ]
    pod["status"]["conditions"] = [
        {"type": "Ready", "status": "True"},
        {"type": "PodResizeInProgress", "status": "True"},
    ]
    return pod


@pytest.mark.parametrize("rule", ["per-container", "aggregate"])
@pytest.mark.parametrize(
    ("status", "counted"),
    [
        ({}, 2000),  # downsize pending: the 2 cores the kubelet holds
        # upsize to 3 found Infeasible: only what is allocated, under either rule
        ({"conditions": [{"type": "PodResizePending", "reason": "Infeasible"}]}, 2000),
    ],
)
def test_a_pod_mid_resize_counts_the_same_live_and_from_the_full_object(
    rule: str, status: dict, counted: int
) -> None:
    """`report --kubeconfig` slims pods page by page; it must keep what a resize leaves in
    the status, or it counts 1000m where `serve` counts 2000m."""
    pod = mid_resize("1" if not status else "3")
    pod["status"].update(status)
    slim = report.slim_pod(pod)
    assert pod_entry(slim, rule) == pod_entry(pod, rule)
    assert pod_entry(slim, rule).cpu_millis == counted
    nodes = [make_node("fast-1", "8", "f.large")]
    catalog = parse_catalog(CATALOG)
    full = report.build_report(
        catalog, report.Inputs(nodes=nodes, pods=[pod], namespaces=None), rule
    )
    live = report.build_report(
        catalog, report.Inputs(nodes=nodes, pods=[slim], namespaces=None), rule
    )
    assert by_name(full)["fast"]["requestedScu"] == by_name(live)["fast"]["requestedScu"]
    assert by_name(live)["fast"]["requestedScu"] == counted * 1.18 / 1000
