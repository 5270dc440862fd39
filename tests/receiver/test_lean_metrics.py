"""The receiver's hot-path histogram and counter expose what prometheus_client's `Histogram`
and `Counter` do."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gemini_webhook_receiver.metrics import LatencyHistogram, LeanCounter

_BUCKETS = (0.0001, 0.001, 0.01, 1.0)
# on a bound, between bounds, below the first, above the last
_AMOUNTS = (0.0001, 0.0005, 0.00002, 0.001, 3.0, 0.01, 0.7, 0.0)


def _all(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but the `_created` ones, whose values are times."""
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for s in _all(registry)
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("labelnames", [(), ("scheme",)])
def test_exposed_as_prometheus_clients_histogram(labelnames: tuple[str, ...]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    lean = LatencyHistogram(
        "x_seconds", "help", labelnames, namespace="t", buckets=_BUCKETS, registry=ours
    )
    reference = Histogram(
        "x_seconds", "help", labelnames, namespace="t", buckets=_BUCKETS, registry=theirs
    )
    for index, amount in enumerate(_AMOUNTS):
        if labelnames:
            value = ("hmac", "jwt")[index % 2]
            lean.labels(value).observe(amount)
            reference.labels(value).observe(amount)
        else:
            lean.observe(amount)
            reference.observe(amount)
    assert _samples(ours) == _samples(theirs)
    (ours_family,), (their_family,) = lean.describe(), list(reference.describe())
    assert ours_family.name == their_family.name == "t_x_seconds"


def test_bad_buckets_and_labels_are_refused() -> None:
    registry = CollectorRegistry()
    with pytest.raises(ValueError):
        LatencyHistogram("a", "h", namespace="t", buckets=(1.0, 0.5), registry=registry)
    histogram = LatencyHistogram(
        "b", "h", ("scheme",), namespace="t", buckets=(1.0,), registry=registry
    )
    with pytest.raises(ValueError):
        histogram.labels("hmac", "extra")


def test_lean_counter_exposed_as_prometheus_clients_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    lean = LeanCounter("deliveries", "help", ("outcome", "reason"), namespace="t", registry=ours)
    reference = Counter("deliveries", "help", ("outcome", "reason"), namespace="t", registry=theirs)
    for labels in (("accepted", "ok"), ("rejected", "bad_signature"), ("accepted", "ok")):
        lean.labels(*labels).inc()
        reference.labels(*labels).inc()
    assert _samples(ours) == _samples(theirs)
    created = {s.labels["outcome"] for s in _all(ours) if s.name == "t_deliveries_created"}
    assert created == {"accepted", "rejected"}
    (ours_family,), (their_family,) = lean.describe(), list(reference.describe())
    assert ours_family.name == their_family.name == "t_deliveries"
    assert ours_family.type == their_family.type == "counter"
    with pytest.raises(ValueError):
        lean.labels("accepted")
