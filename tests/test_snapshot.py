"""Snapshot files: what kubectl prints (JSON or YAML), raw API lists, and clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from support.fakeapi import make_node, make_pod

from extender.feeds.snapshot import SnapshotError, feed_snapshot, load_snapshot
from extender.state.cluster import ClusterState
from machine_catalog.loading import load_catalog, packaged_file
from machine_catalog.quantities import to_millis

FIXTURE = Path(__file__).parent / "fixtures" / "nodes-real-world.json"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def kubectl_list(*items: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": list(items),
    }


def test_fixture_nodes_file_loads_every_node():
    fixture = json.loads(FIXTURE.read_text())
    nodes, pods = load_snapshot(FIXTURE)
    assert [n["metadata"]["name"] for n in nodes] == [
        i["metadata"]["name"] for i in fixture["items"]
    ]
    assert pods == []


def test_feed_snapshot_fills_the_cache_in_one_replace(catalog):
    state = ClusterState(catalog)
    calls = []
    original = state.replace
    state.replace = lambda *a, **k: (calls.append(a), original(*a, **k))[1]
    counts = feed_snapshot(state, FIXTURE)
    fixture = json.loads(FIXTURE.read_text())
    assert len(calls) == 1
    assert counts == (len(fixture["items"]), 0)
    assert state.synced
    names = [i["metadata"]["name"] for i in fixture["items"]]
    view = state.view(names)
    assert (view.slots >= 0).all()
    assert view.allocatable.tolist() == [
        to_millis(i["status"]["allocatable"]["cpu"]) for i in fixture["items"]
    ]


def test_json_and_yaml_of_the_same_list_give_the_same_objects(tmp_path):
    data = kubectl_list(make_node("n1"), make_pod("p1", node="n1"), make_pod("p2"))
    from_json = load_snapshot(write(tmp_path, "s.json", json.dumps(data)))
    from_yaml = load_snapshot(write(tmp_path, "s.yaml", yaml.safe_dump(data)))
    assert from_json == from_yaml
    nodes, pods = from_json
    assert [n["metadata"]["name"] for n in nodes] == ["n1"]
    assert [p["metadata"]["name"] for p in pods] == ["p1", "p2"]


def test_raw_api_lists_and_plain_arrays_are_accepted(tmp_path):
    node, pod = make_node("n1"), make_pod("p1", node="n1")
    bare_node = {k: v for k, v in node.items() if k not in ("kind", "apiVersion")}
    bare_pod = {k: v for k, v in pod.items() if k not in ("kind", "apiVersion")}
    node_list = {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [bare_node]}
    pod_list = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [bare_pod]}
    assert load_snapshot(write(tmp_path, "nodes.json", json.dumps(node_list))) == ([bare_node], [])
    assert load_snapshot(write(tmp_path, "pods.json", json.dumps(pod_list))) == ([], [bare_pod])
    assert load_snapshot(write(tmp_path, "a.json", json.dumps([node, pod]))) == ([node], [pod])
    two_docs = yaml.safe_dump(node_list) + "---\n" + yaml.safe_dump(pod_list)
    assert load_snapshot(write(tmp_path, "both.yaml", two_docs)) == ([bare_node], [bare_pod])


def test_other_kinds_are_skipped_with_a_debug_log(tmp_path, caplog):
    service = {"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web"}}
    path = write(tmp_path, "all.json", json.dumps(kubectl_list(service, make_node("n1"))))
    with caplog.at_level(logging.DEBUG, logger="extender.feeds.snapshot"):
        nodes, pods = load_snapshot(path)
    assert len(nodes) == 1 and pods == []
    assert "Service" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("items: [\n  - {kind: Node\n", "not valid JSON or YAML at line"),
        ('{"kind": "Node", "metadata": {"name": "n1"}}', "single Node object"),
        ('{"kind": "List", "items": {"a": 1}}', "'items' is not a list"),
        ('{"kind": "List"}', "without 'items'"),
        ("42", "not a list"),
        ('{"kind": "List", "items": [{"kind": "Node"}, "oops"]}', "items[1] is a str"),
        (b"kind: List\nitems: \xff\xff", "not UTF-8"),
    ],
)
def test_bad_files_fail_with_the_file_and_the_reason(tmp_path, content, message):
    path = write(tmp_path, "bad.json", content)
    with pytest.raises(SnapshotError) as info:
        load_snapshot(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_utf16_with_bom_is_read(tmp_path):
    data = kubectl_list(make_node("n1"))
    path = write(
        tmp_path, "ps.json", "\ufeff".encode("utf-16-le") + json.dumps(data).encode("utf-16-le")
    )
    assert [n["metadata"]["name"] for n in load_snapshot(path)[0]] == ["n1"]


def test_missing_file_says_so(tmp_path):
    with pytest.raises(SnapshotError, match=r"missing\.json: cannot read: No such file"):
        load_snapshot(tmp_path / "missing.json")


def test_a_bad_snapshot_leaves_the_cache_as_it_was(tmp_path, catalog):
    state = ClusterState(catalog)
    feed_snapshot(state, FIXTURE)
    before = state.counts()
    with pytest.raises(SnapshotError):
        feed_snapshot(state, write(tmp_path, "bad.json", "[1, 2"))
    assert state.counts() == before


def test_packaged_demo_snapshot_feeds_a_synced_cache(catalog):
    state = ClusterState(catalog)
    nodes, pods = feed_snapshot(state, packaged_file("demo-snapshot.json"))
    assert nodes > 0 and pods > 0
    assert state.synced
    assert state.counts()["nodes"] == nodes


def test_the_load_log_explains_why_the_cache_holds_fewer_pods_than_the_file(
    tmp_path, catalog, caplog
):
    pinned = {"machine-catalog.io/family": "aws-m5"}
    pods = [
        make_pod("running", node="n1"),
        make_pod("pinned", phase="Pending", annotations=pinned),
        make_pod("done", node="n1", phase="Succeeded"),
        make_pod("unpinned", phase="Pending"),
    ]
    path = tmp_path / "snap.json"
    path.write_text(json.dumps({"kind": "List", "items": [make_node("n1"), *pods]}))
    state = ClusterState(catalog)
    with caplog.at_level(logging.INFO, logger="extender.feeds.snapshot"):
        assert feed_snapshot(state, path) == (1, 4)
    assert state.counts() == {"nodes": 1, "pods": 2}  # what /readyz shows as cache.pods
    (message,) = [
        r.getMessage() for r in caplog.records if "loaded from snapshot" in r.getMessage()
    ]
    assert "1 nodes, 4 pods in the file; the cache accounts for 2 pods (/readyz cache.pods)" in (
        message
    )
    assert "The other 2 (finished, pending and not pinned, or listed twice)" in message
