"""End-to-end health, the I/O: `HealthChecker.check` sends one ping through a callable the
caller provides (the WebhookService wrapper's `ping`), polls the receiver's
`/internal/pings` (see docs/receiver.md) through its internal Service (by cluster DNS) or
on each ready pod (at its Pod IP), through the HTTP proxy the proxy variables name for it
(`contracts.egress_proxy`), until the verdict is in, and feeds the metrics.
`HealthChecker.tick` is what the operator's health scheduler calls for each resource. Every
decision it acts on is a pure function of `health`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import aiohttp

from gemini_webhook_operator.health import (
    DEFAULT_RETRY_AFTER,
    DEFAULT_TIMEOUT,
    REASON_INVALID,
    REASON_NO_SECRET,
    REASON_NOT_RECEIVED,
    REASON_PREVIOUS_SECRET,
    REASON_RECEIVER_UNREACHABLE,
    REASON_SEND_FAILED,
    SECRET_SETTLE,
    SETTLE_RESEND,
    HealthMemo,
    Ping,
    PingObservation,
    Verdict,
    blocked_reason,
    combine,
    is_new,
    judge,
    parse_pings,
    per_replica_caveat,
    ping_reason,
    still_settling,
)
from gemini_webhook_operator.metrics import METRICS, OperatorMetrics
from gemini_webhook_operator.model import WebhookSpec
from gemini_webhook_operator.receiver_names import (
    internal_service_name,
    ping_status_pod_urls,
    ping_status_url,
)
from gemini_webhooks.contracts.crd_receiver import (
    CrdReceiverError,
    ReceiverSpec,
    health_check_spec,
    parse_duration,
)
from gemini_webhooks.contracts.egress_proxy import DIRECT, ProxySettings
from gemini_webhooks.contracts.times import parse_rfc3339

MAX_RESPONSE_BYTES = 64 * 1024


class ReceiverUnreachableError(Exception):
    """The receiver's ping status could not be read (message names why, never secrets)."""


# The Pods of a resource's receiver (an empty list when they cannot be listed).
ReceiverPods = Callable[[Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]
# Whom to ask now (ping-status URLs), read again before a ping is called not received.
Relist = Callable[[], Awaitable[Sequence[str]]]
# The fingerprint of the current signing secret the operator holds for a resource now.
HeldFingerprint = Callable[[WebhookSpec], Awaitable[str | None]]


@dataclass(frozen=True)
class Checked:
    """One ping's outcome: the verdict, when the ping was sent (None: it was not), and how
    many receivers (pods, or the internal Service) were asked in the end."""

    verdict: Verdict
    sent_at: datetime | None
    asked: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _describe(error: BaseException) -> str:
    """Error class and HTTP status only: SDK messages may quote request details."""
    code = getattr(error, "status_code", None) or getattr(error, "code", None)
    return f"{type(error).__name__}" + (f" (HTTP {code})" if isinstance(code, int) else "")


class HealthChecker:
    """Sends pings and asks receivers; one per operator (shares an HTTP session)."""

    def __init__(
        self,
        *,
        metrics: OperatorMetrics = METRICS,
        clock: Callable[[], datetime] = _utcnow,
        poll_interval: float = 0.5,
        timeout: timedelta = DEFAULT_TIMEOUT,
        retry_after: timedelta = DEFAULT_RETRY_AFTER,
        settle: timedelta = SECRET_SETTLE,
        request_timeout: float = 5.0,
        cluster_domain: str = "cluster.local",
        proxies: ProxySettings = DIRECT,
        receiver_pods: ReceiverPods | None = None,
        held_fingerprint: HeldFingerprint | None = None,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.retry_after = retry_after
        self.settle = settle  # `health.still_settling`'s window after a rotation
        self.request_timeout = request_timeout
        self.cluster_domain = cluster_domain
        self.proxies = proxies
        self.receiver_pods = receiver_pods
        self.held_fingerprint = held_fingerprint
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout)
            )
        return self._session

    async def observe(self, url: str) -> PingObservation | None:
        """Read the receiver's last verified ping; ReceiverUnreachableError when it can't."""
        try:
            async with self._http().get(
                url, allow_redirects=False, proxy=self.proxies.proxy_for(url)
            ) as response:
                if response.status != 200:
                    raise ReceiverUnreachableError(f"ping status answered HTTP {response.status}")
                body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ReceiverUnreachableError(f"ping status unreachable: {_describe(error)}") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise ReceiverUnreachableError("ping status answer is too large")
        try:
            return parse_pings(json.loads(body))
        except ValueError as error:
            raise ReceiverUnreachableError(str(error)) from None

    async def _observe_each(
        self, urls: Sequence[str], errors: dict[str, str], reached: set[str]
    ) -> list[PingObservation | None]:
        """Every URL's observation (None where it could not be read: the last error in
        `errors`); the URLs ever read are added to `reached`."""

        async def one(url: str) -> PingObservation | None:
            try:
                observation = await self.observe(url)
            except ReceiverUnreachableError as error:
                errors[url] = str(error)
                return None
            reached.add(url)
            return observation

        return list(await asyncio.gather(*(one(url) for url in urls)))

    async def check(
        self,
        *,
        urls: Sequence[str],
        ping: Ping,
        current_fingerprint: str,
        seen: dict[str, PingObservation] | None = None,
        relist: Relist | None = None,
        held_now: Callable[[], Awaitable[str | None]] | None = None,
    ) -> Checked:
        """Send one ping and wait for the verdict of the receivers at `urls` (the internal
        Service, or each ready pod). Before the ping is called not received, `relist` says
        whom to ask now, and those not asked yet are asked too: a pod that became ready
        after `urls` were listed may have taken it (the Service sends to it at once).
        Before it is called verified only with a previous secret, `held_now` says which
        secret the operator holds now: rotated while the ping travelled (a delivery retried
        after the rotation is signed with the new secret), the receiver verified it with the
        current one. `seen` gets what each URL reported of this ping."""
        urls = list(urls)
        errors: dict[str, str] = {}
        reached: set[str] = set()
        # Read before sending (an unreachable pod may come up while the ping travels), so
        # that an earlier ping is never taken for this one.
        baselines = await self._observe_each(urls, errors, reached)
        sent_at = self.clock()
        try:
            await ping()
        except Exception as error:  # the SDK's errors have no common base worth naming
            verdict = Verdict(
                None,
                REASON_SEND_FAILED,
                f"the WebhookService did not send the ping: {_describe(error)}",
                ping_result="send_failed",
            )
            return Checked(verdict, None, len(urls))
        while True:
            outcome = await self._judge_once(
                urls, baselines, sent_at, current_fingerprint, errors, reached, seen
            )
            if outcome is None:
                await asyncio.sleep(self.poll_interval)
                continue
            if outcome.reason == REASON_PREVIOUS_SECRET and held_now is not None:
                held = await held_now()
                held_now = None  # once: a rotation per ping is plenty
                if held is not None and held != current_fingerprint:
                    current_fingerprint = held
                    continue
            if outcome.reason == REASON_NOT_RECEIVED and relist is not None:
                late = [url for url in await relist() if url not in urls]
                relist = None  # once: the ping has had its time
                if late:
                    # Not read before the ping: judged by when they received it.
                    urls += late
                    baselines += [None] * len(late)
                    continue
            unread = [url for url in urls if url not in reached]
            if outcome.reason == REASON_NOT_RECEIVED and unread:
                what = (
                    "the receiver's ping status could not be read"
                    if len(urls) == 1
                    else f"the ping status of {len(unread)} of {len(urls)} receiver pods "
                    "could not be read"
                )
                outcome = Verdict(
                    None,
                    REASON_RECEIVER_UNREACHABLE,
                    f"{what}: {errors.get(unread[0], 'no answer')}",
                    ping_result="receiver_unreachable",
                )
            return Checked(outcome, sent_at, len(urls))

    async def _judge_once(
        self,
        urls: Sequence[str],
        baselines: Sequence[PingObservation | None],
        sent_at: datetime,
        current_fingerprint: str,
        errors: dict[str, str],
        reached: set[str],
        seen: dict[str, PingObservation] | None,
    ) -> Verdict | None:
        """Ask every URL once: the ping's verdict, or None to keep waiting."""
        asked = "the receiver" if len(urls) == 1 else f"any of the {len(urls)} receiver pods"
        observations = await self._observe_each(urls, errors, reached)
        now = self.clock()
        for url, observation, baseline in zip(urls, observations, baselines, strict=True):
            if seen is not None and observation is not None:
                if is_new(observation, baseline, sent_at):
                    seen[url] = observation
        return combine(
            [
                judge(
                    sent_at=sent_at,
                    observation=observation,
                    current_fingerprint=current_fingerprint,
                    now=now,
                    timeout=self.timeout,
                    baseline=baseline,
                    asked=asked,
                )
                for observation, baseline in zip(observations, baselines, strict=True)
            ]
        )

    async def tick(
        self,
        resource: Mapping[str, Any],
        spec: WebhookSpec,
        memo: HealthMemo,
        *,
        ping: Ping,
        current_fingerprint: str | None,
    ) -> Verdict | None:
        """One timer tick for one resource: the condition to report, or None (nothing new).

        `resource` is the GeminiWebhook (body), `spec` it parsed; `current_fingerprint` is
        `truncate_secret(current secret)` of the Secret the operator holds.
        """
        metadata, status = resource["metadata"], resource.get("status") or {}
        namespace, name = metadata["namespace"], metadata["name"]
        try:
            health, receiver = health_check_spec(resource.get("spec") or {}), spec.receiver
        except CrdReceiverError as error:
            return Verdict(None, REASON_INVALID, str(error))
        blocked = blocked_reason(
            health_enabled=health.enabled,
            receiver_enabled=receiver.enabled,
            webhook_id=status.get("webhookId"),
            remote_state=status.get("remoteState"),
            current_fingerprint=current_fingerprint,
        )
        if blocked is not None:
            self.metrics.webhooks.set_delivery_verified(namespace, name, None)
            return blocked
        assert current_fingerprint is not None
        last_rotation = parse_rfc3339(status.get("lastRotationTime"))
        reason = ping_reason(
            memo,
            interval=parse_duration(health.interval),
            retry_after=self.retry_after,
            last_rotation=last_rotation,
            now=self.clock(),
        )
        if reason is None:
            return None

        async def relist() -> list[str]:
            return await self._urls(resource, receiver)

        held_now = self._held_now(spec)
        urls = await relist()
        checked = await self.check(
            urls=urls,
            ping=ping,
            current_fingerprint=current_fingerprint,
            relist=relist,
            held_now=held_now,
        )
        # Right after a rotation, a replica may not have loaded the new secret yet: ping
        # again (each one WebhookService call) rather than report a propagation delay.
        while checked.sent_at is not None and still_settling(
            checked.verdict, last_rotation=last_rotation, now=self.clock(), window=self.settle
        ):
            await asyncio.sleep(SETTLE_RESEND.total_seconds())
            checked = await self.check(
                urls=await relist(),
                ping=ping,
                current_fingerprint=current_fingerprint,
                relist=relist,
                held_now=held_now,
            )
        verdict = per_replica_caveat(
            checked.verdict,
            replicas=receiver.replicas,
            shared_pings=receiver.redis is not None,
            asked=checked.asked,
        )
        sent_at = checked.sent_at
        if sent_at is not None:
            memo.last_sent_at = sent_at
            if verdict.verified:
                memo.last_verified_sent_at = sent_at
        self.record(namespace, name, verdict)
        return verdict

    def _held_now(self, spec: WebhookSpec) -> Callable[[], Awaitable[str | None]] | None:
        return None if self.held_fingerprint is None else partial(self.held_fingerprint, spec)

    async def _urls(self, resource: Mapping[str, Any], receiver: ReceiverSpec) -> list[str]:
        return list((await self._targets(resource, receiver)).values())

    async def _targets(self, resource: Mapping[str, Any], receiver: ReceiverSpec) -> dict[str, str]:
        """Whom to ask (name -> ping-status URL): each ready pod when several keep their
        pings in memory and the pods can be listed; otherwise the internal Service."""
        if receiver.replicas > 1 and receiver.redis is None and self.receiver_pods is not None:
            pods = await self.receiver_pods(resource)
            urls = ping_status_pod_urls(resource, pods)
            if urls:
                return urls
        service = internal_service_name(resource["metadata"]["name"])
        url = ping_status_url(resource, cluster_domain=self.cluster_domain)
        return {f"service/{service}": url}

    async def requested(
        self,
        resource: Mapping[str, Any],
        spec: WebhookSpec,
        *,
        ping: Ping,
        current_fingerprint: str | None,
    ) -> tuple[Verdict, datetime | None, dict[str, PingObservation]]:
        """One ping someone asked for (`kubectl gemini ping`), whatever spec.healthCheck
        says: the verdict, when it was sent, and each receiver that verified it (by name:
        the Pod where each keeps its own pings, else the internal Service)."""
        status = resource.get("status") or {}
        try:
            receiver = spec.receiver
        except CrdReceiverError as error:
            return Verdict(None, REASON_INVALID, str(error)), None, {}
        blocked = blocked_reason(
            health_enabled=True,
            receiver_enabled=receiver.enabled,
            webhook_id=status.get("webhookId"),
            remote_state=status.get("remoteState"),
            current_fingerprint=current_fingerprint,
        )
        if blocked is not None or current_fingerprint is None:
            return blocked or Verdict(None, REASON_NO_SECRET, "no signing secret"), None, {}
        targets = await self._targets(resource, receiver)

        async def relist() -> list[str]:
            now = await self._targets(resource, receiver)
            targets.update(now)  # so that a pod asked late is named too
            return list(now.values())

        seen: dict[str, PingObservation] = {}
        checked = await self.check(
            urls=list(targets.values()),
            ping=ping,
            current_fingerprint=current_fingerprint,
            seen=seen,
            relist=relist,
            held_now=self._held_now(spec),
        )
        verdict = per_replica_caveat(
            checked.verdict,
            replicas=receiver.replicas,
            shared_pings=receiver.redis is not None,
            asked=checked.asked,
        )
        by_name = {name: seen[url] for name, url in targets.items() if url in seen}
        return verdict, checked.sent_at, by_name

    def record(self, namespace: str, name: str, verdict: Verdict) -> None:
        if verdict.ping_result is not None:
            round_trip = (
                verdict.round_trip.total_seconds()
                if verdict.verified and verdict.round_trip is not None
                else None
            )
            self.metrics.observe_ping(verdict.ping_result, round_trip)
        self.metrics.webhooks.set_delivery_verified(namespace, name, verdict.status)
