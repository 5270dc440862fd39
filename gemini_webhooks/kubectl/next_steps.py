"""What to do next for a condition that is not healthy, by its reason.

The reasons are the operator's (tests/kubectl/test_next_steps.py checks that each one
here is a reason the operator sets); the advice is the README's troubleshooting table,
shortened to one line each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ADVICE: dict[str, str] = {
    # Synced=False: the spec or the API key
    "InvalidSpec": "fix the field the message names (kubectl edit); nothing retries until then",
    "InvalidReceiver": "fix the spec.receiver field the message names; nothing retries until then",
    "APIKeySecretMissing": "create the API-key Secret (kubectl create secret generic "
    "<name> --from-literal=api-key=...); retried every minute",
    "InvalidAPIKey": "replace the key in the API-key Secret; a new key is used at once",
    "PermissionDenied": "give the key access to the Gemini API's webhooks, or replace it",
    "QuotaExceeded": "nothing: the operator waits for Retry-After",
    "RemoteValidationError": "read the message and fix the spec Gemini refused",
    "RemoteUnavailable": "transient (Gemini 5xx or network); retried every 10 s",
    "RemoteNotFound": "the remote webhook is gone; the operator creates it again",
    "AdoptionTargetNotFound": "check spec.webhookId and that the API key belongs to its project",
    "WebhookClaimedByAnotherResource": "remove one of the two GeminiWebhooks that name "
    "this webhook",
    "SigningSecretConflict": "choose another spec.signingSecretName, or delete that Secret "
    "(it is not ours)",
    "JobKeySecretConflict": "delete or rename the <name>-dynamic-job-key Secret (not ours)",
    "JobKeySecretUnreadable": "delete the <name>-dynamic-job-key Secret; a new key is made",
    "KubernetesAPIError": "transient; retried every 10 s (check the API server if it persists)",
    "KubernetesForbidden": "grant the operator the rule the message names "
    "(kubectl gemini check lists what is missing)",
    "WaitingForIngressAddress": "check the ingress controller: kubectl describe ingress "
    "<name>-receiver",
    "WaitingForRouteAccepted": "check the Gateway: kubectl describe httproute <name>-receiver",
    "RouteNotAccepted": "fix spec.receiver.expose.httpRoute parentRefs/hostnames or the "
    "Gateway's listeners",
    "RouteKindNotServed": "install the Gateway API CRDs, or expose with an Ingress",
    # Ready=False
    "DisabledDueToFailedDeliveries": "fix the endpoint (receiver logs and alerts), then set "
    "spec.state: Disabled and back to Enabled",
    "SecretMissing": "transient: the operator rotates to regain a secret",
    "RemoteStateDiffers": "transient: the operator is converging the remote state",
    "Progressing": "transient: the operator is working on it",
    # DeliveryVerified
    "PingNotReceived": "the ping did not arrive: check the route and the receiver's logs and "
    'gemini_receiver_deliveries_total{outcome="rejected"}',
    "PingSendFailed": "Gemini refused the ping: see the message; retried",
    "ReceiverUnreachable": "the operator cannot reach the receiver's internal port: check its "
    "Pods and NetworkPolicy",
    "VerifiedWithPreviousSecret": "the receiver holds an old secret: check that it reloads the "
    "signing Secret",
    "RotationNotYetVerified": "transient: a ping after the rotation is on its way",
    "PingsPerReplica": "use Redis (spec.receiver.redis) so that every replica knows every ping",
    # ReceiverStateShared
    "PerPodMemory": "with more than one replica, set spec.receiver.redis",
    "HealthCheckDisabled": "set spec.healthCheck.enabled: true to verify deliveries end to end",
    "WebhookNotCreated": "transient: the health check starts once the webhook exists",
    "WebhookNotEnabled": "the webhook is not enabled (spec.state), so it is not pinged",
    "ReceiverNotDeployed": "set spec.receiver.enabled: true for the health check to ask it",
    "SigningSecretMissing": "transient: the operator regains a secret first",
    "InvalidHealthCheck": "fix spec.healthCheck as the message says",
}

# kstatus' "abnormal-true" conditions: True means not (yet) healthy.
ABNORMAL_TRUE = frozenset({"Reconciling", "Stalled"})


def unhealthy(conditions: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Each condition that is not healthy (not True; for kstatus' Reconciling and Stalled,
    True), with its advice."""
    steps = []
    for cond in conditions:
        healthy = "False" if cond.get("type") in ABNORMAL_TRUE else "True"
        if cond.get("status") == healthy:
            continue
        reason = str(cond.get("reason") or "")
        steps.append(
            {
                "condition": f"{cond.get('type')}={cond.get('status')}",
                "reason": reason,
                "do": ADVICE.get(reason, "read the condition's message and the Events below"),
            }
        )
    return steps
