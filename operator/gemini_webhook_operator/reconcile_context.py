"""What every reconciliation shares: the operator's parts (kept in kopf's memo), its
settings and clock, the step hook, and a resource's claim on a remote webhook."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry import trace

from gemini_webhook_operator import receiver_resources
from gemini_webhook_operator.kube import Kube
from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.own_writes import OwnWrites
from gemini_webhook_operator.webhookservice import WebhookServices


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# Awaited at each of `reconciler.STEPS`.
StepHook = Callable[[str], Awaitable[None]]


async def _no_step(step: str) -> None:
    return None


@dataclass(frozen=True)
class Claim:
    """A resource's claim on a remote webhook ID (from the kopf index)."""

    uid: str
    namespace: str
    name: str
    created: str


DEFAULT_MAX_CONCURRENT_RECONCILES = 200


@dataclass
class Settings:
    drift_interval: float = 300.0
    api_key_retry: float = 60.0
    auth_retry: float = 300.0
    error_backoff: float = 10.0
    heal_interval: float = 3600.0  # at most one healing rotation per resource this often
    admission_poll: float = 5.0  # while an exposed route waits for its controller
    # Reconciliations (create, update, resume, drift) running at once; more wait for a slot
    # (controller-runtime's MaxConcurrentReconciles). A thousand resources arriving together
    # otherwise all hold their requests and responses at the same time: bench/operator
    # --kube real, 1,000 resources, peak RSS 195-202 -> 192-196 MiB at 200 slots, Ready as fast.
    max_concurrent_reconciles: int = DEFAULT_MAX_CONCURRENT_RECONCILES


TRACER_NAME = "gemini_webhook_operator"


@dataclass
class Operator:
    """Everything a reconciliation needs (kept in kopf's memo)."""

    kube: Kube
    services: WebhookServices
    metrics: OperatorMetrics
    clock: Clock = field(default_factory=SystemClock)
    settings: Settings = field(default_factory=Settings)
    receiver_settings: receiver_resources.ReceiverSettings = field(
        default_factory=receiver_resources.ReceiverSettings
    )
    step: StepHook = _no_step  # awaited at each of reconciler.STEPS; cli.run(step=...) sets it
    # Spans of each reconciliation: the global provider's (a no-op one unless the OTEL_*
    # environment turned tracing on, `gemini_webhooks.tracing`).
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer(TRACER_NAME))
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Each resource as our newest write left it, until kopf's watch has delivered it.
    own_writes: OwnWrites = field(default_factory=OwnWrites)
    reconcile_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.reconcile_slots = asyncio.Semaphore(self.settings.max_concurrent_reconciles)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())
