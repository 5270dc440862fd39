"""Failures are retried with backoff under a stable webhook-id; sustained failures disable a
static webhook; a slow endpoint never holds up a fast one."""

from __future__ import annotations

import itertools
import time

import pytest
import standardwebhooks

# 24 h of nominal time pass in about 0.5 s; the first backoff (5 s nominal) is ~30 us.
DAY_IN_HALF_A_SECOND = pytest.mark.emulator_config(time_scale=24 * 3600 / 0.5)


@pytest.mark.emulator_config(time_scale=1000)
def test_failed_deliveries_are_retried_with_the_same_webhook_id(emulator):
    endpoint = emulator.endpoint(statuses=[500, 503, 200])
    hook = emulator.client().webhooks.create(
        uri=endpoint.url, subscribed_events=["batch.succeeded"]
    )
    emulator.fire("batch.succeeded")
    requests = endpoint.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    for request in requests:  # every retry is freshly signed and verifies
        standardwebhooks.Webhook(hook.new_signing_secret).verify(request.body, request.headers)
    [entry] = emulator.wait_for_deliveries(1)
    assert [a["status_code"] for a in entry["attempts"]] == [500, 503, 200]
    assert entry["state"] == "delivered"


@pytest.mark.emulator_config(time_scale=1000)
def test_retries_back_off_exponentially(emulator):
    endpoint = emulator.endpoint(statuses=[500] * 6 + [200])
    emulator.fire("batch.succeeded", webhook_config={"uris": [endpoint.url]})
    requests = endpoint.wait_for(7)
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    # nominal 5, 10, 20, 40, 80, 160 s with equal jitter, scaled by 1000: the last gap
    # (80..160 ms) is far longer than the first two (2.5..5 and 5..10 ms, plus overhead).
    assert gaps[-1] >= 0.08
    assert gaps[-1] > 2 * max(gaps[:2])


@pytest.mark.emulator_config(time_scale=1000, delivery_timeout=0.2)
def test_a_timeout_counts_as_a_failure_and_is_retried(emulator):
    endpoint = emulator.endpoint(delay=[1.0, 0.0])
    emulator.fire("video.generated", webhook_config={"uris": [endpoint.url]})
    [entry] = emulator.wait_for_deliveries(1, timeout=5)
    assert entry["attempts"][0]["status_code"] is None
    assert "timed out" in entry["attempts"][0]["error"]
    assert entry["attempts"][-1]["status_code"] == 200


@DAY_IN_HALF_A_SECOND
def test_a_static_webhook_that_keeps_failing_is_disabled(emulator):
    endpoint = emulator.endpoint(statuses=[500])
    client = emulator.client()
    hook = client.webhooks.create(uri=endpoint.url, subscribed_events=["batch.failed"])
    emulator.fire("batch.failed")
    [entry] = emulator.wait_for_deliveries(1, timeout=10)
    assert client.webhooks.get(id=hook.id).state == "disabled_due_to_failed_deliveries"
    assert entry["state"] in ("failed", "abandoned")
    assert "disabled" in entry["reason"]
    assert len(entry["attempts"]) > 5
    assert emulator.fire("batch.failed")["deliveries"] == []


@DAY_IN_HALF_A_SECOND
def test_re_enabling_a_disabled_webhook_resumes_deliveries(emulator):
    endpoint = emulator.endpoint(statuses=[500])
    client = emulator.client()
    hook = client.webhooks.create(uri=endpoint.url, subscribed_events=["batch.failed"])
    emulator.fire("batch.failed")
    emulator.wait_for_deliveries(1, timeout=10)
    endpoint.statuses[:] = [200]
    client.webhooks.update(id=hook.id, state="enabled")
    emulator.fire("batch.failed")
    emulator.wait_for_deliveries(1, timeout=10, state="delivered")
    assert client.webhooks.get(id=hook.id).state == "enabled"


@DAY_IN_HALF_A_SECOND
def test_a_dynamic_delivery_gives_up_after_the_retry_window(emulator):
    endpoint = emulator.endpoint(statuses=[502])
    emulator.fire("batch.expired", webhook_config={"uris": [endpoint.url]})
    [entry] = emulator.wait_for_deliveries(1, timeout=10)
    assert entry["state"] == "failed"
    assert entry["reason"] == "retry window exhausted"
    assert all(a["status_code"] == 502 for a in entry["attempts"])


@pytest.mark.emulator_config(delivery_timeout=3.0)
def test_a_slow_endpoint_does_not_delay_a_fast_one(emulator):
    slow, fast = emulator.endpoint(delay=1.5), emulator.endpoint()
    client = emulator.client()
    client.webhooks.create(uri=slow.url, subscribed_events=["batch.succeeded"])
    client.webhooks.create(uri=fast.url, subscribed_events=["batch.succeeded"])
    started = time.monotonic()
    for _ in range(6):
        emulator.fire("batch.succeeded")
    fast.wait_for(6, timeout=5)
    assert time.monotonic() - started < 1.0
    slow.wait_for(6, timeout=10)


@pytest.mark.emulator_config(time_scale=100)
def test_deleting_a_webhook_stops_its_pending_retries(emulator):
    endpoint = emulator.endpoint(statuses=[500])
    client = emulator.client()
    hook = client.webhooks.create(uri=endpoint.url, subscribed_events=["batch.failed"])
    emulator.fire("batch.failed")
    endpoint.wait_for(1)
    client.webhooks.delete(id=hook.id)
    [entry] = emulator.wait_for_deliveries(1, timeout=15)
    assert entry["state"] == "abandoned" and entry["reason"] == "webhook deleted"


@pytest.mark.emulator_config(time_scale=1000)
def test_an_unreachable_endpoint_is_a_logged_failure_that_is_retried(emulator):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    emulator.fire("batch.succeeded", webhook_config={"uris": [f"http://127.0.0.1:{port}/h"]})
    deadline = time.monotonic() + 5
    while len(attempts := emulator.deliveries()[0]["attempts"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert attempts[0]["status_code"] is None
    assert "Connect" in attempts[0]["error"]
