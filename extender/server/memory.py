"""Keeping a worker's memory flat: glibc malloc arenas and trimming after large bodies.

A worker parses request bodies of up to tens of megabytes (full-``Nodes`` extender
requests) on several threads. glibc keeps what those parses free, per thread, so without
care a worker grows by the largest body times its threads and never shrinks. Both knobs
are glibc-only and do nothing elsewhere.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, request

#: glibc's mallopt parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def limit_malloc_arenas() -> None:
    """One malloc arena for the worker's threads (glibc; elsewhere a no-op).

    glibc gives each thread that allocates its own heap, and keeps what is freed there: a
    gthread worker whose four threads each parsed a 27 MB full-Nodes body held ~100 MB
    more per thread, for good, and ``malloc_trim`` cannot return a thread heap's top. The
    threads allocate with the GIL held anyway, so one arena costs no contention.
    Measured on a 2-worker serve at 5,000 nodes and 50,000 pods: a worker went from 161
    to 444 MB over the latency harness with the default, and stays at ~220 MB after a
    dozen 27 MB bodies with one arena.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_ARENA_MAX, 1)


#: Request bodies at least this large (full-``Nodes`` requests carry megabytes of node
#: objects) leave tens of MB freed but kept in glibc's heap once answered.
TRIM_AFTER_BYTES = 1 << 20
#: Seconds between two ``malloc_trim`` calls: a trim holds the malloc lock for 3-6 ms,
#: and after every 2.7 MB body it slowed back-to-back full-Nodes requests from 17 to 25 ms.
TRIM_INTERVAL = 10.0


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has no such call."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return functools.partial(trim, 0)


def release_after_large_bodies(app: Flask) -> None:
    """After a response to a body over ``TRIM_AFTER_BYTES``, hand freed heap back to the OS.

    Parsing a 27 MB body allocates ~150 MB, and glibc keeps what is freed in its heap. With
    one malloc arena per worker (:func:`limit_malloc_arenas`) that stays bounded (160 ->
    ~220 MB after a dozen 27 MB bodies); a trim once the response is sent, at most every
    ``TRIM_INTERVAL``, hands it back.
    """
    trim = malloc_trim()
    if trim is None:
        return
    last_trim = [-TRIM_INTERVAL]

    @app.after_request
    def release_memory_after_a_large_body(response: Any) -> Any:
        length = request.content_length
        if length is not None and length >= TRIM_AFTER_BYTES:
            now = time.monotonic()
            if now - last_trim[0] >= TRIM_INTERVAL:
                last_trim[0] = now
                response.call_on_close(trim)
        return response
