"""Hypothesis settings for the whole suite: a failure is reported once, never stored.

Hypothesis by default saves every failing example in ``.hypothesis/`` and replays it first
on every later run. A flake of the test itself (a bound that was too tight) then turns
every ``make test`` in that checkout red, for good and for reasons the code under test
did not cause, and a branch switch replays examples from another version of the code.
So the example database is off: a failure prints its failing example and the blob for
``@reproduce_failure`` to replay it on purpose, and the next run explores afresh.

``MC_HYPOTHESIS_PROFILE=ci`` (``.ci/run``) also derandomizes: CI runs the same examples
every time, so a red CI run means the change under test, not the draw.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", database=None, print_blob=True)
settings.register_profile("ci", database=None, print_blob=True, derandomize=True)
settings.load_profile(os.environ.get("MC_HYPOTHESIS_PROFILE", "default"))
