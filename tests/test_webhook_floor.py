"""The webhook floor benchmark's pieces that run without a control plane: the floor's
answer (the request's uid, serve's recorded patch), its webhook entries (each namespace
meets exactly one webhook), the paired difference and the generated prose."""

from __future__ import annotations

import base64
import io
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import floor_app  # noqa: E402
from benchmarks import webhook_floor as wf  # noqa: E402

PATCH = [{"op": "add", "path": "/spec/nodeSelector", "value": {"a": "b"}}]
RECORDED = orjson.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(orjson.dumps(PATCH)).decode(),
            "auditAnnotations": {"machine-catalog.io/family": "aws-m5"},
        },
    }
)


def _call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[str, Any]:
    seen: list[str] = []
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    out = b"".join(app(environ, lambda status, headers: seen.append(status)))
    return seen[0], orjson.loads(out)


def test_floor_answers_each_review_with_its_uid_and_the_recorded_answer() -> None:
    templates = {
        floor_app.MUTATE: floor_app.review_template(RECORDED),
        floor_app.ALLOW: floor_app.allow_template(RECORDED),
    }
    app = floor_app.webhook_floor(lambda environ, start_response: [], templates)
    review = orjson.dumps({"request": {"uid": "u-1", "object": {"kind": "Pod"}}})

    status, mutated = _call(app, "POST", floor_app.MUTATE, review)
    recorded = orjson.loads(RECORDED)["response"]
    assert status == "200 OK"
    assert mutated["response"] == {**recorded, "uid": "u-1"}
    assert orjson.loads(base64.b64decode(mutated["response"]["patch"])) == PATCH

    _, allowed = _call(app, "POST", floor_app.ALLOW, review.replace(b"u-1", b"u-2"))
    assert allowed["response"] == {"uid": "u-2", "allowed": True}
    assert allowed["apiVersion"] == "admission.k8s.io/v1"

    _, stats = _call(app, "GET", floor_app.STATS)
    assert {p: s["count"] for p, s in stats.items()} == {
        floor_app.MUTATE: 1,
        floor_app.ALLOW: 1,
    }
    assert all(s["sum"] > 0 for s in stats.values())


def test_other_paths_reach_the_extender_floor() -> None:
    calls = []

    def inner(environ: dict, start_response: Any) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"{}"]

    app = floor_app.webhook_floor(inner, {floor_app.MUTATE: floor_app.review_template(RECORDED)})
    _call(app, "POST", "/scheduler/filter", b"{}")
    _call(app, "GET", floor_app.MUTATE)
    assert calls == ["/scheduler/filter", floor_app.MUTATE]


def test_each_namespace_meets_exactly_one_webhook(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"ca")
    plane = SimpleNamespace(pki=SimpleNamespace(ca=ca))
    from harness import objects

    ours = objects.webhook_configuration(plane, "https://serve")
    (our_create,) = [h for h in ours["webhooks"] if h["name"] == wf.WEBHOOK[wf.OURS]]
    floor = wf.floor_configuration(plane, "https://floor")
    hooks = {h["name"]: h for h in floor["webhooks"]}
    assert set(hooks) == {wf.WEBHOOK[wf.FLOOR], wf.WEBHOOK[wf.NO_PATCH]}
    labels = {
        wf.OURS: {"machine-catalog.io/normalize": "enabled"},
        wf.FLOOR: {wf.FLOOR_LABEL: wf.FLOOR},
        wf.NO_PATCH: {wf.FLOOR_LABEL: wf.NO_PATCH},
    }
    entries = {wf.OURS: our_create} | {k: hooks[wf.WEBHOOK[k]] for k in wf.FLOOR_PATH}
    for kind, namespace_labels in labels.items():
        met = [
            k
            for k, hook in entries.items()
            if hook["namespaceSelector"]["matchLabels"].items() <= namespace_labels.items()
        ]
        assert met == [kind]
    for kind, path in wf.FLOOR_PATH.items():
        hook = entries[kind]
        assert hook["clientConfig"]["url"] == "https://floor" + path
        for key in ("failurePolicy", "timeoutSeconds", "sideEffects", "reinvocationPolicy"):
            assert hook[key] == our_create[key]
        assert hook["rules"] == our_create["rules"]
        assert hook["objectSelector"] == our_create["objectSelector"]


def test_difference_pairs_iterations_so_shared_drift_cancels() -> None:
    rng = np.random.default_rng(3)
    # Each iteration's level drifts (the shared machine); the webhook adds 1.5 ms on top.
    repeats = []
    for _ in range(3):
        level = 5 + 20 * rng.random(200)
        repeats.append({wf.PLAIN: list(level), wf.FLOOR: list(level + 1.5)})
    est, lo, hi = wf.difference(repeats, wf.FLOOR)
    assert est == pytest.approx(1.5)
    assert lo == pytest.approx(1.5) and hi == pytest.approx(1.5)
    # Unpaired (one side's iterations shuffled) the same creates give a wide interval.
    shuffled = [
        {wf.PLAIN: r[wf.PLAIN], wf.FLOOR: list(rng.permutation(r[wf.FLOOR]))} for r in repeats
    ]
    _, lo_u, hi_u = wf.difference(shuffled, wf.FLOOR)
    assert hi_u - lo_u > 1.0


def test_every_iteration_visits_each_namespace_once_in_a_changing_order() -> None:
    rng = random.Random(1)
    orders = [tuple(wf.rotation(rng)) for _ in range(200)]
    assert all(sorted(o) == sorted(wf.KINDS) for o in orders)
    assert {o[0] for o in orders} == set(wf.KINDS)
    assert len(set(orders)) > 12


def _result(floor_adds: float) -> wf.SizeResult:
    rng = np.random.default_rng(0)
    adds = {wf.PLAIN: 0.0, wf.FLOOR: floor_adds, wf.NO_PATCH: floor_adds / 2, wf.OURS: 3.0}
    repeats = []
    for i in range(3):
        level = 5 + rng.random(100)
        repeats.append(
            wf.Repeat(
                index=i,
                latencies_ms={k: list(level + a) for k, a in adds.items()},
                apiserver_ms={wf.FLOOR: 2.0, wf.NO_PATCH: 1.5, wf.OURS: 3.0},
                handler_ms={wf.FLOOR: 0.4, wf.NO_PATCH: 0.4, wf.OURS: 1.1},
                load_before="2.0",
                load_after="2.1",
            )
        )
    return wf.SizeResult(1000, 10.0, repeats, 4, 900, True)


META = {
    "stamp": "now",
    "machine": "2 CPUs",
    "load_before": "2.0",
    "load_after": "2.2",
    "repeats": 3,
    "samples": 100,
    "warmup": 20,
}


@pytest.mark.parametrize(
    ("floor_adds", "verdict"),
    [(2.0, "The floor alone is above issue 18's 1 ms"), (0.5, "The floor is within")],
)
def test_prose_says_whether_the_floor_alone_misses_the_target(
    floor_adds: float, verdict: str
) -> None:
    text = wf.render([_result(floor_adds)], META)
    assert verdict in text
    assert f"adds **{floor_adds:+.2f} [" in text
    assert "ours adds **+3.00 [" in text
    # The call's own share: the API server's time in the bare call minus the handler's.
    assert "1.10 ms of a call without a patch are the API server's side" in text
    assert "the API server applying the patch +" in text
    assert "**latency**" in text and "load average 2.0 before, 2.2 after" in text
