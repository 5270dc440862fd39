"""The WebhookService wrapper on its own: error classification, the shared rate limiter
honouring Retry-After, and one shared inventory listing for concurrent observers."""

from __future__ import annotations

import ast
import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest

from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.rate_limiter import RateLimiter
from gemini_webhook_operator.webhookservice import (
    ServiceSettings,
    WebhookService,
    WebhookServices,
    warm_up_sdk,
)
from gemini_webhook_operator.webhookservice_errors import (
    AuthError,
    PermissionDenied,
    QuotaExceeded,
    RemoteValidationError,
    Unavailable,
)
from tests.operator.api_proxy import FaultProxy


def _new_sdk_modules_of_a_first_client(prepare: str) -> list[str]:
    """The `google.genai` modules a first WebhookService client imports, in a fresh process
    that ran `prepare` before."""
    probe = (
        "import sys\n"
        "from gemini_webhook_operator.metrics import OperatorMetrics\n"
        "from gemini_webhook_operator.webhookservice import WebhookServices\n"
        f"{prepare}\n"
        "before = set(sys.modules)\n"
        "WebhookServices(OperatorMetrics()).for_key('key', 'http://127.0.0.1:9')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('google.genai')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return list(ast.literal_eval(out.stdout.strip()))


def test_a_first_client_imports_nothing_of_the_sdks_webhook_service() -> None:
    """The SDK imports its WebhookService models (1.6-2.6 s here) on a client's first
    `.webhooks`; the operator's process loads them when it starts (`cli.prepare_process`,
    before it elects), so a standby pays that at start and a new leader's first client,
    right after taking the Lease, does not."""
    prepared = _new_sdk_modules_of_a_first_client(
        "from gemini_webhook_operator import cli; cli.prepare_process()"
    )
    assert prepared == [], prepared[:50]
    # What the warm-up saves: without it, the first client imports them.
    unprepared = _new_sdk_modules_of_a_first_client("pass")
    assert any(".webhooks" in m for m in unprepared), unprepared[:50]


def test_the_sdk_warm_up_loads_the_webhooks_resource_through_the_public_client() -> None:
    probe = (
        "import sys\n"
        "from gemini_webhook_operator.webhookservice import warm_up_sdk\n"
        "before = set(sys.modules)\n"
        "print(warm_up_sdk(), len([m for m in set(sys.modules) - before if '.webhooks' in m]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded, webhooks_modules = out.stdout.split()
    assert loaded == "True"
    assert int(webhooks_modules) > 0


def test_a_warm_up_that_cannot_load_the_resource_costs_only_the_warm_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An SDK release without the resource (a name that does not exist stands in for it):
    no exception, one debug line that names what failed, and nothing of the key."""
    with caplog.at_level(logging.DEBUG, logger="gemini_webhook_operator.webhookservice"):
        assert warm_up_sdk("no_such_resource") is False
    lines = [r for r in caplog.records if r.name == "gemini_webhook_operator.webhookservice"]
    assert [r.levelno for r in lines] == [logging.DEBUG]
    assert "no_such_resource" in lines[0].getMessage()
    assert "AttributeError" in lines[0].getMessage()
    assert "warm-up" not in lines[0].getMessage()


class FakeTime:
    """Test double for monotonic time and sleep: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_limiter_lets_a_burst_through_then_paces() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10.0, 3, monotonic=fake.monotonic, sleep=fake.sleep)
    for _ in range(3):
        await limiter.acquire()
    assert fake.slept == []
    await limiter.acquire()
    assert fake.slept == [pytest.approx(0.1)]


async def test_limiter_pause_holds_every_caller_for_retry_after() -> None:
    fake = FakeTime()
    limiter = RateLimiter(100.0, 10, monotonic=fake.monotonic, sleep=fake.sleep)
    limiter.pause(7.0)
    await limiter.acquire()
    assert sum(fake.slept) == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthError),
        (403, PermissionDenied),
        (400, RemoteValidationError),
        (500, Unavailable),
        (503, Unavailable),
    ],
)
async def test_http_errors_become_typed_errors(
    emulator: Any, api_proxy: FaultProxy, status: int, kind: type
) -> None:
    api_proxy.fail(status, count=1)
    service = WebhookService(emulator.api_key, api_proxy.url, metrics=OperatorMetrics())
    with pytest.raises(kind) as raised:
        await service.get("anything")
    assert emulator.api_key not in str(raised.value)
    await service.close()


async def test_429_carries_retry_after_and_pauses_the_limiter(
    emulator: Any, api_proxy: FaultProxy
) -> None:
    api_proxy.fail(429, count=1, retry_after=3)
    service = WebhookService(emulator.api_key, api_proxy.url, metrics=OperatorMetrics())
    with pytest.raises(QuotaExceeded) as raised:
        await service.get("anything")
    assert raised.value.retry_after == 3
    assert service.limiter.paused_for > 2
    await service.close()


async def test_a_rejected_key_is_not_retried_until_the_backoff_ends(
    emulator: Any, api_proxy: FaultProxy
) -> None:
    service = WebhookService("wrong-key", api_proxy.url, metrics=OperatorMetrics())
    for _ in range(3):
        with pytest.raises(AuthError):
            await service.inventory(max_age=0)
    assert len(api_proxy.calls()) == 1
    await service.close()


async def test_concurrent_observers_share_one_listing(emulator: Any, api_proxy: FaultProxy) -> None:
    client = emulator.client()
    for index in range(3):
        client.webhooks.create(
            name=f"w{index}", uri="https://x.example.com/", subscribed_events=["batch.failed"]
        )
    services = WebhookServices(OperatorMetrics())
    service = services.for_key(emulator.api_key, api_proxy.url)
    assert services.for_key(emulator.api_key, api_proxy.url) is service
    results = await asyncio.gather(*(service.inventory(max_age=60) for _ in range(50)))
    assert all(len(r) == 3 for r in results)
    assert len(api_proxy.calls("GET")) == 1
    await service.inventory(max_age=60)
    assert len(api_proxy.calls("GET")) == 1
    await services.close()


async def test_created_webhook_is_in_the_inventory_without_a_new_listing(
    emulator: Any, api_proxy: FaultProxy
) -> None:
    service = WebhookService(emulator.api_key, api_proxy.url, metrics=OperatorMetrics())
    await service.inventory(max_age=60)
    created, secret = await service.create("n", "https://x.example.com/", ("batch.failed",))
    assert secret is not None and secret.startswith("whsec_")
    assert (await service.find(created.id, max_age=60)) == created
    assert len(api_proxy.calls("GET")) == 1
    await service.close()


async def test_a_failed_listing_is_shared_for_a_few_seconds_not_repeated_per_caller(
    emulator: Any, api_proxy: FaultProxy
) -> None:
    fake = FakeTime()
    api_proxy.fail(503, count=1)
    service = WebhookService(
        emulator.api_key,
        api_proxy.url,
        metrics=OperatorMetrics(),
        settings=ServiceSettings(failure_reuse_seconds=5.0),
        monotonic=fake.monotonic,
    )
    for _ in range(20):
        with pytest.raises(Unavailable):
            await service.inventory(max_age=60)
        fake.now += 0.2  # 4 s in all: still inside the window
    assert len(api_proxy.calls()) == 1
    fake.now += 1.5  # the window ends: the next caller lists again (and succeeds)
    assert await service.inventory(max_age=60) == {}
    assert len(api_proxy.calls()) == 2
    await service.close()


async def test_a_shared_failure_is_dropped_when_the_inventory_is_invalidated(
    emulator: Any, api_proxy: FaultProxy
) -> None:
    fake = FakeTime()
    api_proxy.fail(500, count=1)
    service = WebhookService(
        emulator.api_key, api_proxy.url, metrics=OperatorMetrics(), monotonic=fake.monotonic
    )
    with pytest.raises(Unavailable):
        await service.inventory(max_age=60)
    service.invalidate()  # as after an ambiguous write: the next observation must list
    assert await service.inventory(max_age=60) == {}
    assert len(api_proxy.calls()) == 2
    await service.close()


async def test_the_shared_failure_window_never_outlasts_max_age(
    emulator: Any, api_proxy: FaultProxy
) -> None:
    fake = FakeTime()
    api_proxy.fail(500, count=1)
    service = WebhookService(
        emulator.api_key, api_proxy.url, metrics=OperatorMetrics(), monotonic=fake.monotonic
    )
    with pytest.raises(Unavailable):
        await service.inventory(max_age=1.0)
    fake.now += 1.0
    assert await service.inventory(max_age=1.0) == {}
    assert len(api_proxy.calls()) == 2
    await service.close()


def test_an_observed_webhook_keeps_every_signing_secret_entry_as_reported() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from gemini_webhook_operator.webhookservice import to_remote

    entries = [
        SimpleNamespace(truncated_secret="whsec_abcd...wxyz", expire_time=None),
        SimpleNamespace(truncated_secret=None, expire_time=datetime(2026, 1, 2)),  # zone-less
        SimpleNamespace(truncated_secret="whsec_********", expire_time="not a time"),
    ]
    webhook = SimpleNamespace(
        id="wh1",
        name="n",
        uri="https://x.example/",
        subscribed_events=[],
        state="enabled",
        signing_secrets=entries,
    )
    remote = to_remote(webhook)
    # An entry without truncated_secret stays (as ""): it makes the list unreadable.
    assert remote.truncated_secrets == ("whsec_abcd...wxyz", "", "whsec_********")
    assert remote.secret_expiries == (None, datetime(2026, 1, 2, tzinfo=UTC), None)
    absent = to_remote(SimpleNamespace(**{**vars(webhook), "signing_secrets": None}))
    assert absent.truncated_secrets == () and absent.secret_expiries == ()
