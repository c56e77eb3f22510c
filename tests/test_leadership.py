"""The Lease election's rules (client-go's): who may take the Lease, when a leader stops
acting, and a handover between two candidates on one store, on a simulated clock."""

from __future__ import annotations

import pytest
from support.leases import MemoryLeaseStore

from extender.loops.leadership import Elector, LeaseRecord, LeaseSettings, next_record

ME = LeaseSettings(identity="me")


def record(holder: str | None, duration: int = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, duration, "t0", "t1", transitions, "7")


@pytest.mark.parametrize(
    ("current", "observed_for", "expect"),
    [
        # no Lease: create it, first holder
        (None, 0.0, ("me", 0)),
        # someone else's, renewed within its duration (as we measured): keep off
        (record("other"), 14.9, None),
        # someone else's, unchanged for a full duration: take it, one more transition
        (record("other", transitions=3), 15.0, ("me", 4)),
        # released (empty holder): take it at once
        (record(None, duration=1, transitions=2), 0.0, ("me", 3)),
        # ours: renew, same transitions
        (record("me", transitions=5), 30.0, ("me", 5)),
        # someone else's with a short duration, expired by our clock
        (record("other", duration=2), 2.5, ("me", 1)),
    ],
)
def test_next_record(current, observed_for, expect):
    got = next_record(current, ME, observed_for=observed_for, wall=1_700_000_000.0)
    if expect is None:
        assert got is None
    else:
        assert (got.holder, got.transitions) == expect
        assert got.duration_seconds == 15
        assert got.renew_time == "2023-11-14T22:13:20.000000Z"
        # a write carries the version it read: optimistic concurrency
        assert got.resource_version == (None if current is None else current.resource_version)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(store: MemoryLeaseStore, identity: str, clock: Clock) -> Elector:
    return Elector(store, LeaseSettings(identity=identity), clock=clock, wall=lambda: clock.now)


def test_a_leader_that_cannot_renew_stops_acting_before_another_may_take_over():
    store, clock = MemoryLeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew() and a.is_leader()
    assert not b.try_acquire_or_renew() and not b.is_leader()  # b starts watching the record
    store.down = True  # a is cut off from the API server (and so is b, for now)
    stopped_acting = None
    took_over = None
    for _ in range(40):  # 20 s in retry periods of 0.5 s
        clock.now += 0.5
        a.try_acquire_or_renew()
        if stopped_acting is None and not a.is_leader():
            stopped_acting = clock.now
        store.down = False  # b can reach it; a stays cut off
        if took_over is None and b.try_acquire_or_renew():
            took_over = clock.now
        store.down = True
    assert stopped_acting is not None and took_over is not None
    # a stops at its renew deadline (10 s), b may start only after the lease duration (15 s)
    assert stopped_acting - 1000.0 == pytest.approx(10.0, abs=0.5)
    assert took_over - 1000.0 == pytest.approx(15.0, abs=0.5)
    assert took_over - stopped_acting >= 4.5
    assert store.record.holder == "b" and store.record.transitions == 1


def test_release_hands_over_within_a_retry_period():
    store, clock = MemoryLeaseStore(), Clock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader()
    clock.now += 2.0
    assert b.try_acquire_or_renew() and b.is_leader()


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win():
    store, clock = MemoryLeaseStore(), Clock()
    old = elector(store, "old", clock)
    assert old.try_acquire_or_renew()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.try_acquire_or_renew(), b.try_acquire_or_renew()
    clock.now += 16.0
    # both read the same expired record, then both write: the second write conflicts
    read = store.get()
    original_get = store.get
    store.get = lambda: read
    results = [a.try_acquire_or_renew(), b.try_acquire_or_renew()]
    store.get = original_get
    assert results == [True, False]
    assert store.record.holder == "a"


def test_an_api_error_is_not_a_crash_and_not_leadership():
    store, clock = MemoryLeaseStore(), Clock()
    store.down = True
    a = elector(store, "a", clock)
    assert a.try_acquire_or_renew() is False
    assert not a.is_leader()


def test_settings_must_be_ordered():
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseSettings(duration=10, renew_deadline=10, retry=2)
