"""Go ``time.Duration`` strings, as ``metrics.k8s.io`` writes a sample's ``window``.

Read in two places: node usage for ``loadAware`` (:mod:`extender.state.usage`, which skips an
item whose window is not a duration) and ``calibrate``'s PodMetrics
(:mod:`machine_catalog.calibration`, which counts an unreadable window as 0 s). One parser
for both, in the core, so the two agree on what a window is.
"""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}


def parse_duration(text: str) -> float:
    """A Go ``time.Duration`` string (``20.052s``, ``1m0s``) in seconds; ``ValueError`` if
    it is not one (an empty string, a bare number, a negative or unknown unit)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a duration")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{text!r} is not a duration")
    return total


__all__ = ["parse_duration"]
