"""``loadAware`` against the real control plane: usage from the aggregated metrics API,
polled by the session server with the manifests' RBAC, decides where kube-scheduler puts
pods.

The module hot-reloads the session server's catalog to ``loadAware`` (polling every
second, samples stale after 15 s) and restores it when the module ends. Each test has a
family of its own (gcp-n2d, e2e-rank, azure-dasv5, aws-c7g: no other e2e test uses them)
and two nodes made for it, so the pods of other tests never change its room. The metrics
server serves whatever the tests publish; every test adds its nodes' usage to what is
already published (other tests' pods and nodes stay).

The test metrics server stamps each NodeMetrics item with the time of the request and a
30 s window, as metrics-server does: a pod bound less than 30 s before a sample is not in
it, so the server counts it by its request (anti-herding) whatever the poll timing.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import yaml
from harness import objects
from harness.controlplane import REPO
from harness.kube import bound, events_for, eventually, failed_scheduling, pod_manifest
from kubernetes import client

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILIES = "machine-catalog.io/families"
# Samples every second; stale after 15 s: long enough that a poll delayed by a busy
# 2-core machine does not turn every node back to requests mid-test, short enough for the
# metrics-gone test to wait for it.
SCORING = {"strategy": "loadAware", "sampleIntervalSeconds": 1, "maxSampleAgeSeconds": 15}
#: The gap test's families, of different factors: (name, scuPerCore as text, as a fraction).
PAIR = "e2e.machine-catalog.io/pair"
GAP_FAMILIES = [("e2e-gap-a", "1.25", Fraction(5, 4)), ("e2e-gap-b", "1.5", Fraction(3, 2))]


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def load_aware(plane, server, scheduler, kubelet, metrics_api, catalog):
    """The session catalog with ``loadAware`` scoring and the gap families for this
    module, and the session's scheduler running the shipped loadAware configuration
    (``manifests/components/scheduler-load-aware``: the in-tree request scorers off);
    both restored after."""
    original = catalog.read_text()
    doc = yaml.safe_load(original)
    doc["spec"]["scoring"] = dict(SCORING)
    for name, factor, _ in GAP_FAMILIES:
        doc["spec"]["families"].append(
            {"name": name, "scuPerCore": factor, "instanceTypes": [f"{name}.2xlarge"]}
        )
    server.replace_catalog(yaml.safe_dump(doc, sort_keys=False))
    shipped = REPO / "manifests/components/scheduler-load-aware/scheduler-config.yaml"
    config = plane.scheduler_config(
        server.url + "/scheduler",
        name="load-aware-scheduler",
        base=yaml.safe_load(shipped.read_text()),
    )
    try:
        with plane.scheduler_running("machine-catalog-scheduler", config):
            yield server
    finally:
        server.replace_catalog(original)


def published_nodes(metrics_api) -> dict[str, str]:
    return dict(json.loads(metrics_api.data.read_text()).get("nodes", {}))


def publish_nodes(metrics_api, usage: dict[str, str | None]) -> None:
    """Set (or, with None, remove) some nodes' usage; every other entry stays."""
    nodes = published_nodes(metrics_api)
    for name, cpu in usage.items():
        if cpu is None:
            nodes.pop(name, None)
        else:
            nodes[name] = cpu
    metrics_api.publish(pods=metrics_api.current_pods(), nodes=nodes)


def usage_nodes(server) -> dict[str, int]:
    """``machine_catalog_usage_nodes`` by state, from the worker that answers."""
    metrics = server.metrics()
    return {
        state: int(metrics[("machine_catalog_usage_nodes", (("state", state),))])
        for state in ("fresh", "stale", "missing")
    }


def wait_usage_nodes(server, ok, what: str, timeout: float = 30) -> dict[str, int]:
    """Until six scrapes in a row satisfy ``ok``: a scrape lands on one of the two
    workers, and each worker polls the metrics API on its own."""
    streak = [0]

    def fetch() -> dict[str, int]:
        counts = usage_nodes(server)
        streak[0] = streak[0] + 1 if ok(counts) else 0
        return counts

    return eventually(fetch, lambda _: streak[0] >= 6, timeout, what)


def wait_samples(server, api, metrics_api) -> None:
    """Until both workers hold a fresh sample of every published node that exists."""
    names = {n.metadata.name for n in api.list_node().items}
    expected = len(names & set(published_nodes(metrics_api)))
    wait_usage_nodes(
        server, lambda c: c["fresh"] == expected, f"{expected} nodes with a fresh sample"
    )


def make_nodes(plane, names: list[str], instance_type: str) -> None:
    objects.create_nodes(
        plane, [objects.node(n, {objects.INSTANCE_TYPE: instance_type}, "8") for n in names]
    )


def place(api, namespace: str, names: list[str], family: str, cpu: str = "1") -> list[str]:
    """Create pods one after the other, each once the previous one is bound."""
    placed = []
    for name in names:
        api.create_namespaced_pod(
            namespace, pod_manifest(name, cpu, annotations={FAMILIES: family})
        )
        placed.append(bound(api, namespace, name).spec.node_name)
    return placed


# -- the scenarios -------------------------------------------------------------------------


def test_a_hot_node_is_refused_and_a_pod_with_nowhere_else_to_go_stays_pending(
    plane, api, load_aware, metrics_api, namespace
):
    """gcp-n2d (1.1): two 8-vCPU nodes of 8.8 SCU. hs-b is measured at 90% (7200m);
    hs-a is idle. A pod of 8 SCU can go to either by its requests: it goes to hs-a, hs-b
    being a hot spot. A second pod of 1 SCU then finds hs-a full by requests and hs-b
    hot: it stays Pending and the event carries the extender's reason. Once hs-b cools
    down, the pod is placed there."""
    make_nodes(plane, ["hs-a", "hs-b"], "n2d-standard-8")
    publish_nodes(metrics_api, {"hs-a": "100m", "hs-b": "7200m"})
    wait_samples(load_aware, api, metrics_api)

    assert place(api, namespace, ["big"], "gcp-n2d", "8") == ["hs-a"]
    api.create_namespaced_pod(
        namespace, pod_manifest("more", "1", annotations={FAMILIES: "gcp-n2d"})
    )
    events = failed_scheduling(
        api, namespace, "more", "FailedScheduling for the pod with only a hot node left"
    )
    message = events[-1].message
    assert "hot spot" in message and "above hotSpotUsage 0.8" in message, message
    assert "Insufficient cpu" in message, message  # hs-a, full by requests
    time.sleep(3)
    assert not api.read_namespaced_pod("more", namespace).spec.node_name

    # hs-b cools down. A metrics change is no cluster event, so kube-scheduler retries the
    # pod on its own schedule; a label on the node is one, and moves the pod at once.
    publish_nodes(metrics_api, {"hs-b": "1000m"})
    wait_samples(load_aware, api, metrics_api)
    api.patch_node("hs-b", {"metadata": {"labels": {"e2e.machine-catalog.io/cooled": "yes"}}})
    assert bound(api, namespace, "more").spec.node_name == "hs-b"


def test_of_two_nodes_with_the_same_room_the_less_used_one_gets_the_pods(
    plane, api, load_aware, metrics_api, namespace
):
    """e2e-rank (1.1, the e2e catalog's own): rk-a and rk-b, 8 vCPUs each. rk-b already
    holds a 2-vCPU pod, so by
    requests (``balanced``, and the in-tree least-allocated scorer) rk-a is the better
    node; but rk-a is measured at 5 vCPUs busy and rk-b at 1. loadAware sends both new
    pods to rk-b."""
    make_nodes(plane, ["rk-a", "rk-b"], "e2e-rank.2xlarge")
    ns = "load-aware-ranking-fixed"
    api.create_namespace({"metadata": {"name": ns}})
    body = pod_manifest("resident", "2", nodeName="rk-b")
    api.create_namespaced_pod(ns, body)
    publish_nodes(metrics_api, {"rk-a": "5000m", "rk-b": "1000m"})
    wait_samples(load_aware, api, metrics_api)

    assert place(api, namespace, ["r0", "r1"], "e2e-rank") == ["rk-b", "rk-b"]


def binding_order(api, namespace: str, names: list[str]) -> list[str]:
    """The nodes of ``names`` in the order kube-scheduler bound the pods: its Scheduled
    events carry a microsecond ``eventTime`` (events.k8s.io/v1)."""
    nodes = {n: api.read_namespaced_pod(n, namespace).spec.node_name for n in names}
    times = {}
    for name in names:
        scheduled = eventually(
            lambda name=name: events_for(api, namespace, name, "Scheduled"),
            bool,
            30,
            f"{name}'s Scheduled event",
        )
        times[name] = min(e.event_time or e.first_timestamp for e in scheduled)
    return [nodes[n] for n in sorted(names, key=times.__getitem__)]


def deployment(name: str, replicas: int, family: str) -> dict:
    return objects.controller(
        "Deployment", name, replicas, pod_manifest(name, "1")["spec"], {FAMILIES: family}
    )


def test_a_burst_between_two_samples_does_not_all_land_on_the_idle_node(
    plane, api, load_aware, metrics_api, namespace
):
    """azure-dasv5 (1.15): bu-a idle, bu-b at 50% (4 of 8 vCPUs), 9.2 SCU each. Eight
    replicas of 1 SCU are created at once, all scored within one sample's window.

    By requests bu-b is the better node: bu-a already holds a 1-vCPU pod (idle: in the
    sample at 0), bu-b none. So the first replica kube-scheduler binds goes to bu-b under
    request scoring and to bu-a only when usage ranks: that is the check that fails with
    loadAware off (the spread below alone would not: by requests it is about 4/4).

    On the sample alone bu-a scores 7 or 8 and bu-b 4 for every replica (only the 0.2
    request weight moves), so all eight would go to bu-a but for the in-tree default
    topology spread, which moves one: 7/1, measured with the binding bookkeeping turned
    off. Counting each pod bound since the sample by its request, bu-a's score drops by
    about one per pod and ties bu-b after four (ties go to the in-tree scorers); measured
    6/2, 5/3 and 4/4.
    """
    make_nodes(plane, ["bu-a", "bu-b"], "Standard_D8as_v5")
    ns = "load-aware-burst-resident"
    api.create_namespace({"metadata": {"name": ns}})
    api.create_namespaced_pod(ns, pod_manifest("resident", "1", nodeName="bu-a"))
    publish_nodes(metrics_api, {"bu-a": "0", "bu-b": "4000m"})
    wait_samples(load_aware, api, metrics_api)

    apps = client.AppsV1Api(plane.api_client())
    apps.create_namespaced_deployment(namespace, deployment("burst", 8, "azure-dasv5"))
    pods = eventually(
        lambda: api.list_namespaced_pod(namespace, label_selector="app=burst").items,
        lambda items: len(items) == 8 and all(p.spec.node_name for p in items),
        60,
        "eight replicas bound",
    )
    spread = Counter(p.spec.node_name for p in pods)
    order = binding_order(api, namespace, [p.metadata.name for p in pods])
    assert order[0] == "bu-a", order  # usage ranked the first replica, not requests
    assert set(spread) == {"bu-a", "bu-b"}, spread
    assert spread["bu-b"] >= 2, spread  # anti-herding: not all on the idle node


def test_without_node_metrics_pods_keep_scheduling_on_their_requests(
    plane, api, load_aware, metrics_api, namespace
):
    """aws-c7g (1.25): mg-x measured at 95%, mg-y at 5%. While the samples are fresh
    mg-x is refused as a hot spot and a pod goes to mg-y. Then the metrics API stops
    reporting both nodes: after maxSampleAgeSeconds (15 s here) their samples are stale,
    /metrics says so, and the next pod is placed by its requests (mg-x, which holds
    none), with no FailedScheduling on the way."""
    make_nodes(plane, ["mg-x", "mg-y"], "c7g.2xlarge")
    publish_nodes(metrics_api, {"mg-x": "7600m", "mg-y": "400m"})
    wait_samples(load_aware, api, metrics_api)
    assert place(api, namespace, ["m0"], "aws-c7g") == ["mg-y"]

    before = usage_nodes(load_aware)
    polls_before = load_aware.metrics()[
        ("machine_catalog_node_metrics_polls_total", (("outcome", "ok"),))
    ]
    publish_nodes(metrics_api, {"mg-x": None, "mg-y": None})
    wait_usage_nodes(
        load_aware,
        lambda c: c["stale"] == before["stale"] + 2 and c["fresh"] == before["fresh"] - 2,
        "mg-x and mg-y stale",
        timeout=60,
    )
    placed = place(api, namespace, ["m1", "m2"], "aws-c7g")
    assert placed[0] == "mg-x", placed  # by requests: 0 on mg-x, 1 SCU on mg-y
    for name in ("m0", "m1", "m2"):
        assert events_for(api, namespace, name, "FailedScheduling") == [], name
    # The metrics API kept answering (for other nodes): the polls are ok, not errors.
    polls_after = load_aware.metrics()[
        ("machine_catalog_node_metrics_polls_total", (("outcome", "ok"),))
    ]
    assert polls_after > polls_before


def gap_usage(factor: Fraction, gap: int) -> int:
    """A usage of the busy node (physical millicores, 50m steps) that puts it ``gap``
    loadAware points behind the other of its pair: the middle of the usages that do, so
    the pod's rounding (its request is ceil(1000 / f) millicores) cannot move the gap.

    The pair: ``light`` holds 1000m of requests, ``heavy`` 6000m and is measured at 1000m;
    the pod asks 1 SCU. The product's scoring function only sets the stage (which usage
    makes a lead of ``gap`` points); what is checked is where kube-scheduler puts the pod.
    """
    from extender.scheduler.scoring import load_aware_scores

    capacity = (np.array([8000, 8000]) * factor).astype(int)
    requested = (np.array([1000, 6000]) * factor).astype(int)
    pod = 1000  # 1 SCU, its expected load and (about) its request on either node
    usages = []
    for used in range(1000, 6400, 50):
        load = (np.array([used, 1000]) * factor).astype(int)
        scores = load_aware_scores(capacity, requested, load, pod, pod, Fraction(1, 5))
        if scores[1] - scores[0] == gap:
            usages.append(used)
    assert usages, f"no usage gives a lead of {gap} at {factor}"
    return usages[len(usages) // 2]


def test_a_usage_lead_of_one_point_or_several_wins_over_the_requests(
    plane, api, load_aware, metrics_api, namespace
):
    """For each gap family (1.25 and 1.5) and each lead (1 and 3 loadAware points): two
    8-vCPU nodes, ``light`` with fewer requests (NodeResourcesFit and BalancedAllocation,
    if they scored, would favour it by more than one point) but busier, ``heavy`` with
    more requests and less usage. The pod goes to ``heavy`` every time: with the in-tree
    request scorers off, a lead of one point is a lead (tests/test_scheduler_pairing.py
    shows the base configuration losing it)."""
    pairs = [
        (name, factor, gap, f"{name[-5:]}-{gap}")
        for name, _, factor in GAP_FAMILIES
        for gap in (1, 3)
    ]
    # Two pairs per family: a label of the pair keeps each pod to its own two nodes.
    objects.create_nodes(
        plane,
        [
            objects.node(
                f"{prefix}-{kind}", {objects.INSTANCE_TYPE: f"{name}.2xlarge", PAIR: prefix}
            )
            for name, _, _, prefix in pairs
            for kind in ("light", "heavy")
        ],
    )
    residents = "load-aware-gap-residents"
    api.create_namespace({"metadata": {"name": residents}})
    for _, _, _, prefix in pairs:
        for node, cpu in (("light", "1"), ("heavy", "6")):
            body = pod_manifest(f"{prefix}-{node}", cpu, nodeName=f"{prefix}-{node}")
            api.create_namespaced_pod(residents, body)
    usage = {}
    for _, factor, gap, prefix in pairs:
        usage[f"{prefix}-light"] = f"{gap_usage(factor, gap)}m"
        usage[f"{prefix}-heavy"] = "1000m"
    publish_nodes(metrics_api, usage)
    # A pod bound less than a sample's 30 s window before the sample counts by its request
    # on top of the sample (anti-herding): wait until the samples cover the residents.
    time.sleep(32)
    wait_samples(load_aware, api, metrics_api)
    for name, _, gap, prefix in pairs:
        body = pod_manifest(
            f"p-{prefix}", "1", annotations={FAMILIES: name}, nodeSelector={PAIR: prefix}
        )
        api.create_namespaced_pod(namespace, body)
        node = bound(api, namespace, f"p-{prefix}").spec.node_name
        assert node == f"{prefix}-heavy", (name, gap, usage[f"{prefix}-light"])
