"""`kubectl gemini status NAME`: everything about one GeminiWebhook on one page.

`gather` reads (the resource, its signing Secret, the receiver Deployment and Pods, the
route, the Events); `summarize` is pure and turns what was read into the report — which
never holds a secret, only fingerprints; `tree` renders it in the way of
`crossplane beta trace`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gemini_webhook_operator import receiver_exposure, receiver_names
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.contracts.times import rfc3339
from gemini_webhooks.kubectl.cluster import JSON, Session, readable
from gemini_webhooks.kubectl.next_steps import unhealthy
from gemini_webhooks.kubectl.output import Node

EVENTS_SHOWN = 10


@dataclass
class Observed:
    webhook: JSON
    secret: JSON | None = None
    secret_problem: str | None = None
    deployment: JSON | None = None
    pods: list[JSON] | None = None
    receiver_problem: str | None = None
    route_kind: str | None = None
    route: JSON | None = None
    route_problem: str | None = None
    events: list[JSON] | None = None
    events_problem: str | None = None


def _expose_kind(webhook: JSON) -> str | None:
    expose = ((webhook.get("spec") or {}).get("receiver") or {}).get("expose") or {}
    if expose.get("ingress"):
        return "Ingress"
    if expose.get("httpRoute"):
        return "HTTPRoute"
    return None


async def gather(session: Session, name: str) -> Observed:
    webhook = await session.webhook(name)
    seen = Observed(webhook)
    receiver = receiver_names.receiver_name(name)
    secret_name = receiver_names.signing_secret_name(webhook)
    receiver_on = bool(((webhook.get("spec") or {}).get("receiver") or {}).get("enabled"))
    seen.route_kind = _expose_kind(webhook)
    uid = str(webhook["metadata"].get("uid") or "")

    async def none() -> None:
        return None

    results = await asyncio.gather(
        readable(session.get("v1", "Secret", secret_name)),
        readable(session.get("apps/v1", "Deployment", receiver) if receiver_on else none()),
        readable(
            session.select("v1", "Pod", receiver_names.selector_labels(name))
            if receiver_on
            else none()
        ),
        readable(
            session.get(receiver_exposure.ROUTE_KINDS[seen.route_kind], seen.route_kind, receiver)
            if seen.route_kind
            else none()
        ),
        readable(session.events_about(uid)),
    )
    (seen.secret, seen.secret_problem) = results[0]
    (seen.deployment, deployment_problem) = results[1]
    (seen.pods, pods_problem) = results[2]
    seen.receiver_problem = deployment_problem or pods_problem
    (seen.route, seen.route_problem) = results[3]
    (seen.events, seen.events_problem) = results[4]
    return seen


def _time(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value, "auto")


def fingerprints(secret: JSON | None) -> tuple[list[JSON], str | None]:
    """What a signing Secret holds — each secret's fingerprint, role, creation and expiry,
    never the secret — or why it cannot be told."""
    if secret is None:
        return [], "the Secret does not exist"
    try:
        held = contract.decode_data(secret.get("data") or {})
    except contract.SecretFormatError as error:  # its messages hold no secret material
        return [], f"unreadable: {error}"
    return [
        {
            "fingerprint": s.truncated,
            "role": "current" if i == 0 else "previous",
            "createdAt": _time(s.created_at),
            "expireTime": _time(s.expire_time),
        }
        for i, s in enumerate(held.secrets)
    ], None


def _secrets(seen: Observed, name: str) -> JSON:
    if seen.secret_problem:
        return {"name": name, "problem": f"cannot read it: {seen.secret_problem}"}
    secrets, problem = fingerprints(seen.secret)
    return {"name": name, "problem": problem} if problem else {"name": name, "secrets": secrets}


def pod_summary(pod: JSON) -> JSON:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ready = next(
        (
            c.get("status") == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") == "Ready"
        ),
        False,
    )
    return {
        "name": pod["metadata"]["name"],
        "phase": (pod.get("status") or {}).get("phase") or "Pending",
        "ready": ready,
        "restarts": sum(int(c.get("restartCount") or 0) for c in statuses),
    }


def _receiver(seen: Observed, name: str) -> JSON | None:
    spec = (seen.webhook.get("spec") or {}).get("receiver") or {}
    if not spec.get("enabled"):
        return None
    report: JSON = {"deployment": receiver_names.receiver_name(name)}
    if seen.receiver_problem:
        report["problem"] = f"cannot read it: {seen.receiver_problem}"
        return report
    if seen.deployment is None:
        report["problem"] = "the Deployment does not exist (yet)"
        return report
    status = seen.deployment.get("status") or {}
    report["replicas"] = int((seen.deployment.get("spec") or {}).get("replicas") or 0)
    report["readyReplicas"] = int(status.get("readyReplicas") or 0)
    report["updatedReplicas"] = int(status.get("updatedReplicas") or 0)
    report["pods"] = [pod_summary(p) for p in seen.pods or []]
    return report


def _route(seen: Observed, name: str) -> JSON | None:
    if seen.route_kind is None:
        return None
    report: JSON = {"kind": seen.route_kind, "name": receiver_names.receiver_name(name)}
    if seen.route_problem:
        report["problem"] = f"cannot read it: {seen.route_problem}"
        return report
    admission = receiver_exposure.admission(seen.route_kind, seen.route)
    if seen.route is None:
        admission = receiver_exposure.Admission(False, "NotFound", "the route does not exist")
    report.update(admitted=admission.admitted, reason=admission.reason, message=admission.message)
    return report


def _event_time(event: JSON) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _events(seen: Observed) -> JSON:
    if seen.events_problem:
        return {"problem": f"cannot read them: {seen.events_problem}", "items": []}
    recent = sorted(seen.events or [], key=_event_time)[-EVENTS_SHOWN:]
    return {
        "items": [
            {
                "time": _event_time(e),
                "type": e.get("type"),
                "reason": e.get("reason"),
                "from": e.get("reportingComponent") or (e.get("source") or {}).get("component"),
                "count": e.get("count") or 1,
                "message": e.get("message"),
            }
            for e in recent
        ]
    }


def summarize(seen: Observed) -> JSON:
    """The report (JSON-ready; fingerprints, never secrets)."""
    metadata = seen.webhook["metadata"]
    status = seen.webhook.get("status") or {}
    name = metadata["name"]
    conditions = [
        {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
        for c in status.get("conditions") or []
    ]
    return {
        "kind": crd.KIND,
        "name": name,
        "namespace": metadata.get("namespace"),
        "generation": metadata.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "conditions": conditions,
        "remote": {
            "webhookId": status.get("webhookId"),
            "state": status.get("remoteState"),
            "url": status.get("url"),
        },
        "rotation": {
            "lastRotationTime": status.get("lastRotationTime"),
            "lastRotationReason": status.get("lastRotationReason"),
            "nextRotationTime": status.get("nextRotationTime"),
            "paused": bool(((seen.webhook.get("spec") or {}).get("rotation") or {}).get("paused")),
        },
        "lastPing": status.get("lastPing"),
        "signingSecret": _secrets(seen, receiver_names.signing_secret_name(seen.webhook)),
        "receiver": _receiver(seen, name),
        "route": _route(seen, name),
        "events": _events(seen),
        "nextSteps": unhealthy(conditions),
    }


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _part(
    root: Node,
    part: JSON | None,
    absent: str,
    title: Callable[[JSON], str],
    line: Callable[[JSON], str],
) -> Node | None:
    """A branch for one related object: absent, unreadable (✗ why), or described."""
    if part is None:
        root.add(absent)
        return None
    if "problem" in part:
        root.add(title(part)).add(f"✗ {part['problem']}")
        return None
    return root.add(line(part))


def tree(report: JSON) -> Node:
    """The report as a tree for the terminal."""
    generation = f"generation {report['generation']}, observed {report['observedGeneration']}"
    root = Node(f"{report['kind']} {report['namespace']}/{report['name']} ({generation})")
    conditions = root.add("Conditions")
    for c in report["conditions"]:
        line = f"{c['type']}: {c['status']} ({c['reason']})"
        conditions.add(line + (f" — {c['message']}" if c.get("message") else ""))
    if not report["conditions"]:
        conditions.add("none yet: the operator has not reconciled this resource")
    remote = report["remote"]
    root.add(
        f"Remote webhook: id {remote['webhookId'] or '-'}, state {remote['state'] or '-'}, "
        f"url {remote['url'] or '-'}"
    )
    rotation = report["rotation"]
    root.add(
        f"Rotation: last {rotation['lastRotationTime'] or '-'} "
        f"({rotation['lastRotationReason'] or '-'}), next "
        + ("paused" if rotation["paused"] else rotation["nextRotationTime"] or "-")
    )
    ping = report.get("lastPing")
    if ping:
        node = root.add(
            f"Last requested ping: {ping.get('status')} ({ping.get('reason')}), sent "
            f"{ping.get('sentAt') or '-'}"
        )
        for who in ping.get("verifiedBy") or []:
            node.add(
                f"verified by {who['name']} at {who['receivedAt']} with "
                f"{who.get('secretFingerprint') or 'an unnamed secret'}"
            )
    secret = report["signingSecret"]
    node = root.add(f"Signing Secret {secret['name']}")
    if "problem" in secret:
        node.add(f"✗ {secret['problem']}")
    for s in secret.get("secrets", []):
        node.add(
            f"{s['fingerprint']} {s['role']}, created {s['createdAt']}, "
            f"expires {s['expireTime'] or 'never'}"
        )
    receiver = _part(
        root,
        report["receiver"],
        "Receiver: not deployed (spec.receiver.enabled is false)",
        lambda r: f"Receiver Deployment {r['deployment']}",
        lambda r: (
            f"{_mark(r['readyReplicas'] >= r['replicas'] > 0)} Receiver Deployment "
            f"{r['deployment']}: ready {r['readyReplicas']}/{r['replicas']}"
        ),
    )
    if receiver is not None:
        for pod in report["receiver"]["pods"]:
            receiver.add(
                f"{_mark(pod['ready'])} Pod {pod['name']}: {pod['phase']}, "
                f"{'ready' if pod['ready'] else 'not ready'}, restarts {pod['restarts']}"
            )
        if not report["receiver"]["pods"]:
            receiver.add("no Pods")
    _part(
        root,
        report["route"],
        "Route: none (spec.receiver.expose not set)",
        lambda r: f"Route {r['kind']} {r['name']}",
        lambda r: (
            f"{_mark(r['admitted'])} Route {r['kind']} {r['name']}: {r['reason']} — {r['message']}"
        ),
    )
    events = root.add("Events")
    if report["events"].get("problem"):
        events.add(f"✗ {report['events']['problem']}")
    for e in report["events"]["items"]:
        count = f" (x{e['count']})" if e["count"] and e["count"] > 1 else ""
        events.add(f"{e['time']} {e['type']} {e['reason']}{count} from {e['from']}: {e['message']}")
    if not report["events"]["items"] and not report["events"].get("problem"):
        events.add("none")
    steps = root.add("Next steps")
    for step in report["nextSteps"]:
        steps.add(f"{step['condition']} ({step['reason']}): {step['do']}")
    if not report["nextSteps"]:
        steps.add("none: every condition is healthy")
    return root


async def run(session: Session, name: str) -> tuple[JSON, Node]:
    report = summarize(await gather(session, name))
    return report, tree(report)
