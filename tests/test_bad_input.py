"""Bad input on every POST route of a real ``machine-catalog serve`` (issue 7, item 1).

One gunicorn (1 worker x 4 threads, ``--max-body 64Ki``) serves the whole module. Every bad
request must get a 4xx with a JSON ``{"error": ...}`` body, or, where the contract says so,
a 200 with a well-formed answer; never a 5xx, never a traceback. After each bad request the
*same* keep-alive connection gets a good request and must get the right answer, so a bad
request cannot leave the connection or the worker in a broken state. The last test checks
that no worker died during the module and that nothing reached the log as a traceback.

The in-process tests in test_scheduling.py / test_admission.py check the decoders; this
file checks the same classes of input through gunicorn's parser and the WSGI app together,
plus what only a real server has: body limits with and without Content-Length, slow
clients, methods and paths.
"""

from __future__ import annotations

import base64
import copy
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jsonpatch
import orjson
import pytest
from support.helpers import (
    AKS,
    CATALOG_A,
    EKS,
    FILTER_NAMES,
    GKE,
    KARPENTER,
    METAL,
    TKE,
    Reply,
    Served,
    admission_pod,
    admission_review,
    extender_args,
    has_no_traceback,
    ready,
    scheduler_pod,
    serve,
    write_snapshot,
)

from extender.state.runtime import DEFAULT_MAX_BODY

pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024
FILTER = "/scheduler/filter"
PRIORITIZE = "/scheduler/prioritize"
MUTATE = "/webhook/mutate"
ROUTES = [FILTER, PRIORITIZE, MUTATE]
FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
#: The worker pids once the module's server is ready; the last test checks none died.
BOOT_WORKERS: list[int] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("bad-input")
    catalog = tmp / "catalog.yaml"
    catalog.write_text(CATALOG_A)
    served = serve(
        tmp,
        "--catalog",
        str(catalog),
        "--snapshot",
        str(write_snapshot(tmp / "snapshot.json")),
        "--threads",
        "4",
        "--max-body",
        "64Ki",
        "--state-dir",
        str(tmp / "state"),
    )
    try:
        ready(served)
        BOOT_WORKERS[:] = served.worker_pids()
        yield served
    finally:
        assert served.stop() == 0


# -- what a good answer is -----------------------------------------------------------------


def good_body(route: str) -> bytes:
    if route == MUTATE:
        return orjson.dumps(admission_review())
    return extender_args(scheduler_pod("1"))


def check_good(route: str, reply: Reply) -> None:
    """The exact answer to :func:`good_body`, worked out by hand from the fixtures."""
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    if route == FILTER:
        # EKS: 7910m - 6000m busy = 1910m free >= 1000m; KARPENTER, AKS, TKE: no family.
        assert body["NodeNames"] == [EKS, GKE, METAL]
        assert set(body["FailedAndUnresolvableNodes"]) == {KARPENTER, AKS, TKE}
        assert body["FailedNodes"] == {} and body["Error"] == ""
    elif route == PRIORITIZE:
        # balanced: floor(10 * (allocatable - requested - 1000m) / allocatable)
        expected = {EKS: 1, KARPENTER: 9, GKE: 8, METAL: 9, AKS: 8, TKE: 8}
        assert body == [{"Host": n, "Score": expected[n]} for n in FILTER_NAMES]
    else:
        response = body["response"]
        assert response["allowed"] is True and response["uid"] == "uid-1"
        patched = apply_patch(admission_pod(), response)
        # spr (111 cores x 1.35) has by far the most free SCU.
        assert patched["metadata"]["annotations"][FAMILY] == "spr"


def apply_patch(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    ops = orjson.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(copy.deepcopy(pod), ops)


def check_error(reply: Reply, status: int) -> str:
    """A JSON error of ``status``: ``{"error": "<non-empty text without a traceback>"}``."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert isinstance(error, str) and error
    assert has_no_traceback(reply.body)
    return error


def then_good(server: Served, route: str, conn: Any) -> None:
    """The next good request on the same connection gets the right answer."""
    check_good(route, server.post(route, good_body(route), conn=conn))


# -- bodies that are not the route's document --------------------------------------------

_RANDOM = random.Random(7)
GARBAGE = bytes(_RANDOM.randrange(256) for _ in range(2048))

NOT_A_DOCUMENT: dict[str, Callable[[str], bytes]] = {
    "empty": lambda route: b"",
    "whitespace": lambda route: b" \r\n\t ",
    "truncated-json": lambda route: good_body(route)[: len(good_body(route)) // 2],
    "json-array": lambda route: b"[]",
    "json-null": lambda route: b"null",
    "json-string": lambda route: b'"Pod"',
    "json-number": lambda route: b"1e999",
    "binary-garbage": lambda route: GARBAGE,
    "invalid-utf8-in-string": lambda route: b'{"Pod": {"metadata": {"name": "\xff\xfe"}}}',
    "nan-literal": lambda route: b'{"Pod": NaN}',
    "nested-10k-deep": lambda route: b"[" * 10_000 + b"]" * 10_000,
    "utf16-json": lambda route: good_body(route).decode().encode("utf-16"),
    "trailing-garbage": lambda route: good_body(route) + b"}{",
}


@pytest.mark.parametrize("case", list(NOT_A_DOCUMENT))
@pytest.mark.parametrize("route", ROUTES)
def test_a_body_that_is_not_a_document_is_a_json_400(server: Served, route: str, case: str) -> None:
    conn = server.connection()
    try:
        check_error(server.post(route, NOT_A_DOCUMENT[case](route), conn=conn), 400)
        then_good(server, route, conn)
    finally:
        conn.close()


def pod_with(**changes: Any) -> dict[str, Any]:
    pod = scheduler_pod("1")
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            pod[section][field] = value
        else:
            pod[section] = value
    return pod


EXTENDER_SHAPES = {
    "pod-null": {"Pod": None, "NodeNames": [GKE]},
    "pod-missing": {"NodeNames": [GKE]},
    "pod-a-list": {"Pod": [scheduler_pod()], "NodeNames": [GKE]},
    "node-names-a-string": {"Pod": scheduler_pod(), "NodeNames": GKE},
    "node-names-ints": {"Pod": scheduler_pod(), "NodeNames": [GKE, 7]},
    "node-names-nested": {"Pod": scheduler_pod(), "NodeNames": [[GKE]]},
    "nodes-a-list": {"Pod": scheduler_pod(), "Nodes": [{"metadata": {"name": GKE}}]},
    "nodes-items-a-map": {"Pod": scheduler_pod(), "Nodes": {"items": {GKE: {}}}},
    "node-without-name": {"Pod": scheduler_pod(), "Nodes": {"items": [{"metadata": {}}]}},
    "neither-names-nor-nodes": {"Pod": scheduler_pod(), "NodeNames": None, "Nodes": None},
    "both-names-and-nodes": {"Pod": scheduler_pod(), "NodeNames": [GKE], "Nodes": {"items": []}},
    "metadata-a-list": {"Pod": pod_with(metadata=[]), "NodeNames": [GKE]},
    "spec-a-string": {"Pod": pod_with(spec="x"), "NodeNames": [GKE]},
    "annotations-a-list": {
        "Pod": pod_with(metadata__annotations=[FAMILY, "base"]),
        "NodeNames": [GKE],
    },
    "family-annotation-a-number": {"Pod": scheduler_pod(family=7), "NodeNames": [GKE]},  # type: ignore[arg-type]
    "family-annotation-a-map": {
        "Pod": scheduler_pod(family={"name": "base"}),  # type: ignore[arg-type]
        "NodeNames": [GKE],
    },
    "cpu-not-a-quantity": {"Pod": scheduler_pod("two cores"), "NodeNames": [GKE]},
    "cpu-a-list": {"Pod": scheduler_pod(["1"]), "NodeNames": [GKE]},  # type: ignore[arg-type]
    "containers-a-map": {
        "Pod": pod_with(spec__containers={"app": {}}),
        "NodeNames": [GKE],
    },
    "overhead-a-string": {"Pod": pod_with(spec__overhead="1"), "NodeNames": [GKE]},
}


@pytest.mark.parametrize("case", list(EXTENDER_SHAPES))
@pytest.mark.parametrize("route", [FILTER, PRIORITIZE])
def test_an_extender_request_of_the_wrong_shape_is_a_json_400(
    server: Served, route: str, case: str
) -> None:
    conn = server.connection()
    try:
        check_error(server.post(route, orjson.dumps(EXTENDER_SHAPES[case]), conn=conn), 400)
        then_good(server, route, conn)
    finally:
        conn.close()


def review_with(**request: Any) -> dict[str, Any]:
    review = admission_review()
    review["request"].update(request)
    return review


REVIEW_SHAPES = {
    "request-null": {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": None,
    },
    "request-missing": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
    "uid-missing": review_with(uid=None),
    "uid-a-number": review_with(uid=12),
    "pod-null": review_with(object=None),
    "pod-a-string": review_with(object="a pod"),
    "pod-a-list": review_with(object=[admission_pod()]),
    "old-api-version": {**admission_review(), "apiVersion": "admission.k8s.io/v1beta1"},
}


@pytest.mark.parametrize("case", list(REVIEW_SHAPES))
def test_a_review_of_the_wrong_shape_is_a_json_400(server: Served, case: str) -> None:
    conn = server.connection()
    try:
        check_error(server.post(MUTATE, orjson.dumps(REVIEW_SHAPES[case]), conn=conn), 400)
        then_good(server, MUTATE, conn)
    finally:
        conn.close()


# -- well-formed requests with unknown names or garbled annotations: a 200 answer -----------

ODD_NAMES = ["no-such-node", "ノード", 'quote"d', "back\\slash", "", "x" * 10_000]


def test_unknown_and_odd_node_names_are_answered_not_refused(server: Served) -> None:
    names = [GKE, *ODD_NAMES, GKE]  # a duplicate too: one verdict per name, in order
    reply = server.post(FILTER, extender_args(scheduler_pod("1"), names))
    assert reply.status == 200
    body = reply.json()
    assert body["NodeNames"] == [GKE, GKE] and body["Error"] == ""
    unresolvable = body["FailedAndUnresolvableNodes"]
    assert set(unresolvable) == set(ODD_NAMES)
    assert all("not in the extender's cluster cache" in r for r in unresolvable.values())

    reply = server.post(PRIORITIZE, extender_args(scheduler_pod("1"), names))
    assert reply.status == 200
    assert reply.json() == [
        {"Host": n, "Score": 8 if n == GKE else 0} for n in names
    ]  # a node the cache does not know scores 0


def test_an_empty_node_list_is_an_empty_answer(server: Served) -> None:
    reply = server.post(FILTER, extender_args(scheduler_pod("1"), []))
    assert reply.status == 200 and reply.json()["NodeNames"] == []
    reply = server.post(PRIORITIZE, extender_args(scheduler_pod("1"), []))
    assert reply.status == 200 and reply.json() == []


def test_garbled_family_annotations_on_an_extender_pod(server: Served) -> None:
    # Blank: pins nothing, so the pod is judged like an unpinned one.
    blank = server.post(FILTER, extender_args(scheduler_pod("1", family="  \t")))
    assert blank.status == 200 and blank.json()["NodeNames"] == [EKS, GKE, METAL]
    # A family the catalog lacks (control characters and all): every node unresolvable,
    # with the reason, rather than a 400 (the pod is well formed, it just cannot run here).
    for family in ("nope", "base\u0000", "ba se", "spr,base", "x" * 5000):
        reply = server.post(FILTER, extender_args(scheduler_pod("1", family=family)))
        assert reply.status == 200, family
        body = reply.json()
        assert body["NodeNames"] == []
        assert set(body["FailedAndUnresolvableNodes"]) == set(FILTER_NAMES)
        assert all("does not have" in r for r in body["FailedAndUnresolvableNodes"].values())
        reply = server.post(PRIORITIZE, extender_args(scheduler_pod("1", family=family)))
        assert reply.status == 200 and len(reply.json()) == len(FILTER_NAMES)
    # The other annotations are the webhook's business: the extender ignores them.
    other = scheduler_pod(
        "1",
        **{
            FAMILIES: "\x00,,nope",
            "machine-catalog.io/standard-resources": "{not json",
            "machine-catalog.io/scu-per-core": "NaN",
        },
    )
    check_good(FILTER, server.post(FILTER, extender_args(other)))


def mutate(server: Served, pod: dict[str, Any]) -> dict[str, Any]:
    reply = server.post(MUTATE, orjson.dumps(admission_review(pod)))
    assert reply.status == 200, reply.body
    assert has_no_traceback(reply.body)
    response = reply.json()["response"]
    assert response["uid"] == "uid-1"
    return response


def annotated(**annotations: Any) -> dict[str, Any]:
    pod = admission_pod()
    pod["metadata"]["annotations"].update(annotations)
    return pod


@pytest.mark.parametrize(
    ("pod", "says"),
    [
        pytest.param(annotated(**{FAMILIES: "base,,nope"}), "nope", id="families-unknown"),
        pytest.param(annotated(**{FAMILIES: 7}), FAMILIES, id="families-a-number"),
        pytest.param(annotated(**{FAMILIES: ["base"]}), FAMILIES, id="families-a-list"),
        pytest.param(annotated(**{FAMILY: "nope"}), "nope", id="family-unknown"),
        pytest.param(annotated(**{FAMILY: "m6i\u0000"}), FAMILY, id="family-control-char"),
        pytest.param(annotated(**{FAMILY: ""}), FAMILY, id="family-empty"),
        pytest.param(annotated(**{FAMILY: {"name": "base"}}), FAMILY, id="family-a-map"),
        pytest.param(
            {**admission_pod(), "spec": {**admission_pod()["spec"], "overhead": "1"}},
            "overhead",
            id="overhead-a-string",
        ),
        pytest.param(
            {
                **admission_pod(),
                "spec": {**admission_pod()["spec"], "containers": [{"name": "c", "resources": 5}]},
            },
            "resources",
            id="resources-a-number",
        ),
        pytest.param(
            {
                **admission_pod(),
                "spec": {
                    **admission_pod()["spec"],
                    "tolerations": [{"key": "k", "operator": ["Exists"]}],
                },
            },
            "tolerations[0].operator",
            id="toleration-operator-a-list",
        ),
        pytest.param(
            {
                **admission_pod(),
                "spec": {
                    **admission_pod()["spec"],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [{"key": "k", "operator": {"In": 1}}]}
                                ]
                            }
                        }
                    },
                },
            },
            "operator",
            id="affinity-operator-a-map",
        ),
    ],
)
def test_garbled_annotations_and_fields_on_a_new_pod_are_denied_saying_why(
    server: Served, pod: dict[str, Any], says: str
) -> None:
    response = mutate(server, pod)
    assert response["allowed"] is False, response
    assert response["status"]["code"] == 403, response  # a denial, not an internal error
    assert says in response["status"]["message"]
    then_good(server, MUTATE, None)


def test_forged_but_broken_webhook_annotations_are_not_trusted(server: Served) -> None:
    pod = annotated(
        **{
            FAMILY: "base",
            "machine-catalog.io/scu-per-core": "NaN",
            "machine-catalog.io/standard-resources": "{not json",
            "machine-catalog.io/catalog": "x",
        }
    )
    response = mutate(server, pod)
    assert response["allowed"] is True and "patch" in response
    patched = apply_patch(pod, response)
    annotations = patched["metadata"]["annotations"]
    # Normalized for real, within the family the user wrote (a restriction, not a pass).
    assert annotations[FAMILY] == "base" and annotations["machine-catalog.io/scu-per-core"] == "1"
    assert orjson.loads(annotations["machine-catalog.io/standard-resources"])


# -- body size ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_over_the_limit_is_a_413_from_its_content_length(server: Served, route: str) -> None:
    huge = extender_args(scheduler_pod("1"), [f"node-{i:06d}" for i in range(6000)])
    assert len(huge) > MAX_BODY
    error = check_error(server.post(route, huge), 413)
    assert f"{MAX_BODY} bytes" in error
    # Exactly the limit is still read (and then judged on its content).
    at_limit = b" " * (MAX_BODY - 2) + b"[]"
    check_error(server.post(route, at_limit), 400)
    check_good(route, server.post(route, good_body(route)))


def _raw(server: Served, head: bytes, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.sendall(head)
    return sock


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    """Status code and raw response, read until the headers and a JSON body arrived."""
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("route", ROUTES)
def test_a_chunked_body_over_the_limit_is_a_413_without_waiting_for_its_end(
    server: Served, route: str
) -> None:
    head = (
        f"POST {route} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sock = _raw(server, head)
    try:
        piece = b"x" * 8192
        for _ in range(MAX_BODY // len(piece) + 2):  # past the limit, never terminated
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        began = time.monotonic()
        status, raw = _read_status(sock)  # the socket's 5 s timeout bounds this
        assert status == 413, raw[:300]
        assert time.monotonic() - began < 2.0
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert b"request body larger than" in body and has_no_traceback(body)
    finally:
        sock.close()
    check_good(route, server.post(route, good_body(route)))


def test_the_default_limit_takes_15000_full_nodes() -> None:
    """The default --max-body holds a full-``Nodes`` request for 15,000 big real nodes.

    A real node object carries up to 50 images in ``status.images`` (the kubelet's
    default ``nodeStatusMaxImages``), which dominate its size; the fixture nodes are given
    50 realistic image entries, and the biggest of them counts for every node.
    """
    from support.helpers import fixture_nodes

    image = {
        "names": [
            "registry.example.com/team/some-service@sha256:" + "a" * 64,
            "registry.example.com/team/some-service:v1.2.3-build.4567",
        ],
        "sizeBytes": 123456789,
    }
    biggest = 0
    for node in fixture_nodes():
        node = copy.deepcopy(node)
        node["status"]["images"] = [image] * 50
        biggest = max(biggest, len(orjson.dumps(node)))
    pod = len(orjson.dumps(admission_pod()))
    need = 15_000 * (biggest + 1) + pod + 200
    assert need < DEFAULT_MAX_BODY, (need, DEFAULT_MAX_BODY)
    # ...and the limit is still a limit: not more than a few times what is needed.
    assert 4 * need > DEFAULT_MAX_BODY


# -- methods, paths, content types ---------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_other_methods_on_post_routes_are_a_json_405(server: Served, route: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        reply = server.request(method, route, b"{}" if method == "PUT" else None)
        check_error(reply, 405)
        assert "POST" in reply.headers["allow"]


def test_an_unknown_path_is_a_json_404(server: Served) -> None:
    for method, path in (("GET", "/"), ("POST", "/scheduler/bind"), ("GET", "/../etc/passwd")):
        check_error(server.request(method, path, b"{}" if method == "POST" else None), 404)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
@pytest.mark.parametrize("route", ROUTES)
def test_the_body_is_read_as_json_whatever_the_content_type(
    server: Served, route: str, content_type: str
) -> None:
    # kube-scheduler and the API server always send application/json; anything else must
    # neither crash the route nor make werkzeug parse (and hide) the body as a form.
    reply = server.post(route, good_body(route), headers={"Content-Type": content_type})
    check_good(route, reply)


# -- slow clients --------------------------------------------------------------------------


def test_slow_clients_do_not_hold_up_other_requests(server: Served) -> None:
    """Two slowloris-style clients (one stalls in its headers, one in its body) take two of
    the worker's four threads; the others keep answering, promptly."""
    stalled_headers = _raw(server, b"POST /scheduler/filter HTTP/1.1\r\nHost: t\r\nContent-Le")
    stalled_body = _raw(
        server,
        b"POST /scheduler/filter HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"Pod": {',
    )
    try:
        time.sleep(0.3)  # both are now held by worker threads, blocked reading
        slowest = 0.0
        for route in ROUTES * 4:
            began = time.monotonic()
            check_good(route, server.post(route, good_body(route), timeout=5))
            slowest = max(slowest, time.monotonic() - began)
        assert slowest < 1.0, slowest
        # The stalled body, completed with junk, is an ordinary 400.
        stalled_body.sendall(b"x" * (1000 - len(b'{"Pod": {')))
        status, raw = _read_status(stalled_body)
        assert status == 400 and has_no_traceback(raw)
    finally:
        stalled_headers.close()  # gives up mid-headers: must not log a traceback
        stalled_body.close()


def test_many_bad_requests_in_parallel_leave_the_server_answering(server: Served) -> None:
    errors: list[str] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        conn = server.connection()
        try:
            for _ in range(30):
                route = rng.choice(ROUTES)
                case = rng.choice(list(NOT_A_DOCUMENT))
                reply = server.post(route, NOT_A_DOCUMENT[case](route), conn=conn)
                if reply.status != 400 or not has_no_traceback(reply.body):
                    errors.append(f"{route} {case}: {reply.status}")
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    for route in ROUTES:
        check_good(route, server.post(route, good_body(route)))


def test_zz_no_worker_died_and_no_traceback_reached_the_log(server: Served) -> None:
    """Runs last in this module (file order): every request above left no trace."""
    assert server.proc.poll() is None
    assert server.worker_pids() == BOOT_WORKERS
    log = server.log_text()
    assert has_no_traceback(log), log[-3000:]
    status, detail = server.readyz()
    assert status == 200 and detail["worker"]["pid"] in BOOT_WORKERS
