"""`rotate`, `sync`, `ping`, `pause` and `resume`: each through what the operator reads — the
rotate annotation (`gemini.webhooks.dev/rotate`, with `rotate-revocation` for
`--immediate`; both removed by the operator once it rotated), the sync annotation
(`sync-requested-at`, whose value the operator records in `status.lastSyncRequest` once it
reconciled), the ping annotation (`ping-requested-at`, answered in `status.lastPing`) and
`spec.rotation.paused` — then waiting, bounded, for the operator's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gemini_webhook_operator import receiver_names
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.kubectl.cluster import JSON, PluginError, Session, wait_until
from gemini_webhooks.kubectl.status import fingerprints

REQUESTED_BY_ANNOTATION = "RequestedByAnnotation"  # the operator's rotation reason


def _annotations(webhook: JSON) -> dict[str, Any]:
    return (webhook.get("metadata") or {}).get("annotations") or {}


def _status(webhook: JSON) -> JSON:
    return webhook.get("status") or {}


def _stuck(webhook: JSON) -> str:
    """What the conditions say, for a timeout message."""
    parts = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason')}): {c.get('message')}"
        for c in _status(webhook).get("conditions") or []
        if c.get("status") != "True"
    ]
    return "; ".join(parts) or "no condition explains it; see `kubectl gemini status`"


def rotated(before: JSON, now: JSON) -> bool:
    """The operator took the request: it removed the annotation and recorded a rotation."""
    if crd.ANNOTATION_ROTATE in _annotations(now):
        return False
    status, earlier = _status(now), _status(before)
    return bool(status.get("lastRotationTime")) and (
        status.get("lastRotationTime") != earlier.get("lastRotationTime")
        or status.get("lastRotationReason") == REQUESTED_BY_ANNOTATION
    )


def _request_value() -> str:
    """A new value for a request annotation: the time, to the microsecond."""
    return now_rfc3339("auto")


def rotate_request(requested: str, immediate: bool) -> JSON:
    """The annotations that ask for one rotation; without `--immediate` the resource's own
    revocation applies (a revocation left from an earlier request is removed)."""
    revocation = crd.REVOCATIONS[1] if immediate else None
    return {
        crd.ANNOTATION_ROTATE: requested,
        crd.ANNOTATION_ROTATE_REVOCATION: revocation,
    }


async def rotate(session: Session, name: str, within: float, immediate: bool = False) -> JSON:
    before = await session.webhook(name)
    done = await _patch_and_wait(
        session,
        name,
        {"metadata": {"annotations": rotate_request(_request_value(), immediate)}},
        lambda _stored, now: rotated(before, now),
        within,
        lambda _stored: (
            f"the operator did not rotate {name} within {within:g} s (the request "
            "stays until it does)"
        ),
    )
    status = _status(done)
    report: JSON = {
        "name": name,
        "namespace": session.namespace,
        "rotated": True,
        "reason": status.get("lastRotationReason"),
        "rotationTime": status.get("lastRotationTime"),
        "revocation": crd.REVOCATIONS[1]
        if immediate
        else ((done.get("spec") or {}).get("rotation") or {}).get("revocation", crd.REVOCATIONS[0]),
        "secrets": await _fingerprints(session, done),
    }
    return report


async def _fingerprints(session: Session, webhook: JSON) -> list[JSON]:
    secret = await session.get("v1", "Secret", receiver_names.signing_secret_name(webhook))
    return fingerprints(secret)[0]


def rotate_text(report: JSON) -> str:
    lines = [
        f"rotated {report['namespace']}/{report['name']} at {report['rotationTime']} "
        f"({report['reason']}, revocation {report['revocation']})"
    ]
    for s in report["secrets"]:
        lines.append(f"  {s['fingerprint']} {s['role']}, expires {s['expireTime'] or 'never'}")
    return "\n".join(lines)


async def set_paused(session: Session, name: str, paused: bool, within: float) -> JSON:
    await session.webhook(name)  # a clear NotFound before any write

    def reconciled(stored: JSON, now: JSON) -> bool:
        generation = int(stored["metadata"].get("generation") or 0)
        return int(_status(now).get("observedGeneration") or 0) >= generation

    done = await _patch_and_wait(
        session,
        name,
        {"spec": {"rotation": {"paused": paused}}},
        reconciled,
        within,
        lambda stored: (
            f"rotation is {'paused' if paused else 'resumed'} in the spec of {name}, "
            f"but the operator did not reconcile generation {stored['metadata'].get('generation')} "
            f"within {within:g} s"
        ),
    )
    status = _status(done)
    return {
        "name": name,
        "namespace": session.namespace,
        "paused": paused,
        "observedGeneration": status.get("observedGeneration"),
        "nextRotationTime": status.get("nextRotationTime"),
    }


def paused_text(report: JSON) -> str:
    where = f"{report['namespace']}/{report['name']}"
    if report["paused"]:
        return f"scheduled rotation of {where} is paused (a `rotate` request still rotates)"
    next_time = report["nextRotationTime"] or "none scheduled (no interval or schedule)"
    return f"scheduled rotation of {where} resumed; next rotation: {next_time}"


def synced(requested: str, now: JSON) -> bool:
    """The operator reconciled after the request: it recorded the request's value."""
    return _status(now).get("lastSyncRequest") == requested


async def _request(
    session: Session,
    name: str,
    annotation: str,
    handled: Callable[[str, JSON], bool],
    within: float,
    what: str,
) -> JSON:
    """Set a request annotation to a new value, wait until the operator has handled it."""
    await session.webhook(name)  # a clear NotFound before any write
    requested = _request_value()
    return await _patch_and_wait(
        session,
        name,
        {"metadata": {"annotations": {annotation: requested}}},
        lambda _stored, now: handled(requested, now),
        within,
        lambda _stored: (
            f"the operator did not {what} {name} within {within:g} s (is it "
            "running? `kubectl gemini check`)"
        ),
    )


async def _patch_and_wait(
    session: Session,
    name: str,
    patch: JSON,
    done: Callable[[JSON, JSON], bool],
    within: float,
    failure: Callable[[JSON], str],
) -> JSON:
    """Patch the resource, then poll it until `done(stored, now)`; else fail with
    `failure(stored)` and what the conditions say."""
    stored = await session.patch_webhook(name, patch)
    last: JSON = stored

    async def probe() -> JSON | None:
        nonlocal last
        last = await session.webhook(name)
        return last if done(stored, last) else None

    result = await wait_until(probe, within=within)
    if result is None:
        raise PluginError(f"{failure(stored)}: {_stuck(last)}")
    return result


async def sync(session: Session, name: str, within: float) -> JSON:
    done = await _request(session, name, crd.ANNOTATION_SYNC_REQUESTED, synced, within, "reconcile")
    status = _status(done)
    return {
        "name": name,
        "namespace": session.namespace,
        "requested": status.get("lastSyncRequest"),
        "observedGeneration": status.get("observedGeneration"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
    }


def sync_succeeded(report: JSON) -> bool:
    """The reconciliation the request caused succeeded (Synced=True)."""
    return any(
        c["type"] == crd.CONDITION_SYNCED and c["status"] == "True" for c in report["conditions"]
    )


def sync_text(report: JSON) -> str:
    lines = [
        f"reconciled {report['namespace']}/{report['name']} "
        f"(generation {report['observedGeneration']})"
    ]
    for c in report["conditions"]:
        lines.append(f"  {c['type']}: {c['status']} ({c['reason']}) {c['message'] or ''}".rstrip())
    return "\n".join(lines)


def pinged(requested: str, now: JSON) -> bool:
    """The operator answered the request in status.lastPing."""
    return (_status(now).get("lastPing") or {}).get("request") == requested


async def ping(session: Session, name: str, within: float) -> JSON:
    done = await _request(
        session, name, crd.ANNOTATION_PING_REQUESTED, pinged, within, "answer the ping of"
    )
    answer = _status(done)["lastPing"]
    return (
        {"name": name, "namespace": session.namespace}
        | {k: answer.get(k) for k in ("sentAt", "status", "reason", "message")}
        | {"verifiedBy": list(answer.get("verifiedBy") or [])}
    )


def ping_text(report: JSON) -> str:
    lines = [
        f"ping of {report['namespace']}/{report['name']}: {report['status']} "
        f"({report['reason']}) {report['message']}"
    ]
    for pod in report["verifiedBy"]:
        lines.append(
            f"  {pod['name']}: verified at {pod['receivedAt']} with "
            f"{pod['secretFingerprint'] or 'an unnamed secret'}"
        )
    return "\n".join(lines)
