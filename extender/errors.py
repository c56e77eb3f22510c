"""One error body for every route: callers are programs that decode JSON.

A Go client that expects JSON and gets HTML or text logs a decode error that hides the
real one, so errors are ``{"error": "..."}`` everywhere. The scheduler verbs and the webhook
build them without Flask; :mod:`extender.server.responses` wraps them in responses.
"""

from __future__ import annotations

import orjson


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
