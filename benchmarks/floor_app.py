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
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Mapping, Sequence
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
    p.add_argument("--responses", type=Path, required=True)
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
            app = create_app(load_responses(args.responses))
            tune_worker_memory(app)
            return app

    Floor().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
