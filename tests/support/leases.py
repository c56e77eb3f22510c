"""An in-memory Lease store with the API server's optimistic concurrency, for election tests."""

from __future__ import annotations

import threading
from dataclasses import replace

from extender.loops.leadership import Conflict, LeaseRecord


class MemoryLeaseStore:
    """One Lease; every write must carry the resourceVersion it read (409 otherwise)."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.down = False  # the API server unreachable: every call raises
        self.writes: list[LeaseRecord] = []
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    def get(self) -> LeaseRecord | None:
        self._check()
        return self.record

    def create(self, record: LeaseRecord) -> LeaseRecord:
        self._check()
        with self._lock:
            if self.record is not None:
                raise Conflict("already exists")
            return self._store(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        self._check()
        with self._lock:
            if self.record is None or record.resource_version != self.record.resource_version:
                raise Conflict("the object has been modified")
            return self._store(record)

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = replace(record, resource_version=str(self.version))
        self.writes.append(self.record)
        return self.record
