"""Which replica acts on the cluster: a ``coordination.k8s.io`` Lease, with client-go's rules.

Every replica serves requests from its own state; only the Lease holder runs the loops that
write (stranded-pod re-creation, node family labels, the catalog's status), so two replicas
never delete the same pod or fight over a label.

The rules are client-go's ``leaderelection`` package, whose defaults kube-scheduler and
kube-controller-manager use: lease duration 15 s, renew deadline 10 s, retry period 2 s.

- A candidate takes the Lease when it does not exist, when its holder released it (empty
  ``holderIdentity``), or when the record has not changed for ``duration`` seconds *as
  measured on this candidate's own monotonic clock* from when it first saw that record.
  No clock is compared across machines: ``renewTime`` is only used to tell records apart.
- Every write carries the ``resourceVersion`` it read, so two candidates racing for an
  expired Lease cannot both win (the loser gets 409 Conflict).
- The holder renews every ``retry`` seconds. It *acts* only while its last successful renew
  began less than ``renew_deadline`` seconds ago (:meth:`Elector.is_leader`). Another
  replica can take over no sooner than ``duration`` after it saw that renew, which is later
  than the moment the renew was sent; so a holder that cannot reach the API server stops
  acting at least ``duration - renew_deadline`` (5 s) before anyone else may start.
- On a clean shutdown the holder releases the Lease (empty holder, 1 s duration), so the
  next replica takes over within a retry period instead of a lease duration.

Why not the ``kubernetes`` client's own ``leaderelection`` module: its renew loop gives up
leadership by returning from ``run()`` while the leader's callback thread keeps running
(nothing tells the loops to stop), a candidate that lost leadership never competes again,
and it judges expiry from the holder's ``renewTime`` against the local wall clock, which
clock skew between nodes breaks. The Lease itself is read and written with the client's
``CoordinationV1Api``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    name: str = "machine-catalog"
    namespace: str = "machine-catalog"
    identity: str = ""
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")


def default_identity() -> str:
    """The pod's name (its hostname) and a random suffix: a restarted container is a new
    candidate, so it never mistakes its predecessor's Lease for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The fields of a Lease's spec that the election reads and writes."""

    holder: str | None
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str | None = None


class Conflict(Exception):
    """Someone else wrote the Lease since we read it (HTTP 409), or created it first."""


class LeaseStore(Protocol):
    def get(self) -> LeaseRecord | None: ...
    def create(self, record: LeaseRecord) -> LeaseRecord: ...
    def update(self, record: LeaseRecord) -> LeaseRecord: ...


def micro_time(now: float) -> str:
    """A ``metav1.MicroTime`` string: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_record(
    current: LeaseRecord | None,
    settings: LeaseSettings,
    *,
    observed_for: float,
    wall: float,
) -> LeaseRecord | None:
    """The record to write to take or keep the Lease, or None when it is someone else's.

    ``observed_for`` is how long (on our monotonic clock) the current record has stayed
    the same. Pure, so the rules are tested as a table.
    """
    now = micro_time(wall)
    duration = max(1, round(settings.duration))
    if current is None:
        return LeaseRecord(settings.identity, duration, now, now, 0)
    mine = current.holder == settings.identity
    held = bool(current.holder) and observed_for < current.duration_seconds
    if held and not mine:
        return None
    if mine:
        return replace(current, duration_seconds=duration, renew_time=now)
    return LeaseRecord(
        settings.identity,
        duration,
        now,
        now,
        current.transitions + 1,
        current.resource_version,
    )


class Elector:
    """Takes part in the election in a daemon thread; :meth:`is_leader` gates every write."""

    def __init__(
        self,
        store: LeaseStore,
        settings: LeaseSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._renewed_at: float | None = None  # monotonic start of the last successful write
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0
        self._holder: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self._was_leader = False

    # -- what the loops ask --------------------------------------------------------------

    def is_leader(self) -> bool:
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.settings.renew_deadline

    @property
    def holder(self) -> str | None:
        """The holder as last read from the API server (None: no holder, or never read)."""
        return self._holder

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(leading)`` from the election thread whenever leadership changes."""
        self._listeners.append(listener)

    # -- one round -------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease after it. Never raises."""
        started = self._clock()
        try:
            current = self.store.get()
            key = None if current is None else (current.holder, current.renew_time)
            if key != self._observed:
                self._observed, self._observed_at = key, started
            self._holder = current.holder if current is not None else None
            record = next_record(
                current,
                self.settings,
                observed_for=started - self._observed_at,
                wall=self._wall(),
            )
            if record is None:
                return False
            written = self.store.create(record) if current is None else self.store.update(record)
        except Conflict:
            return False
        except Exception as exc:  # the API server down, a timeout, RBAC: try again later
            log.warning("lease %s/%s: %s", self.settings.namespace, self.settings.name, exc)
            return False
        with self._lock:
            self._renewed_at = started
        self._observed, self._observed_at = (written.holder, written.renew_time), started
        self._holder = written.holder
        return True

    def release(self) -> None:
        """Give the Lease up (clean shutdown) so the next replica need not wait it out."""
        if not self.is_leader():
            return
        with self._lock:
            self._renewed_at = None
        try:
            current = self.store.get()
            if current is not None and current.holder == self.settings.identity:
                self.store.update(
                    replace(
                        current,
                        holder=None,
                        duration_seconds=1,
                        renew_time=micro_time(self._wall()),
                    )
                )
                log.info("released lease %s/%s", self.settings.namespace, self.settings.name)
        except Exception as exc:
            log.warning("could not release lease %s: %s", self.settings.name, exc)
        self._notify()

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._notify()
            self._stop.wait(self.settings.retry)

    def _notify(self) -> None:
        leading = self.is_leader()
        if leading == self._was_leader:
            return
        self._was_leader = leading
        log.info(
            "%s leadership of %s/%s (identity %s)",
            "took" if leading else "lost",
            self.settings.namespace,
            self.settings.name,
            self.settings.identity,
        )
        for listener in self._listeners:
            try:
                listener(leading)
            except Exception:
                log.exception("leadership listener failed")


class KubernetesLeaseStore:
    """The Lease through the client's ``CoordinationV1Api``."""

    def __init__(self, api_client: Any, settings: LeaseSettings) -> None:
        from kubernetes import client

        self._api = client.CoordinationV1Api(api_client)
        self._name, self._namespace = settings.name, settings.namespace

    @staticmethod
    def _record(lease: Any) -> LeaseRecord:
        spec = lease.spec
        return LeaseRecord(
            holder=spec.holder_identity or None,
            duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=_text(spec.acquire_time),
            renew_time=_text(spec.renew_time),
            transitions=spec.lease_transitions or 0,
            resource_version=lease.metadata.resource_version,
        )

    def _body(self, record: LeaseRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self._name, "namespace": self._namespace}
        if record.resource_version is not None:
            metadata["resourceVersion"] = record.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": record.holder,
                "leaseDurationSeconds": record.duration_seconds,
                "acquireTime": record.acquire_time,
                "renewTime": record.renew_time,
                "leaseTransitions": record.transitions,
            },
        }

    def get(self) -> LeaseRecord | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._api.read_namespaced_lease(self._name, self._namespace, _request_timeout=5)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._record(lease)

    def create(self, record: LeaseRecord) -> LeaseRecord:
        return self._write(
            lambda: self._api.create_namespaced_lease(
                self._namespace, self._body(record), _request_timeout=5
            )
        )

    def update(self, record: LeaseRecord) -> LeaseRecord:
        return self._write(
            lambda: self._api.replace_namespaced_lease(
                self._name, self._namespace, self._body(record), _request_timeout=5
            )
        )

    def _write(self, call: Callable[[], Any]) -> LeaseRecord:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._record(call())
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from None
            raise


def _text(value: Any) -> str | None:
    """A MicroTime as the client returns it (datetime) or as sent (str), as a string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)
