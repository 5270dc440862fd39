"""The series the dashboard and alerts query: metric names taken from the components'
`metrics` modules, and the labels Prometheus attaches to them when it scrapes.

Scrape labels (set by the chart's ServiceMonitor/PodMonitor, and by any equivalent
Prometheus configuration — docs/deploy.md shows one):
- receiver series: `job="gemini-webhook-receiver"`, `namespace` (the receiver's, which is
  its GeminiWebhook's) and `webhook` (the GeminiWebhook's name, from the pod label);
- operator series: `job="gemini-webhook-operator"`; its per-webhook series carry their own
  `namespace` and `name` labels (scraped with honor_labels).
"""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from gemini_webhook_operator import metrics as operator_metrics
from gemini_webhook_operator import rotation as operator_rotation
from gemini_webhook_receiver import metrics as receiver_metrics
from gemini_webhooks.contracts import crd

RECEIVER_JOB = "gemini-webhook-receiver"
OPERATOR_JOB = "gemini-webhook-operator"


def _name(
    collector: MetricWrapperBase | receiver_metrics.LatencyHistogram | receiver_metrics.LeanCounter,
    suffix: str = "",
) -> str:
    """The exposed sample name of a prometheus_client metric or collector (`_total`,
    `_bucket`, ...)."""
    (family,) = collector.describe()
    return family.name + suffix


# --- receiver ---------------------------------------------------------------------------
DELIVERIES = _name(receiver_metrics.deliveries, "_total")
ACK_BUCKET = _name(receiver_metrics.ack_seconds, "_bucket")
END_TO_END_BUCKET = _name(receiver_metrics.end_to_end_seconds, "_bucket")
VERIFICATION_BUCKET = _name(receiver_metrics.verification_seconds, "_bucket")
DUPLICATES = _name(receiver_metrics.duplicates, "_total")
FORWARDS = _name(receiver_metrics.forwards, "_total")
DEAD_LETTERS = _name(receiver_metrics.dead_letters, "_total")
QUEUE_DEPTH = _name(receiver_metrics.queue_depth)
QUEUE_LAG = _name(receiver_metrics.queue_lag_seconds)
DEAD_LETTER_DEPTH = _name(receiver_metrics.dead_letter_depth)
LOADED_SECRETS = _name(receiver_metrics.loaded_secrets)
REDIS_DURABILITY = _name(receiver_metrics.redis_durability)

# --- operator ---------------------------------------------------------------------------
RECONCILES = operator_metrics.RECONCILES_TOTAL
RECONCILE_DURATION_BUCKET = operator_metrics.RECONCILE_DURATION_SECONDS + "_bucket"
API_REQUESTS = operator_metrics.API_REQUESTS_TOTAL
WEBHOOKS = operator_metrics.WEBHOOKS
SECRET_AGE = operator_metrics.SECRET_AGE_SECONDS
NEXT_ROTATION = operator_metrics.NEXT_ROTATION_TIMESTAMP_SECONDS
ROTATIONS = operator_metrics.ROTATIONS_TOTAL
HEALS = operator_metrics.HEALS_TOTAL
HEAL_HOLDS = operator_metrics.HEAL_HOLDS_TOTAL
RESOURCE_CONDITION = operator_metrics.RESOURCE_CONDITION
DELIVERY_VERIFIED = operator_metrics.DELIVERY_VERIFIED
DELIVERY_ROUND_TRIP_BUCKET = operator_metrics.DELIVERY_ROUND_TRIP_SECONDS + "_bucket"

# Label values the queries select on, from the components' own closed sets.
REMOTE_STATE_DISABLED_BY_FAILURES = crd.REMOTE_DISABLED_BY_FAILURES
RECONCILE_ERROR = "error"
CONDITION_SYNCED = "Synced"
# The heals that rotate the signing secret (every consumer must pick up a new one).
HEAL_ROTATION_REASONS = tuple(sorted(operator_rotation.HEAL_REASONS))
HEAL_RATE_LIMITED = operator_rotation.HEAL_RATE_LIMITED
# The receiver's `deliveries` outcome of a rejected delivery, and the reason of a good one.
OUTCOME_REJECTED = "rejected"
REASON_OK = "ok"
# A forward attempt that succeeded; every other outcome of the receiver's closed set
# (`FORWARD_OUTCOMES`: http_error, connection_error, timeout, internal_error) is a failure.
FORWARD_OK = receiver_metrics.FORWARD_OK
FORWARD_FAILURES = tuple(o for o in receiver_metrics.FORWARD_OUTCOMES if o != FORWARD_OK)

if REMOTE_STATE_DISABLED_BY_FAILURES not in operator_metrics.REMOTE_STATES:
    raise ImportError("the operator no longer reports disabled_due_to_failed_deliveries")
if CONDITION_SYNCED not in operator_metrics.REPORTED_CONDITIONS:
    raise ImportError("the operator no longer reports the Synced condition as a gauge")
if RECONCILE_ERROR not in operator_metrics.RECONCILE_RESULTS:
    raise ImportError("the operator no longer counts reconciles with result 'error'")
