"""Is kube-scheduler calling the extender verbs the catalog's strategy needs?

The scheduler configuration lives in another Deployment (and ConfigMap) than the catalog;
the two can disagree without either failing: a ``loadAware`` catalog behind a
configuration with no extender (the base ``manifests/base/scheduler-config.yaml``) ranks pods by
requests, silently. ``doctor`` compares the two files; this module watches what happens.

The evidence: pods the webhook pinned to a family (pending with the family annotation)
that the cache then sees bound. Those are the machine-catalog scheduler's pods (the
webhook points them at it). Each verb keeps the binding count at its last call; when a
verb the strategy needs has seen none of ``MISSING_AFTER`` bindings in a row, the
strategy is not getting its calls. Counting bindings, not minutes, makes an idle cluster
never look broken and a busy one show it within seconds.

Several replicas: kube-scheduler keeps one connection to the extender Service, so one
replica may get every call while another sees the bindings and none of the calls. A
replica's verdict is about itself; the installation is missing its calls when *every*
replica says so (``min(machine_catalog_extender_bindings_since_call{verb="prioritize"})``
across replicas, as the monitoring overlay's alert reads it).
"""

from __future__ import annotations

import threading
from typing import Any

#: Bindings in a row without a call of a needed verb before it is reported missing.
MISSING_AFTER = 20
VERBS = ("filter", "prioritize")


def needed_verbs(strategy: str, hot_spot: bool) -> tuple[str, ...]:
    """The verbs only the extender can answer for ``strategy``: usage ranking needs
    ``prioritize``, the hot-spot filter ``filter``. ``balanced`` and ``binpack`` need none
    once pods are pinned (NodeResourcesFit answers them: the scheduler components)."""
    if strategy != "loadAware":
        return ()
    return ("filter", "prioritize") if hot_spot else ("prioritize",)


def verdict(
    strategy: str,
    hot_spot: bool,
    since_call: dict[str, int],
    calls: dict[str, int],
    missing_after: int = MISSING_AFTER,
) -> dict[str, Any]:
    """The readiness detail: ``state`` is ``missing`` (a needed verb unheard for
    ``missing_after`` bindings), ``extender`` (calls arrive that in-tree plugins could
    answer: right, at a round trip per pod), ``in-tree`` or ``ok``."""
    needs = needed_verbs(strategy, hot_spot)
    missing = [v for v in needs if since_call[v] >= missing_after]
    if missing:
        state = "missing"
        message = (
            f"the catalog's strategy {strategy} needs the extender's {' and '.join(missing)}, "
            f"and this replica has had no such call while {max(since_call[v] for v in missing)}"
            " pinned pods were bound: is kube-scheduler running the scheduler-load-aware"
            " configuration? (another replica may be getting the calls: see docs/operations.md)"
        )
    elif not needs and any(calls.values()):
        state = "extender"
        message = (
            f"{strategy} is scored by the extender: a round trip per pod in-tree plugins answer"
        )
    elif not needs:
        state, message = "in-tree", f"{strategy} needs no extender call"
    else:
        state, message = "ok", f"{strategy}: the extender is called"
    return {
        "strategy": strategy,
        "needs": list(needs),
        "state": state,
        "message": message,
        "bindingsSinceCall": dict(since_call),
        "calls": dict(calls),
    }


class ExtenderCalls:
    """Per verb: calls since the strategy last changed, and the binding count at the last
    call. Bindings come as a running count (``ClusterState.scheduled_bindings``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._strategy: str | None = None
        self._start = 0
        self._at_call: dict[str, int | None] = dict.fromkeys(VERBS)
        self._calls = dict.fromkeys(VERBS, 0)

    def seen(self, verb: str, bindings: int) -> None:
        with self._lock:
            self._at_call[verb] = bindings
            self._calls[verb] += 1

    def status(self, strategy: str, hot_spot: bool, bindings: int) -> dict[str, Any]:
        with self._lock:
            if strategy != self._strategy:  # a reload changed it: start counting afresh
                self._strategy, self._start = strategy, bindings
                self._calls = dict.fromkeys(VERBS, 0)
            since = {
                v: bindings - max(self._start, at if at is not None else self._start)
                for v, at in self._at_call.items()
            }
            calls = dict(self._calls)
        return verdict(strategy, hot_spot, since, calls)
