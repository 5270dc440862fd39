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
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from google import genai
from google.genai import types
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gemini_webhook_operator.diff import RemoteWebhook
from gemini_webhook_operator.metrics import CODE_TRANSPORT_ERROR, OperatorMetrics
from gemini_webhook_operator.rate_limiter import RateLimiter
from gemini_webhook_operator.webhookservice_errors import (
    AuthError,
    NotFound,
    QuotaExceeded,
    Unavailable,
    WebhookServiceError,
    classify,
)

T = TypeVar("T")

PAGE_SIZE = 1000
MAX_PAGES = 1000

logger = logging.getLogger(__name__)


def warm_up_sdk(resource: str = "webhooks") -> bool:
    """Loads the SDK's WebhookService `resource` now, through its public client, and tells
    whether it could.

    A client loads that resource's modules on its first `.webhooks` (google-genai 3.6: 384
    modules and some 290 pydantic models, 1.6-2.6 s on a shared 2-core machine), which
    would otherwise fall to a new leader right after it took the Lease (measured: most of the
    time between acquiring it and the first write). The operator calls this once at start,
    so a standby has paid it before it leads. The client is built with a key that is never
    sent (no call is made) and closed at once. Only an optimisation: whatever fails here
    costs the first real client that time, and is logged at debug, never raised."""
    try:
        with genai.Client(
            api_key="warm-up", http_options=types.HttpOptions(base_url="http://127.0.0.1:9")
        ) as client:
            getattr(client.aio, resource)
    except Exception as error:  # any failure of an optimisation only costs the optimisation
        logger.debug(
            "the SDK's %s resource was not loaded ahead (%s): the first client loads it",
            resource,
            type(error).__name__,
        )
        return False
    return True


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
        self._webhooks = self._client.aio.webhooks
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
