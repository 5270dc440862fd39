"""Read your own writes: never decide on a copy of a GeminiWebhook older than what this
operator last wrote to it.

kopf's watch delivers our writes a moment after they are made, so the copy a handler is
handed (kopf's body for a change, the `drift_bodies` index for a drift or health tick) can
predate them; reconciled from such a copy, a drift check would undo what the last
reconciliation settled — for one, make a requested rotation twice, its rotate annotation
not yet gone from the copy. So the operator keeps each resource as its newest write stored
it (the API server's answer, the whole object), until the watch has delivered a copy at
least as new, and decides on whichever is newer. Nothing is skipped and nothing is read
again.

resourceVersions compare as `watch_cache.newer` compares them: as the increasing integers
etcd (and the API sandbox) give; with versions that are not integers, the copy handed over
is taken as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gemini_webhook_operator.watch_cache import compact, newer


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _version(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


class OwnWrites:
    """Per resource uid, the resource as our newest write left it, until a copy at least
    as new has been seen."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def wrote(self, stored: Mapping[str, Any] | None) -> None:
        """Our write left the resource as `stored` (None: nothing written, or it is gone)."""
        if not stored or not (uid := _uid(stored)):
            return
        held = self._held.get(uid)
        if held is None or newer(_version(stored), _version(held)):
            self._held[uid] = compact(dict(stored))

    def seen(self, copy: Mapping[str, Any]) -> None:
        """kopf's watch delivered `copy`: once it is as new as our write, that write is no
        longer kept."""
        uid = _uid(copy)
        held = self._held.get(uid)
        if held is not None and newer(_version(copy), _version(held)):
            del self._held[uid]

    def newest(self, copy: Mapping[str, Any]) -> Mapping[str, Any]:
        """`copy`, or the resource as our own later write left it."""
        held = self._held.get(_uid(copy))
        if held is None or newer(_version(copy), _version(held)):
            return copy
        return held

    def forget(self, uid: str) -> None:
        self._held.pop(uid, None)
