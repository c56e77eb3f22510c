"""``machine-catalog calibrate --kubeconfig`` against the real API server and the aggregated
test metrics API: it recovers the families' true speeds from what replicas use.

Three nodes made for this test: aws-m5 (the baseline, 1.0), aws-m7a (the catalog says 1.45;
here its true speed is 1.30) and gcp-c3 (1.25, true). Two Deployments spread two replicas
on each; a replica of work W uses W / speed vCPUs, times +-2% (see NOISE).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import yaml
from harness import objects
from harness.kube import eventually
from kubernetes import client

TYPES = {
    "m5.xlarge": ("aws-m5", 1.0),
    "m7a.2xlarge": ("aws-m7a", 1.30),
    "c3-standard-8": ("gcp-c3", 1.25),
}
WORK = {"light": 600, "heavy": 1500}  # baseline millicores per replica
# The two replicas of a workload on one family differ by +-2% (so the fit has residuals and
# an interval), in a pattern that averages out in log space: the estimate is the truth up
# to millicore rounding, wherever the scheduler puts which replica.
NOISE = (1.02, 1 / 1.02)


def deployment(name: str) -> dict:
    return objects.spread_deployment(name, 6, "2", TYPES)


def test_calibrate_recovers_true_speeds_from_a_live_cluster(
    plane, api, default_scheduler, kubelet, metrics_api, tmp_path, served_catalog
):
    objects.create_nodes(
        plane,
        [objects.node(f"cal-{t.split('.')[0]}", {objects.INSTANCE_TYPE: t}, "16") for t in TYPES],
    )
    api.create_namespace({"metadata": {"name": "calibration"}})
    apps = client.AppsV1Api(plane.api_client())
    for name in WORK:
        apps.create_namespaced_deployment("calibration", deployment(name))
    pods = eventually(
        lambda: api.list_namespaced_pod("calibration").items,
        lambda items: len(items) == 12 and all(p.status.phase == "Running" for p in items),
        90,
        "twelve running replicas",
    )
    node_type = {
        n.metadata.name: n.metadata.labels.get(objects.INSTANCE_TYPE) for n in api.list_node().items
    }
    published = []
    seen: dict[tuple[str, str], int] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        group = (pod.metadata.labels["app"], node_type[pod.spec.node_name])
        index = seen[group] = seen.get(group, -1) + 1
        speed = TYPES[group[1]][1]
        usage = round(WORK[group[0]] / speed * NOISE[index % len(NOISE)])
        published.append(
            {
                "namespace": "calibration",
                "name": pod.metadata.name,
                "labels": pod.metadata.labels,
                "containers": {"app": f"{usage}m"},
                # A window that starts after the containers did: calibrate (rightly) leaves
                # out samples that cover time before a container started.
                "window": "2s",
            }
        )
    time.sleep(3)
    metrics_api.publish(pods=metrics_api.current_pods() + published)

    proposed = tmp_path / "proposed.yaml"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "machine_catalog_cli",
            "calibrate",
            "--kubeconfig",
            str(plane.kubeconfig),
            "--samples",
            "2",
            "--interval",
            "1",
            "--warmup",
            "0",
            "-o",
            "json",
            "--write",
            str(proposed),
            # Two workloads give a 95% interval of about +-20% (t with one degree of
            # freedom): the default 5% would apply nothing, and --write would go untested.
            "--max-halfwidth",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # No --catalog: the catalog the cluster serves (served_catalog), announced on stderr.
    assert f"catalog: machinecatalog/{served_catalog['metadata']['name']} (the cluster's)" in (
        out.stderr
    )
    result = json.loads(out.stdout)
    families = {f["name"]: f for f in result["families"]}
    assert result["baseline"] == "aws-m5"
    for family, truth in [("aws-m7a", 1.30), ("gcp-c3", 1.25)]:
        f = families[family]
        assert f["estimate"] is not None, (f, out.stderr[-2000:])
        assert abs(f["estimate"] - truth) / truth < 0.02, f
        assert f["low"] <= truth <= f["high"], f
        assert f["workloads"] == 2 and f["pods"] == 4, f
    # A family with no evidence has no estimate.
    assert families["aws-m6i"]["estimate"] is None
    # The proposal validates, and diff shows the m7a change.
    check = subprocess.run(
        [sys.executable, "-m", "machine_catalog_cli", "validate", str(proposed)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    # ...and holds each estimate that is tight (--max-halfwidth), rounded to 3 decimals, in
    # place of the packaged factor (aws-m7a ships at 1.45, runs at 1.30 here); the others
    # keep theirs.
    written = {
        f["name"]: f["scuPerCore"] for f in yaml.safe_load(proposed.read_text())["spec"]["families"]
    }
    packaged = {"aws-m7a": 1.45, "gcp-c3": 1.25}
    for family in packaged:
        f = families[family]
        expected = round(f["estimate"], 3) if f["tight"] else packaged[family]
        assert written[family] == expected, (f, written[family])
    # The change calibrate is for: aws-m7a measured, applied, and written near its truth.
    assert families["aws-m7a"]["tight"], families["aws-m7a"]
    assert result["written"]["applied"] == ["aws-m7a"], result["written"]
    assert abs(written["aws-m7a"] - 1.30) / 1.30 < 0.02, written["aws-m7a"]
    assert written["aws-m6i"] == 1.15 and written["aws-m5"] == 1.0, written
