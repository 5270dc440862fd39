"""The pure parts of a rotation run (gemini_webhooks/sandbox/rotation_run.py): the figures
from what the emulator, the replicas and the consumer reported, and the verdict on them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gemini_webhooks.sandbox.metric_samples import Samples, parse
from gemini_webhooks.sandbox.rotation_run import (
    RotationRun,
    attempt_figures,
    broken_promises,
    copies_per_id,
    ready_endpoints,
    verdicts,
)

DELIVERIES = "gemini_receiver_deliveries_total"


def _delivery(state: str, *codes: int | None) -> dict[str, Any]:
    return {"id": "x", "state": state, "attempts": [{"status_code": c} for c in codes]}


def _sample(outcome: str, reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (DELIVERIES, (("outcome", outcome), ("reason", reason)))


def test_attempt_figures_count_retries_undelivered_and_failed_attempts_by_status() -> None:
    deliveries = [
        _delivery("delivered", 200),
        _delivery("delivered", 503, 503, 204),
        _delivery("delivered", 401, 200),
        _delivery("failed", None, 500),
    ]
    assert attempt_figures(deliveries) == (3, 1, {"503": 2, "401": 1, "None": 1, "500": 1})
    assert attempt_figures([]) == (0, 0, {})


def test_verdicts_sum_rejections_over_replicas_and_count_acceptances_per_replica() -> None:
    before: dict[str, Samples] = {
        "a": {_sample("accepted", "ok"): 10.0, _sample("rejected", "secret_reload_pending"): 1.0},
        "b": {},
    }
    after: dict[str, Samples] = {
        "a": {_sample("accepted", "ok"): 25.0, _sample("rejected", "secret_reload_pending"): 3.0},
        "b": {
            _sample("accepted", "ok"): 7.0,
            _sample("rejected", "secret_reload_pending"): 1.0,
            _sample("rejected", "revoked_secret"): 2.0,
            ("gemini_receiver_forwards_total", (("outcome", "ok"),)): 9.0,
        },
    }
    rejected, accepted = verdicts(before, after)
    assert rejected == {"secret_reload_pending": 3.0, "revoked_secret": 2.0}
    assert accepted == {"a": 15.0, "b": 7.0}
    assert verdicts(after, after) == ({}, {})


def test_ready_endpoints_counts_the_ready_endpoints_of_every_slice() -> None:
    slices = [
        {"endpoints": [{"conditions": {"ready": True}}, {"conditions": {"ready": False}}]},
        {"endpoints": [{"conditions": {"ready": True}}, {}]},
        {"endpoints": None},
        {},
    ]
    assert ready_endpoints(slices) == 2
    assert ready_endpoints([]) == 0


def test_copies_per_id_counts_only_the_wanted_ids() -> None:
    arrived = ["a", "b", "b", "c", "stranger", "stranger"]
    assert copies_per_id(arrived, ["a", "b", "c", "never"]) == {1: 2, 2: 1}


def test_parse_reads_a_prometheus_exposition() -> None:
    text = (
        "# TYPE gemini_receiver_secret_reloads_total counter\n"
        'gemini_receiver_secret_reloads_total{outcome="ok"} 2.0\n'
    )
    assert parse(text) == {("gemini_receiver_secret_reloads_total", (("outcome", "ok"),)): 2.0}


CLEAN = RotationRun(
    "Grace",
    3,
    sent=250,
    rate=50.0,
    window_seconds=0.4,
    reloads_at={"a": 0.3, "b": 0.35, "c": 0.4},
    accepted_by={"a": 80.0, "b": 90.0, "c": 80.0},
    arrivals={1: 250},
)
IMMEDIATE = replace(
    CLEAN,
    revocation="Immediate",
    retried=3,
    failed_attempts=3,
    attempt_statuses={"503": 2, "401": 1},
    rejected={"secret_reload_pending": 2.0, "revoked_secret": 1.0},
)


def test_a_clean_run_breaks_no_promise() -> None:
    assert broken_promises(CLEAN) == []
    assert broken_promises(IMMEDIATE) == []


@pytest.mark.parametrize(
    ("run", "found"),
    [
        (replace(CLEAN, arrivals={1: 249}), "1 of 250 events never arrived"),
        (replace(CLEAN, arrivals={1: 249, 2: 1}), "copies per event {1: 249, 2: 1}"),
        (replace(CLEAN, undelivered=1), "1 undelivered"),
        (replace(CLEAN, accepted_by={"a": 250.0}), "1 of 3 replicas took deliveries"),
        (replace(CLEAN, reloads_at={"a": 0.3}), "3 replicas took deliveries, 1 reloaded"),
        (
            replace(
                CLEAN,
                retried=1,
                failed_attempts=1,
                attempt_statuses={"503": 1},
                rejected={"secret_reload_pending": 1.0},
            ),
            "rejected {'secret_reload_pending': 1.0}",
        ),
        (
            replace(IMMEDIATE, attempt_statuses={"503": 2, "500": 1}),
            "failed attempts {'503': 2, '500': 1}",
        ),
        (
            replace(IMMEDIATE, rejected={"secret_reload_pending": 2.0, "bad_signature": 1.0}),
            "rejected {'secret_reload_pending': 2.0, 'bad_signature': 1.0}",
        ),
        (
            replace(IMMEDIATE, failed_attempts=4, attempt_statuses={"503": 3, "401": 1}),
            "4 failed attempts, 3 rejections counted by the replicas",
        ),
        (replace(IMMEDIATE, retried=4), "3 failed attempts, 3 rejections counted by the"),
    ],
)
def test_a_broken_promise_is_named(run: RotationRun, found: str) -> None:
    wrong = broken_promises(run)
    assert len(wrong) == 1 and found in wrong[0], wrong
