"""The WSGI application: every route of the server, and one error policy for all of them.

Callers are programs (kube-scheduler, the API server, kubelet, Prometheus), so every
answer is JSON, including 404/405/413 and the "cannot happen" 500: a Go client that
expects JSON and gets an HTML error page logs a decode error that hides the real one.
A 500 never carries a traceback; the traceback goes to the server's log.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from extender.server import health, memory, metrics, routes
from extender.server.responses import json_error
from extender.state.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(runtime: Runtime) -> Flask:
    """The app of one worker process, serving from ``runtime``."""
    app = Flask("machine-catalog")
    max_body = runtime.settings.max_body
    # One byte of slack so werkzeug's bounded stream reads past the limit and we can tell
    # "exactly the limit" from "more" (it stops silently at the limit otherwise).
    app.config["MAX_CONTENT_LENGTH"] = max_body + 1
    app.extensions["machine_catalog_runtime"] = runtime

    @app.before_request
    def refuse_oversized_body() -> Any:
        # With a Content-Length: refused before a single byte of the body is read.
        length = request.content_length
        if length is not None:
            if length > max_body:
                raise RequestEntityTooLarge()
            return None
        # Chunked (no Content-Length): read at most max_body + 1 bytes, here, for every
        # route; the routes then get the cached bytes from request.get_data().
        if request.method in ("POST", "PUT", "PATCH") and len(request.get_data()) > max_body:
            raise RequestEntityTooLarge()
        return None

    memory.release_after_large_bodies(app)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if isinstance(exc, RequestEntityTooLarge):
            message = f"request body larger than the server's limit of {max_body} bytes"
        elif isinstance(exc, ClientDisconnected):
            # Also what a stalled body becomes once server.BODY_READ_TIMEOUT expires.
            message = routes.INCOMPLETE
        elif status == 404:
            message = f"no route {request.path}"
        elif status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        else:
            message = exc.description or exc.name
        headers = None
        if status == 405:
            allowed = exc.get_response().headers.get("Allow")
            headers = {"Allow": allowed} if allowed else None
        return json_error(status, message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, routes.INTERNAL)

    routes.register_scheduler(app, runtime)
    routes.register_webhook(app, runtime)
    health.register(app, runtime)
    metrics.register(app, runtime)
    routes.fast_path(app, runtime)  # after every route: it falls back on them
    metrics.instrument(app)  # last: it needs every route registered to label them
    return app
