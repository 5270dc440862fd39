"""The operator's metrics: stable names, low-cardinality labels, no secret material."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

import kopf
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gemini_webhook_operator import metrics
from gemini_webhook_operator.metrics import OperatorMetrics


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(m: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_documented_metric_is_exposed() -> None:
    m = OperatorMetrics(CollectorRegistry())
    with m.time_reconcile("create"):
        pass
    m.observe_api_call("list", 200, 0.01)
    m.rotations.labels("due").inc()
    m.heals.labels("secret_missing").inc()
    m.heal_holds.labels("HealRateLimited").inc()
    m.webhooks.set_conditions("ns", "a", [{"type": "Ready", "status": "True"}])
    m.observe_ping("verified", 0.2)
    m.webhooks.set_remote_state("ns", "a", "enabled")
    m.webhooks.set_secret_created("ns", "a", 100.0)
    m.webhooks.set_next_rotation("ns", "a", 200.0)
    m.webhooks.set_delivery_verified("ns", "a", True)
    m.set_leader("replica-a", True)
    names = {name for name, _ in samples(m)}
    for name in metrics.ALL_METRIC_NAMES:
        assert name in names or f"{name}_count" in names, name
    docs = open("docs/operator-receiver.md", encoding="utf-8").read()
    for name in metrics.ALL_METRIC_NAMES:
        assert f"`{name}`" in docs, f"{name} is not documented"


def test_reconcile_result_follows_how_the_block_ends() -> None:
    m = OperatorMetrics(CollectorRegistry())
    with m.time_reconcile("update"):
        pass
    with pytest.raises(kopf.TemporaryError), m.time_reconcile("update"):
        raise kopf.TemporaryError("later", delay=1)
    with pytest.raises(RuntimeError), m.time_reconcile("update"):
        raise RuntimeError("boom")
    got = samples(m)
    for result, reason in (
        ("success", "ReconcileSuccess"),
        ("retry", "TemporaryError"),
        ("error", "RuntimeError"),
    ):
        labels = (("handler", "update"), ("reason", reason), ("result", result))
        assert got[(metrics.RECONCILES_TOTAL, labels)] == 1.0
    assert got[(f"{metrics.RECONCILE_DURATION_SECONDS}_count", (("handler", "update"),))] == 3


def test_a_handled_failure_counts_as_retry_or_error_with_its_reason_not_as_success() -> None:
    m = OperatorMetrics(CollectorRegistry())
    with m.time_reconcile("change") as record:
        record.failed("InvalidSpec", retry=False)  # permanent: waits for a spec change
    with pytest.raises(kopf.TemporaryError), m.time_reconcile("change") as record:
        record.failed("QuotaExceeded", retry=True)
        raise kopf.TemporaryError("QuotaExceeded: will retry", delay=1)
    got = samples(m)
    error = (("handler", "change"), ("reason", "InvalidSpec"), ("result", "error"))
    retry = (("handler", "change"), ("reason", "QuotaExceeded"), ("result", "retry"))
    assert got[(metrics.RECONCILES_TOTAL, error)] == 1
    assert got[(metrics.RECONCILES_TOTAL, retry)] == 1
    assert not [
        k for k in got if k[0] == metrics.RECONCILES_TOTAL and ("result", "success") in k[1]
    ]


def test_ready_and_synced_are_per_resource_gauges_and_unknown_is_left_out() -> None:
    m = OperatorMetrics(CollectorRegistry())
    m.webhooks.set_conditions(
        "ns",
        "a",
        [
            {"type": "Ready", "status": "False", "reason": "InvalidSpec"},
            {"type": "Synced", "status": "False", "reason": "InvalidSpec"},
            {"type": "DeliveryVerified", "status": "True"},
        ],
    )
    m.webhooks.set_conditions("ns", "b", [{"type": "Ready", "status": "Unknown"}, "junk"])
    got = {k: v for k, v in samples(m).items() if k[0] == metrics.RESOURCE_CONDITION}
    assert got == {
        (metrics.RESOURCE_CONDITION, (("name", "a"), ("namespace", "ns"), ("type", "Ready"))): 0,
        (metrics.RESOURCE_CONDITION, (("name", "a"), ("namespace", "ns"), ("type", "Synced"))): 0,
    }
    m.webhooks.forget("ns", "a")
    assert not [k for k in samples(m) if k[0] == metrics.RESOURCE_CONDITION]


def test_api_calls_are_counted_by_method_and_status_code() -> None:
    m = OperatorMetrics(CollectorRegistry())
    m.observe_api_call("get", 404, 0.1)
    m.observe_api_call("get", 404, 0.1)
    m.observe_api_call("rotate_signing_secret", metrics.CODE_TIMEOUT, 5.0)
    got = samples(m)
    assert got[(metrics.API_REQUESTS_TOTAL, (("code", "404"), ("method", "get")))] == 2
    key = (metrics.API_REQUESTS_TOTAL, (("code", "timeout"), ("method", "rotate_signing_secret")))
    assert got[key] == 1


def test_webhooks_are_counted_by_remote_state_with_every_state_present() -> None:
    m = OperatorMetrics(CollectorRegistry())
    m.webhooks.set_remote_state("ns", "a", "enabled")
    m.webhooks.set_remote_state("ns", "b", "disabled_due_to_failed_deliveries")
    m.webhooks.set_remote_state("ns", "c", None)
    got = samples(m)
    assert got[(metrics.WEBHOOKS, (("state", "enabled"),))] == 1
    assert got[(metrics.WEBHOOKS, (("state", "disabled_due_to_failed_deliveries"),))] == 1
    assert got[(metrics.WEBHOOKS, (("state", "absent"),))] == 1
    assert got[(metrics.WEBHOOKS, (("state", "disabled"),))] == 0


def test_unknown_remote_state_is_rejected_rather_than_becoming_a_label() -> None:
    m = OperatorMetrics(CollectorRegistry())
    with pytest.raises(ValueError, match="unknown remote state"):
        m.webhooks.set_remote_state("ns", "a", "STATE_UNSPECIFIED")


def test_secret_age_is_measured_at_scrape_time() -> None:
    clock = FakeClock(1_000.0)
    m = OperatorMetrics(CollectorRegistry(), clock=clock)
    m.webhooks.set_secret_created("ns", "a", datetime.fromtimestamp(400.0, UTC))
    key = (metrics.SECRET_AGE_SECONDS, (("name", "a"), ("namespace", "ns")))
    assert samples(m)[key] == 600.0
    clock.now = 1_060.0
    assert samples(m)[key] == 660.0


def test_forgetting_a_resource_removes_all_its_series() -> None:
    m = OperatorMetrics(CollectorRegistry())
    m.webhooks.set_remote_state("ns", "a", "enabled")
    m.webhooks.set_secret_created("ns", "a", 1.0)
    m.webhooks.set_next_rotation("ns", "a", 2.0)
    m.webhooks.set_delivery_verified("ns", "a", False)
    m.webhooks.forget("ns", "a")
    assert not [k for k in samples(m) if ("name", "a") in k[1]]
    assert samples(m)[(metrics.WEBHOOKS, (("state", "enabled"),))] == 0


def test_naive_timestamps_are_rejected() -> None:
    m = OperatorMetrics(CollectorRegistry())
    with pytest.raises(ValueError, match="time zone"):
        m.webhooks.set_next_rotation("ns", "a", datetime(2026, 1, 1))


def test_ping_round_trip_feeds_the_latency_histogram() -> None:
    m = OperatorMetrics(CollectorRegistry())
    m.observe_ping("verified", 0.3)
    m.observe_ping("not_verified")
    got = samples(m)
    assert got[(f"{metrics.DELIVERY_ROUND_TRIP_SECONDS}_count", ())] == 1
    assert got[(metrics.DELIVERY_PINGS_TOTAL, (("result", "not_verified"),))] == 1
    with pytest.raises(ValueError):
        m.observe_ping("great")  # type: ignore[arg-type]


def test_metrics_endpoint_serves_the_default_registry_on_an_ephemeral_port() -> None:
    server = metrics.start_server(0)
    port = server.server_address[1]
    metrics.METRICS.webhooks.set_remote_state("served", "x", "enabled")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        metrics.METRICS.webhooks.forget("served", "x")
        server.shutdown()
        server.server_close()
    assert f'{metrics.WEBHOOKS}{{state="enabled"}}' in body
    assert "process_resident_memory_bytes" in body
