"""`kubectl gemini replay NAME [--since T] [--id ID]...`: move a webhook's dead letters
(Redis mode) back to its delivery stream, where its receivers deliver them again.

As `kubectl exec` does, the plugin runs `gemini-webhooks receiver replay` in one Ready
receiver Pod of the webhook, with the Pod's own mounted config (its Redis URL, and Redis
credentials only the Pod holds) and the user's own right to `pods/exec`: the receiver's
ports need no endpoint that changes data, and the plugin never needs Redis credentials.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gemini_webhook_operator import receiver_names
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import replay as contract
from gemini_webhooks.kubectl.cluster import ExecResult, PluginError
from gemini_webhooks.kubectl.status import pod_summary

JSON = dict[str, Any]


def require_redis_mode(webhook: JSON) -> None:
    """PluginError unless the webhook's receiver runs in Redis mode (only there are
    dead letters kept to replay)."""
    metadata = webhook["metadata"]
    receiver = (webhook.get("spec") or {}).get("receiver") or {}
    where = f'{crd.SINGULAR} "{metadata["name"]}" in namespace "{metadata["namespace"]}"'
    if not receiver.get("enabled"):
        raise PluginError(f"{where} has no receiver (spec.receiver.enabled), so no dead letters")
    if not receiver.get("redis"):
        raise PluginError(
            f"{where} is not in Redis mode (spec.receiver.redis is not set): dead letters "
            "are kept to replay only in Redis mode"
        )


def choose_pod(webhook_name: str, pods: Sequence[JSON]) -> str:
    """The Ready receiver Pod to run the replay in (the first by name; not one being
    deleted); PluginError naming the Pods seen when none is Ready."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    summaries = sorted((pod_summary(p) for p in live), key=lambda s: s["name"])
    for summary in summaries:
        if summary["ready"]:
            return str(summary["name"])
    seen = ", ".join(f"{s['name']} ({s['phase']}, not ready)" for s in summaries)
    raise PluginError(
        f'no receiver Pod of {crd.SINGULAR} "{webhook_name}" is Ready '
        f"({seen or 'none found'}); the replay runs in one"
    )


def outcome(pod: str, result: ExecResult) -> int:
    """How many dead letters the command in `pod` moved; PluginError with its own words
    when it did not run or failed."""
    said = (result.stderr.strip().splitlines() or [result.message or "no output"])[-1]
    if result.code is None:
        raise PluginError(f"the replay did not run in Pod {pod}: {result.message}")
    if result.code != 0:
        raise PluginError(f"the replay in Pod {pod} failed (exit {result.code}): {said}")
    try:
        return contract.replayed_count(result.stdout)
    except ValueError as error:
        raise PluginError(f"the replay in Pod {pod}: {error}") from None


async def run(
    session: Any, name: str, since: str | None, ids: Sequence[str], within: float
) -> JSON:
    """Replay and report: the webhook, the Pod it ran in, what was asked and how many
    were moved."""
    try:
        since_time = None if since is None else contract.parse_since(since, time.time())
    except contract.SinceError as error:
        raise PluginError(str(error)) from None
    webhook = await session.webhook(name)
    require_redis_mode(webhook)
    pods = await session.select("v1", "Pod", receiver_names.selector_labels(name))
    pod = choose_pod(name, pods)
    command = contract.command(receiver_names.CONFIG_PATH, since_time, ids)
    result = await session.exec(pod, receiver_names.CONTAINER, command, within=within)
    return {
        "webhook": name,
        "namespace": session.namespace,
        "pod": pod,
        "since": None if since_time is None else contract.since_text(since_time),
        "ids": list(ids),
        "replayed": outcome(pod, result),
    }


def text(report: JSON) -> str:
    scope = []
    if report["ids"]:
        scope.append(f"with id {', '.join(report['ids'])}")
    if report["since"]:
        scope.append(f"dead-lettered since {report['since']}")
    chosen = f" ({'; '.join(scope)})" if scope else ""
    return (
        f"replayed {report['replayed']} dead letter(s){chosen} of {crd.SINGULAR} "
        f"{report['namespace']}/{report['webhook']} through Pod {report['pod']}; "
        "its receivers deliver them again"
    )
