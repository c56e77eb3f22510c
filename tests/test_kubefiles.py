"""The one reader of kubectl output files (extender/feeds/kubefiles.py), as a table.

Every snapshot and metrics list goes through it (serve, report, calibrate), so each row is
a file an operator could give any of them: what comes back, or the one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extender.feeds.kubefiles import KubeFileError, read_documents, read_metrics_list

NODE_METRICS = {
    "metadata": {"name": "n1"},
    "timestamp": "2026-01-01T00:00:00Z",
    "window": "20s",
    "usage": {"cpu": "250m", "memory": "1Gi"},
}
POD_METRICS = {
    "metadata": {"name": "p1", "namespace": "default"},
    "containers": [{"name": "app", "usage": {"cpu": "10m"}}],
}
RAW_LIST = json.dumps({"kind": "NodeMetricsList", "items": [NODE_METRICS]})
YAML_LIST = """\
kind: List
apiVersion: v1
items:
- kind: NodeMetrics
  apiVersion: metrics.k8s.io/v1beta1
  metadata: {name: n1}
  timestamp: "2026-01-01T00:00:00Z"
  window: 20s
  usage: {cpu: 250m, memory: 1Gi}
"""


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "in.file"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("content", "documents"),
    [
        ('{"kind": "List", "items": []}', [{"kind": "List", "items": []}]),
        ("kind: List\nitems: []\n", [{"kind": "List", "items": []}]),
        ("a: 1\n---\nb: 2\n---\n", [{"a": 1}, {"b": 2}]),  # empty documents are dropped
        ("[1, 2]", [[1, 2]]),
        ("\ufeff".encode("utf-16-le") + b"a\x00:\x00 \x001\x00", [{"a": 1}]),  # PowerShell `>`
    ],
    ids=["json", "yaml", "yaml-documents", "json-array", "utf16-bom"],
)
def test_documents_are_read_as_json_then_yaml(tmp_path, content, documents) -> None:
    assert read_documents(write(tmp_path, content), "something") == documents


@pytest.mark.parametrize(
    ("content", "allow_yaml", "message"),
    [
        ("", True, "the file is empty; expected a thing"),
        ("\n---\n\n", True, "the file is empty; expected a thing"),
        ("", False, "the file is empty; expected a thing"),
        (b"kind: List\nitems: \xff\xff", True, "not UTF-8 text"),
        ("items: [\n  - {kind: Node\n", True, "not valid JSON or YAML at line 2, column 3"),
        ("kind: List\n", False, "not JSON (unexpected character"),
    ],
    ids=["empty", "only-separators", "empty-json-only", "not-utf8", "yaml-syntax", "json-only"],
)
def test_unreadable_files_are_one_line_naming_the_file(
    tmp_path, content, allow_yaml, message
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(KubeFileError) as info:
        read_documents(path, "a thing", allow_yaml=allow_yaml)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert len(text.splitlines()) == 1
    assert isinstance(info.value, ValueError)


def test_a_missing_file_says_so(tmp_path) -> None:
    with pytest.raises(KubeFileError, match=r"absent\.json: cannot read: No such file"):
        read_documents(tmp_path / "absent.json", "a thing")


@pytest.mark.parametrize(
    ("content", "kind", "names"),
    [
        (RAW_LIST, "NodeMetrics", ["n1"]),  # kubectl get --raw .../nodes
        (YAML_LIST, "NodeMetrics", ["n1"]),  # kubectl get nodemetrics -o yaml
        (json.dumps({"items": [NODE_METRICS]}), "NodeMetrics", ["n1"]),  # no kind at all
        (json.dumps([NODE_METRICS]), "NodeMetrics", ["n1"]),  # a bare array of items
        (json.dumps({"kind": "NodeMetricsList", "items": []}), "NodeMetrics", []),
        (json.dumps({"kind": "PodMetricsList", "items": [POD_METRICS]}), "PodMetrics", ["p1"]),
        # One unusable item is the item reader's to skip, not a reason to refuse the file.
        (json.dumps({"items": [NODE_METRICS, {"usage": {}}]}), "NodeMetrics", ["n1", None]),
    ],
)
def test_metrics_lists_give_their_items(tmp_path, content, kind, names) -> None:
    items = read_metrics_list(write(tmp_path, content), kind)
    assert [item.get("metadata", {}).get("name") for item in items] == names


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        ("", "NodeMetrics", "the file is empty; expected a NodeMetricsList"),
        (b"items: \xff\xff", "PodMetrics", "not UTF-8 text"),
        ("{not json", "NodeMetrics", "not valid JSON or YAML"),
        ("items: []\n---\nitems: []\n", "NodeMetrics", "2 YAML documents; expected one"),
        (RAW_LIST, "PodMetrics", "a NodeMetricsList, not a PodMetricsList"),
        ('{"kind": "NodeList", "items": []}', "PodMetrics", "a NodeList, not a PodMetricsList"),
        ('{"kind": "PodMetricsList"}', "PodMetrics", "not a PodMetricsList (got a PodMetricsList"),
        ('{"items": {"a": 1}}', "NodeMetrics", "got a dict whose 'items' is not a list"),
        ("42", "NodeMetrics", "not a NodeMetricsList (got a int"),
        (
            '{"kind": "List", "items": [{"kind": "Node", "metadata": {"name": "n1"}}]}',
            "NodeMetrics",
            "items[0] is a Node, not a NodeMetrics",
        ),
        (json.dumps({"items": [NODE_METRICS, "oops"]}), "NodeMetrics", "items[1] is a str"),
    ],
    ids=[
        "empty",
        "not-utf8",
        "syntax",
        "two-documents",
        "other-metrics-kind",
        "wrong-kind",
        "no-items",
        "items-not-a-list",
        "scalar",
        "item-of-another-kind",
        "item-not-an-object",
    ],
)
def test_bad_metrics_lists_are_one_line_naming_the_file(tmp_path, content, kind, message) -> None:
    path = write(tmp_path, content)
    with pytest.raises(KubeFileError) as info:
        read_metrics_list(path, kind)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text, text
    assert len(text.splitlines()) == 1
