"""``machine-catalog calibrate`` from files and from a (fake) live cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from support.fakeapi import FakeApiServer, write_kubeconfig  # noqa: E402
from support.helpers import has_no_traceback  # noqa: E402

from benchmarks import metrics_fleet as mf  # noqa: E402
from machine_catalog.loading import default_catalog_path, load_catalog  # noqa: E402
from machine_catalog_cli import main as cli  # noqa: E402

CATALOG = load_catalog()
PACKAGED = yaml.safe_load(default_catalog_path().read_text())
TRUTH = {"aws-m5": 1.0, "aws-m6i": 1.08, "aws-m7i": 1.36}


@pytest.fixture(scope="module")
def fleet() -> mf.UsageFleet:
    return mf.usage_fleet(CATALOG, TRUTH, workloads=100, samples=3, seed=4)


@pytest.fixture
def files(tmp_path: Path, fleet: mf.UsageFleet) -> list[str]:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_bytes(orjson.dumps({"kind": "List", "items": fleet.nodes + fleet.pods}))
    args = ["--snapshot", str(snapshot)]
    for i, document in enumerate(fleet.metrics):
        path = tmp_path / f"metrics-{i}.json"
        path.write_bytes(orjson.dumps(document))
        args += ["--pod-metrics", str(path)]
    return args


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["calibrate", *argv])
    out, err = capsys.readouterr()
    assert has_no_traceback(out + err)
    return code, out, err


def test_json_output_from_files(capsys: pytest.CaptureFixture[str], files: list[str]) -> None:
    code, out, _ = run(capsys, *files, "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["baseline"] == "aws-m5"
    families = {f["name"]: f for f in data["families"]}
    assert list(families) == [f.name for f in CATALOG.families]
    for f in data["families"]:
        assert {"name", "scuPerCore", "estimate", "low", "high", "workloads", "pods"} <= set(f)
    for name, speed in TRUTH.items():
        f = families[name]
        assert abs(f["estimate"] / speed - 1) < 0.02 and f["low"] <= speed <= f["high"]
        assert f["workloads"] > 50 and f["pods"] > 100
    assert families["aws-m6i"]["scuPerCore"] == 1.15
    for name in ("aws-c5", "gcp-n2"):  # no replica there
        assert (families[name]["estimate"], families[name]["low"], families[name]["high"]) == (
            None,
            None,
            None,
        )
        assert families[name]["pods"] == 0


def test_table_and_write(
    capsys: pytest.CaptureFixture[str], files: list[str], tmp_path: Path
) -> None:
    proposed = tmp_path / "proposed.yaml"
    code, out, _ = run(capsys, *files, "--write", str(proposed))
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:4] == ["FAMILY", "SCUPERCORE", "ESTIMATE", "95%"]
    m6i = next(line for line in out.splitlines() if line.startswith("aws-m6i "))
    cells = m6i.split()
    assert cells[1] == "1.15" and abs(float(cells[2]) / TRUTH["aws-m6i"] - 1) < 0.02
    assert cells[-1] == f"{(1.15 - float(cells[2])) / float(cells[2]):+.1%}"  # catalog too high
    assert "wrote" in out and "applied aws-m6i, aws-m7i" in out
    assert cli.main(["validate", str(proposed)]) == 0
    capsys.readouterr()
    assert cli.main(["diff", str(default_catalog_path()), str(proposed), "-o", "json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    changed = {c["family"] for c in diff["factors"]}
    assert changed == {"aws-m6i", "aws-m7i"}


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--snapshot", "SNAP"], 2, "needs at least one --pod-metrics"),
        (["--snapshot", "SNAP", "--pod-metrics", "missing.json"], 1, "cannot read"),
        (["--snapshot", "SNAP", "--pod-metrics", "BAD"], 1, "not a PodMetricsList"),
        (["--snapshot", "missing.json", "--pod-metrics", "BAD"], 1, "cannot read"),
        (["--snapshot", "SNAP", "--pod-metrics", "NODELIST"], 1, "a NodeList, not"),
        (["--snapshot", "SNAP", "--pod-metrics", "SNAP"], 1, "items[0] is a Node"),
        (["--kubeconfig", "missing-kc", "--pod-metrics", "BAD"], 2, "goes with --snapshot"),
        (["--kubeconfig", "missing-kc"], 1, "missing-kc"),
        (["--snapshot", "SNAP", "--pod-metrics", "BAD", "--limit-share", "1.5"], 2, "between 0"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    files: list[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    (tmp_path / "bad.json").write_text('{"kind": "PodMetricsList"}')
    (tmp_path / "nodes.json").write_text('{"kind": "NodeList", "items": []}')
    paths = {"SNAP": files[1], "BAD": str(tmp_path / "bad.json")}
    paths["NODELIST"] = str(tmp_path / "nodes.json")
    argv = [paths.get(a, str(tmp_path / a) if a.startswith("missing") else a) for a in argv]
    out_file = tmp_path / "proposed.yaml"
    got, _out, err = run(capsys, *argv, "--write", str(out_file))
    assert got == code and message in err, err
    assert not out_file.exists()


# -- live -----------------------------------------------------------------------------


def _metrics_items(fleet: mf.UsageFleet, calls: list[int]) -> list[dict[str, Any]]:
    """Each call returns the next sample, as metrics-server's successive windows."""
    calls.append(1)
    return fleet.metrics[min(len(calls), len(fleet.metrics)) - 1]["items"]


def test_live_cluster_sampled_through_the_metrics_api(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fleet: mf.UsageFleet
) -> None:
    calls: list[int] = []
    with FakeApiServer() as fake:
        for node in fleet.nodes:
            fake.add("nodes", node)
        for pod in fleet.pods:
            fake.add("pods", pod)
        fake.pod_metrics = lambda: _metrics_items(fleet, calls)
        fake.publish_catalog(PACKAGED)  # the catalog the cluster serves
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
        code, out, err = run(
            capsys, "--kubeconfig", kubeconfig, "--samples", "3", "--interval", "0", "-o", "json"
        )
        paths = [r.path for r in fake.requests]
    assert code == 0, err
    assert len(calls) == 3 and paths.count("/apis/metrics.k8s.io/v1beta1/pods") == 3
    assert "sample 1/3" in err and "sample 3/3" in err and "listed 24 nodes" in err
    families = {f["name"]: f for f in json.loads(out)["families"]}
    for name, speed in TRUTH.items():
        assert abs(families[name]["estimate"] / speed - 1) < 0.02
    # The same numbers as from files: one estimator, two readers.
    files_code = cli.main(
        [
            "calibrate",
            "--snapshot",
            _snapshot(tmp_path, fleet),
            *_metric_files(tmp_path, fleet),
            "-o",
            "json",
        ]
    )
    assert files_code == 0
    from_files = {f["name"]: f for f in json.loads(capsys.readouterr().out)["families"]}
    assert families["aws-m7i"]["estimate"] == pytest.approx(from_files["aws-m7i"]["estimate"])


def _snapshot(tmp_path: Path, fleet: mf.UsageFleet) -> str:
    path = tmp_path / "snap.json"
    path.write_bytes(orjson.dumps({"kind": "List", "items": fleet.nodes + fleet.pods}))
    return str(path)


def _metric_files(tmp_path: Path, fleet: mf.UsageFleet) -> list[str]:
    out = []
    for i, document in enumerate(fleet.metrics):
        path = tmp_path / f"m{i}.json"
        path.write_bytes(orjson.dumps(document))
        out += ["--pod-metrics", str(path)]
    return out


def test_live_cluster_without_a_metrics_api(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with FakeApiServer() as fake:  # pod_metrics unset: 404, as without metrics-server
        fake.publish_catalog(PACKAGED)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
        code, _, err = run(capsys, "--kubeconfig", kubeconfig, "--samples", "1")
    assert code == 1 and "404" in err and "metrics-server" in err


def test_sampling_waits_the_interval_between_reads(tmp_path: Path, fleet: mf.UsageFleet) -> None:
    from extender.feeds.usage_sampling import sample
    from extender.feeds.watching import load_api_client

    calls: list[int] = []
    slept: list[float] = []
    lines: list[str] = []
    with FakeApiServer() as fake:
        fake.add("nodes", fleet.nodes[0])
        fake.pod_metrics = lambda: _metrics_items(fleet, calls)
        with load_api_client(write_kubeconfig(tmp_path / "kc", fake.url)) as api:
            nodes, pods, documents = sample(api, 3, 42.0, lines.append, slept.append)
    assert slept == [42.0, 42.0] and len(documents) == 3 and len(nodes) == 1 and pods == []
    assert [d["items"] for d in documents] == [m["items"] for m in fleet.metrics]
    assert lines[0].startswith("sample 1/3: ") and "next in 42 s" in lines[0]
    assert lines[-1] == "listed 1 nodes and 0 pods"


def test_odd_objects_are_left_out_not_a_crash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fleet: mf.UsageFleet
) -> None:
    odd = [
        {"kind": "Node", "metadata": "not an object"},
        {"kind": "Node", "metadata": {"name": "n", "labels": ["a"]}},
        {"kind": "Pod", "metadata": {"name": "x"}, "spec": [], "status": "zz"},
        {"kind": "Pod", "metadata": None, "spec": {"nodeName": 3}, "status": {"phase": "Running"}},
    ]
    snapshot = tmp_path / "odd.json"
    snapshot.write_bytes(orjson.dumps({"kind": "List", "items": fleet.nodes + fleet.pods + odd}))
    metrics = tmp_path / "m.json"
    document = dict(fleet.metrics[0])
    document["items"] = [*document["items"], {"containers": [{"usage": "x"}]}]
    metrics.write_bytes(orjson.dumps(document))
    code, out, err = run(
        capsys, "--snapshot", str(snapshot), "--pod-metrics", str(metrics), "-o", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["excluded"] == {"not running": 2}
    assert next(f for f in data["families"] if f["name"] == "aws-m7i")["estimate"] is not None


@pytest.mark.parametrize("served_as", ["resource", "configmap"])
def test_live_catalog_is_proposed_as_a_manifest_and_as_a_merge_patch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fleet: mf.UsageFleet, served_as: str
) -> None:
    """Without --catalog, calibrate reads the catalog the cluster serves; --write gives a
    manifest kubectl apply takes (no server fields), --write-patch a conditional merge
    patch of the object it read."""
    calls: list[int] = []
    manifest, patch = tmp_path / "proposed.yaml", tmp_path / "patch.json"
    with FakeApiServer() as fake:
        for node in fleet.nodes:
            fake.add("nodes", node)
        for pod in fleet.pods:
            fake.add("pods", pod)
        fake.pod_metrics = lambda: _metrics_items(fleet, calls)
        fake.publish_catalog(PACKAGED, served_as, resourceVersion="4711")
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
        code, out, err = run(
            capsys,
            *("--kubeconfig", kubeconfig, "--samples", "3", "--interval", "0"),
            *("--write", str(manifest), "--write-patch", str(patch)),
        )
    assert code == 0, err
    source = (
        "machinecatalog/default"
        if served_as == "resource"
        else "configmap machine-catalog-system/machine-catalog"
    )
    assert f"catalog: {source} (the cluster's), {CATALOG.version}" in err.splitlines()
    written = yaml.safe_load(manifest.read_text())
    assert written["metadata"] == {"name": "default"}  # no uid, resourceVersion, generation
    factors = {f["name"]: f["scuPerCore"] for f in written["spec"]["families"]}
    assert factors["aws-m7i"] == pytest.approx(TRUTH["aws-m7i"], abs=0.02)  # applied
    body = json.loads(patch.read_text())
    assert body["metadata"] == {"resourceVersion": "4711"}  # refused if the catalog changed
    if served_as == "resource":
        assert body["spec"] == written["spec"]
        assert f"kubectl patch machinecatalog/default --type merge --patch-file {patch}" in out
    else:
        assert yaml.safe_load(body["data"]["catalog.yaml"])["spec"] == written["spec"]
        assert "kubectl patch configmap machine-catalog -n machine-catalog-system" in out


def test_write_patch_needs_the_live_catalog(
    capsys: pytest.CaptureFixture[str], files: list[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, *files, "--write-patch", str(tmp_path / "p.json"))
    assert code == 2 and "--write-patch patches the live catalog" in err
    assert not (tmp_path / "p.json").exists()
