"""Replaying dead letters (Redis mode): the one contract between `kubectl gemini replay`,
which runs the command in a receiver Pod, and `gemini-webhooks receiver replay`, which
moves them — the command line, what `--since` accepts, and the JSON it prints.

`--since T` selects the dead letters dead-lettered at or after T: an RFC 3339 time with its
zone (`2026-12-06T18:00:00Z`) or a duration back from now (`90s`, `15m`, `2h`, `7d`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from gemini_webhooks.contracts.times import parse_rfc3339, rfc3339

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COUNT_KEY = "replayed"  # the JSON's one field: how many dead letters were moved


class SinceError(ValueError):
    """`--since` names no time; the message says what it accepts."""


def parse_since(text: str, now: float) -> float:
    """The time (seconds since the epoch) `text` names, a duration counting back from
    `now`; SinceError otherwise."""
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration:
        return now - float(duration[1]) * _UNITS[duration[2]]
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise SinceError(
            f"--since {text!r}: expected an RFC 3339 time with its zone "
            "(2026-12-06T18:00:00Z) or a duration (90s, 15m, 2h, 7d)"
        )
    return parsed.timestamp()


def since_text(when: float) -> str:
    """`when` as `--since` takes it (RFC 3339, UTC, milliseconds: the dead-letter stream's
    resolution)."""
    return rfc3339(datetime.fromtimestamp(when, UTC), "milliseconds")


def command(config_path: str, since: float | None, ids: Sequence[str]) -> list[str]:
    """The receiver's replay command (the image's entrypoint first), printing JSON."""
    argv = ["gemini-webhooks", "receiver", "replay", "--config", config_path, "--output", "json"]
    if since is not None:
        argv += ["--since", since_text(since)]
    for webhook_id in ids:
        argv += ["--id", webhook_id]
    return argv


def output(replayed: int) -> str:
    return json.dumps({COUNT_KEY: replayed})


def replayed_count(printed: str) -> int:
    """How many the command's JSON (its last line) says it moved; ValueError otherwise."""
    lines = printed.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except ValueError:
        found = None
    count = found.get(COUNT_KEY) if isinstance(found, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"the replay printed no count: {printed.strip()[-200:]!r}")
    return count
