"""What every route of one worker process shares: the catalog, the cluster cache, settings.

Built once per worker (after gunicorn forks, so threads and sockets belong to the worker)
and handed to each route module's ``register(app, runtime)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from extender.state.cluster import ClusterState
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


@dataclass(slots=True)
class Runtime:
    catalogs: CatalogSource
    cluster: ClusterState
    settings: Settings
