"""End-to-end health: ping the webhook, learn from its receiver that the ping arrived and
verified, report `DeliveryVerified` — decide purely, act at the edge.

Decisions (pure, no I/O):
- `ping_reason`: a chain of small checks, the first that fires says why a ping is due now
  (`AfterRotation`, `FirstCheck`, `RetryUnverified`, `Periodic`), or None.
- `blocked_reason`: why no ping can be sent at all (health check off, no receiver, no
  webhook yet, webhook not enabled remotely) — reported as an Unknown condition.
- `judge`: given when the ping was sent and what the receiver reports, the verdict:
  verified (with the current secret), verified only with a previous secret (the receiver
  has not picked up the rotation), not received in time, or keep waiting.
- `repeats`: a verdict that says what the condition already says is not written.
- `rotation_complete`: a rotation counts complete only when a ping sent after it verified
  with the current secret.
- Several replicas: with Redis every replica records its pings there and any pod answers
  for all (docs/receiver.md), so the internal Service is asked. Without Redis each pod
  knows only the pings it took, so every ready pod is asked (`ping_status_pod_urls`) and
  `combine` merges their verdicts; where fewer pods than replicas can be asked (none
  listed, or not all ready), `per_replica_caveat` turns "not received" into Unknown
  (`PingsPerReplica`).

I/O (thin): `HealthChecker.check` sends one ping through a callable the caller provides
(the WebhookService wrapper's `ping`), polls the receiver's `/internal/pings` (see
docs/receiver.md) through its internal Service (by cluster DNS) or on each ready pod (at
its Pod IP), through the HTTP proxy the proxy variables name for it
(`contracts.egress_proxy`), until the verdict is in, and feeds the metrics.
`HealthChecker.tick` is what the operator's kopf timer calls for each resource.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from gemini_webhook_operator.conditions import status_text
from gemini_webhook_operator.metrics import METRICS, OperatorMetrics, PingResult
from gemini_webhook_operator.receiver_resources import (
    STATIC_SOURCE,
    internal_service_name,
    ping_status_pod_urls,
    ping_status_url,
)
from gemini_webhooks.contracts.crd import ANNOTATION_PING_REQUESTED, CONDITION_DELIVERY_VERIFIED
from gemini_webhooks.contracts.crd_receiver import (
    CrdReceiverError,
    ReceiverSpec,
    health_check_spec,
    parse_duration,
    receiver_spec,
)
from gemini_webhooks.contracts.egress_proxy import DIRECT, ProxySettings
from gemini_webhooks.contracts.times import parse_rfc3339, rfc3339

CONDITION = CONDITION_DELIVERY_VERIFIED

# Why a ping is sent now.
PING_AFTER_ROTATION = "AfterRotation"
PING_FIRST = "FirstCheck"
PING_PERIODIC = "Periodic"
PING_RETRY = "RetryUnverified"

# Condition reasons.
REASON_VERIFIED = "PingVerified"
REASON_PREVIOUS_SECRET = "VerifiedWithPreviousSecret"
REASON_NOT_RECEIVED = "PingNotReceived"
REASON_SEND_FAILED = "PingSendFailed"
REASON_RECEIVER_UNREACHABLE = "ReceiverUnreachable"
REASON_DISABLED = "HealthCheckDisabled"
REASON_NO_RECEIVER = "ReceiverNotDeployed"
REASON_NO_WEBHOOK = "WebhookNotCreated"
REASON_NOT_ENABLED = "WebhookNotEnabled"
REASON_NO_SECRET = "SigningSecretMissing"
REASON_INVALID = "InvalidHealthCheck"
REASON_PINGS_PER_REPLICA = "PingsPerReplica"
# Set by the reconciler when it rotates: the last verdict was about the previous secret.
REASON_ROTATION_UNVERIFIED = "RotationNotYetVerified"

# The receiver's and the operator's clocks are the cluster's; allow a little skew when
# deciding whether a ping arrived after we sent ours.
CLOCK_SKEW = timedelta(seconds=2)
DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_RETRY_AFTER = timedelta(minutes=1)
MAX_RESPONSE_BYTES = 64 * 1024


# --- Pure decisions --------------------------------------------------------------------


@dataclass(frozen=True)
class PingObservation:
    """What the receiver reports about the last verified ping of a source."""

    received_at: datetime
    secret_fingerprint: str | None  # truncated secret (`contracts.signing_secret`)
    delivery_id: str | None = None  # the ping's `webhook-id`


@dataclass
class HealthMemo:
    """Per-resource memory of the checks (kept in kopf's memo; lost on restart, which
    costs one early ping)."""

    last_sent_at: datetime | None = None
    last_verified_sent_at: datetime | None = None
    reset_for: datetime | None = None  # the rotation whose reset DeliveryVerified showed


@dataclass(frozen=True)
class Verdict:
    status: bool | None  # the condition's True / False / Unknown
    reason: str
    message: str
    round_trip: timedelta | None = None
    ping_result: PingResult | None = None

    @property
    def verified(self) -> bool:
        return self.status is True


def repeats(previous: Mapping[str, Any] | None, verdict: Verdict, generation: int) -> bool:
    """Whether `verdict` only says again what the condition `previous` says: the same status
    and reason, at the same generation. Such a verdict is not written, so that the periodic
    pings of an unchanged, healthy resource cost no write: the condition's message keeps
    telling the ping that gave it its status (each later one's round trip is in
    `gemini_webhook_operator_delivery_round_trip_seconds`)."""
    return previous is not None and (
        previous.get("status"),
        previous.get("reason"),
        previous.get("observedGeneration"),
    ) == (status_text(verdict.status), verdict.reason, generation)


def blocked_reason(
    *,
    health_enabled: bool,
    receiver_enabled: bool,
    webhook_id: str | None,
    remote_state: str | None,
    current_fingerprint: str | None,
) -> Verdict | None:
    """Why no ping can be sent now (an Unknown condition), or None when one can."""
    checks: tuple[tuple[bool, str, str], ...] = (
        (not health_enabled, REASON_DISABLED, "spec.healthCheck.enabled is false"),
        (
            not receiver_enabled,
            REASON_NO_RECEIVER,
            "the health check asks the deployed receiver; set spec.receiver.enabled",
        ),
        (not webhook_id, REASON_NO_WEBHOOK, "the remote webhook does not exist yet"),
        (
            remote_state != "enabled",
            REASON_NOT_ENABLED,
            f"the remote webhook is {remote_state or 'unknown'}; pings are not delivered",
        ),
        (
            not current_fingerprint,
            REASON_NO_SECRET,
            "the operator holds no signing secret to verify against",
        ),
    )
    for fires, reason, message in checks:
        if fires:
            return Verdict(None, reason, message)
    return None


def rotation_reset(memo: HealthMemo, last_rotation: datetime | None) -> Verdict | None:
    """After a rotation, what DeliveryVerified says is about the previous secret: Unknown
    until a ping sent after the rotation verifies. Only when this operator pinged before the
    rotation; after a restart (an empty memo) the first ping decides, so a verdict that still
    holds does not flap."""
    last_sent = memo.last_sent_at
    if last_rotation is None or last_sent is None or last_sent >= last_rotation:
        return None
    if memo.reset_for == last_rotation:
        return None  # shown once; what the ping then decides stands
    return Verdict(
        None,
        REASON_ROTATION_UNVERIFIED,
        f"rotated at {rfc3339(last_rotation)}; waiting for a ping sent after it to verify "
        "with the new signing secret",
    )


def ping_reason(
    memo: HealthMemo,
    *,
    interval: timedelta,
    retry_after: timedelta,
    last_rotation: datetime | None,
    now: datetime,
) -> str | None:
    """Why a ping is due now (the first check that fires), or None.

    Unverified states (a rotation not yet proven, a failed check) are re-checked after
    `retry_after` rather than a whole interval; each check is one WebhookService call.
    """
    last_sent, last_verified = memo.last_sent_at, memo.last_verified_sent_at
    if last_rotation is not None and (last_sent is None or last_sent < last_rotation):
        return PING_AFTER_ROTATION
    if last_sent is None:
        return PING_FIRST
    since = now - last_sent
    if last_verified != last_sent and since >= min(retry_after, interval):
        return PING_RETRY
    if since >= interval:
        return PING_PERIODIC
    return None


def is_new(
    observation: PingObservation | None, baseline: PingObservation | None, sent_at: datetime
) -> bool:
    """Is `observation` our ping: another delivery than the one seen before sending, and
    not received before we sent (within the clock skew)?"""
    if observation is None or observation.received_at < sent_at - CLOCK_SKEW:
        return False
    if baseline is None:
        return True
    if observation.delivery_id is not None and baseline.delivery_id is not None:
        return observation.delivery_id != baseline.delivery_id
    return observation.received_at > baseline.received_at


def judge(
    *,
    sent_at: datetime,
    observation: PingObservation | None,
    current_fingerprint: str,
    now: datetime,
    timeout: timedelta,
    baseline: PingObservation | None = None,
    asked: str = "the receiver",
) -> Verdict | None:
    """The verdict on one ping, or None to keep waiting.

    `baseline` is what the receiver reported just before the ping was sent, so that an
    earlier ping is never taken for this one; `asked` names who was asked, for the message.
    """
    if observation is not None and is_new(observation, baseline, sent_at):
        round_trip = max(observation.received_at - sent_at, timedelta(0))
        if observation.secret_fingerprint == current_fingerprint:
            return Verdict(
                True,
                REASON_VERIFIED,
                f"a ping sent at {rfc3339(sent_at)} arrived and verified with the current "
                f"signing secret after {round_trip.total_seconds():.3f}s",
                round_trip,
                "verified",
            )
        return Verdict(
            False,
            REASON_PREVIOUS_SECRET,
            f"a ping sent at {rfc3339(sent_at)} verified only with a previous signing "
            "secret: the receiver has not loaded the current one",
            round_trip,
            "not_verified",
        )
    if now - sent_at >= timeout:
        return Verdict(
            False,
            REASON_NOT_RECEIVED,
            f"a ping sent at {rfc3339(sent_at)} was not reported verified by {asked} "
            f"within {timeout.total_seconds():.0f}s (not delivered, or rejected)",
            None,
            "not_verified",
        )
    return None


def combine(verdicts: Sequence[Verdict | None]) -> Verdict | None:
    """One verdict from each pod asked → the ping's verdict, or None to keep waiting.

    A ping reaches one pod (a retry may reach another): any pod that saw it verified
    decides; else one that saw it verify only with a previous secret; "not received" only
    once every pod says so.
    """
    decided = [v for v in verdicts if v is not None]
    for reason in (REASON_VERIFIED, REASON_PREVIOUS_SECRET):
        for verdict in decided:
            if verdict.reason == reason:
                return verdict
    if decided and len(decided) == len(verdicts):
        return decided[0]
    return None


def per_replica_caveat(
    verdict: Verdict, *, replicas: int, shared_pings: bool, asked: int = 1
) -> Verdict:
    """The verdict, unless it is "not received" from fewer pods than there are replicas
    that each know only their own pings: then nobody can tell (Unknown)."""
    if verdict.reason != REASON_NOT_RECEIVED or shared_pings or asked >= replicas:
        return verdict
    who = "the receiver pod asked" if asked == 1 else f"the {asked} ready receiver pods asked"
    return Verdict(
        None,
        REASON_PINGS_PER_REPLICA,
        f"{who} did not see the ping, but it may have reached another of the {replicas} "
        "replicas, which keep pings in memory and could not all be asked: set "
        "spec.receiver.redis so that every replica's pings count",
        ping_result="not_verified",
    )


def rotation_complete(memo: HealthMemo, last_rotation: datetime | None) -> bool:
    """A rotation is complete once a ping sent after it verified with the current secret."""
    if last_rotation is None:
        return True
    return memo.last_verified_sent_at is not None and memo.last_verified_sent_at >= last_rotation


def parse_pings(document: Any, source: str = STATIC_SOURCE) -> PingObservation | None:
    """The receiver's `/internal/pings` answer → the observation for `source`.

    Raises ValueError on a malformed answer (the message names what is wrong).
    """
    if not isinstance(document, dict) or not isinstance(document.get("pings"), dict):
        raise ValueError("ping status: expected an object with a 'pings' object")
    record = document["pings"].get(source)
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ValueError(f"ping status: pings.{source} is not an object")
    received = parse_rfc3339(record.get("received_at"))
    if received is None:
        raise ValueError(f"ping status: pings.{source}.received_at is not an RFC 3339 time")
    fingerprint = record.get("secret_fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ValueError(f"ping status: pings.{source}.secret_fingerprint is not a string")
    delivery_id = record.get("webhook_id")
    if delivery_id is not None and not isinstance(delivery_id, str):
        raise ValueError(f"ping status: pings.{source}.webhook_id is not a string")
    return PingObservation(received, fingerprint, delivery_id)


def ping_request(resource: Mapping[str, Any]) -> str | None:
    """The ping annotation's value, when status.lastPing does not answer it yet."""
    annotations = (resource.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION_PING_REQUESTED)
    handled = ((resource.get("status") or {}).get("lastPing") or {}).get("request")
    return None if value is None or str(value) == handled else str(value)


def ping_answer(
    request: str,
    verdict: Verdict,
    sent_at: datetime | None,
    verified_by: Mapping[str, PingObservation],
) -> dict[str, Any]:
    """status.lastPing for a requested ping (every key, so a merge patch leaves nothing of
    an earlier answer). Only fingerprints: the truncated secrets the receivers report."""
    return {
        "request": request,
        "sentAt": rfc3339(sent_at) if sent_at else None,
        "status": {True: "True", False: "False", None: "Unknown"}[verdict.status],
        "reason": verdict.reason,
        "message": verdict.message,
        "verifiedBy": [
            {
                "name": name,
                "receivedAt": rfc3339(seen.received_at),
                "secretFingerprint": seen.secret_fingerprint,
            }
            for name, seen in sorted(verified_by.items())
        ],
    }


# --- I/O -------------------------------------------------------------------------------


class ReceiverUnreachableError(Exception):
    """The receiver's ping status could not be read (message names why, never secrets)."""


Ping = Callable[[], Awaitable[Any]]
# The Pods of a resource's receiver (an empty list when they cannot be listed).
ReceiverPods = Callable[[Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]


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
        request_timeout: float = 5.0,
        cluster_domain: str = "cluster.local",
        proxies: ProxySettings = DIRECT,
        receiver_pods: ReceiverPods | None = None,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.retry_after = retry_after
        self.request_timeout = request_timeout
        self.cluster_domain = cluster_domain
        self.proxies = proxies
        self.receiver_pods = receiver_pods
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
    ) -> tuple[Verdict, datetime | None]:
        """Send one ping and wait for the verdict of the receivers at `urls` (the internal
        Service, or each ready pod); returns it and the send time. `seen` gets what each URL
        reported of this ping."""
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
            return verdict, None
        asked = "the receiver" if len(urls) == 1 else f"any of the {len(urls)} receiver pods"
        while True:
            observations = await self._observe_each(urls, errors, reached)
            now = self.clock()
            for url, observation, baseline in zip(urls, observations, baselines, strict=True):
                if seen is not None and observation is not None:
                    if is_new(observation, baseline, sent_at):
                        seen[url] = observation
            outcome = combine(
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
            if outcome is not None:
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
                return outcome, sent_at
            await asyncio.sleep(self.poll_interval)

    async def tick(
        self,
        resource: Mapping[str, Any],
        memo: HealthMemo,
        *,
        ping: Ping,
        current_fingerprint: str | None,
    ) -> Verdict | None:
        """One timer tick for one resource: the condition to report, or None (nothing new).

        `resource` is the GeminiWebhook (body); `current_fingerprint` is
        `truncate_secret(current secret)` of the Secret the operator holds.
        """
        metadata, spec = resource["metadata"], resource.get("spec") or {}
        status = resource.get("status") or {}
        namespace, name = metadata["namespace"], metadata["name"]
        try:
            health, receiver = health_check_spec(spec), receiver_spec(spec)
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
        urls = await self._urls(resource, receiver)
        verdict, sent_at = await self.check(
            urls=urls, ping=ping, current_fingerprint=current_fingerprint
        )
        verdict = per_replica_caveat(
            verdict,
            replicas=receiver.replicas,
            shared_pings=receiver.redis is not None,
            asked=len(urls),
        )
        if sent_at is not None:
            memo.last_sent_at = sent_at
            if verdict.verified:
                memo.last_verified_sent_at = sent_at
        self.record(namespace, name, verdict)
        return verdict

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
        self, resource: Mapping[str, Any], *, ping: Ping, current_fingerprint: str | None
    ) -> tuple[Verdict, datetime | None, dict[str, PingObservation]]:
        """One ping someone asked for (`kubectl gemini ping`), whatever spec.healthCheck
        says: the verdict, when it was sent, and each receiver that verified it (by name:
        the Pod where each keeps its own pings, else the internal Service)."""
        spec, status = resource.get("spec") or {}, resource.get("status") or {}
        try:
            receiver = receiver_spec(spec)
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
        seen: dict[str, PingObservation] = {}
        verdict, sent_at = await self.check(
            urls=list(targets.values()),
            ping=ping,
            current_fingerprint=current_fingerprint,
            seen=seen,
        )
        verdict = per_replica_caveat(
            verdict,
            replicas=receiver.replicas,
            shared_pings=receiver.redis is not None,
            asked=len(targets),
        )
        by_name = {name: seen[url] for name, url in targets.items() if url in seen}
        return verdict, sent_at, by_name

    def record(self, namespace: str, name: str, verdict: Verdict) -> None:
        if verdict.ping_result is not None:
            round_trip = (
                verdict.round_trip.total_seconds()
                if verdict.verified and verdict.round_trip is not None
                else None
            )
            self.metrics.observe_ping(verdict.ping_result, round_trip)
        self.metrics.webhooks.set_delivery_verified(namespace, name, verdict.status)
