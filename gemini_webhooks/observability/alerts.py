"""The Prometheus alert rules, as data; rendered to the rules file that the chart's
PrometheusRule ships and that `promtool check rules` / `promtool test rules` check.

Every alert says what broke, for which webhook, and what to do (the `runbook` annotation
points at docs/deploy.md, where each alert has a section).
"""

from __future__ import annotations

from typing import Any

import yaml

from gemini_webhooks.observability import series as s

RUNBOOK = (
    "https://github.com/gemini-webhook-operator/gemini-webhook-operator/blob/main/docs/deploy.md"
)
RECEIVER = f'job="{s.RECEIVER_JOB}"'
OPERATOR = f'job="{s.OPERATOR_JOB}"'

# How long past its scheduled time a rotation may lag before anyone is woken up: the
# operator retries with back-off, so a few minutes late is normal, an hour is not.
ROTATION_GRACE_SECONDS = 3600
# Share of deliveries rejected for one reason that is no longer background noise.
REJECTION_RATIO = 0.05
FORWARD_FAILURE_RATIO = 0.05


def _alert(
    name: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK}#{name.lower()}",
        },
    }


def rule_groups() -> dict[str, Any]:
    """The rules file's content (`groups:`), also the PrometheusRule's `spec`."""
    operator = [
        _alert(
            "GeminiWebhookRotationOverdue",
            f"time() - {s.NEXT_ROTATION}{{{OPERATOR}}} > {ROTATION_GRACE_SECONDS}",
            "15m",
            "warning",
            "Signing-secret rotation of {{ $labels.namespace }}/{{ $labels.name }} is overdue",
            "The rotation scheduled by the GeminiWebhook's policy is more than an hour late "
            "(the secret is {{ $value | humanizeDuration }} past due). Check the resource's "
            "Ready/Synced conditions and Events, and the operator's logs.",
        ),
        _alert(
            "GeminiWebhookDisabledByFailedDeliveries",
            f'{s.WEBHOOKS}{{{OPERATOR}, state="{s.REMOTE_STATE_DISABLED_BY_FAILURES}"}} > 0',
            "5m",
            "critical",
            "{{ $value }} Gemini webhook(s) disabled after failed deliveries",
            "Gemini stopped delivering to these webhooks because their endpoints kept failing. "
            "Find them with `kubectl get geminiwebhooks -A` (REMOTE STATE column), fix the "
            "endpoint, then set spec.state Disabled and Enabled again.",
        ),
        _alert(
            "GeminiWebhookOperatorReconcileErrors",
            f"sum by (handler) (rate({s.RECONCILES}{{{OPERATOR}, "
            f'result="{s.RECONCILE_ERROR}"}}[10m])) > 0',
            "15m",
            "warning",
            "The operator's {{ $labels.handler }} handler keeps failing",
            "Reconciliations end in errors (not retries) for 15 minutes. The failing resources "
            "carry a Synced=False condition with the reason; see also the operator's logs.",
        ),
        _alert(
            "GeminiWebhookNotSynced",
            f'{s.RESOURCE_CONDITION}{{{OPERATOR}, type="{s.CONDITION_SYNCED}"}} == 0',
            "30m",
            "warning",
            "GeminiWebhook {{ $labels.namespace }}/{{ $labels.name }} is not synced",
            "The resource has had Synced=False for 30 minutes: the operator cannot bring the "
            "remote webhook in line with its spec. `kubectl describe geminiwebhook -n "
            "{{ $labels.namespace }} {{ $labels.name }}` names the reason (InvalidSpec, "
            "APIKeySecretMissing, InvalidAPIKey, QuotaExceeded, ...).",
        ),
        _alert(
            "GeminiWebhookHealingRotations",
            f"sum by (reason) (increase({s.HEALS}{{{OPERATOR}, "
            f'reason=~"{"|".join(s.HEAL_ROTATION_REASONS)}"}}[1h])) > 0'
            f" or sum by (reason) (increase({s.HEAL_HOLDS}{{{OPERATOR}, "
            f'reason="{s.HEAL_RATE_LIMITED}"}}[1h])) > 0',
            "0m",
            "warning",
            "Healing rotations of signing secrets: {{ $labels.reason }}",
            "The operator rotated a signing secret it had lost (SecretMissing) or that Gemini "
            "no longer accepts (SecretUnknownToRemote) in the last hour, or held such a heal "
            "back (HealRateLimited); every consumer of the Secret must pick up a new secret. "
            "Find the resources with `kubectl get events -A --field-selector reason=Rotated`; "
            "repeated heals mean something keeps deleting the Secret or rotating the webhook "
            "behind the operator's back.",
        ),
        _alert(
            "GeminiWebhookOperatorDown",
            f"up{{{OPERATOR}}} == 0",
            "10m",
            "critical",
            "The gemini-webhook-operator cannot be scraped",
            "Prometheus has not reached the operator's /metrics for 10 minutes: webhooks are "
            "neither reconciled nor rotated. Check the operator Deployment.",
        ),
    ]
    receiver = [
        _alert(
            "GeminiReceiverVerificationFailureSpike",
            f"(sum by (namespace, webhook, reason) (rate({s.DELIVERIES}{{{RECEIVER}, "
            f'outcome="{s.OUTCOME_REJECTED}"}}[5m]))'
            f" / ignoring (reason) group_left"
            f" sum by (namespace, webhook) (rate({s.DELIVERIES}{{{RECEIVER}}}[5m])))"
            f" > {REJECTION_RATIO}",
            "10m",
            "warning",
            "Receiver {{ $labels.namespace }}/{{ $labels.webhook }} rejects deliveries: "
            "{{ $labels.reason }}",
            "{{ $value | humanizePercentage }} of deliveries are rejected with reason "
            "{{ $labels.reason }}. bad_signature or revoked_secret after a rotation means the "
            "receiver holds an old secret; secret_reload_pending (a 503, so Gemini retries) "
            "lasting minutes means a replica does not pick up the rotated Secret (check its "
            "Secret watch in the receiver's log and its get/list/watch on the Secret); "
            "clock_skew or timestamp_expired point at clocks; a burst of malformed requests "
            "may be someone probing the endpoint.",
        ),
        _alert(
            "GeminiReceiverForwardFailures",
            f"(sum by (namespace, webhook, target) (rate({s.FORWARDS}{{{RECEIVER}, "
            f'outcome!="{s.FORWARD_OK}"}}[5m]))'
            f" / sum by (namespace, webhook, target) (rate({s.FORWARDS}{{{RECEIVER}}}[5m])))"
            f" > {FORWARD_FAILURE_RATIO}",
            "10m",
            "warning",
            "Receiver {{ $labels.namespace }}/{{ $labels.webhook }} fails to forward to "
            "{{ $labels.target }}",
            "{{ $value | humanizePercentage }} of forward attempts fail. Events are retried "
            "(Redis mode) or answered 503 so that Gemini retries; check the target Service.",
        ),
        _alert(
            "GeminiReceiverDeadLettersGrowing",
            f"sum by (namespace, webhook, reason) (increase({s.DEAD_LETTERS}{{{RECEIVER}}}"
            f"[15m])) > 0",
            "0m",
            "warning",
            "Receiver {{ $labels.namespace }}/{{ $labels.webhook }} dead-letters events: "
            "{{ $labels.reason }}",
            "{{ $value }} events were dead-lettered in 15 minutes. Fix the cause (routes, "
            "target), then re-deliver them with `gemini-webhooks receiver replay`.",
        ),
        _alert(
            "GeminiReceiverDown",
            f"up{{{RECEIVER}}} == 0",
            "5m",
            "critical",
            "Receiver pod {{ $labels.namespace }}/{{ $labels.pod }} is down",
            "Prometheus cannot scrape the receiver of {{ $labels.namespace }}/"
            "{{ $labels.webhook }}. Gemini retries deliveries for 24 hours; check the "
            "Deployment before that runs out.",
        ),
        _alert(
            "GeminiReceiverRedisNotDurable",
            f'{s.REDIS_DURABILITY}{{{RECEIVER}, state="refused"}} == 1',
            "2m",
            "critical",
            "Receiver pod {{ $labels.namespace }}/{{ $labels.pod }} refuses a Redis that "
            "would not keep events",
            "The receiver of {{ $labels.namespace }}/{{ $labels.webhook }} found its Redis "
            "without durable persistence (appendonly yes, appendfsync everysec or always) and "
            "answers every delivery 503; its /readyz says why. Gemini retries for 24 hours.",
        ),
    ]
    return {
        "groups": [
            {"name": "gemini-webhook-operator", "rules": operator},
            {"name": "gemini-webhook-receiver", "rules": receiver},
        ]
    }


def alert_names() -> list[str]:
    return [r["alert"] for g in rule_groups()["groups"] for r in g["rules"]]


HEADER = (
    "# Generated by `python -m gemini_webhooks.observability` from\n"
    "# gemini_webhooks/observability/alerts.py; do not edit by hand.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(rule_groups(), sort_keys=False, width=100)
