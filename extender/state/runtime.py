"""What every route of one worker process shares: the catalog, the cluster cache, settings.

Built once per worker (after gunicorn forks, so threads and sockets belong to the worker)
and handed to each route module's ``register(app, runtime)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from extender.state.cluster import ClusterState
from extender.state.pairing import ExtenderCalls
from machine_catalog.loading import CatalogSource

DEFAULT_MAX_BODY = 512 * 1024 * 1024  # 15,000 full Node objects with images fit
DEFAULT_MAX_CACHE_AGE = 120.0  # seconds without a sign of life before /readyz fails


@dataclass(frozen=True, slots=True)
class Settings:
    #: With ``serve --scheduler-name``: normalized pods that asked for ``default-scheduler``
    #: are pointed at this scheduler.
    scheduler_name: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    max_cache_age: float = DEFAULT_MAX_CACHE_AGE
    #: How the webhook picks among families that can hold a pod: ``most-free`` (the family
    #: with the most free SCU, deterministic) or ``spread`` (at random, in proportion to the
    #: free SCU, so replicas deciding on the same state at once do not all pick one family).
    family_choice: str = "most-free"


class Leadership(Protocol):
    """Who may write to the cluster (:mod:`extender.loops.leadership` implements it)."""

    @property
    def holder(self) -> str | None: ...
    def is_leader(self) -> bool: ...
    def on_change(self, listener: Callable[[bool], None]) -> None: ...


class _Alone:
    """A server with nothing to elect (fed from a snapshot): it writes nothing anyway."""

    holder = None

    def is_leader(self) -> bool:
        return True

    def on_change(self, listener: Callable[[bool], None]) -> None:
        return None


@dataclass(slots=True)
class Runtime:
    catalogs: CatalogSource
    cluster: ClusterState
    settings: Settings
    leadership: Leadership = field(default_factory=_Alone)
    #: This replica's identity in the election ("" without one).
    identity: str = ""
    #: Which extender verbs kube-scheduler calls, against the bindings seen.
    calls: ExtenderCalls = field(default_factory=ExtenderCalls)

    def pairing(self) -> dict[str, object]:
        """:func:`extender.state.pairing.verdict` for this replica, now."""
        catalog = self.cluster.catalog
        hot_spot = catalog.scoring.hot_spot_usage is not None
        return self.calls.status(catalog.strategy, hot_spot, self.cluster.scheduled_bindings)
