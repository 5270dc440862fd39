"""The periodic checks' scheduler (drift and health): which resources are due when (pure),
its runner, and the operator's two runners on it instead of kopf timers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemini_webhook_operator import handlers
from gemini_webhook_operator.drift import (
    DriftRunner,
    DriftSchedule,
    ErrorBackoff,
    drift_checked,
    retried,
)


def test_a_new_resource_is_first_due_after_a_jittered_interval_and_only_once() -> None:
    schedule = DriftSchedule(100.0, 0.1, random.Random(7))
    assert schedule.saw("a", now=0.0)
    assert not schedule.saw("a", now=50.0)  # seen again: its check stays where it was
    due = schedule.next_due()
    assert due is not None and 90.0 <= due <= 110.0
    assert schedule.take_due(due - 0.001) == []
    assert schedule.take_due(due) == ["a"]
    assert schedule.take_due(due + 1000) == []  # being checked: not due again


def test_no_jitter_means_exactly_the_interval() -> None:
    schedule = DriftSchedule(30.0)
    schedule.saw("a", now=5.0)
    assert schedule.next_due() == 35.0


def test_a_first_check_at_once_is_due_when_seen_then_an_exact_interval_after_each() -> None:
    schedule = DriftSchedule(30.0, 0.5, random.Random(3), first_at_once=True)
    assert schedule.saw("a", now=5.0)
    assert schedule.take_due(5.0) == ["a"]  # no jitter on the first either
    schedule.finished("a", now=6.0)
    assert schedule.next_due() == 36.0


def test_the_next_check_follows_the_end_of_the_last_or_its_retry_delay() -> None:
    schedule = DriftSchedule(30.0)
    schedule.saw("a", now=0.0)
    schedule.saw("b", now=0.0)
    assert schedule.take_due(30.0) == ["a", "b"]
    assert not schedule.saw("a", now=31.0)  # seen while checked: nothing doubled
    schedule.finished("a", now=32.0)
    schedule.finished("b", now=33.0, retry_after=10.0)
    assert schedule.next_due() == 43.0
    assert schedule.take_due(43.0) == ["b"]
    assert schedule.take_due(62.0) == ["a"]


def test_a_forgotten_resource_is_never_due_even_if_it_was_being_checked() -> None:
    schedule = DriftSchedule(10.0)
    schedule.saw("waiting", now=0.0)
    schedule.saw("checked", now=1.0)
    schedule.forget("waiting")
    assert schedule.take_due(11.0) == ["checked"]
    schedule.forget("checked")
    schedule.finished("checked", now=12.0)
    assert schedule.next_due() is None
    assert len(schedule) == 0
    assert schedule.saw("checked", now=13.0)  # seen again: scheduled again


def test_a_retry_schedule_checks_only_when_asked_and_stops_at_the_first_success() -> None:
    """The change handler's retries: no periodic check, a retry when asked, and a check
    that asks for none is the last."""
    schedule = DriftSchedule(None)
    schedule.retry("a", now=0.0, delay=10.0)
    assert schedule.take_due(9.9) == []
    assert schedule.take_due(10.0) == ["a"]
    schedule.finished("a", now=11.0, retry_after=5.0)  # failed again
    assert schedule.take_due(16.0) == ["a"]
    schedule.finished("a", now=17.0)  # succeeded
    assert "a" not in schedule and schedule.next_due() is None


def test_a_newer_attempt_supersedes_a_retry_in_progress() -> None:
    """A change handled while a retry of the same resource is taken: that retry is no longer
    `is_checking` (it writes nothing when it gets the resource's lock), and its end moves
    nothing; the newer attempt's own retry, or none, is what stays."""
    schedule = DriftSchedule(None)
    schedule.retry("a", now=0.0, delay=1.0)
    assert schedule.take_due(1.0) == ["a"] and schedule.is_checking("a")
    schedule.retry("a", now=2.0, delay=30.0)  # the newer attempt failed too
    assert not schedule.is_checking("a")
    schedule.finished("a", now=3.0, retry_after=1.0)  # the superseded one ends
    assert schedule.next_due() == 32.0
    assert schedule.take_due(32.0) == ["a"]
    schedule.forget("a")  # a newer attempt started (and succeeded)
    assert not schedule.is_checking("a")
    schedule.finished("a", now=33.0, retry_after=1.0)
    assert "a" not in schedule and schedule.next_due() is None


@pytest.mark.parametrize(
    ("metadata", "checked"),
    [
        ({"finalizers": ["ours/finalizer"]}, True),
        ({"finalizers": ["other/finalizer", "ours/finalizer"]}, True),
        ({}, False),  # kopf has not taken it in hand yet
        ({"finalizers": ["other/finalizer"]}, False),
        ({"finalizers": ["ours/finalizer"], "deletionTimestamp": "2026-12-07T12:00:00Z"}, False),
    ],
)
def test_a_resource_is_drift_checked_from_our_finalizer_until_its_deletion(
    metadata: dict[str, Any], checked: bool
) -> None:
    assert drift_checked(metadata, "ours/finalizer") is checked


@pytest.mark.parametrize(("interval", "jitter"), [(0.0, 0.1), (-1.0, 0.0), (10.0, 1.0)])
def test_a_bad_interval_or_jitter_is_refused(interval: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="drift"):
        DriftSchedule(interval, jitter)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["saw", "take", "finish", "forget"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.floats(min_value=0.0, max_value=50.0),
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=20.0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_any_sequence_checks_each_resource_at_most_once_at_a_time_and_never_early(
    ops: list[tuple[str, str, float, float | None]],
) -> None:
    schedule = DriftSchedule(10.0, 0.5, random.Random(1))
    now = 0.0
    checking: set[str] = set()
    known: set[str] = set()
    earliest: dict[str, float] = {}  # no check of a resource before this
    for op, uid, step, retry in ops:
        now += step
        if op == "saw":
            if schedule.saw(uid, now):
                assert uid not in known
                earliest[uid] = now + 5.0
            known.add(uid)
        elif op == "take":
            for taken in schedule.take_due(now):
                assert taken in known and taken not in checking
                assert now >= earliest[taken]
                checking.add(taken)
        elif op == "finish":
            schedule.finished(uid, now, retry)
            if uid in checking:
                checking.discard(uid)
                earliest[uid] = now + (10.0 if retry is None else retry)
        else:
            schedule.forget(uid)
            known.discard(uid)
            checking.discard(uid)
        assert len(schedule) == len(known)
        due = schedule.next_due()
        waiting = known - checking
        assert (due is None) == (not waiting)


class _Checks:
    """Records each check; answers with `answers[uid]` (a delay, None, or an exception)."""

    def __init__(self, answers: Mapping[str, Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, float]] = []
        self.running: set[str] = set()
        self.overlapped = False

    async def __call__(self, uid: str, body: Mapping[str, Any]) -> float | None:
        assert body["uid"] == uid
        if uid in self.running:
            self.overlapped = True
        self.running.add(uid)
        self.calls.append((uid, time.monotonic()))
        try:
            await asyncio.sleep(0.01)
            answer = self.answers.get(uid)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]
        finally:
            self.running.discard(uid)


async def _until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_runner_checks_every_resource_every_interval_without_overlap() -> None:
    bodies = {uid: {"uid": uid} for uid in ("a", "b")}
    checks = _Checks()
    runner = DriftRunner(DriftSchedule(0.1), checks, bodies.get, clock=time.monotonic)
    try:
        started = time.monotonic()
        runner.saw("a")
        runner.saw("b")
        await _until(lambda: sum(uid == "a" for uid, _ in checks.calls) >= 3)
        times = [at for uid, at in checks.calls if uid == "a"]
        assert times[0] - started >= 0.1
        # Each next check follows the end of the last (10 ms) by the interval.
        assert all(later - earlier >= 0.1 for earlier, later in itertools.pairwise(times))
        assert any(uid == "b" for uid, _ in checks.calls)
        assert not checks.overlapped
    finally:
        await runner.stop()


async def test_a_check_asking_for_a_retry_is_retried_after_its_delay_and_a_failure_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bodies = {uid: {"uid": uid} for uid in ("soon", "broken")}
    checks = _Checks({"soon": 0.0, "broken": RuntimeError("boom")})
    runner = DriftRunner(
        DriftSchedule(0.05), checks, bodies.get, clock=time.monotonic, failure_delay=3600.0
    )
    try:
        with caplog.at_level(logging.ERROR, logger="gemini_webhook_operator.drift"):
            runner.saw("soon")
            runner.saw("broken")
            await _until(lambda: sum(uid == "soon" for uid, _ in checks.calls) >= 5)
        assert [uid for uid, _ in checks.calls].count("broken") == 1  # next in an hour
        assert "drift check of resource uid=broken failed" in caplog.text
    finally:
        await runner.stop()


async def test_a_resource_gone_from_the_index_is_forgotten_and_stop_ends_every_check() -> None:
    bodies: dict[str, dict[str, str]] = {"kept": {"uid": "kept"}, "gone": {"uid": "gone"}}
    checks = _Checks({"kept": 0.0})
    runner = DriftRunner(DriftSchedule(0.05), checks, bodies.get, clock=time.monotonic)
    del bodies["gone"]
    runner.saw("kept")
    runner.saw("gone")
    await _until(lambda: len(checks.calls) >= 3)
    assert "gone" not in runner.schedule
    assert all(uid == "kept" for uid, _ in checks.calls)
    await runner.stop()
    assert runner.checking == 0
    count = len(checks.calls)
    await asyncio.sleep(0.1)
    assert len(checks.calls) == count


async def test_a_stopped_runner_starts_nothing_when_a_resource_is_seen_after() -> None:
    checks = _Checks()
    runner = DriftRunner(DriftSchedule(0.01), checks, {"a": {"uid": "a"}}.get, clock=time.monotonic)
    await runner.stop()
    runner.saw("a")  # kopf's index may deliver one more event after the cleanup
    await asyncio.sleep(0.1)
    assert checks.calls == []
    assert "a" not in runner.schedule


async def test_a_body_that_cannot_be_read_is_retried_later_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bodies(uid: str) -> Mapping[str, Any] | None:
        if uid == "unreadable":
            raise LookupError("index broken")
        return {"uid": uid}

    checks = _Checks({"fine": 0.0})
    runner = DriftRunner(
        DriftSchedule(0.02), checks, bodies, clock=time.monotonic, failure_delay=3600.0
    )
    try:
        with caplog.at_level(logging.ERROR, logger="gemini_webhook_operator.drift"):
            runner.saw("unreadable")
            runner.saw("fine")
            await _until(lambda: len(checks.calls) >= 3)
        assert "the body of resource uid=unreadable could not be read" in caplog.text
        assert "unreadable" in runner.schedule  # waiting an hour, not stuck "being checked"
        due = runner.schedule.next_due()
        assert due is not None
    finally:
        await runner.stop()


def test_the_operator_registers_no_kopf_timer_or_daemon() -> None:
    """kopf keeps a live copy of every resource of a kind for which any timer or daemon is
    registered, whether its filter matches or not (the health timer, `when` healthCheck
    enabled: 15 MiB at 1,000 GeminiWebhooks, bench/operator --kube real). The drift and
    health checks run on `drift`'s schedulers instead."""
    registry = handlers.build_registry()
    assert not registry._spawning.get_all_handlers()


async def test_health_checks_run_when_seen_then_every_tick_until_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks: list[float] = []

    async def tick(body: Any, memo: Any) -> None:
        assert body.metadata.uid == "a"
        ticks.append(time.monotonic())

    monkeypatch.setattr(handlers, "_health_check", tick)
    metadata = {"uid": "a", "finalizers": [handlers.FINALIZER]}
    on = {"metadata": metadata, "spec": {"healthCheck": {"enabled": True}}}
    index: dict[str, list[dict[str, Any]]] = {"a": [on]}
    runner = handlers._health_runner(handlers.HandlerConfig(health_tick=0.2), None, index)
    try:
        seen = time.monotonic()
        runner.saw("a")
        await _until(lambda: len(ticks) >= 2)
        assert ticks[0] - seen < 0.15  # at once, as kopf's timer without an initial delay
        assert ticks[1] - ticks[0] >= 0.2
        index["a"] = [{**on, "spec": {"healthCheck": {"enabled": False}}}]
        await _until(lambda: "a" not in runner.schedule)
        count = len(ticks)
        await asyncio.sleep(0.3)
        assert len(ticks) == count
    finally:
        await runner.stop()


async def test_a_check_failing_temporarily_is_logged_and_retried_after_its_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(body: Any) -> None:
        raise kopf.TemporaryError("not written: the API answered 500", delay=7)

    check = retried("health check", failing)
    body = {"metadata": {"uid": "a", "namespace": "ns", "name": "hook"}}
    with caplog.at_level(logging.WARNING, logger="gemini_webhook_operator.drift"):
        assert await check("a", body) == 7
    assert "health check of ns/hook failed temporarily" in caplog.text


async def test_a_retry_superseded_while_it_waits_for_the_resources_lock_does_nothing() -> None:
    """A change handled while a scheduled retry of the same resource waits for its lock:
    the retry, once it gets the lock, reconciles nothing (the newer change won) and is
    not scheduled again."""
    lock = asyncio.Lock()
    reconciled: list[Mapping[str, Any]] = []

    def newest(body: Mapping[str, Any]) -> Mapping[str, Any]:
        reconciled.append(body)  # the reconciliation's first step; this double stops it
        raise RuntimeError("reconciled")

    op = SimpleNamespace(
        lock=lambda uid: lock,
        reconcile_slots=asyncio.Semaphore(1),
        own_writes=SimpleNamespace(newest=newest),
    )
    body = {"metadata": {"uid": "u", "namespace": "ns", "name": "hook"}, "spec": {}}
    memo = SimpleNamespace(operator=op)
    runner = handlers._retry_runner(memo, {"u": [body]}, {}, ErrorBackoff((1.0,)))
    async with lock:  # a change of the resource being handled
        runner.retry("u", 0.0)
        await asyncio.sleep(0.05)
        assert runner.schedule.is_checking("u") and runner.checking == 1
        runner.forget("u")  # what the change handler does first
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not runner.checking:
            break
    assert reconciled == []
    assert "u" not in runner.schedule and runner.checking == 0
    await runner.stop()


async def test_a_change_while_its_resource_reconciles_is_reconciled_after_it() -> None:
    """Every change is reconciled on the runner: one that comes while the resource's last
    reconciliation still runs is taken at once and waits for the lock; when the older one
    ends, it must not end the newer one's turn (the newer spec would be lost)."""
    lock = asyncio.Lock()
    release = asyncio.Event()
    still_current: list[bool] = []

    async def check(uid: str, body: Mapping[str, Any]) -> float | None:
        async with lock:  # the resource's lock, as `handlers._run` takes it
            still_current.append(runner.schedule.is_checking(uid))
            if len(still_current) == 1:
                await release.wait()
        return None

    runner = DriftRunner(DriftSchedule(None), check, lambda uid: {}, clock=time.monotonic)
    runner.retry("u", 0.0)
    while not still_current:
        await asyncio.sleep(0.01)
    runner.retry("u", 0.0)  # a newer change
    await asyncio.sleep(0.05)
    assert runner.checking == 2  # the newer one waits for the lock
    release.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not runner.checking:
            break
    assert still_current == [True, True]
    assert "u" not in runner.schedule
    await runner.stop()


async def test_stopping_lets_a_check_in_flight_finish_within_the_grace_then_cancels() -> None:
    """A reconciliation in flight when the operator stops (a rolling update's SIGTERM) may
    finish, as kopf lets its workers: cancelled between the rotate call and the Secret's
    write, the next leader would rotate again. One still running after the grace is
    cancelled; none starts after the stop."""
    finished: list[str] = []

    async def check(uid: str, body: Mapping[str, Any]) -> float | None:
        await asyncio.sleep(0.2 if uid == "quick" else 60)
        finished.append(uid)
        return None

    runner = DriftRunner(DriftSchedule(None), check, lambda uid: {}, clock=time.monotonic)
    runner.retry("quick", 0.0)
    runner.retry("slow", 0.0)
    await asyncio.sleep(0.05)
    assert runner.checking == 2
    started = time.monotonic()
    await runner.stop(grace=1.0)
    assert finished == ["quick"]
    assert 0.9 < time.monotonic() - started < 3 and runner.checking == 0
    runner.retry("later", 0.0)
    await asyncio.sleep(0.05)
    assert runner.checking == 0


async def test_a_retry_reconciles_the_resource_as_it_is_once_it_holds_the_lock() -> None:
    """A retry that waited for the resource's lock while kopf's watch delivered a newer
    copy reconciles that copy, not the one it was taken with."""
    lock = asyncio.Lock()
    reconciled: list[Mapping[str, Any]] = []

    def newest(body: Mapping[str, Any]) -> Mapping[str, Any]:
        reconciled.append(body)
        raise RuntimeError("reconciled")  # this double stops the reconciliation here

    op = SimpleNamespace(
        lock=lambda uid: lock,
        reconcile_slots=asyncio.Semaphore(1),
        own_writes=SimpleNamespace(newest=newest),
    )
    older = {"metadata": {"uid": "u", "namespace": "ns", "name": "hook"}, "spec": {"v": 1}}
    index = {"u": [older]}
    memo = SimpleNamespace(operator=op)
    runner = handlers._retry_runner(memo, index, {}, ErrorBackoff((1.0,)))
    async with lock:
        runner.retry("u", 0.0)
        await asyncio.sleep(0.05)
        assert runner.checking == 1
        index["u"] = [{**older, "spec": {"v": 2}}]
    for _ in range(50):
        await asyncio.sleep(0.01)
        if reconciled:
            break
    assert [body["spec"] for body in reconciled] == [{"v": 2}]
    await runner.stop()


def test_a_bugs_retries_back_off_per_failure_in_a_row_and_start_over_after_another_end() -> None:
    backoff = ErrorBackoff((1.0, 5.0, 60.0))
    assert [backoff.failed("a") for _ in range(4)] == [1.0, 5.0, 60.0, 60.0]
    assert backoff.failed("b") == 1.0  # per resource
    backoff.ended("a")
    assert backoff.failed("a") == 1.0
    backoff.ended("a")
    backoff.ended("b")
    assert len(backoff) == 0


async def test_a_retried_check_that_raises_asks_for_the_backoffs_delay() -> None:
    backoff = ErrorBackoff((1.0, 2.0))
    outcomes: list[BaseException | None] = [RuntimeError("a bug"), RuntimeError("again"), None]

    async def check(body: kopf.Body) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    scheduled = retried("reconcile", check, backoff)
    body = {"metadata": {"namespace": "default", "name": "x", "uid": "u"}}
    assert [await scheduled("u", body) for _ in range(3)] == [1.0, 2.0, None]
    assert len(backoff) == 0
