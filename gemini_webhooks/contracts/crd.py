"""The GeminiWebhook CustomResourceDefinition, built in Python — the single source of truth.

`python -m gemini_webhooks.generate` renders it to `crds/` and `docs/crd-reference.md`.
Every field carries a description (so `kubectl explain` reads as documentation), and
validation uses plain OpenAPI keywords (patterns, enums, bounds, `required`) that every
API server — and our Kubernetes sandbox — checks before the operator sees a resource.
The schema of `spec` is generated from the typed view the operator reads it with
(`contracts.crd_spec`), where each of its fields is described, bounded and defaulted once.

The spec/status layout is a contract: the operator reads it, the receiver's chart and the
sandbox build on it. Change it only in backward-compatible ways within `v1alpha1`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from gemini_webhooks.contracts.openapi_schema import obj, string
from gemini_webhooks.contracts.signing_secret import API_GROUP

KIND = "GeminiWebhook"
LIST_KIND = "GeminiWebhookList"
PLURAL = "geminiwebhooks"
SINGULAR = "geminiwebhook"
SHORT_NAMES = ("gwh",)
CATEGORIES = ("gemini",)
VERSION = "v1alpha1"
API_VERSION = f"{API_GROUP}/{VERSION}"
CRD_NAME = f"{PLURAL}.{API_GROUP}"

# Annotations the operator reads on a GeminiWebhook.
ANNOTATION_ROTATE = f"{API_GROUP}/rotate"
"""Set (any value) to request a rotation now, like cert-manager's `renew`; removed once done."""
ANNOTATION_ROTATE_REVOCATION = f"{API_GROUP}/rotate-revocation"
"""`Grace` or `Immediate`: the revocation of the rotation the rotate annotation requests, in
place of spec.rotation.revocation; removed with it."""
ANNOTATION_SYNC_REQUESTED = f"{API_GROUP}/sync-requested-at"
"""Set (a new value each time, e.g. the time) to reconcile now; the operator records the
value it handled in status.lastSyncRequest."""
ANNOTATION_PING_REQUESTED = f"{API_GROUP}/ping-requested-at"
"""Set (a new value each time) to have Gemini send a ping now; the operator records the
value and the outcome (which receiver Pods verified it, with which secret) in
status.lastPing."""
# The annotations a person sets to ask the operator for something: a change to any of them
# is a change like a spec edit (the operator reacts at once).
REQUEST_ANNOTATIONS = (
    ANNOTATION_ROTATE,
    ANNOTATION_ROTATE_REVOCATION,
    ANNOTATION_SYNC_REQUESTED,
    ANNOTATION_PING_REQUESTED,
)
# kopf's own state on a GeminiWebhook (its last-handled configuration, under
# KOPF_DIFFBASE_KEY, and its handlers' progress): under a prefix of its own, apart from ours.
# kopf leaves every annotation under its storage prefix out of the essence it compares, so
# ours (the request annotations above) are changes like a spec edit.
KOPF_STATE_PREFIX = f"kopf.{API_GROUP}"
KOPF_DIFFBASE_KEY = "last-handled-configuration"

# Condition types and the spec's enumerations, shared with the operator.
CONDITION_READY = "Ready"
CONDITION_SYNCED = "Synced"
CONDITION_DELIVERY_VERIFIED = "DeliveryVerified"
# Only with receiver replicas > 1: do they share dedup and ping records (Redis)?
CONDITION_RECEIVER_STATE_SHARED = "ReceiverStateShared"
# kstatus's abnormal-true conditions (sigs.k8s.io/cli-utils/pkg/kstatus): present, and
# True, only while the resource converges (Reconciling) or cannot without a person's fix
# (Stalled); absent otherwise.
CONDITION_RECONCILING = "Reconciling"
CONDITION_STALLED = "Stalled"
# What each condition type says (the CRD's schema and docs/crd-reference.md show these).
CONDITIONS: dict[str, str] = {
    CONDITION_READY: "True when the remote webhook exists as specified, in the desired state, "
    "and the operator holds its signing secret; False (or Unknown) with the reason why not.",
    CONDITION_SYNCED: "True when the last reconciliation succeeded (the remote webhook "
    "matches the spec); False with the failure's reason.",
    CONDITION_RECONCILING: "kstatus (abnormal-true): True while the operator converges on "
    "the spec — a problem it retries on its own (RemoteUnavailable, QuotaExceeded, "
    "APIKeySecretMissing, KubernetesAPIError, a route not yet admitted, a remote state not "
    "yet reached); reason and message are Synced's when it is False, else Ready's. Absent "
    "otherwise.",
    CONDITION_STALLED: "kstatus (abnormal-true): True when the resource cannot become Ready "
    "until a person changes something — a problem the operator does not retry "
    "(InvalidSpec, InvalidReceiver, SigningSecretConflict, WebhookClaimedByAnotherResource, "
    "a request Gemini rejects) or retries only to notice a fix (InvalidAPIKey, "
    "PermissionDenied, KubernetesForbidden, AdoptionTargetNotFound, "
    "DisabledDueToFailedDeliveries); reason and message as for Reconciling. Absent otherwise.",
    CONDITION_DELIVERY_VERIFIED: "With spec.healthCheck: whether the last ping arrived at "
    "the receiver and verified with the current signing secret.",
    CONDITION_RECEIVER_STATE_SHARED: "With more than one receiver replica: whether they "
    "share dedup and ping records (Redis).",
}
State = Literal["Enabled", "Disabled"]
Revocation = Literal["Grace", "Immediate"]
DeletionPolicy = Literal["Delete", "Orphan"]
STATES: tuple[State, ...] = get_args(State)
REVOCATIONS: tuple[Revocation, ...] = get_args(Revocation)
DELETION_POLICIES: tuple[DeletionPolicy, ...] = get_args(DeletionPolicy)
REMOTE_DISABLED_BY_FAILURES = "disabled_due_to_failed_deliveries"
REMOTE_STATES = ("enabled", "disabled", REMOTE_DISABLED_BY_FAILURES)

DEFAULT_API_KEY_SECRET_KEY = "api-key"
DEFAULT_SIGNING_SECRET_SUFFIX = "-signing-secret"

# A Go-style duration made of hours/minutes/seconds (`720h`, `90m`, `1h30m`), as
# cert-manager and most operators spell them; days are written in hours.
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
# Five space-separated cron fields; the operator parses it fully (cronsim).
CRON_PATTERN = r"^\S+( \S+){4}$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
URL_PATTERN = r"^https?://[^\s/?#]+([/?#]\S*)?$"
WEBHOOK_ID_PATTERN = r"^[-_.a-zA-Z0-9]+$"


def _timestamp(description: str) -> dict[str, Any]:
    return string(description, format="date-time")


def spec_schema() -> dict[str, Any]:
    """`spec`, generated in `crd_spec_schema` from the typed view (`crd_spec`).

    Imported when called, so importing this module does not load the typed view (pydantic).
    """
    from gemini_webhooks.contracts import crd_spec_schema

    return crd_spec_schema.spec_schema()


def _condition_schema() -> dict[str, Any]:
    return obj(
        "A condition, per the Kubernetes API conventions.",
        {
            "type": string("Condition type: " + ", ".join(CONDITIONS) + ".", maxLength=64),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string("Machine-readable CamelCase reason.", maxLength=128),
            "message": string("Human-readable details (never secret material).", maxLength=4096),
            "lastTransitionTime": _timestamp("When the status last changed."),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The .metadata.generation this condition was computed from.",
                "minimum": 0,
            },
        },
        required=("type", "status"),
    )


def status_schema() -> dict[str, Any]:
    return obj(
        "The observed state, written by the operator.",
        {
            "webhookId": string("ID of the remote webhook this resource manages."),
            "remoteState": string(
                "The remote webhook's state as last observed.", enum=list(REMOTE_STATES)
            ),
            "url": string(
                "The URL the remote webhook delivers to (with `receiver.expose`: registered "
                "once the route is admitted)."
            ),
            "signingSecretName": string("The Secret holding the signing secrets."),
            "lastRotationTime": _timestamp(
                "When the current signing secret was obtained (creation or rotation); the "
                "next scheduled rotation is computed from it, so restarts never skip or "
                "repeat one."
            ),
            "nextRotationTime": _timestamp("When the next scheduled rotation is due."),
            "lastRotationReason": string(
                "Why the last rotation happened (e.g. DueByPolicy, SecretMissing)."
            ),
            "lastSyncRequest": string(
                "The last value of the annotation `" + ANNOTATION_SYNC_REQUESTED + "` the "
                "operator reconciled for (`kubectl gemini sync` waits for it)."
            ),
            "lastPing": obj(
                "The answer to the last ping requested with the annotation `"
                + ANNOTATION_PING_REQUESTED
                + "` (`kubectl gemini ping`).",
                {
                    "request": string("The annotation's value this answers."),
                    "sentAt": _timestamp("When Gemini was asked to send the ping."),
                    "status": string(
                        "True: verified with the current signing secret; False: not "
                        "received, or verified only with a previous secret; Unknown: "
                        "could not tell, or no ping could be sent.",
                        enum=["True", "False", "Unknown"],
                    ),
                    "reason": string("As DeliveryVerified's reasons."),
                    "message": string("What happened, in a sentence."),
                    "verifiedBy": {
                        "type": "array",
                        "description": "The receiver Pods (or, where Pods cannot be "
                        "listed, the internal Service) that verified this ping.",
                        "items": obj(
                            "One receiver that verified the ping.",
                            {
                                "name": string("The Pod (or Service) asked."),
                                "receivedAt": _timestamp("When it verified the ping."),
                                "secretFingerprint": string(
                                    "The truncated signing secret that verified it "
                                    "(never the secret)."
                                ),
                            },
                        ),
                    },
                },
            ),
            "receiverFingerprint": string(
                "Digest of the receiver objects last applied (empty: no receiver deployed)."
            ),
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The .metadata.generation last reconciled, written together "
                "with the conditions that describe it (kstatus reads a resource as current "
                "only once this equals .metadata.generation).",
                "minimum": 0,
            },
            "conditions": {
                "type": "array",
                "description": "Ready and Synced; Reconciling or Stalled while not both True "
                "(kstatus); DeliveryVerified with health checks; ReceiverStateShared with "
                "several receiver replicas. Each type: see Conditions below.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": _condition_schema(),
            },
        },
    )


def printer_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Webhook ID",
            "type": "string",
            "jsonPath": ".status.webhookId",
            "description": "ID of the remote webhook.",
        },
        {
            "name": "State",
            "type": "string",
            "jsonPath": ".status.remoteState",
            "description": "Remote state.",
        },
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Whether the webhook is in place with a secret the operator holds.",
        },
        {
            "name": "URL",
            "type": "string",
            "jsonPath": ".status.url",
            "description": "The URL registered with Gemini.",
        },
        {
            "name": "Last Rotation",
            "type": "date",
            "jsonPath": ".status.lastRotationTime",
            "description": "When the signing secret last rotated.",
        },
        {
            "name": "Age",
            "type": "date",
            "jsonPath": ".metadata.creationTimestamp",
            "description": "Age of the resource.",
        },
    ]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "gemini-webhook-operator"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": obj(
                            "A Gemini API webhook managed declaratively: the operator creates "
                            "it through the WebhookService, keeps it as specified, stores its "
                            "signing secrets in a Secret and rotates them.",
                            {
                                "apiVersion": string(
                                    "APIVersion defines the versioned schema of this object."
                                ),
                                "kind": string("Kind is the type of this object."),
                                # kube-apiserver refuses anything but `type` (and name or
                                # generateName rules) under a CRD's root `metadata`.
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            required=("spec",),
                        )
                    },
                }
            ],
        },
    }
