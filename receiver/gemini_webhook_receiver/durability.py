"""May the receiver acknowledge an event once Redis took it? Only if Redis keeps it.

An event answered 2xx is never sent again by Gemini, so in Redis mode the answer promises
that the event survives a Redis crash. That holds when the server appends every write to
its AOF (`appendonly yes`) and the file is flushed at least every second (`appendfsync
everysec`, or `always`): a killed process then loses nothing it replied to (the write
reached the file before the reply), a crashed machine at most the last second with
`everysec`, nothing with `always`.

The decision is a chain of small pure checks `(settings) -> (reason, message) | None`; the
first that fires names the reason that logs, `/readyz` and the metric carry. `DurabilityGate`
is the state at the edge: it is fed each new connection's settings and says whether
acknowledging is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from . import metrics
from .logs import log

Settings = Mapping[str, str]  # CONFIG GET's answer; None where the server refused CONFIG

DURABLE = "durable"
UNVERIFIED = "unverified"  # no connection has reported its settings yet
SETTINGS_UNREADABLE = "settings_unreadable"
AOF_OFF = "aof_off"
FSYNC_NEVER = "fsync_never"

State = Literal["durable", "at_risk", "refused"]
STATES: tuple[State, ...] = ("durable", "at_risk", "refused")

_NEEDED = "set `appendonly yes` with `appendfsync everysec` (or `always`)"


@dataclass(frozen=True)
class Verdict:
    reason: str
    message: str

    @property
    def durable(self) -> bool:
        return self.reason == DURABLE


def _unreadable(settings: Settings | None) -> tuple[str, str] | None:
    if settings is None:
        return (
            SETTINGS_UNREADABLE,
            "the Redis server refused CONFIG GET, so its persistence cannot be verified; "
            f"{_NEEDED}, allow CONFIG GET, or set redis.accept_data_loss_risk",
        )
    return None


def _aof_off(settings: Settings | None) -> tuple[str, str] | None:
    if settings is not None and settings.get("appendonly", "no").lower() != "yes":
        return (
            AOF_OFF,
            "the Redis server has appendonly off: events acknowledged to Gemini would be "
            f"lost if Redis crashed; {_NEEDED}, or set redis.accept_data_loss_risk",
        )
    return None


def _fsync_never(settings: Settings | None) -> tuple[str, str] | None:
    if settings is not None and settings.get("appendfsync", "").lower() not in (
        "everysec",
        "always",
    ):
        value = settings.get("appendfsync", "(unset)")
        return (
            FSYNC_NEVER,
            f"the Redis server has appendfsync {value}: the operating system decides when "
            "acknowledged events reach the disk; "
            f"{_NEEDED}, or set redis.accept_data_loss_risk",
        )
    return None


CHECKS: tuple[Callable[[Settings | None], tuple[str, str] | None], ...] = (
    _unreadable,
    _aof_off,
    _fsync_never,
)


def persistence_verdict(settings: Settings | None) -> Verdict:
    """The first check that fires, or `durable`."""
    for check in CHECKS:
        fired = check(settings)
        if fired is not None:
            return Verdict(*fired)
    assert settings is not None
    return Verdict(
        DURABLE,
        f"appendonly yes, appendfsync {settings['appendfsync'].lower()}",
    )


def decide(verdict: Verdict, risk_accepted: bool) -> State:
    if verdict.durable:
        return "durable"
    return "at_risk" if risk_accepted else "refused"


def settings_from_reply(reply: object) -> dict[str, str]:
    """CONFIG GET's reply (a flat list in RESP2, a map in RESP3) as a dict of strings."""
    if isinstance(reply, dict):
        items = list(reply.items())
    elif isinstance(reply, list | tuple):
        items = list(zip(reply[::2], reply[1::2], strict=True))
    else:
        raise ValueError(f"unexpected CONFIG GET reply of type {type(reply).__name__}")

    def text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k).lower(): text(v) for k, v in items}


class DurabilityGate:
    """The latest verdict on the Redis server, and what it allows."""

    def __init__(self, risk_accepted: bool) -> None:
        self.risk_accepted = risk_accepted
        self.verdict = Verdict(UNVERIFIED, "no connection to Redis has been checked yet")
        self.state: State = decide(self.verdict, risk_accepted)
        self._publish()

    @property
    def allows_acknowledging(self) -> bool:
        return self.state != "refused"

    def observe(self, settings: Settings | None) -> None:
        """A new connection's persistence settings (None: CONFIG GET was refused)."""
        verdict = persistence_verdict(settings)
        state = decide(verdict, self.risk_accepted)
        changed = verdict != self.verdict
        self.verdict, self.state = verdict, state
        self._publish()
        if not changed:
            return
        if state == "durable":
            log(20, "redis persistence verified", reason=verdict.reason, detail=verdict.message)
        elif state == "at_risk":
            log(
                30,
                "redis is not durable; running because the risk is accepted",
                reason=verdict.reason,
                detail=verdict.message,
            )
        else:
            log(
                40,
                "redis is not durable; not acknowledging events",
                reason=verdict.reason,
                detail=verdict.message,
            )

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "reason": self.verdict.reason,
            "message": self.verdict.message,
            "risk_accepted": self.risk_accepted,
        }

    def _publish(self) -> None:
        for state in STATES:
            metrics.redis_durability.labels(state).set(1 if state == self.state else 0)
