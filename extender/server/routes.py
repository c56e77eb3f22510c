"""The scheduler extender's and the webhook's routes: Flask glue around the verbs.

The verbs (:mod:`extender.scheduler.verbs`, :mod:`extender.admission.webhook`) take bytes
and return a status and bytes, so they are tested and benchmarked without a server;
this module only reads the body and wraps the answer.

:func:`fast_path` answers the three verbs' ordinary requests without Flask: they are the
scheduling path (one webhook call per pod create, two extender calls in each scheduling
cycle that uses the extender), and Flask's request context, URL matching, hooks and
response object cost as much CPU as the webhook's own decision (0.2-0.3 ms a request,
measured in-process). Anything unusual (another method, no Content-Length, a body over
the limit or large enough for the memory trim) goes through Flask's routes and error
handlers below, which stay the one definition of the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask, request

from extender.admission.webhook import Admitter, review
from extender.errors import error_body
from extender.scheduler.verbs import filter_verb, prioritize_verb
from extender.server.memory import TRIM_AFTER_BYTES
from extender.server.responses import JSON, json_response
from extender.state.runtime import Runtime

log = logging.getLogger(__name__)

#: What a body cut short becomes (also a stalled body, once the body timeout expires).
INCOMPLETE = "request body incomplete: the client stopped sending it"
#: What an unexpected error becomes (the traceback goes to the log, never to the caller).
INTERNAL = "internal server error (see the server log)"


def _body() -> bytes:
    # get_data goes through werkzeug's stream, bounded by MAX_CONTENT_LENGTH (413 beyond).
    return request.get_data(cache=False)


def register_scheduler(app: Flask, runtime: Runtime) -> None:
    @app.post("/scheduler/filter")
    def scheduler_filter() -> Any:
        status, body = filter_verb(runtime, _body())
        return json_response(body, status)

    @app.post("/scheduler/prioritize")
    def scheduler_prioritize() -> Any:
        status, body = prioritize_verb(runtime, _body())
        return json_response(body, status)


def register_webhook(app: Flask, runtime: Runtime) -> None:
    admitter = Admitter(runtime)
    app.extensions["machine_catalog.admitter"] = admitter  # for tests and introspection

    @app.post("/webhook/mutate")
    def webhook_mutate() -> Any:
        status, body = review(admitter, _body())
        return json_response(body, status)


def fast_path(app: Flask, runtime: Runtime) -> None:
    """Answer ordinary POSTs to the verbs straight from the WSGI environ (module docstring).

    Ordinary: POST, a Content-Length no larger than the body limit and below
    ``TRIM_AFTER_BYTES``. The answer is the one the Flask route gives: the verb's status
    and JSON, 400 for a body cut short, a 500 JSON error (traceback to the log) for a
    verb that raises.
    """
    admitter = app.extensions["machine_catalog.admitter"]
    verbs: dict[str, Callable[[bytes], tuple[int, bytes]]] = {
        "/scheduler/filter": lambda body: filter_verb(runtime, body),
        "/scheduler/prioritize": lambda body: prioritize_verb(runtime, body),
        "/webhook/mutate": lambda body: review(admitter, body),
    }
    limit = min(runtime.settings.max_body, TRIM_AFTER_BYTES - 1)
    flask_app: Callable[..., Iterable[bytes]] = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        verb = verbs.get(environ.get("PATH_INFO", ""))
        if verb is None or environ.get("REQUEST_METHOD") != "POST":
            return flask_app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or int(length) > limit:
            return flask_app(environ, start_response)
        size = int(length)
        try:
            body = environ["wsgi.input"].read(size) if size else b""
        except (OSError, ValueError):  # a read timeout, a reset connection
            body = b""
        if len(body) < size:
            status, out = 400, error_body(INCOMPLETE)
        else:
            try:
                status, out = verb(body)
            except Exception:
                log.exception("unhandled error on POST %s", environ.get("PATH_INFO"))
                status, out = 500, error_body(INTERNAL)
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", JSON), ("Content-Length", str(len(out)))],
        )
        return [out]

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]
