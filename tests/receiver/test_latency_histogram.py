"""The receiver's hot-path histogram exposes what prometheus_client's `Histogram` does."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gemini_webhook_receiver.metrics import LatencyHistogram

_BUCKETS = (0.0001, 0.001, 0.01, 1.0)
# on a bound, between bounds, below the first, above the last
_AMOUNTS = (0.0001, 0.0005, 0.00002, 0.001, 3.0, 0.01, 0.7, 0.0)


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
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
