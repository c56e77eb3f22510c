"""The scheduler extender's and the webhook's routes: Flask glue around the verbs.

The verbs (:mod:`extender.scheduler.verbs`, :mod:`extender.admission.webhook`) take bytes
and return a status and bytes, so they are tested and benchmarked without a server;
this module only reads the body and wraps the answer.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from extender.admission.webhook import Admitter, review
from extender.scheduler.verbs import filter_verb, prioritize_verb
from extender.server.responses import json_response
from extender.state.runtime import Runtime


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
