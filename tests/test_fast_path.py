"""The verbs' fast path (``extender.server.routes.fast_path``) answers as the Flask routes do.

Each request of the table is sent twice to the same app: with a Content-Length (the fast
path) and as a chunked body arrives from gunicorn, without one (Flask's routes, which the
fast path leaves such requests to). Status, content type and body must be the same. The
webhook's answers carry the review's uid, so each pair sends the same review; a dry run
keeps the two from reserving.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from support.helpers import extender_args, scheduler_pod
from support.webhook import Webhook, make_review

REVIEW = make_review(dryRun=True)

CASES = [
    ("/scheduler/filter", extender_args(scheduler_pod("1"))),
    ("/scheduler/filter", extender_args(scheduler_pod("2", "m6i"))),
    ("/scheduler/prioritize", extender_args(scheduler_pod("1"))),
    ("/scheduler/filter", b'{"Pod": 1}'),
    ("/scheduler/prioritize", b"not json"),
    ("/webhook/mutate", json.dumps(REVIEW).encode()),
    ("/webhook/mutate", b'{"kind": "AdmissionReview"}'),
    ("/webhook/mutate", b""),
]


def answer(reply: Any) -> tuple[int, str, bytes]:
    return reply.status_code, reply.content_type, reply.data


@pytest.fixture
def hook() -> Webhook:
    return Webhook()


@pytest.mark.parametrize(("route", "body"), CASES)
def test_the_fast_path_answers_as_the_flask_route_does(hook, route, body):
    fast = hook.client.post(route, data=body, content_type="application/json")
    slow = hook.client.post(
        route,
        input_stream=io.BytesIO(body),
        content_type="application/json",
        # What gunicorn hands over for a chunked body: no length, the stream terminated.
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer(fast) == answer(slow)
    assert fast.headers["Content-Length"] == str(len(fast.data))


def test_the_verbs_are_answered_without_flasks_dispatch(hook, monkeypatch):
    def no_flask() -> Any:
        raise AssertionError("Flask dispatched a verb's request")

    monkeypatch.setattr(hook.app, "full_dispatch_request", no_flask)
    for route, body in CASES[:3]:
        reply = hook.client.post(route, data=body, content_type="application/json")
        assert reply.status_code == 200, reply.data
    assert hook.client.post("/webhook/mutate", json=REVIEW).status_code == 200


@pytest.mark.parametrize(
    ("method", "route", "status"),
    [("GET", "/scheduler/filter", 405), ("PUT", "/webhook/mutate", 405)],
)
def test_other_methods_still_get_flasks_json_errors(hook, method, route, status):
    reply = hook.client.open(route, method=method)
    assert reply.status_code == status
    assert reply.content_type == "application/json" and "error" in reply.get_json()


def test_a_body_cut_short_is_a_json_400(hook):
    environ_overrides = {"CONTENT_LENGTH": "100"}
    reply = hook.client.post("/webhook/mutate", data=b"{}", environ_overrides=environ_overrides)
    assert reply.status_code == 400
    assert "incomplete" in reply.get_json()["error"]


def test_a_verb_that_raises_is_a_json_500_with_no_traceback(hook, monkeypatch, caplog):
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("extender.server.routes.filter_verb", broken)
    reply = hook.client.post("/scheduler/filter", data=extender_args(scheduler_pod("1")))
    assert reply.status_code == 500
    assert reply.get_json() == {"error": "internal server error (see the server log)"}
    assert "RuntimeError: boom" in caplog.text
