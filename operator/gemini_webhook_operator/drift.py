"""The periodic checks of each resource: one scheduler per kind of check, instead of a kopf
timer per resource. Three kinds run on it (`handlers.py`): the drift checks, the health
checks and the changes (each change's reconciliation, and its retries).

Drift: every resource is reconciled again `interval` seconds after its last check ended (the
first time after a jittered interval, so that resources seen together are not checked
together), in case something outside it changed: the remote webhook, the signing Secret,
the receiver's objects. Health: every resource with `spec.healthCheck.enabled` is checked
at once when seen, then `interval` after each check ended, as kopf's timer did. A check
that asks to be retried sooner (a `TemporaryError`'s delay) is. kopf's timers did the same
with a task, a stopper and a live copy of the body per resource — about 15 KiB each, and
kopf keeps that copy of every resource of a kind that has a timer at all, also of those
whose timer's filter never matches; here one task sleeps until the next check is due, and a
check reads the resource as kopf's watch last delivered it (a kopf index keeps it).

Changes: the change handler schedules each change here, due at once, and returns; a
reconciliation that must be tried again (the API unreachable, rate limited, a 5xx, …) is
scheduled again after its delay, instead of raising kopf's `TemporaryError`. So no kopf
worker waits for a resource's lock, a reconcile slot, an API key's rate limiter, a call or
a retry's delay: with kopf's `worker_limit` set, resources waiting would otherwise hold
every worker and stall every other resource's events (one API key's backlog another
key's new resource). A change is due only when made or retried (`interval` None).

`DriftSchedule` decides which checks are due (pure: it is given the time); `DriftRunner`
runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import kopf

logger = logging.getLogger(__name__)

Check = Callable[[str, Mapping[str, Any]], Awaitable[float | None]]
"""Reconcile one resource (uid, body); returns a delay to retry after, or None."""


def drift_checked(metadata: Mapping[str, Any], finalizer: str) -> bool:
    """Is a resource with this metadata drift-checked? Once `finalizer` is on it (before,
    a check could register a webhook that a deletion would leave behind), and until it is
    being deleted (the finalizer's handler owns it then)."""
    return not metadata.get("deletionTimestamp") and finalizer in (metadata.get("finalizers") or [])


class DriftSchedule:
    """When each resource's next drift check is due. A resource is in one of two states:
    waiting (with a due time) or being checked; `finished` moves it back to waiting."""

    def __init__(
        self,
        interval: float | None,
        jitter: float = 0.0,
        rng: random.Random | None = None,
        *,
        first_at_once: bool = False,
    ):
        """`first_at_once`: a new resource's first check is due when it is seen (kopf's
        timer without an initial delay), not after a jittered interval. `interval` None:
        no periodic check; a resource is checked when `retry` asks, and each check that
        asks for no retry is its last."""
        if interval is not None and interval <= 0:
            raise ValueError("the drift interval must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("the drift jitter must be in [0, 1)")
        self.interval = interval
        self.jitter = jitter
        self.first_at_once = first_at_once
        self._rng = rng or random.Random()  # noqa: S311 — spreading load, not security
        self._heap: list[tuple[float, str]] = []  # may hold stale entries; _due decides
        self._due: dict[str, float] = {}
        self._checking: set[str] = set()

    def __len__(self) -> int:
        return len(self._due) + len(self._checking)

    def __contains__(self, uid: object) -> bool:
        return uid in self._due or uid in self._checking

    def first_delay(self) -> float:
        if self.first_at_once or self.interval is None:
            return 0.0
        spread = self.interval * self.jitter
        return max(0.0, self.interval + self._rng.uniform(-spread, spread))

    def saw(self, uid: str, now: float) -> bool:
        """A resource seen by the watch; a new one's first check is scheduled (True)."""
        if uid in self:
            return False
        self._wait(uid, now + self.first_delay())
        return True

    def retry(self, uid: str, now: float, delay: float) -> None:
        """Check the resource `delay` from now, whatever was due: this asks for the newest
        attempt, and a check of it in progress is superseded (`is_checking` turns False)."""
        self._checking.discard(uid)
        self._wait(uid, now + max(0.0, delay))

    def is_checking(self, uid: str) -> bool:
        """Is a check of the resource taken, and not superseded (`retry`, `forget`) since?"""
        return uid in self._checking

    def forget(self, uid: str) -> None:
        """A resource gone (or going): no further check, unless it is seen again."""
        self._due.pop(uid, None)
        self._checking.discard(uid)

    def take_due(self, now: float) -> list[str]:
        """The resources whose check is due at `now`, now being checked."""
        taken = []
        while self._heap and self._heap[0][0] <= now:
            at, uid = heapq.heappop(self._heap)
            if self._due.get(uid) != at:
                continue  # forgotten, or moved
            del self._due[uid]
            self._checking.add(uid)
            taken.append(uid)
        return taken

    def finished(self, uid: str, now: float, retry_after: float | None = None) -> None:
        """A check ended: the next one `retry_after` (when asked) or `interval` later.
        A resource forgotten during its check stays forgotten."""
        if uid not in self._checking:
            return
        self._checking.discard(uid)
        if retry_after is not None:
            self._wait(uid, now + max(0.0, retry_after))
        elif self.interval is not None:
            self._wait(uid, now + self.interval)

    def next_due(self) -> float | None:
        """When the earliest waiting check is due (None: nothing waits)."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _wait(self, uid: str, at: float) -> None:
        self._due[uid] = at
        heapq.heappush(self._heap, (at, uid))


class DriftRunner:
    """Runs the due checks of a `DriftSchedule`, each in a task of its own, with the body
    `bodies(uid)` gives (None: the resource is gone, and is forgotten).

    Started by the first `saw`, from inside kopf's processing of a resource: its tasks
    run in a copy of that context, where `kopf.event` finds kopf's event queue."""

    def __init__(
        self,
        schedule: DriftSchedule,
        check: Check,
        bodies: Callable[[str], Mapping[str, Any] | None],
        *,
        clock: Callable[[], float],
        failure_delay: float = 60.0,
    ) -> None:
        self.schedule = schedule
        self._check = check
        self._bodies = bodies
        self._clock = clock
        self._failure_delay = failure_delay
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        # Each resource's newest check: one superseded (`retry`) and taken again may still
        # run, and must not end the newer one's turn (`finished`) when it ends.
        self._newest: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def checking(self) -> int:
        return len(self._checks)

    def saw(self, uid: str) -> None:
        """A resource seen by the watch (its first check scheduled if it is new)."""
        if self._stopped:
            return  # the operator is stopping; nothing starts again
        if self.schedule.saw(uid, self._clock()):
            self._wake.set()
        self._start()

    def retry(self, uid: str, delay: float | None) -> None:
        """Check the resource `delay` seconds from now (`DriftSchedule.retry`; None: after
        the failure delay)."""
        if self._stopped:
            return
        self.schedule.retry(uid, self._clock(), self._failure_delay if delay is None else delay)
        self._wake.set()
        self._start()

    def forget(self, uid: str) -> None:
        """No further check of the resource until it is seen or retried again; one in
        progress is superseded."""
        self.schedule.forget(uid)

    def _start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="drift checks")

    async def stop(self, grace: float = 0.0) -> None:
        """Start no check again, let those in flight finish for up to `grace` seconds, then
        cancel the rest; for good. (A reconciliation cancelled between a remote call and its
        write, a rotation say, is done again by the next leader.)"""
        self._stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        if grace > 0 and self._checks:
            await asyncio.wait(set(self._checks), timeout=grace)
        tasks = [t for t in (self._loop_task, *self._checks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Ended; their done callbacks (which discard them) may not have run yet.
        self._checks.clear()
        self._newest.clear()
        self._loop_task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
            except Exception:  # never the end of every drift check: logged, and on
                logger.exception("the drift scheduler failed; it goes on in 1 s")
                await asyncio.sleep(1.0)

    async def _round(self) -> None:
        """Start the checks due now, then sleep until the next is due or the schedule moves."""
        for uid in self.schedule.take_due(self._clock()):
            try:
                body = self._bodies(uid)
            except Exception:
                logger.exception("the body of resource uid=%s could not be read", uid)
                self.schedule.finished(uid, self._clock(), self._failure_delay)
                continue
            if body is None:
                self.schedule.forget(uid)
                continue
            task = asyncio.create_task(self._one(uid, body))
            self._newest[uid] = task
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
        self._wake.clear()
        due = self.schedule.next_due()
        timeout = None if due is None else max(0.0, due - self._clock())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _one(self, uid: str, body: Mapping[str, Any]) -> None:
        retry_after: float | None = None
        try:
            retry_after = await self._check(uid, body)
        except Exception:
            logger.exception(
                "the drift check of resource uid=%s failed; retried in %s s",
                uid,
                self._failure_delay,
            )
            retry_after = self._failure_delay
        finally:
            if self._newest.get(uid) is asyncio.current_task():
                del self._newest[uid]
                self.schedule.finished(uid, self._clock(), retry_after)
                self._wake.set()


def index_reader(bodies_index: Any) -> Callable[[str], Mapping[str, Any] | None]:
    """A resource's body as the `drift_bodies` index holds it (None: not there)."""

    def body_of(uid: str) -> Mapping[str, Any] | None:
        try:
            return next(iter(bodies_index[uid]), None)
        except KeyError:
            return None

    return body_of


class ErrorBackoff:
    """How long a resource whose attempts raise an unexpected exception (a bug) waits
    before the next: one of `delays` further per failure in a row, the last repeated; any
    other ending starts it over."""

    def __init__(self, delays: Sequence[float]) -> None:
        if not delays:
            raise ValueError("the error delays must not be empty")
        self.delays = tuple(delays)
        self._failures: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def failed(self, uid: str) -> float:
        failures = self._failures.get(uid, 0)
        self._failures[uid] = failures + 1
        return self.delays[min(failures, len(self.delays) - 1)]

    def ended(self, uid: str) -> None:
        self._failures.pop(uid, None)


def retried(
    what: str, check: Callable[[kopf.Body], Awaitable[None]], backoff: ErrorBackoff | None = None
) -> Check:
    """`check` as a scheduled check: a TemporaryError is logged and asks for its delay; with
    `backoff`, an unexpected exception is logged and asks for the backoff's."""

    async def scheduled(uid: str, body: Mapping[str, Any]) -> float | None:
        try:
            await check(kopf.Body(cast(kopf.RawBody, body)))
        except kopf.TemporaryError as error:
            delay = retry_logged(what, body, error)
        except Exception as error:
            if backoff is None:
                raise
            return error_logged(what, body, error, backoff.failed(uid))
        else:
            delay = None
        if backoff is not None:
            backoff.ended(uid)
        return delay

    return scheduled


def error_logged(what: str, body: Mapping[str, Any], error: Exception, delay: float) -> float:
    """Log an attempt that raised an unexpected exception, by its type (its message may
    quote what it should not); `delay`."""
    metadata = body.get("metadata") or {}
    logger.error(
        "%s of %s/%s failed unexpectedly (%s); retried in %s s",
        what,
        metadata.get("namespace"),
        metadata.get("name"),
        type(error).__name__,
        delay,
    )
    return delay


def retry_logged(what: str, body: Mapping[str, Any], error: kopf.TemporaryError) -> float | None:
    """Log a check that will be retried, as kopf logged a handler's or a timer's (the
    message is ours, and names no secret); the delay it asked for."""
    metadata = body.get("metadata") or {}
    logger.warning(
        "%s of %s/%s failed temporarily: %s; retried in %s s",
        what,
        metadata.get("namespace"),
        metadata.get("name"),
        error,
        error.delay,
    )
    return error.delay
