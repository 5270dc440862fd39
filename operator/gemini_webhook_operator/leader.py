"""One active operator: leader election by a `coordination.k8s.io` Lease, and the fence
that every write passes.

The election follows client-go's `leaderelection` (what cert-manager, External Secrets,
Crossplane and every controller-runtime operator use), with its defaults: a Lease held for
`lease_duration` (15 s) after its holder's last renewal *as another candidate observed it*
(its own clock, never the holder's timestamps), renewed every `retry_period` (2 s), given
up when no renewal succeeded for `renew_deadline` (10 s). A released Lease (empty holder)
is taken at once; an expired one at the moment it expires, not at the next retry.

The fence is what makes it safe when a leader is paused (a long GC pause, SIGSTOP, a frozen
VM) or cut off: writes pass only until `renew_deadline` after the moment this replica
*sent* its last successful renewal, measured on the monotonic clock, which keeps counting
while the process is stopped. Another candidate can take the Lease no sooner than
`lease_duration` after it observed that renewal, which came later still; so the last write
this replica may start precedes the earliest moment another may act, by the margin
`lease_duration - renew_deadline` (5 s by default) for requests in flight. A replica that
resumes after a pause finds its fence expired before it can write anything, and a renewal
that finds another holder ends its leadership at once: the process then stops (the kubelet
restarts it as a follower), as controller-runtime's manager does.

The decisions are pure functions (`acquirable`, `until_next_try`, `claim`); `LeaderElector`
does the I/O with its own connection pool, so that renewals never queue behind the
reconcilers' requests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gemini_webhook_operator.kube import JSON, Kube, KubeError
from gemini_webhooks.contracts.times import rfc3339

logger = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "gemini-webhook-operator"
LEASE = ("coordination.k8s.io/v1", "Lease")  # (apiVersion, kind)
# client-go's JitterFactor: retries are spread over [retry_period, 1.2 * retry_period].
JITTER = 1.2


class NotLeader(RuntimeError):
    """A write refused because this replica's leadership is not certain now."""


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        """What is wrong with these durations (client-go's own checks), as messages."""
        found = []
        if self.lease_duration <= self.renew_deadline:
            found.append("the lease duration must be greater than the renew deadline")
        if self.renew_deadline <= JITTER * self.retry_period:
            found.append(f"the renew deadline must be greater than {JITTER} x the retry period")
        if self.retry_period <= 0:
            found.append("the retry period must be positive")
        return found


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says about its holder (`spec` of coordination.k8s.io/v1 Lease)."""

    holder: str
    lease_duration: float
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str

    @classmethod
    def from_object(cls, lease: JSON) -> LeaseRecord:
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration=float(duration) if isinstance(duration, int) and duration > 0 else 0,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=transitions if isinstance(transitions, int) else 0,
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def same_observation(self, other: LeaseRecord | None) -> bool:
        """Whether nothing changed in the Lease (client-go compares the whole record)."""
        return other is not None and (
            self.holder,
            self.renew_time,
            self.acquire_time,
            self.lease_duration,
            self.transitions,
        ) == (
            other.holder,
            other.renew_time,
            other.acquire_time,
            other.lease_duration,
            other.transitions,
        )


def acquirable(record: LeaseRecord | None, me: str, observed_at: float, now: float) -> bool:
    """May `me` take or renew the Lease now? Yes when there is none, it is released, it is
    ours, or its holder has not renewed it for its duration since we first saw this record
    (`observed_at` and `now` on our own monotonic clock)."""
    if record is None or not record.holder or record.holder == me:
        return True
    return now >= observed_at + record.lease_duration


def until_next_try(
    record: LeaseRecord | None, me: str, observed_at: float, now: float, retry: float
) -> float:
    """Seconds a candidate waits before its next try: the jittered retry period `retry`, or
    less, to try the moment another holder's Lease, as observed, expires. client-go tries
    only every retry period, so up to one more passes after the expiry; this way a follower
    takes a dead leader's Lease within the lease duration and one jittered retry period of
    the leader's last renewal (by which it has observed that renewal). After a try that
    failed past the expiry (an API error), the full retry period: never a busy loop."""
    if record is None or not record.holder or record.holder == me:
        return retry
    expires_in = observed_at + record.lease_duration - now
    return min(retry, expires_in) if expires_in > 0 else retry


def claim(record: LeaseRecord | None, me: str, at: datetime, timing: LeaseTiming) -> JSON:
    """The Lease's spec with `me` holding it from `at` (a renewal keeps the acquire time)."""
    ours = record is not None and record.holder == me
    previous = record.transitions if record is not None else 0
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": max(1, math.ceil(timing.lease_duration)),
        "acquireTime": record.acquire_time if ours and record else rfc3339(at, "microseconds"),
        "renewTime": rfc3339(at, "microseconds"),
        "leaseTransitions": previous if ours or record is None else previous + 1,
    }


def released(record: LeaseRecord, at: datetime) -> JSON:
    """The spec a graceful stop leaves: no holder, so that a follower takes it at once
    (client-go's ReleaseOnCancel)."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": record.acquire_time,
        "renewTime": rfc3339(at, "microseconds"),
        "leaseTransitions": record.transitions,
    }


class Fence:
    """Writes pass while the monotonic clock is before `until`."""

    def __init__(self, until: float = math.inf, monotonic: Callable[[], float] = time.monotonic):
        self.until = until
        self._monotonic = monotonic

    def leading(self) -> bool:
        return self._monotonic() < self.until

    def remaining(self) -> float:
        return max(0.0, self.until - self._monotonic())

    def check(self, action: str) -> None:
        if not self.leading():
            raise NotLeader(f"{action} refused: this replica does not hold the leader Lease")


def lease_object(namespace: str, name: str, spec: JSON, resource_version: str = "") -> JSON:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": LEASE[0],
        "kind": LEASE[1],
        "metadata": metadata,
        "spec": spec,
    }


class LeaderElector:
    """Acquires, renews and releases one Lease for this replica; owns the fence."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming | None = None,
        *,
        on_change: Callable[[bool], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing or LeaseTiming()
        self.fence = Fence(until=-math.inf, monotonic=monotonic)
        self._monotonic = monotonic
        self._on_change = on_change or (lambda leading: None)
        self._observed: LeaseRecord | None = None
        self._observed_at = -math.inf
        self.holder = ""  # as last observed

    async def _attempt(self) -> bool:
        """One try to acquire or renew (client-go's tryAcquireOrRenew)."""
        sent = self._monotonic()
        found = await self.kube.get(*LEASE, self.namespace, self.name)
        record = LeaseRecord.from_object(found) if found is not None else None
        if record is not None and not record.same_observation(self._observed):
            self._observed, self._observed_at = record, self._monotonic()
        self.holder = record.holder if record is not None else ""
        if not acquirable(record, self.identity, self._observed_at, self._monotonic()):
            return False
        spec = claim(record, self.identity, datetime.now(UTC), self.timing)
        try:
            if record is None:
                written = await self.kube.create(lease_object(self.namespace, self.name, spec))
            else:
                written = await self._patch(spec, record.resource_version)
        except KubeError as error:
            if error.status == 409:  # another candidate wrote it first
                return False
            raise
        if written is None:
            return False
        self._observed = LeaseRecord.from_object(written)
        self._observed_at = self._monotonic()
        self.holder = self.identity
        self.fence.until = sent + self.timing.renew_deadline
        return True

    async def _patch(self, spec: JSON, resource_version: str) -> JSON | None:
        """Write the spec if the Lease is still the one read: the resourceVersion in a merge
        patch is a precondition (409 otherwise), and a patch never creates (404 for a
        Lease deleted meanwhile, e.g. by `helm uninstall`; kube-apiserver's PUT would
        recreate a deleted Lease)."""
        patch = {"metadata": {"resourceVersion": resource_version}, "spec": spec}
        return await self.kube.merge_patch(*LEASE, self.namespace, self.name, patch)

    def _jittered(self) -> float:
        return self.timing.retry_period * random.uniform(1.0, JITTER)  # noqa: S311

    async def acquire(self) -> None:
        """Until this replica holds the Lease."""
        reported = ""
        while True:
            try:
                if await self._attempt():
                    logger.info("acquired the leader Lease %s/%s", self.namespace, self.name)
                    self._on_change(True)
                    return
            except KubeError as error:
                logger.warning("leader Lease not readable or writable: %s", error)
            if self.holder and self.holder != reported:
                logger.info("the leader Lease is held by %s; standing by", self.holder)
                reported = self.holder
            await asyncio.sleep(
                until_next_try(
                    self._observed,
                    self.identity,
                    self._observed_at,
                    self._monotonic(),
                    self._jittered(),
                )
            )

    async def hold(self) -> None:
        """Renew every retry period; return once leadership is lost: no renewal succeeded
        within the renew deadline, or the Lease names another holder."""
        try:
            while True:
                await asyncio.sleep(self.timing.retry_period)
                remaining = self.fence.remaining()
                if remaining <= 0:
                    logger.error("leader Lease not renewed within the renew deadline")
                    return
                try:
                    async with asyncio.timeout(remaining):
                        if await self._attempt():
                            continue
                except (KubeError, TimeoutError) as error:
                    logger.warning("leader Lease renewal failed: %s", error)
                    continue
                logger.error("the leader Lease is now held by %s", self.holder or "nobody")
                return
        finally:
            self.fence.until = -math.inf
            self._on_change(False)

    async def release(self) -> None:
        """Give the Lease up at once (a graceful stop), if this replica still holds it."""
        if self._observed is None or self._observed.holder != self.identity:
            return
        self.fence.until = -math.inf
        spec = released(self._observed, datetime.now(UTC))
        try:
            written = await self._patch(spec, self._observed.resource_version)
        except KubeError as error:
            logger.warning("leader Lease not released (it expires by itself): %s", error)
            return
        if written is None:
            logger.info("leader Lease %s/%s is gone; nothing to release", self.namespace, self.name)
            return
        logger.info("released the leader Lease %s/%s", self.namespace, self.name)
