"""``machine-catalog calibrate`` with a work signal: from a file, from a (loopback) Prometheus,
and the refusals that leave everything as it was.

The real Prometheus is exercised end to end in ``e2e/tests/test_prometheus.py``; here a
loopback HTTP server answers ``/api/v1/query`` as Prometheus does (its success and error
bodies), so the suite needs no Prometheus.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from support.helpers import has_no_traceback  # noqa: E402

from benchmarks import metrics_fleet as mf  # noqa: E402
from benchmarks import work_fleet as wf  # noqa: E402
from machine_catalog.loading import load_catalog  # noqa: E402
from machine_catalog_cli import main as cli  # noqa: E402

CATALOG = load_catalog()
TRUTH = {"aws-m5": 1.0, "aws-m6i": 1.08, "aws-m7i": 1.36}
QUERY = "sum by (namespace, pod) (rate(http_requests_total[5m]))"


@pytest.fixture(scope="module")
def fleet() -> wf.WorkFleet:
    """Least-request balancing: every replica's usage is the same on every family."""
    return wf.balanced_fleet(CATALOG, TRUTH, evening=1.0, seed=4)


@pytest.fixture
def usage_args(tmp_path: Path, fleet: wf.WorkFleet) -> list[str]:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_bytes(orjson.dumps({"kind": "List", "items": fleet.nodes + fleet.pods}))
    args = ["--snapshot", str(snapshot)]
    for i, document in enumerate(fleet.metrics):
        path = tmp_path / f"metrics-{i}.json"
        path.write_bytes(orjson.dumps(document))
        args += ["--pod-metrics", str(path)]
    return args


class FakePrometheus:
    """Answers every GET with ``status`` and ``body``; keeps the query strings it was sent."""

    def __init__(self) -> None:
        self.status, self.body = 200, b"{}"
        self.queries: list[dict[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                outer.queries.append({"path": [url.path], **urllib.parse.parse_qs(url.query)})
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["calibrate", *argv])
    out, err = capsys.readouterr()
    assert has_no_traceback(out + err)
    return code, out, err


def estimates(out: str) -> dict[str, float]:
    return {f["name"]: f["estimate"] for f in json.loads(out)["families"] if f["estimate"]}


def test_work_metrics_file_recovers_the_speeds_usage_alone_warns(
    capsys: pytest.CaptureFixture[str],
    usage_args: list[str],
    fleet: wf.WorkFleet,
    tmp_path: Path,
) -> None:
    code, out, err = run(capsys, *usage_args, "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["evenness"]["high"] < 0.5 and len(data["warnings"]) == 1
    assert err.startswith("warning: usage per replica hardly differs")
    assert abs(estimates(out)["aws-m7i"] - 1.0) < 0.05  # what it would have claimed

    work = tmp_path / "work.json"
    work.write_bytes(orjson.dumps(fleet.work))
    code, out, err = run(capsys, *usage_args, "--work-metrics", str(work), "-o", "json")
    assert code == 0 and err == ""
    data = json.loads(out)
    for name, speed in TRUTH.items():
        assert abs(estimates(out)[name] / speed - 1) < 0.03
    assert data["warnings"] == [] and data["workSignalWorkloads"] > 90
    assert data["workShares"]["aws-m7i"]["low"] > 1.25

    code, out, _ = run(capsys, *usage_args, "--work-metrics", str(work))
    assert "fitted from a work signal (CPU per unit of work):" in out
    assert "work per replica against aws-m5 (1.0 = round-robin): aws-m6i 1.0" in out
    assert "warning:" not in out


BAD = [
    (b'{"status": "success", "data": ', "not JSON"),
    (
        {"status": "error", "errorType": "bad_data", "error": "unknown function rat"},
        "Prometheus answered bad_data: unknown function rat",
    ),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "not 'vector'"),
    (
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"namespace": "bench", "pod": "p"}, "value": [1.0, "NaN"]}],
            },
        },
        "value NaN is not a finite rate",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_a_bad_work_metrics_file_is_refused_and_nothing_is_written(
    capsys: pytest.CaptureFixture[str],
    usage_args: list[str],
    tmp_path: Path,
    body: Any,
    message: str,
) -> None:
    work = tmp_path / "work.json"
    work.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    proposed = tmp_path / "proposed.yaml"
    code, out, err = run(capsys, *usage_args, "--work-metrics", str(work), "--write", str(proposed))
    assert code == 1 and out == ""
    assert err.startswith(f"machine-catalog: error: {work}") and message in err
    assert not proposed.exists()


def test_live_prometheus_is_asked_the_query(
    capsys: pytest.CaptureFixture[str],
    usage_args: list[str],
    fleet: wf.WorkFleet,
    prometheus: FakePrometheus,
) -> None:
    prometheus.answer(200, fleet.work)
    code, out, _ = run(
        capsys,
        *usage_args,
        "--prometheus",
        prometheus.url + "/",
        "--work-query",
        QUERY,
        "-o",
        "json",
    )
    assert code == 0
    assert prometheus.queries == [{"path": ["/api/v1/query"], "query": [QUERY]}]
    for name, speed in TRUTH.items():
        assert abs(estimates(out)[name] / speed - 1) < 0.03


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unclosed"},
            "Prometheus at URL: Prometheus answered bad_data: 1:5: parse error: unclosed",
        ),
        (502, b"<html>Bad Gateway</html>", "Prometheus at URL: HTTP 502 Bad Gateway"),
        (200, b"<html>login</html>", "Prometheus at URL: the answer is not JSON"),
        (
            200,
            {"status": "success", "data": {"resultType": "vector", "result": []}},
            "Prometheus at URL: the query matched no series",
        ),
    ],
)
def test_live_prometheus_refusals_are_one_line(
    capsys: pytest.CaptureFixture[str],
    usage_args: list[str],
    prometheus: FakePrometheus,
    status: int,
    body: Any,
    message: str,
) -> None:
    prometheus.answer(status, body)
    code, out, err = run(capsys, *usage_args, "--prometheus", prometheus.url, "--work-query", QUERY)
    assert code == 1 and out == ""
    assert message.replace("URL", prometheus.url) in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--work-query", QUERY], "--work-query goes with --prometheus URL"),
        (["--prometheus", "http://127.0.0.1:9"], "--prometheus needs --work-query PROMQL"),
        (
            ["--prometheus", "http://127.0.0.1:9", "--work-query", QUERY],
            "cannot reach Prometheus at http://127.0.0.1:9",
        ),
    ],
)
def test_work_signal_option_mistakes(
    capsys: pytest.CaptureFixture[str], usage_args: list[str], extra: list[str], message: str
) -> None:
    code, out, err = run(capsys, *usage_args, *extra)
    assert code in (1, 2) and out == "" and message in err


def test_work_metrics_and_prometheus_are_one_or_the_other(
    capsys: pytest.CaptureFixture[str], usage_args: list[str]
) -> None:
    code, out, err = run(capsys, *usage_args, "--work-metrics", "f", "--prometheus", "u")
    assert code == 2 and out == ""
    assert "--prometheus: not allowed with argument --work-metrics" in err


def test_usage_fleet_without_signal_keeps_todays_answer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Round-robin, no work signal: the output has no work lines and no warning."""
    fleet = mf.usage_fleet(CATALOG, TRUTH, workloads=100, samples=3, seed=4)
    snapshot = tmp_path / "s.json"
    snapshot.write_bytes(orjson.dumps({"kind": "List", "items": fleet.nodes + fleet.pods}))
    metrics = tmp_path / "m.json"
    metrics.write_bytes(orjson.dumps(fleet.metrics[0]))
    code, out, err = run(capsys, "--snapshot", str(snapshot), "--pod-metrics", str(metrics))
    assert code == 0 and err == ""
    assert "work signal" not in out and "work per replica" not in out
    assert "warning" not in out and "note:" not in out
