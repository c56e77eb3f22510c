"""The floor: the least any Flask app under ``machine-catalog serve``'s gunicorn can do.

It decodes the request body with orjson (the server must read and parse what
kube-scheduler sends, whatever it then does) and answers a prebuilt response of the same
size as the project's answer to that request. Everything else a request costs in Python
(gunicorn's gthread worker, HTTP parsing, Flask routing, the WSGI response) is the same
as the project's, because the gunicorn options come from the server's own
:func:`extender.server.master.gunicorn_options` (TLS included, with ``--certfile``/``--keyfile``),
and each worker gets the memory settings ``serve``'s workers get
(:func:`tune_worker_memory`). The ratio project / floor is then the cost of the
extender's own work (cache view, filtering, scoring, encoding, metrics).

Responses are looked up by the ``case`` and ``i`` (which of the case's request bodies)
query parameters (the harness sends the same URL to both servers; the project's routes
ignore them)::

    python benchmarks/floor_app.py --bind 127.0.0.1:8181 --responses responses.json

With ``--review answer.json`` (one AdmissionReview answer of serve's, recorded) it is also
the least any webhook can be (``benchmarks/webhook_floor.py``): ``/webhook/mutate`` parses
the AdmissionReview (it must, for the uid) and answers the recorded review with that uid,
patch and all; ``/webhook/allow`` answers "allowed" without a patch. Both are answered
straight from the WSGI environ, as serve's fast path answers its verbs (Flask routing
would make the floor slower than the project), and timed the way serve's
``metrics.instrument`` times a request; ``GET /floor/stats`` gives the counts and sums.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from flask import Flask, request

from extender.server import memory
from extender.server.master import gunicorn_options
from extender.server.serve import GC_GEN0_THRESHOLD, ServeConfig


def response_key(case: str, index: int | str) -> str:
    return f"{case}#{index}"


def create_app(responses: Mapping[str, bytes]) -> Flask:
    app = Flask("floor")

    @app.post("/<path:route>")
    def answer(route: str) -> Any:
        orjson.loads(request.get_data(cache=False))
        key = response_key(request.args.get("case", ""), request.args.get("i", "0"))
        body = responses.get(key, b"{}")
        return app.response_class(body, status=200, content_type="application/json")

    @app.get("/readyz")
    def ready() -> Any:
        return app.response_class(b'{"ready":true}', content_type="application/json")

    return app


#: The floor webhook's paths: the recorded answer with its patch, and "allowed" alone.
MUTATE, ALLOW, STATS = "/webhook/mutate", "/webhook/allow", "/floor/stats"
_UID = "@floor-uid@"


def review_template(answer: bytes) -> tuple[bytes, bytes]:
    """A recorded AdmissionReview answer split around its uid, so that an answer costs one
    concatenation: :func:`review_answer` puts the request's uid back between the halves."""
    review = orjson.loads(answer)
    review["response"]["uid"] = _UID
    head, _, tail = orjson.dumps(review).partition(orjson.dumps(_UID))
    return head, tail


def allow_template(answer: bytes) -> tuple[bytes, bytes]:
    """The same review's envelope answering "allowed" with no patch (nor anything else)."""
    review = orjson.loads(answer)
    review["response"] = {"uid": "", "allowed": True}
    return review_template(orjson.dumps(review))


def review_answer(template: tuple[bytes, bytes], uid: str) -> bytes:
    return template[0] + orjson.dumps(uid) + template[1]


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def webhook_floor(inner: WsgiApp, templates: Mapping[str, tuple[bytes, bytes]]) -> WsgiApp:
    """``inner`` with the floor webhook's paths in front (module docstring)."""
    stats = {path: [0, 0.0] for path in templates}
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        template = templates.get(path)
        if template is None or environ.get("REQUEST_METHOD") != "POST":
            if path == STATS:
                out = orjson.dumps({p: {"count": c, "sum": s} for p, (c, s) in stats.items()})
                start_response("200 OK", [("Content-Type", "application/json")])
                return [out]
            return inner(environ, start_response)
        size = int(environ.get("CONTENT_LENGTH") or 0)
        uid = orjson.loads(environ["wsgi.input"].read(size))["request"]["uid"]
        out = review_answer(template, uid)
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
        )
        elapsed = time.perf_counter() - start
        with lock:
            stats[path][0] += 1
            stats[path][1] += elapsed
        return [out]

    return app


def load_responses(path: Path) -> dict[str, bytes]:
    """``{case: response text}`` JSON, as the latency harness writes it."""
    return {k: v.encode() for k, v in orjson.loads(path.read_bytes()).items()}


def tune_worker_memory(app: Flask) -> None:
    """What ``serve`` does in each worker around its app, so the floor pays the same.

    One malloc arena (:func:`extender.server.memory.limit_malloc_arenas`), ``malloc_trim`` after
    bodies over 1 MB (:func:`extender.server.memory.release_after_large_bodies`, which the
    project's ``create_app`` installs), and ``server._tune_gc``'s collector settings: the
    young-generation threshold raised to ``GC_GEN0_THRESHOLD`` and everything alive once
    the app is built (here the prebuilt responses) frozen out of the collector's scans.
    Without these the floor would parse megabyte bodies under CPython's default threshold
    and look slower than it is.
    """
    memory.release_after_large_bodies(app)
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the floor server of the latency benchmark")
    p.add_argument("--bind", default="127.0.0.1:8181")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--responses", type=Path, default=None, help="the extender verbs' answers")
    p.add_argument("--review", type=Path, default=None, help="serve's recorded webhook answer")
    p.add_argument("--certfile", default=None, help="serve TLS with this certificate")
    p.add_argument("--keyfile", default=None)
    args = p.parse_args(argv)
    options = gunicorn_options(
        ServeConfig(
            bind=args.bind,
            threads=args.threads,
            log_level="warning",
            certfile=args.certfile,
            keyfile=args.keyfile,
        )
    )
    options["proc_name"] = "machine-catalog-floor"
    options["workers"] = args.workers

    from gunicorn.app.base import BaseApplication

    class Floor(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            memory.limit_malloc_arenas()  # as serve's load(), before anything allocates much
            responses = load_responses(args.responses) if args.responses else {}
            app = create_app(responses)
            if args.review:
                answer = args.review.read_bytes()
                templates = {MUTATE: review_template(answer), ALLOW: allow_template(answer)}
                app.wsgi_app = webhook_floor(app.wsgi_app, templates)  # type: ignore[method-assign]
            tune_worker_memory(app)
            return app

    Floor().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
