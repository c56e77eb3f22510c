"""JSON answers, one way for every route: callers are programs that decode JSON.

A Go client that expects JSON and gets HTML or text logs a decode error that hides the
real one, so errors are ``{"error": "..."}`` with ``application/json`` everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response

from extender.errors import error_body

JSON = "application/json"


def json_response(
    body: bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Bytes already encoded as JSON (the hot paths build them directly)."""
    return Response(body, status=status, headers=headers, content_type=JSON)


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(error_body(message), status, headers)
