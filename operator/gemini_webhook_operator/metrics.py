"""The operator's Prometheus metrics — every name, label and meaning defined here once.

All metrics live in one dedicated `CollectorRegistry` (`REGISTRY`), served by
`serve(port)`; the chart's dashboard and alert rules import the name constants below.
Labels are low-cardinality by construction: results, methods, status codes and reasons
come from small closed sets, and the only per-resource labels are `namespace` and `name`
of a GeminiWebhook. No label value and no sample ever carries secret material: the
per-webhook gauges are fed timestamps and booleans, never a secret.

Per-webhook values (remote state, secret age, next rotation, DeliveryVerified) are kept
in a small table (`WebhookTable`) and turned into samples at scrape time, so a deleted
resource disappears from every series at once (`forget`) and the secret's age is exact at
the moment Prometheus reads it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gemini_webhook_operator.rotation import HEAL_HOLD_REASONS, HEAL_REASONS
from gemini_webhooks.contracts import crd

NAMESPACE = "gemini_webhook_operator"

# Exposed sample names (counters carry their `_total` suffix, histograms their base name).
RECONCILES_TOTAL = f"{NAMESPACE}_reconciles_total"
RECONCILE_DURATION_SECONDS = f"{NAMESPACE}_reconcile_duration_seconds"
API_REQUESTS_TOTAL = f"{NAMESPACE}_webhookservice_requests_total"
API_REQUEST_DURATION_SECONDS = f"{NAMESPACE}_webhookservice_request_duration_seconds"
WEBHOOKS = f"{NAMESPACE}_webhooks"
SECRET_AGE_SECONDS = f"{NAMESPACE}_signing_secret_age_seconds"
NEXT_ROTATION_TIMESTAMP_SECONDS = f"{NAMESPACE}_next_rotation_timestamp_seconds"
ROTATIONS_TOTAL = f"{NAMESPACE}_rotations_total"
HEALS_TOTAL = f"{NAMESPACE}_heals_total"
HEAL_HOLDS_TOTAL = f"{NAMESPACE}_heal_holds_total"
RESOURCE_CONDITION = f"{NAMESPACE}_resource_condition"
DELIVERY_PINGS_TOTAL = f"{NAMESPACE}_delivery_pings_total"
DELIVERY_ROUND_TRIP_SECONDS = f"{NAMESPACE}_delivery_round_trip_seconds"
DELIVERY_VERIFIED = f"{NAMESPACE}_delivery_verified"
LEADER = f"{NAMESPACE}_leader"
LEADER_TRANSITIONS_TOTAL = f"{NAMESPACE}_leader_transitions_total"

ALL_METRIC_NAMES: tuple[str, ...] = (
    RECONCILES_TOTAL,
    RECONCILE_DURATION_SECONDS,
    API_REQUESTS_TOTAL,
    API_REQUEST_DURATION_SECONDS,
    WEBHOOKS,
    SECRET_AGE_SECONDS,
    NEXT_ROTATION_TIMESTAMP_SECONDS,
    ROTATIONS_TOTAL,
    HEALS_TOTAL,
    HEAL_HOLDS_TOTAL,
    RESOURCE_CONDITION,
    DELIVERY_PINGS_TOTAL,
    DELIVERY_ROUND_TRIP_SECONDS,
    DELIVERY_VERIFIED,
    LEADER,
    LEADER_TRANSITIONS_TOTAL,
)

# Closed label sets (documented in docs/operator-receiver.md).
ReconcileResult = Literal["success", "retry", "error"]
RECONCILE_RESULTS: tuple[str, ...] = ("success", "retry", "error")
# The `reason` of a successful reconciliation (a failure's is its Synced condition reason).
RECONCILE_SUCCESS_REASON = "ReconcileSuccess"
# The conditions the per-resource gauge reports.
REPORTED_CONDITIONS: tuple[str, ...] = ("Ready", "Synced")
REMOTE_STATES: tuple[str, ...] = (*crd.REMOTE_STATES, "absent")
PingResult = Literal["verified", "not_verified", "send_failed", "receiver_unreachable"]
PING_RESULTS: tuple[str, ...] = ("verified", "not_verified", "send_failed", "receiver_unreachable")
# Status "code" of a WebhookService call that never got an HTTP answer.
CODE_TRANSPORT_ERROR = "transport_error"
CODE_TIMEOUT = "timeout"

# Round trips run from under a second (loopback) to tens of seconds (retries, cold pods).
_ROUND_TRIP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class WebhookRecord:
    """What the per-webhook gauges report for one GeminiWebhook (no secret material)."""

    remote_state: str | None = None
    secret_created_at: float | None = None  # unix seconds
    next_rotation_at: float | None = None  # unix seconds
    delivery_verified: bool | None = None  # None: health check disabled or not yet known
    conditions: tuple[tuple[str, bool], ...] = ()  # (type, status) of Ready/Synced, when known


def _unix(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    if value.tzinfo is None:
        raise ValueError("timestamps for metrics must carry a time zone")
    return value.timestamp()


@dataclass
class ReconcileRecord:
    """How one reconciliation ended, for the reconciles counter."""

    result: ReconcileResult = "success"
    reason: str = RECONCILE_SUCCESS_REASON

    def failed(self, reason: str, *, retry: bool) -> None:
        """A failure: "retry" when another attempt is scheduled, else "error"."""
        self.result = "retry" if retry else "error"
        self.reason = reason


class WebhookTable(Collector):
    """Per-webhook state, turned into gauge samples when scraped. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], WebhookRecord] = {}

    def _update(self, namespace: str, name: str, **changes: object) -> None:
        with self._lock:
            record = self._records.get((namespace, name), WebhookRecord())
            self._records[(namespace, name)] = replace(record, **changes)  # type: ignore[arg-type]

    def set_remote_state(self, namespace: str, name: str, state: str | None) -> None:
        """The webhook's remote state as last observed; None or "absent" when it is gone."""
        if state is not None and state not in REMOTE_STATES:
            raise ValueError(f"unknown remote state {state!r}; expected one of {REMOTE_STATES}")
        self._update(namespace, name, remote_state=state or "absent")

    def set_secret_created(self, namespace: str, name: str, at: datetime | float | None) -> None:
        """When the current signing secret was created (None: the operator holds none)."""
        self._update(namespace, name, secret_created_at=_unix(at))

    def set_next_rotation(self, namespace: str, name: str, at: datetime | float | None) -> None:
        """When the next scheduled rotation is due (None: no schedule, or paused)."""
        self._update(namespace, name, next_rotation_at=_unix(at))

    def set_delivery_verified(self, namespace: str, name: str, verified: bool | None) -> None:
        """The DeliveryVerified condition (None: health check disabled or not yet run)."""
        self._update(namespace, name, delivery_verified=verified)

    def set_conditions(self, namespace: str, name: str, conditions: Iterable[Any]) -> None:
        """Ready and Synced as the reconciliation wrote them (Unknown ones are left out)."""
        known = {
            str(c.get("type")): c.get("status") == "True"
            for c in conditions
            if isinstance(c, Mapping)
            and c.get("type") in REPORTED_CONDITIONS
            and c.get("status") in ("True", "False")
        }
        self._update(namespace, name, conditions=tuple(sorted(known.items())))

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted resource."""
        with self._lock:
            self._records.pop((namespace, name), None)

    def record(self, namespace: str, name: str) -> WebhookRecord | None:
        with self._lock:
            return self._records.get((namespace, name))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            records = sorted(self._records.items())
        now = self._clock()
        by_state = GaugeMetricFamily(
            WEBHOOKS, "GeminiWebhook resources by the remote webhook's state.", labels=["state"]
        )
        counts = dict.fromkeys(REMOTE_STATES, 0)
        age = GaugeMetricFamily(
            SECRET_AGE_SECONDS,
            "Age of the current signing secret the operator holds, per GeminiWebhook.",
            labels=["namespace", "name"],
        )
        next_rotation = GaugeMetricFamily(
            NEXT_ROTATION_TIMESTAMP_SECONDS,
            "Unix time of the next scheduled signing-secret rotation, per GeminiWebhook.",
            labels=["namespace", "name"],
        )
        verified = GaugeMetricFamily(
            DELIVERY_VERIFIED,
            "1 when the last health ping was delivered and verified by the receiver, else 0.",
            labels=["namespace", "name"],
        )
        condition = GaugeMetricFamily(
            RESOURCE_CONDITION,
            "1 when the GeminiWebhook's condition (Ready, Synced) is True, 0 when False.",
            labels=["namespace", "name", "type"],
        )
        for (namespace, name), record in records:
            for type_, status in record.conditions:
                condition.add_metric([namespace, name, type_], 1.0 if status else 0.0)
            if record.remote_state is not None:
                counts[record.remote_state] += 1
            if record.secret_created_at is not None:
                age.add_metric([namespace, name], max(0.0, now - record.secret_created_at))
            if record.next_rotation_at is not None:
                next_rotation.add_metric([namespace, name], record.next_rotation_at)
            if record.delivery_verified is not None:
                verified.add_metric([namespace, name], 1.0 if record.delivery_verified else 0.0)
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        yield age
        yield next_rotation
        yield verified
        yield condition


class OperatorMetrics:
    """Every operator metric, registered in one registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            RECONCILES_TOTAL.removesuffix("_total"),
            "Reconciliations of GeminiWebhook resources, by handler, result (success, retry, "
            "error: a permanent failure that waits for a change) and reason (the Synced "
            "condition's reason).",
            ["handler", "result", "reason"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            RECONCILE_DURATION_SECONDS,
            "Duration of one reconciliation, by handler.",
            ["handler"],
            registry=r,
        )
        self.api_requests = Counter(
            API_REQUESTS_TOTAL.removesuffix("_total"),
            "WebhookService calls, by SDK method and HTTP status code "
            f"({CODE_TRANSPORT_ERROR!r}/{CODE_TIMEOUT!r} when no answer came).",
            ["method", "code"],
            registry=r,
        )
        self.api_request_duration = Histogram(
            API_REQUEST_DURATION_SECONDS,
            "Duration of one WebhookService call, by SDK method.",
            ["method"],
            registry=r,
        )
        self.rotations = Counter(
            ROTATIONS_TOTAL.removesuffix("_total"),
            "Signing-secret rotations performed, by the reason that triggered them.",
            ["reason"],
            registry=r,
        )
        self.heals = Counter(
            HEALS_TOTAL.removesuffix("_total"),
            "Heals performed (lost secret regained, remote webhook recreated, ...), by reason.",
            ["reason"],
            registry=r,
        )
        self.heal_holds = Counter(
            HEAL_HOLDS_TOTAL.removesuffix("_total"),
            "Reconciliations that withheld a healing rotation, by reason: the remote's "
            "signing secrets cannot tell (RemoteSecretsNotReported, RemoteSecretsUnreadable) "
            "or the per-resource heal rate limit (HealRateLimited).",
            ["reason"],
            registry=r,
        )
        self.delivery_pings = Counter(
            DELIVERY_PINGS_TOTAL.removesuffix("_total"),
            "Health pings sent to webhooks, by outcome.",
            ["result"],
            registry=r,
        )
        self.delivery_round_trip = Histogram(
            DELIVERY_ROUND_TRIP_SECONDS,
            "Seconds from sending a health ping to the receiver reporting it verified.",
            buckets=_ROUND_TRIP_BUCKETS,
            registry=r,
        )
        self.leader = Gauge(
            LEADER,
            "1 while this replica holds the leader Lease and may write, else 0; `identity` "
            "is this replica's (its Pod's name), the Lease's holderIdentity when it leads.",
            ["identity"],
            registry=r,
        )
        self.leader_transitions = Counter(
            LEADER_TRANSITIONS_TOTAL.removesuffix("_total"),
            "Times this replica became the leader (acquired the Lease).",
            ["identity"],
            registry=r,
        )
        # Exported at 0 from the start, so that `increase()` sees the first one too.
        for reason in sorted(HEAL_REASONS):
            self.heals.labels(reason)
        for reason in HEAL_HOLD_REASONS:
            self.heal_holds.labels(reason)
        self.webhooks = WebhookTable(clock)
        r.register(self.webhooks)

    def set_leader(self, identity: str, leading: bool) -> None:
        self.leader.labels(identity).set(1 if leading else 0)
        if leading:
            self.leader_transitions.labels(identity).inc()

    @contextmanager
    def time_reconcile(self, handler: str) -> Iterator[ReconcileRecord]:
        """Count and time one reconciliation.

        The block reports a failure it handled with `record.failed(reason, retry=...)`;
        otherwise the result follows how the block ends: a `kopf.TemporaryError` (or any
        exception named `*TemporaryError`) counts as "retry", another exception as "error"
        (the exception's class name is the reason), a normal exit as "success".
        """
        started = time.perf_counter()
        record = ReconcileRecord()
        try:
            yield record
        except BaseException as error:
            if record.result == "success":
                retry = type(error).__name__.endswith("TemporaryError")
                record.failed(type(error).__name__, retry=retry)
            raise
        finally:
            self.reconcile_duration.labels(handler).observe(time.perf_counter() - started)
            self.reconciles.labels(handler, record.result, record.reason).inc()

    def observe_api_call(self, method: str, code: int | str, seconds: float) -> None:
        """Record one WebhookService call (`code`: HTTP status, or a CODE_* constant)."""
        self.api_requests.labels(method, str(code)).inc()
        self.api_request_duration.labels(method).observe(seconds)

    def observe_ping(self, result: PingResult, round_trip_seconds: float | None = None) -> None:
        """Record one health ping's outcome, and its round trip when it verified."""
        if result not in PING_RESULTS:
            raise ValueError(f"unknown ping result {result!r}")
        self.delivery_pings.labels(result).inc()
        if round_trip_seconds is not None:
            self.delivery_round_trip.observe(round_trip_seconds)


REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
METRICS = OperatorMetrics(REGISTRY)


def start_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> WSGIServer:
    """Serve `/metrics` on a daemon thread (port 0: any free port); `.shutdown()` stops it."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> int:
    """Serve `/metrics` on a daemon thread for the life of the process; the bound port."""
    return int(start_server(port, addr, registry).server_address[1])
