"""The WebhookService, wrapped: observe, create, update, delete, rotate, ping — over the
`google-genai` SDK, and nothing about Kubernetes (Crossplane's external-client shape).

- One `WebhookService` per (API key, base URL), shared by every resource that uses them:
  one SDK client, one rate limiter (which honours 429 and `Retry-After` for all of them),
  and one inventory — a paginated `webhooks.list`, refreshed at most once per drift
  interval, from which every resource observes its webhook. Steady state therefore costs
  ceil(webhooks / 1000) calls per interval, not one per resource.
- The inventory is written through: what this process creates, updates, rotates or deletes
  is reflected at once, so a stale list never makes it create a second webhook.
- SDK retries are off: a 429 pauses the shared limiter for `Retry-After`; other failures
  surface as typed errors whose `reason` becomes the condition reason.
- After a failure that leaves the remote state unknown (timeout, 5xx on a mutating call),
  the inventory is invalidated so the next observation sees what really happened.

Nothing here logs or raises secret material: API keys are only hashed into cache keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from google import genai
from google.genai import _interactions_errors as sdk_errors
from google.genai import types

# The SDK's WebhookService resource, which a client imports on its first `.webhooks` (some
# 380 modules and 290 pydantic models: 0.6-1.6 s on a shared 2-core machine). Imported with
# this module, a standby pays that when it starts, not the new leader after it took over
# (measured: most of the time between acquiring the Lease and the first write).
from google.genai._gaos.google_genai import AsyncGeminiNextGenWebhooks
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gemini_webhook_operator.diff import RemoteWebhook
from gemini_webhook_operator.metrics import CODE_TIMEOUT, CODE_TRANSPORT_ERROR, OperatorMetrics

T = TypeVar("T")

PAGE_SIZE = 1000
MAX_PAGES = 1000

# Condition reasons for WebhookService failures.
REASON_INVALID_API_KEY = "InvalidAPIKey"
REASON_PERMISSION_DENIED = "PermissionDenied"
REASON_QUOTA = "QuotaExceeded"
REASON_REMOTE_VALIDATION = "RemoteValidationError"
REASON_NOT_FOUND = "RemoteNotFound"
REASON_UNAVAILABLE = "RemoteUnavailable"


class WebhookServiceError(Exception):
    """A WebhookService call failed. `reason` is a condition reason; the message is safe to
    show (the remote's error message, never a secret or an API key)."""

    reason = REASON_UNAVAILABLE
    retryable = True

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AuthError(WebhookServiceError):
    reason = REASON_INVALID_API_KEY
    retryable = False


class PermissionDenied(AuthError):
    reason = REASON_PERMISSION_DENIED


class QuotaExceeded(WebhookServiceError):
    reason = REASON_QUOTA

    def __init__(self, message: str, *, retry_after: float, code: int | str | None = 429) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RemoteValidationError(WebhookServiceError):
    reason = REASON_REMOTE_VALIDATION
    retryable = False


class NotFound(WebhookServiceError):
    reason = REASON_NOT_FOUND
    retryable = False


class Unavailable(WebhookServiceError):
    reason = REASON_UNAVAILABLE


def _retry_after_seconds(response: Any, default: float) -> float:
    if response is None:
        return default
    header = response.headers.get("retry-after")
    if not header:
        return default
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default
    return max(0.0, moment.timestamp() - time.time())


def _remote_message(error: sdk_errors.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
    return f"HTTP {error.status_code}"


def classify(error: BaseException, *, quota_default: float = 5.0) -> WebhookServiceError:
    """Map an SDK or transport exception to our typed errors."""
    if isinstance(error, WebhookServiceError):
        return error
    if isinstance(error, sdk_errors.APIStatusError):
        status = error.status_code
        message = _remote_message(error)
        if status == 401:
            return AuthError(f"the API key was rejected: {message}", code=status)
        if status == 403:
            return PermissionDenied(f"the API key may not do this: {message}", code=status)
        if status == 429:
            retry = _retry_after_seconds(error.response, quota_default)
            return QuotaExceeded(f"quota exceeded: {message}", retry_after=retry, code=status)
        if status == 404:
            return NotFound(message, code=status)
        if status in (400, 409, 422):
            return RemoteValidationError(message, code=status)
        return Unavailable(f"the WebhookService answered {status}: {message}", code=status)
    if isinstance(error, sdk_errors.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return Unavailable("the WebhookService did not answer in time", code=CODE_TIMEOUT)
    if isinstance(error, sdk_errors.APIConnectionError | httpx.TransportError | OSError):
        return Unavailable("the WebhookService could not be reached", code=CODE_TRANSPORT_ERROR)
    return Unavailable(f"unexpected WebhookService failure ({type(error).__name__})")


class RateLimiter:
    """A token bucket shared by every caller of one WebhookService, paused by 429s."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Stop every caller for `seconds` (a 429's Retry-After)."""
        self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._monotonic())

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._monotonic()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await self._sleep((1 - self._tokens) / self.rate)


def to_remote(webhook: Any) -> RemoteWebhook:
    """An SDK `Webhook` as our observation (the one-time secret is not copied)."""
    secrets = list(getattr(webhook, "signing_secrets", None) or [])
    return RemoteWebhook(
        id=str(webhook.id),
        name=webhook.name,
        uri=webhook.uri,
        subscribed_events=tuple(str(e) for e in (webhook.subscribed_events or ())),
        state=str(webhook.state) if webhook.state is not None else None,
        # Every entry, "" for one without truncated_secret: it makes the list unreadable.
        truncated_secrets=tuple(str(s.truncated_secret or "") for s in secrets),
        secret_expiries=tuple(_aware(s.expire_time) for s in secrets),
    )


def _aware(value: Any) -> datetime | None:
    """An expiry as an aware datetime (a zone-less one is UTC, as the API's times are);
    anything else is no expiry."""
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass
class _Inventory:
    webhooks: dict[str, RemoteWebhook] = field(default_factory=dict)
    fetched_at: float | None = None  # monotonic
    refreshing: asyncio.Future[dict[str, RemoteWebhook]] | None = None
    # The last failed listing: during an outage every resource's retry would list again;
    # instead they share this failure for a few seconds.
    failed: tuple[float, WebhookServiceError] | None = None


@dataclass(frozen=True)
class ServiceSettings:
    timeout_seconds: float = 10.0
    rate: float = 20.0  # calls per second per API key, sustained
    burst: int = 40
    auth_backoff_seconds: float = 300.0  # no call with a rejected key for this long
    failure_reuse_seconds: float = 5.0  # a failed listing answers everyone for this long


class WebhookService:
    """The WebhookService for one API key and base URL."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        *,
        metrics: OperatorMetrics,
        settings: ServiceSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        guard: Callable[[str], None] | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.settings = settings or ServiceSettings()
        self._tracer = tracer or trace.get_tracer("gemini_webhook_operator")
        # Called before every call; raises to refuse it (the leader fence).
        self._guard = guard
        self.base_url = base_url
        self._metrics = metrics
        self._monotonic = monotonic
        options = types.HttpOptions(
            base_url=base_url,
            timeout=int(self.settings.timeout_seconds * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=api_key, http_options=options)
        self._webhooks: AsyncGeminiNextGenWebhooks = self._client.aio.webhooks
        self.limiter = RateLimiter(self.settings.rate, self.settings.burst, monotonic=monotonic)
        self._inventory = _Inventory()
        self._auth_failure: tuple[float, AuthError] | None = None

    def __repr__(self) -> str:  # the API key stays out of logs
        return f"WebhookService(base_url={self.base_url!r})"

    async def _call(self, method: str, call: Callable[[], Awaitable[T]], *, mutating: bool) -> T:
        # A span per call, named by the method only: never the key, an id's secret or a body.
        with self._tracer.start_as_current_span(
            f"WebhookService {method}",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "gemini", "rpc.method": method},
            record_exception=False,  # a message from the API is not ours to export
            set_status_on_exception=False,
        ) as span:
            try:
                return await self._call_unspanned(method, call, mutating=mutating)
            except Exception as error:
                if isinstance(error, WebhookServiceError) and error.code is not None:
                    span.set_attribute("gemini.api.code", str(error.code))
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise

    async def _call_unspanned(
        self, method: str, call: Callable[[], Awaitable[T]], *, mutating: bool
    ) -> T:
        if self._guard is not None:
            self._guard(f"WebhookService {method}")
        if self._auth_failure is not None:
            failed_at, auth_error = self._auth_failure
            if self._monotonic() - failed_at < self.settings.auth_backoff_seconds:
                raise auth_error
            self._auth_failure = None
        await self.limiter.acquire()
        if self._guard is not None:  # the wait for the rate limiter may have been long
            self._guard(f"WebhookService {method}")
        started = time.perf_counter()
        code: int | str = 200
        try:
            return await call()
        except Exception as raw:
            error = classify(raw)
            code = error.code if error.code is not None else CODE_TRANSPORT_ERROR
            if isinstance(error, QuotaExceeded):
                self.limiter.pause(error.retry_after)
            elif isinstance(error, AuthError):
                self._auth_failure = (self._monotonic(), error)
            elif isinstance(error, Unavailable) and mutating:
                self.invalidate()
            raise error from None
        finally:
            self._metrics.observe_api_call(method, code, time.perf_counter() - started)

    # -- inventory -----------------------------------------------------------------------

    def invalidate(self) -> None:
        self._inventory.fetched_at = None
        self._inventory.failed = None

    def remember(self, remote: RemoteWebhook) -> None:
        self._inventory.webhooks[remote.id] = remote

    def forget(self, webhook_id: str) -> None:
        self._inventory.webhooks.pop(webhook_id, None)

    async def _list_all(self) -> dict[str, RemoteWebhook]:
        found: dict[str, RemoteWebhook] = {}
        token: str | None = None
        for _ in range(MAX_PAGES):
            page_token = token

            async def one_page(page_token: str | None = page_token) -> Any:
                return await self._webhooks.list(page_size=PAGE_SIZE, page_token=page_token)

            page = await self._call("list", one_page, mutating=False)
            for webhook in page.webhooks or ():
                remote = to_remote(webhook)
                found[remote.id] = remote
            token = page.next_page_token or None
            if not token:
                return found
        raise Unavailable(f"webhooks.list returned more than {MAX_PAGES} pages")

    async def inventory(self, max_age: float) -> dict[str, RemoteWebhook]:
        """Every remote webhook of this key, listed at most once per `max_age` seconds.

        Concurrent callers share one listing (single flight)."""
        inv = self._inventory
        if inv.fetched_at is not None and self._monotonic() - inv.fetched_at < max_age:
            return inv.webhooks
        if inv.refreshing is not None:
            return await asyncio.shield(inv.refreshing)
        if inv.failed is not None:
            failed_at, failure = inv.failed
            if self._monotonic() - failed_at < min(max_age, self.settings.failure_reuse_seconds):
                raise failure.with_traceback(None)  # shared: don't grow one traceback per caller
            inv.failed = None
        future: asyncio.Future[dict[str, RemoteWebhook]] = (
            asyncio.get_running_loop().create_future()
        )
        inv.refreshing = future
        started = self._monotonic()
        try:
            listed = await self._list_all()
        except BaseException as error:
            if isinstance(error, WebhookServiceError):
                inv.failed = (self._monotonic(), error)
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it twice
            raise
        else:
            inv.webhooks = listed
            inv.fetched_at = started
            future.set_result(listed)
            return listed
        finally:
            inv.refreshing = None

    async def find(self, webhook_id: str, max_age: float) -> RemoteWebhook | None:
        return (await self.inventory(max_age)).get(webhook_id)

    async def find_by_marker(
        self, matches: Callable[[RemoteWebhook], bool], max_age: float
    ) -> list[RemoteWebhook]:
        return [w for w in (await self.inventory(max_age)).values() if matches(w)]

    # -- calls ---------------------------------------------------------------------------

    async def get(self, webhook_id: str) -> RemoteWebhook:
        webhook = await self._call("get", lambda: self._webhooks.get(id=webhook_id), mutating=False)
        remote = to_remote(webhook)
        self.remember(remote)
        return remote

    async def create(
        self, name: str, uri: str, events: tuple[str, ...]
    ) -> tuple[RemoteWebhook, str | None]:
        """Create a webhook; returns it and its one-time signing secret."""
        webhook = await self._call(
            "create",
            lambda: self._webhooks.create(
                name=name,
                uri=uri,
                subscribed_events=list(events),  # type: ignore[arg-type]
            ),
            mutating=True,
        )
        remote = to_remote(webhook)
        self.remember(remote)
        return remote, webhook.new_signing_secret

    async def update(self, webhook_id: str, fields: dict[str, Any]) -> RemoteWebhook:
        mask = ",".join(sorted(fields))
        try:
            webhook = await self._call(
                "update",
                lambda: self._webhooks.update(id=webhook_id, update_mask=mask, **fields),
                mutating=True,
            )
        except NotFound:
            self.forget(webhook_id)
            raise
        remote = to_remote(webhook)
        self.remember(remote)
        return remote

    async def delete(self, webhook_id: str) -> None:
        try:
            await self._call("delete", lambda: self._webhooks.delete(id=webhook_id), mutating=True)
        except NotFound:
            pass
        self.forget(webhook_id)

    async def rotate(self, webhook_id: str, revocation_behavior: str) -> str:
        """Rotate the signing secret; returns the new one (shown only this once)."""
        try:
            result = await self._call(
                "rotate_signing_secret",
                lambda: self._webhooks.rotate_signing_secret(
                    id=webhook_id,
                    revocation_behavior=revocation_behavior,  # type: ignore[arg-type]
                ),
                mutating=True,
            )
        except NotFound:
            self.forget(webhook_id)
            raise
        secret = getattr(result, "secret", None)
        if not isinstance(secret, str) or not secret:
            self.invalidate()
            raise Unavailable("the rotation answer carried no secret")
        return secret

    async def ping(self, webhook_id: str) -> None:
        await self._call("ping", lambda: self._webhooks.ping(id=webhook_id), mutating=False)

    async def close(self) -> None:
        try:
            await self._client.aio.aclose()
        except Exception:  # noqa: S110 - closing is best effort at shutdown
            pass


class WebhookServices:
    """One WebhookService per (API key, base URL), created on first use."""

    def __init__(
        self,
        metrics: OperatorMetrics,
        settings: ServiceSettings | None = None,
        *,
        default_base_url: str | None = None,
        guard: Callable[[str], None] | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self._settings = settings or ServiceSettings()
        self.default_base_url = default_base_url
        self.guard = guard
        self._services: dict[tuple[str, str | None], WebhookService] = {}

    def for_key(self, api_key: str, base_url: str | None) -> WebhookService:
        base = base_url or self.default_base_url
        key = (hashlib.sha256(api_key.encode()).hexdigest(), base)
        service = self._services.get(key)
        if service is None:
            service = WebhookService(
                api_key,
                base,
                metrics=self._metrics,
                settings=self._settings,
                guard=self.guard,
                tracer=self._tracer,
            )
            self._services[key] = service
        return service

    async def close(self) -> None:
        for service in self._services.values():
            await service.close()
        self._services.clear()
