"""Getting an accepted event to its targets: retries with backoff, fan-out, dead-lettering.

Shared by both modes: inline (no Redis; the answer to Gemini waits for this) and the Redis
consumer (the answer was already sent; this runs from the stream).
"""

from __future__ import annotations

import asyncio
import time

from gemini_webhooks.contracts.egress_proxy import DIRECT, ProxySettings
from gemini_webhooks.contracts.receiver_config import ForwardingConfig, ReceiverConfig, TargetConfig

from .forwarding import Event, Forwarder, Target, resolve
from .logs import log
from .metrics import FORWARD_OK
from .routing import Router


def backoff(config: ForwardingConfig, attempt: int) -> float:
    """Delay before retry number `attempt` (1-based)."""
    delay = config.backoff_initial_seconds * config.backoff_multiplier ** max(attempt - 1, 0)
    return float(min(delay, config.backoff_max_seconds))


class Targets:
    """Routes events and resolves their targets once per target (not per event): a
    Service's URL by cluster DNS, and the proxy (from the proxy variables read when the
    config was loaded) each target goes through."""

    def __init__(self, config: ReceiverConfig, proxies: ProxySettings = DIRECT) -> None:
        self._config = config
        self._proxies = proxies
        self.router = Router(config)
        self._resolved: dict[int, Target] = {}
        self._keep: list[TargetConfig] = []  # keeps the ids used as keys alive
        dead = config.dead_letter.target
        self._dead_letter = dead

    def resolve(self, target: TargetConfig) -> Target:
        found = self._resolved.get(id(target))
        if found is None:
            found = resolve(target, self._config.cluster_domain, self._proxies)
            self._resolved[id(target)] = found
            self._keep.append(target)
        return found

    @property
    def dead_letter(self) -> Target | None:
        return self.resolve(self._dead_letter) if self._dead_letter is not None else None

    def for_event(self, event: Event, user_metadata: object) -> tuple[str | None, list[Target]]:
        decision = self.router.route(event.event_type, event.source, user_metadata)
        return decision.rule, [self.resolve(t) for t in decision.targets]


async def deliver_once(
    forwarder: Forwarder, event: Event, targets: list[Target], attempt_seconds: float
) -> list[Target]:
    """One attempt at every target, concurrently; returns the targets that failed."""
    if len(targets) == 1:
        outcome = await forwarder.forward(event, targets[0], attempt_seconds)
        return [] if outcome == FORWARD_OK else targets
    outcomes = await asyncio.gather(
        *(forwarder.forward(event, t, attempt_seconds) for t in targets)
    )
    return [t for t, o in zip(targets, outcomes, strict=True) if o != FORWARD_OK]


async def deliver_inline(
    forwarder: Forwarder,
    config: ForwardingConfig,
    event: Event,
    targets: list[Target],
) -> bool:
    """Deliver within the inline deadline, retrying; True when every target took it."""
    pending = targets
    deadline = time.monotonic() + config.inline_deadline_seconds
    for attempt in range(1, config.inline_attempts + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # One timer per attempt, bounded by what is left of the deadline.
        pending = await deliver_once(forwarder, event, pending, min(config.timeout_seconds, left))
        if not pending:
            return True
        pause = backoff(config, attempt)
        if attempt == config.inline_attempts or time.monotonic() + pause >= deadline:
            break
        await asyncio.sleep(pause)
    log(
        30,
        "inline delivery failed; answering 503 so Gemini retries",
        webhook_id=event.msg_id,
        failed_targets=[t.name for t in pending],
    )
    return False
