"""The in-memory dedup map: TTL (in slots of TTL/64) and a hard bound on its size."""

from __future__ import annotations

import secrets
import tracemalloc

from gemini_webhook_receiver.dedup import SLOTS_PER_TTL, MemoryDedup


def test_seen_id_is_refused_within_ttl() -> None:
    dedup = MemoryDedup(ttl_seconds=100, max_entries=10)
    assert dedup.claim_now("a", now=0)
    assert not dedup.claim_now("a", now=99)
    assert not dedup.claim_now("a", now=100)  # at least the TTL


def test_seen_id_is_forgotten_within_one_slot_after_ttl() -> None:
    dedup = MemoryDedup(ttl_seconds=100, max_entries=10)
    dedup.claim_now("a", now=0)
    assert dedup.claim_now("a", now=100 + 100 / SLOTS_PER_TTL)


def test_map_never_exceeds_its_bound() -> None:
    dedup = MemoryDedup(ttl_seconds=10**6, max_entries=100)
    for i in range(1000):
        dedup.claim_now(str(i), now=i)
    assert len(dedup) == 100
    assert dedup.claim_now("0", now=1001)  # the oldest were dropped first
    assert not dedup.claim_now("999", now=1001)


def test_expired_entries_are_purged_as_new_ones_arrive() -> None:
    dedup = MemoryDedup(ttl_seconds=10, max_entries=1000)
    for i in range(50):
        dedup.claim_now(str(i), now=i)
    assert len(dedup) <= 12  # the last TTL, plus at most one slot


def test_released_ids_are_claimable_and_do_not_grow_past_the_bound() -> None:
    """A target down for long: every delivery is claimed, fails and is released."""
    dedup = MemoryDedup(ttl_seconds=10**6, max_entries=100)
    for i in range(10_000):
        assert dedup.claim_now(f"id{i % 300}", now=i)  # released: Gemini's retry is taken
        dedup.release(f"id{i % 300}")
    assert dedup.queued <= 100
    assert len(dedup) == 0


def test_an_id_claimed_again_after_expiry_survives_its_old_slot_eviction() -> None:
    dedup = MemoryDedup(ttl_seconds=100, max_entries=10)
    assert dedup.claim_now("a", now=0)
    assert dedup.claim_now("a", now=200)  # expired: claimed again, in a new slot
    assert dedup.claim_now("b", now=250)  # evicts the old slot that still lists "a"
    assert not dedup.claim_now("a", now=250)


def test_a_million_ids_fit_well_under_the_receivers_default_memory_limit() -> None:
    """The default bound (1,000,000) held in well under the memory limit the operator gives a
    receiver by default (now 320 MiB), ids included (an OrderedDict of expiries took ~190 MiB).
    Counted by tracemalloc: every byte Python allocated for it, whatever the heap held."""
    suffix = secrets.token_hex(4)
    tracemalloc.start()
    try:
        dedup = MemoryDedup(ttl_seconds=25 * 3600, max_entries=1_000_000)
        for i in range(1_000_000):
            dedup.claim_now(f"msg_{i:08d}_{suffix}", now=i * 0.09)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(dedup) == 1_000_000
    assert held / 2**20 < 130, f"{held / 2**20:.0f} MiB for a million ids"
