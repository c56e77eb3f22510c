"""``loadAware``: usage in SCU, the hot-spot filter, anti-herding, and both usage feeds.

The scorer and the filter rule are checked with tables calling the pure functions; the
routes with a Flask client on a cache fed by watch events, including a burst of pods bound
between two samples; the live feed against the loopback fake API server's
``metrics.k8s.io`` endpoint, the file feed through a real file.
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from support.fakeapi import FakeApiServer, make_node, make_node_metrics, make_pod

from extender.feeds.nodemetrics import NodeMetricsFile, NodeMetricsPoller
from extender.feeds.watching import load_api_client
from extender.scheduler.filtering import filter_nodes
from extender.scheduler.scoring import load_aware_scores
from extender.server.app import create_app
from extender.state.cluster import ClusterState
from extender.state.runtime import Runtime, Settings
from extender.state.usage import UsageSample, parse_duration, parse_node_metrics
from machine_catalog.catalog import Catalog
from machine_catalog.loading import CatalogSource, parse_catalog
from machine_catalog.quantities import to_millis

CATALOG = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: load}
spec:
  baseline: old
  scoring: {strategy: %(strategy)s, hotSpotUsage: %(hot)s, requestWeight: %(weight)s}
  families:
    - {name: old, scuPerCore: 1, instanceTypes: [m5.2xlarge]}
    - {name: new, scuPerCore: 1.5, instanceTypes: [m7i.2xlarge]}
"""


def catalog(strategy: str = "loadAware", hot: str = "0.8", weight: str = "0.2") -> Catalog:
    return parse_catalog(CATALOG % {"strategy": strategy, "hot": hot, "weight": weight})


def nodes() -> list[dict[str, Any]]:
    """Three 8-core nodes: two old (8 SCU each), one new (12 SCU)."""
    return [
        make_node("old-a", cpu="8", instance_type="m5.2xlarge"),
        make_node("old-b", cpu="8", instance_type="m5.2xlarge"),
        make_node("new-c", cpu="8", instance_type="m7i.2xlarge"),
    ]


def cluster(strategy: str = "loadAware", **kw: str) -> ClusterState:
    state = ClusterState(catalog(strategy, **kw))
    state.replace(nodes(), [])
    return state


# -- the scorer, by table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "requested", "load", "pod_load", "pod_request", "weight", "expected"),
    [
        # floor(10 * (C - L - p) / C) with w = 0: 8000 - 2000 - 1000 = 5000 -> 6.25 -> 6
        ([8000], [0], [2000], 1000, 1000, "0", [6]),
        # w = 1/5: (4/5 * 5000 + 1/5 * (8000 - 6000 - 1000)) / 8000 * 10 = 5.25 -> 5
        ([8000], [6000], [2000], 1000, 1000, "0.2", [5]),
        # no fresh sample: load = requests, p = q -> balanced: 10 * (8000-6000-1000)/8000 = 1
        ([8000], [6000], [6000], 1000, 1000, "0.2", [1]),
        # usage ranks: same requests, less load scores higher
        ([8000, 8000], [4000, 4000], [1000, 6000], 1000, 1000, "0.2", [6, 1]),
        # near tie on usage (5.0 vs 5.3 free), requests decide: 4000 vs 0 requested
        ([8000, 8000], [4000, 0], [2000, 2200], 1000, 1000, "0.2", [5, 6]),
        # overloaded (load + pod > capacity): clipped at 0; no capacity: 0
        ([8000, 0], [0, 0], [9000, 0], 1000, 1000, "0", [0, 0]),
        # an idle node, a pod of no CPU: 10
        ([12000], [0], [0], 0, 0, "0.2", [10]),
    ],
)
def test_load_aware_scores(
    capacity: list[int],
    requested: list[int],
    load: list[int],
    pod_load: int,
    pod_request: int,
    weight: str,
    expected: list[int],
) -> None:
    scores = load_aware_scores(
        np.array(capacity),
        np.array(requested),
        np.array(load),
        pod_load,
        pod_request,
        Fraction(weight),
    )
    assert scores.tolist() == expected


def test_load_aware_is_exact_on_integers() -> None:
    """One integer floor division: no float rounding at a score boundary."""
    # (4/5 * (10000 - 2000 - 1000) + 1/5 * (10000 - 4000 - 1000)) * 10 / 10000 = 6.6 -> 6,
    # and exactly 7.0 at a load of 1500: floor must not give 6.999... -> 6.
    got = load_aware_scores(
        np.array([10000, 10000]),
        np.array([4000, 4000]),
        np.array([2000, 1500]),
        1000,
        1000,
        Fraction(1, 5),
    )
    assert got.tolist() == [6, 7]


# -- the hot-spot rule, by table ------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "hot", "rejected", "reason_part"),
    [
        # old-a: 7 of 8 SCU = 87.5% > 80%; new-c: 6 cores * 1.5 = 9 of 12 SCU = 75%: passes
        ({"old-a": "7", "new-c": "6"}, "0.8", {"old-a"}, "usage 7 SCU (88%) of 8 SCU"),
        # new-c: 7 cores * 1.5 = 10.5 of 12 SCU = 87.5%: in raw cores 7/8 too, but in SCU
        ({"new-c": "7"}, "0.8", {"new-c"}, "usage 10.5 SCU (88%) of 12 SCU on family new"),
        # at the threshold exactly (6.4 of 8 = 80%) passes: strictly above is hot
        ({"old-a": "6400m"}, "0.8", set(), ""),
        # hotSpotUsage null: no filter at all
        ({"old-a": "8"}, "null", set(), ""),
        # no sample for old-b: never rejected, whatever its requests
        ({}, "0.5", set(), ""),
    ],
)
def test_hot_spot_filter(
    usage: dict[str, str], hot: str, rejected: set[str], reason_part: str
) -> None:
    state = cluster(hot=hot)
    now = time.time()
    state.set_usage({n: UsageSample(to_millis(cpu), now) for n, cpu in usage.items()})
    names = ["old-a", "old-b", "new-c"]
    view = state.view(names, usage=hot != "null")
    outcome = filter_nodes(view, 500, None, now=now)
    # unresolvable: preemption cannot cool a node, and a FailedNodes node that needs no
    # victim fails kube-scheduler's whole preemption (kubernetes#139270)
    assert set(outcome.unresolvable) == rejected
    assert not outcome.failed
    for name in rejected:
        assert reason_part in outcome.unresolvable[name]
        assert "above hotSpotUsage" in outcome.unresolvable[name]
    if rejected:
        assert outcome.rejections == {"hot_spot": len(rejected)}


def test_stale_sample_is_not_a_hot_spot_and_scores_on_requests() -> None:
    state = cluster()
    state.set_usage({"old-a": UsageSample(8000, time.time() - 3600)})  # an hour old
    view = state.view(["old-a"], usage=True)
    assert filter_nodes(view, 500, None).unresolvable == {}
    assert state.usage_status()["stale"] == ["old-a"]


# -- NodeMetrics parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20s", 20.0), ("20.052s", 20.052), ("1m0s", 60.0), ("1m30s", 90.0), ("500ms", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_node_metrics_skips_bad_items_only() -> None:
    good = make_node_metrics("a", "1500m", at=1_800_000_000)
    document = {
        "items": [
            good,
            {"metadata": {"name": "b"}, "usage": {"cpu": "lots"}, "timestamp": good["timestamp"]},
            {"usage": {"cpu": "1"}},
            make_node_metrics("c", "250000000n", at=1_800_000_000),
        ]
    }
    samples, skipped = parse_node_metrics(document)
    assert samples["a"] == UsageSample(1500, 1_800_000_000.0, 20.0)
    assert samples["c"].millis == 250  # nanocores, as metrics-server reports them
    assert len(skipped) == 2 and "items[1]" in skipped[0] and "items[2]" in skipped[1]


# -- the cache: usage in SCU, anti-herding from watch events -------------------------------


def test_usage_is_kept_in_scu_and_follows_a_catalog_change() -> None:
    state = cluster()
    now = time.time()
    state.set_usage({"old-a": UsageSample(4000, now), "new-c": UsageSample(4000, now)})
    view = state.view(["old-a", "new-c", "nope"], usage=True)
    assert view.usage is not None
    assert view.usage.usage_scu.tolist() == [4000, 6000, -1]
    state.set_catalog(
        parse_catalog(
            (CATALOG % {"strategy": "loadAware", "hot": 0.8, "weight": 0.2}).replace("1.5", "2")
        )
    )
    assert state.view(["new-c"], usage=True).usage.usage_scu.tolist() == [8000]
    state.replace_nodes(nodes())  # a relist of nodes keeps the samples
    assert state.view(["new-c"], usage=True).usage.usage_scu.tolist() == [8000]


def test_pods_bound_since_the_sample_count_until_a_sample_covers_them() -> None:
    state = cluster()
    state.set_usage({"new-c": UsageSample(2000, time.time() - 5, 0.0)})
    pod = make_pod("p1", cpu="1", node="new-c")
    state.apply("Pod", "ADDED", pod)
    usage = state.view(["new-c"], usage=True).usage
    assert (usage.usage_scu.tolist(), usage.unseen_scu.tolist()) == ([3000], [1500])
    # a sample taken before the binding does not cover it
    state.set_usage({"new-c": UsageSample(2000, time.time() - 1, 0.0)})
    assert state.view(["new-c"], usage=True).usage.unseen_scu.tolist() == [1500]
    # one whose window starts after it does
    state.set_usage({"new-c": UsageSample(3000, time.time() + 30, 10.0)})
    usage = state.view(["new-c"], usage=True).usage
    assert (usage.usage_scu.tolist(), usage.unseen_scu.tolist()) == ([4500], [0])


def test_an_unseen_pod_that_leaves_stops_counting() -> None:
    state = cluster()
    state.set_usage({"old-a": UsageSample(0, time.time() - 5)})
    pod = make_pod("p1", cpu="2", node="old-a")
    state.apply("Pod", "ADDED", pod)
    assert state.view(["old-a"], usage=True).usage.unseen_scu.tolist() == [2000]
    state.apply("Pod", "DELETED", pod)
    assert state.view(["old-a"], usage=True).usage.unseen_scu.tolist() == [0]
    # a relist is not a burst of bindings
    state.replace_pods([make_pod("p2", cpu="2", node="old-a")])
    assert state.view(["old-a"], usage=True).usage.unseen_scu.tolist() == [0]


# -- the routes -----------------------------------------------------------------------------


def _runtime(tmp_path: Path, **kw: str) -> Runtime:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        CATALOG
        % {
            "strategy": kw.get("strategy", "loadAware"),
            "hot": kw.get("hot", "0.8"),
            "weight": kw.get("weight", "0.2"),
        }
    )
    catalogs = CatalogSource(path)
    state = ClusterState(catalogs.current)
    state.replace(nodes(), [])
    return Runtime(catalogs=catalogs, cluster=state, settings=Settings())


def _args(pod: dict[str, Any], names: list[str]) -> bytes:
    return orjson.dumps({"Pod": pod, "NodeNames": names})


def _scores(client: Any, pod: dict[str, Any], names: list[str]) -> dict[str, int]:
    resp = client.post("/scheduler/prioritize", data=_args(pod, names))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return {h["Host"]: h["Score"] for h in resp.get_json()}


NAMES = ["old-a", "old-b", "new-c"]


def _burst(runtime: Runtime, count: int, watch: bool) -> list[str]:
    """Schedule ``count`` 1-core pods one after another between two samples, binding each
    to its top-scored node (first in name order on a tie) and, with ``watch``, telling the
    cache as the pod watch would."""
    client = create_app(runtime).test_client()
    placed = []
    for i in range(count):
        pod = make_pod(f"burst-{i}", cpu="1")
        scores = _scores(client, pod, NAMES)
        best = max(NAMES, key=lambda n: (scores[n], -NAMES.index(n)))
        placed.append(best)
        if watch:
            pod["spec"]["nodeName"] = best
            runtime.cluster.apply("Pod", "MODIFIED", pod)
    return placed


def test_a_burst_between_two_samples_does_not_herd(tmp_path: Path) -> None:
    """new-c looks idlest (1.5 of 12 SCU); old-a and old-b are at 4 of 8. Eight 1-core pods
    come before the next sample. With bindings counted from the watch, new-c takes pods
    until its load catches up with the others; without, all eight go to new-c."""
    runtime = _runtime(tmp_path)
    now = time.time() - 1
    samples = {
        "old-a": UsageSample(4000, now),
        "old-b": UsageSample(4000, now),
        "new-c": UsageSample(1000, now),
    }
    runtime.cluster.set_usage(samples)
    herded = _burst(runtime, 8, watch=False)
    assert herded == ["new-c"] * 8
    runtime = _runtime(tmp_path)
    runtime.cluster.set_usage(samples)
    spread = _burst(runtime, 8, watch=True)
    assert set(spread) == set(NAMES), spread
    assert spread.count("new-c") < 8
    # the pods' load is in the cache until the next sample covers them
    unseen = runtime.cluster.view(NAMES, usage=True).usage.unseen_scu
    per_node = {n: spread.count(n) for n in NAMES}
    assert unseen.tolist() == [
        1000 * per_node["old-a"],
        1000 * per_node["old-b"],
        1500 * per_node["new-c"],
    ]


def test_prioritize_ranks_by_usage_in_scu_over_the_http_route(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, weight="0")
    now = time.time()
    # equal raw-core usage (4 of 8 cores); in SCU new-c has 6 of 12, so a 2-SCU pod
    # leaves it 4 SCU free (33%) against 2 of 8 (25%) on the old ones.
    runtime.cluster.set_usage({n: UsageSample(4000, now) for n in NAMES})
    client = create_app(runtime).test_client()
    assert _scores(client, make_pod(cpu="2"), NAMES) == {"old-a": 2, "old-b": 2, "new-c": 3}


def test_prioritize_without_metrics_is_balanced_in_scu(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    (tmp_path / "balanced").mkdir()
    balanced = _runtime(tmp_path / "balanced", strategy="balanced")
    for rt in (runtime, balanced):
        rt.cluster.apply("Pod", "ADDED", make_pod("x", cpu="3", node="old-a"))
    for family, names, expected in (
        ("old", ["old-a", "old-b"], {"old-a": 5, "old-b": 8}),
        ("new", ["new-c"], {"new-c": 8}),
    ):
        pod = make_pod(cpu="1", annotations={"machine-catalog.io/family": family})
        got = _scores(create_app(runtime).test_client(), pod, names)
        want = _scores(create_app(balanced).test_client(), pod, names)
        assert got == want == expected


def test_filter_reason_over_the_http_route(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    runtime.cluster.set_usage({"old-b": UsageSample(6000, time.time() - 1)})
    runtime.cluster.apply("Pod", "ADDED", make_pod("hot", cpu="1", node="old-b"))
    client = create_app(runtime).test_client()
    resp = client.post("/scheduler/filter", data=_args(make_pod(cpu="1"), NAMES))
    result = resp.get_json()
    assert result["NodeNames"] == ["old-a", "new-c"]
    assert result["FailedAndUnresolvableNodes"] == {
        "old-b": "hot spot: usage 7 SCU (88%) of 8 SCU on family old, above hotSpotUsage 0.8"
        " (6 SCU measured + 1 SCU requested by pods bound since the sample)"
    }
    assert result["FailedNodes"] in ({}, None)


# -- the feeds ------------------------------------------------------------------------------


def _kubeconfig(tmp_path: Path, url: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n"
        "users: [{name: fake, user: {token: t}}]\n"
    )
    return str(path)


def test_live_poll_of_metrics_api(tmp_path: Path, caplog: Any) -> None:
    state = cluster()
    with FakeApiServer() as api:
        poller = NodeMetricsPoller(state, load_api_client(_kubeconfig(tmp_path, api.url)))
        # no metrics API installed: the poll says so, the cache keeps serving on requests
        assert poller.poll_once() == "unavailable"
        assert "HTTP 404" in caplog.text
        assert len(state.usage_status()["missing"]) == 3
        api.node_metrics = [make_node_metrics("old-a", "2"), make_node_metrics("new-c", "3")]
        assert poller.poll_once() == "ok"
        assert sorted(state.usage_status()["fresh"]) == ["new-c", "old-a"]
        assert state.view(["new-c"], usage=True).usage.usage_scu.tolist() == [4500]
        # a failing poll keeps the last samples (they go stale in their own time)
        api.fail_next(503)
        assert poller.poll_once() == "unavailable"
        assert state.view(["new-c"], usage=True).usage.usage_scu.tolist() == [4500]
    assert any(r.path == "/apis/metrics.k8s.io/v1beta1/nodes" for r in api.requests)


def test_metrics_file_is_hot_reloaded_and_a_bad_one_keeps_the_last(tmp_path: Path) -> None:
    state = cluster()
    path = tmp_path / "nodes-metrics.json"
    path.write_bytes(orjson.dumps({"items": [make_node_metrics("old-a", "2")]}))
    feed = NodeMetricsFile(str(path), state)
    assert state.view(["old-a"], usage=True).usage.usage_scu.tolist() == [2000]
    assert feed.poll() is False  # unchanged
    path.write_bytes(orjson.dumps({"items": [make_node_metrics("old-b", "3")]}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert feed.poll() is True
    got = state.view(["old-a", "old-b"], usage=True).usage.usage_scu.tolist()
    assert got == [-1, 3000]  # the file is the whole truth: old-a has no sample any more
    path.write_text("{not json")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert feed.poll() is False
    assert feed.last_error is not None and "not valid JSON or YAML" in feed.last_error
    assert state.view(["old-b"], usage=True).usage.usage_scu.tolist() == [3000]


def test_serve_loads_the_metrics_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    from support.helpers import write_snapshot

    from extender.server.serve import ServeConfig, ServeError, build_runtime, preflight

    snapshot = write_snapshot(tmp_path / "snapshot.json")
    good = tmp_path / "metrics.json"
    names = [n["metadata"]["name"] for n in orjson.loads(snapshot.read_bytes())["items"]]
    good.write_bytes(orjson.dumps({"items": [make_node_metrics(names[0], "1")]}))
    config = ServeConfig(snapshot=str(snapshot), node_metrics=str(good), state_dir=str(tmp_path))
    preflight(config)
    runtime = build_runtime(config, start=False)
    assert runtime.cluster.usage_status()["fresh"] == [names[0]]
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "NodeMetricsList"}')
    with pytest.raises(ServeError, match="not a NodeMetricsList"):
        preflight(ServeConfig(snapshot=str(snapshot), node_metrics=str(bad)))


# -- the catalog settings -------------------------------------------------------------------


def test_scoring_settings_are_in_the_schema_with_their_defaults() -> None:
    from machine_catalog.model import json_schema

    schema = orjson.dumps(json_schema()).decode()
    for text in ("loadAware:", "hotSpotUsage", "Default 0.8", "Default 180", "Default 30"):
        assert text in schema, text


def test_defaults_keep_the_content_hash_and_a_change_shows_in_diff() -> None:
    from machine_catalog.diffing import diff_catalogs

    plain = parse_catalog(
        CATALOG.replace(", hotSpotUsage: %(hot)s, requestWeight: %(weight)s", "")
        % {"strategy": "balanced"}
    )
    explicit = catalog("balanced", hot="0.8", weight="0.2")
    assert plain.hash == explicit.hash  # defaults spelt out: the same version
    hotter = catalog("balanced", hot="0.9")
    assert hotter.hash != plain.hash
    fields = {c.field: (c.old, c.new) for c in diff_catalogs(plain, hotter).fields}
    assert fields == {"scoring.hotSpotUsage": ("0.8", "0.9")}


def test_a_reload_to_load_aware_starts_polling_at_once(tmp_path: Path) -> None:
    """The poller re-reads the catalog every second: switching a balanced catalog (whose
    default interval is 30 s) to loadAware, or shortening the interval, needs no wait for
    the old interval to run out."""
    state = cluster("balanced")
    with FakeApiServer() as api:
        api.node_metrics = [make_node_metrics("old-a", "2")]
        poller = NodeMetricsPoller(state, load_api_client(_kubeconfig(tmp_path, api.url)))
        poller.start()
        try:
            time.sleep(1.5)
            assert poller.polls == 0  # balanced: no polling
            state.set_catalog(catalog("loadAware"))  # sampleIntervalSeconds: 30 (default)
            deadline = time.monotonic() + 5
            while poller.polls == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert poller.polls == 1
            assert state.usage_status()["fresh"] == ["old-a"]
            faster = CATALOG.replace("requestWeight: %(weight)s", "sampleIntervalSeconds: 1")
            state.set_catalog(parse_catalog(faster % {"strategy": "loadAware", "hot": "0.8"}))
            deadline = time.monotonic() + 5
            while poller.polls < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert poller.polls >= 3  # every second now, not after 30 s
        finally:
            poller.stop()
