"""Routing: a pure function from an event (type, source, user_metadata) to its targets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate
from typing import Any

from gemini_webhooks.contracts.receiver_config import (
    MatchConfig,
    ReceiverConfig,
    TargetConfig,
)


@dataclass(frozen=True)
class Decision:
    rule: str | None  # the rule's name, "default", or None when unroutable
    targets: tuple[TargetConfig, ...]

    @property
    def routable(self) -> bool:
        return bool(self.targets)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


@dataclass(frozen=True)
class _Rule:
    name: str
    types: tuple[re.Pattern[str], ...]
    sources: frozenset[str]
    metadata: tuple[tuple[str, re.Pattern[str]], ...]
    targets: tuple[TargetConfig, ...]

    @classmethod
    def build(cls, name: str, match: MatchConfig, targets: list[TargetConfig]) -> _Rule:
        return cls(
            name=name,
            types=tuple(_glob(t) for t in match.types),
            sources=frozenset(match.sources),
            metadata=tuple((k, _glob(v)) for k, v in match.user_metadata.items()),
            targets=tuple(targets),
        )

    def matches(self, event_type: str, source: str, user_metadata: dict[str, Any]) -> bool:
        if self.types and not any(p.match(event_type) for p in self.types):
            return False
        if self.sources and source not in self.sources:
            return False
        for key, pattern in self.metadata:
            value = user_metadata.get(key)
            if not isinstance(value, str) or not pattern.match(value):
                return False
        return True


class Router:
    """The compiled rules of one config; `route` is pure and allocation-light."""

    def __init__(self, config: ReceiverConfig) -> None:
        self._rules = tuple(_Rule.build(r.name, r.match, r.targets) for r in config.routes)
        default = config.default_route
        self._default = Decision("default", tuple(default.targets)) if default else None

    def route(self, event_type: str, source: str, user_metadata: Any) -> Decision:
        metadata = user_metadata if isinstance(user_metadata, dict) else {}
        for rule in self._rules:
            if rule.matches(event_type, source, metadata):
                return Decision(rule.name, rule.targets)
        return self._default or Decision(None, ())
