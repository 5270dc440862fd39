"""Every Prometheus metric the receiver exports — the one place their names are defined.

The Grafana dashboard and the alert rules import these names; keep them stable.
Label values are bounded sets (outcomes, reason codes, configured webhook/target names),
never ids, URLs with secrets, or secret material.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

NAMESPACE = "gemini_receiver"


class _Observations:
    """One label set's bucket counts (not cumulative; the last is +Inf) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount
        self.sum += amount


_Child = TypeVar("_Child")


class _LeanFamily(Collector, Generic[_Child]):
    """What the lean collectors below share: a name, label names, and one child per set
    of label values, made by `_child`."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], namespace: str
    ) -> None:
        self.name = f"{namespace}_{name}"
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}

    def _child(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child()
        return child


class LatencyHistogram(_LeanFamily[_Observations]):
    """A Prometheus histogram for the delivery hot path, exposed as prometheus_client's
    `Histogram` exposes one (`_bucket{le}`, `_count`, `_sum`; no `_created`) through its
    custom-collector interface.

    `prometheus_client.Histogram.observe` takes two locks (its bucket's, the sum's) and
    walks the bounds in Python: three per delivery were 6-8% of its CPU (bench/receiver,
    A/B). Here an observation is a bisection and two additions. Observed and collected on the
    event loop's thread only (the receiver's `/metrics` is served by that loop), so no
    lock is needed.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        namespace: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        super().__init__(name, documentation, labelnames, namespace)
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(bounds) or not bounds or bounds[-1] == float("inf"):
            raise ValueError("buckets: ascending finite bounds (+Inf is added)")
        self.bounds = bounds
        self._les = [floatToGoString(b) for b in (*bounds, float("inf"))]
        if not self.labelnames:
            self._children[()] = self._child()
        registry.register(self)

    def _child(self) -> _Observations:
        return _Observations(self.bounds)

    def observe(self, amount: float) -> None:
        """Observe, for a histogram without labels."""
        self._children[()].observe(amount)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._les, list(child.counts), strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        yield family


class _Count:
    """One label set's count, and when it was first counted (`_created`)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self) -> None:
        self.value += 1


class LeanCounter(_LeanFamily[_Count]):
    """A Prometheus counter for the delivery hot path, exposed as prometheus_client's
    `Counter` exposes one (`_total` and `_created` per label set).

    `prometheus_client.Counter`'s `inc` checks its amount and takes a lock: two per
    delivery were ~1% of its CPU. Here it is one addition; like `LatencyHistogram`,
    counted and collected on the event loop's thread only. Counts by one.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        namespace: str,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        super().__init__(name, documentation, labelnames, namespace)
        registry.register(self)

    def _child(self) -> _Count:
        return _Count()

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value, created=child.created)
        yield family


# Latency buckets in seconds, dense below 10 ms where acknowledgement lives.
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

DELIVERIES_TOTAL = "gemini_receiver_deliveries_total"
deliveries = LeanCounter(
    "deliveries",
    "Deliveries received, by outcome (accepted, duplicate, ping, rejected, failed) and "
    "reason (ok or the rejection reason code).",
    ["outcome", "reason"],
    namespace=NAMESPACE,
)
verification_seconds = LatencyHistogram(
    "verification_seconds",
    "Time to verify one delivery's signature, by scheme (hmac, jwt).",
    ["scheme"],
    namespace=NAMESPACE,
    buckets=_FAST,
)
ack_seconds = LatencyHistogram(
    "ack_seconds",
    "Time from request start to the answer sent to Gemini.",
    namespace=NAMESPACE,
    buckets=_FAST,
)
end_to_end_seconds = LatencyHistogram(
    "end_to_end_seconds",
    "Time from receipt to delivery at every target.",
    namespace=NAMESPACE,
    buckets=_SLOW,
)
duplicates = Counter(
    "duplicates",
    "Deliveries answered 2xx without forwarding because their webhook-id was seen.",
    ["source"],
    namespace=NAMESPACE,
)
# The closed set of `forwards` outcomes: every failed attempt carries the one that names
# what failed, so the dashboard, the alerts and the logs speak the same words.
FORWARD_OK = "ok"
FORWARD_HTTP_ERROR = "http_error"  # the target answered, but not 2xx
FORWARD_CONNECTION_ERROR = "connection_error"  # no connection, or it broke mid-request
FORWARD_TIMEOUT = "timeout"  # no complete answer within the attempt's time
FORWARD_INTERNAL_ERROR = "internal_error"  # a bug in the receiver (logged with its type)
FORWARD_OUTCOMES: tuple[str, ...] = (
    FORWARD_OK,
    FORWARD_HTTP_ERROR,
    FORWARD_CONNECTION_ERROR,
    FORWARD_TIMEOUT,
    FORWARD_INTERNAL_ERROR,
)

forwards = LeanCounter(
    "forwards",
    "Forward attempts, by target name and outcome (ok, http_error, connection_error, "
    "timeout, internal_error).",
    ["target", "outcome"],
    namespace=NAMESPACE,
)
unroutable = Counter(
    "unroutable",
    "Events that no routing rule (nor a default route) matched; they are dead-lettered.",
    ["source"],
    namespace=NAMESPACE,
)
dead_letters = Counter(
    "dead_letters",
    "Events given up on, by reason (unroutable, max_attempts, max_age).",
    ["reason"],
    namespace=NAMESPACE,
)
queue_depth = Gauge(
    "queue_depth",
    "Redis mode: entries in the deliveries stream not yet acknowledged by the group.",
    namespace=NAMESPACE,
)
queue_lag_seconds = Gauge(
    "queue_lag_seconds",
    "Redis mode: age of the oldest unacknowledged entry.",
    namespace=NAMESPACE,
)
dead_letter_depth = Gauge(
    "dead_letter_depth",
    "Redis mode: entries in the dead-letter stream.",
    namespace=NAMESPACE,
)
redis_durability = Gauge(
    "redis_durability",
    "Redis mode: 1 for the current state of the server's persistence — durable (AOF with "
    "fsync everysec/always), at_risk (not durable; running because "
    "redis.accept_data_loss_risk is set) or refused (not durable; not acknowledging).",
    ["state"],
    namespace=NAMESPACE,
)
jwks_refreshes = Counter(
    "jwks_refreshes",
    "JWKS fetches, by outcome (ok, error, rate_limited).",
    ["outcome"],
    namespace=NAMESPACE,
)
secret_reloads = Counter(
    "secret_reloads",
    "Signing-secret (re)loads, by static webhook and outcome (ok, error).",
    ["webhook", "outcome"],
    namespace=NAMESPACE,
)
loaded_secrets = Gauge(
    "loaded_secrets",
    "Signing secrets currently accepted, by static webhook.",
    ["webhook"],
    namespace=NAMESPACE,
)
last_ping_timestamp_seconds = Gauge(
    "last_ping_timestamp_seconds",
    "Unix time of the last verified ping delivery, by source.",
    ["source"],
    namespace=NAMESPACE,
)
inflight = Gauge(
    "inflight",
    "Deliveries being handled or forwarded right now.",
    namespace=NAMESPACE,
)

# Why a public-port connection was closed to make room for a new one (public.py): it was
# between requests, its request head was unfinished (or not begun), or it was lingering
# after a refusal.
EVICTED_STATES: tuple[str, ...] = ("idle", "head", "lingering")
connections_evicted = Counter(
    "connections_evicted",
    "Public-port connections closed to make room for a new one while all "
    "limits.max_connections were open, by state (idle, head, lingering).",
    ["state"],
    namespace=NAMESPACE,
)

METRIC_NAMES: tuple[str, ...] = (
    DELIVERIES_TOTAL,
    "gemini_receiver_verification_seconds",
    "gemini_receiver_ack_seconds",
    "gemini_receiver_end_to_end_seconds",
    "gemini_receiver_duplicates_total",
    "gemini_receiver_forwards_total",
    "gemini_receiver_unroutable_total",
    "gemini_receiver_dead_letters_total",
    "gemini_receiver_queue_depth",
    "gemini_receiver_queue_lag_seconds",
    "gemini_receiver_dead_letter_depth",
    "gemini_receiver_redis_durability",
    "gemini_receiver_jwks_refreshes_total",
    "gemini_receiver_secret_reloads_total",
    "gemini_receiver_loaded_secrets",
    "gemini_receiver_last_ping_timestamp_seconds",
    "gemini_receiver_inflight",
    "gemini_receiver_connections_evicted_total",
)
