"""``serve --extender-bind``: the extender's routes in plain HTTP on loopback answer as the
verbs do, over one kept-alive connection, and nothing else is served or bound there."""

from __future__ import annotations

import http.client
import json
import re

import orjson
import pytest
from support.helpers import write_snapshot

from extender.scheduler.verbs import filter_verb, prioritize_verb
from extender.server.loopback import ExtenderListener, LoopbackError, loopback_address
from extender.server.serve import ServeConfig, ServeError, build_runtime


@pytest.fixture
def listener(tmp_path):
    snapshot = write_snapshot(tmp_path / "snapshot.json")
    config = ServeConfig(snapshot=str(snapshot), state_dir=str(tmp_path))
    runtime = build_runtime(config, start=False)
    names = [n["metadata"]["name"] for n in orjson.loads(snapshot.read_bytes())["items"]]
    listener = ExtenderListener(runtime, "127.0.0.1:0").start()
    yield listener, names
    listener.stop()


def args(names: list[str]) -> bytes:
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "u"},
        "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "500m"}}}]},
    }
    return json.dumps({"Pod": pod, "NodeNames": names}).encode()


def same(answer: bytes) -> object:
    """The answer without the cache's age, which moves between two calls."""
    return json.loads(re.sub(rb"cache age [0-9.]+s", b"cache age", answer))


def test_both_verbs_answer_as_the_verbs_do_on_one_connection(listener):
    server, names = listener
    body = args(names)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for path, verb in (
        ("/scheduler/filter", filter_verb),
        ("/scheduler/prioritize", prioritize_verb),
        ("/scheduler/filter", filter_verb),
    ):
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        got = response.read()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        assert same(got) == same(verb(server.runtime, body)[1])
    assert conn.sock is not None  # kept alive across the three requests
    conn.close()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/webhook/mutate", {}, 404),  # the webhook stays on the TLS bind
        ("/metrics", {}, 404),
        ("/scheduler/filter", {"Content-Length": "99999999999"}, 413),
    ],
)
def test_nothing_else_is_served(listener, path, headers, status):
    server, names = listener
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    if "Content-Length" in headers:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", headers["Content-Length"])
        conn.endheaders()
    else:
        conn.request("POST", path, args(names))
    response = conn.getresponse()
    assert response.status == status
    assert "error" in json.loads(response.read())
    conn.close()


@pytest.mark.parametrize("bind", ["0.0.0.0:9000", "10.0.0.5:9000", "example.com:9000", "9000"])
def test_only_loopback_is_accepted(bind):
    with pytest.raises(LoopbackError):
        loopback_address(bind)
    with pytest.raises(ServeError, match="extender-bind"):
        ServeConfig(extender_bind=bind)


@pytest.mark.parametrize(
    ("bind", "address"),
    [("127.0.0.1:9000", ("127.0.0.1", 9000)), ("[::1]:9000", ("::1", 9000))],
)
def test_loopback_addresses(bind, address):
    assert loopback_address(bind) == address
