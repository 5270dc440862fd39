"""Deliveries to static (registered) webhooks, verified with the standardwebhooks library."""

from __future__ import annotations

import time

import pytest
import standardwebhooks

from gemini_webhooks.contracts.delivery import PING_EVENT_TYPE, is_hmac_v1_list
from gemini_webhooks.contracts.events import CATALOGUE, SUBSCRIBABLE_EVENT_TYPES, EventType
from gemini_webhooks.emulator import ControlError


def register(emulator, endpoint, events=SUBSCRIBABLE_EVENT_TYPES):
    return emulator.client().webhooks.create(uri=endpoint.url, subscribed_events=list(events))


def verify(secret, request):
    return standardwebhooks.Webhook(secret).verify(request.body, request.headers)


@pytest.mark.parametrize("event_type", SUBSCRIBABLE_EVENT_TYPES)
def test_every_subscribable_event_arrives_signed_with_its_catalogue_data(emulator, event_type):
    endpoint = emulator.endpoint()
    hook = register(emulator, endpoint)
    emulator.fire(event_type)
    [request] = endpoint.wait_for(1)
    envelope = verify(hook.new_signing_secret, request)
    assert envelope["type"] == event_type
    assert envelope["version"] == "v1"
    assert envelope["timestamp"].endswith("Z")
    expected_fields = set(CATALOGUE[EventType(event_type)].data_fields)
    assert expected_fields <= set(envelope["data"])
    assert "user_metadata" not in envelope


def test_data_given_to_the_control_api_is_delivered_as_is(emulator):
    endpoint = emulator.endpoint()
    hook = register(emulator, endpoint)
    data = {"id": "batches/b1", "error_code": 3, "error_message": "bad input"}
    emulator.fire("batch.failed", data)
    [request] = endpoint.wait_for(1)
    assert verify(hook.new_signing_secret, request)["data"] == data


def test_a_webhook_receives_only_the_events_it_subscribes_to(emulator):
    endpoint = emulator.endpoint()
    register(emulator, endpoint, ["batch.failed"])
    emulator.fire("batch.succeeded")
    emulator.fire("video.generated")
    emulator.fire("batch.failed")
    emulator.wait_for_deliveries(1)
    time.sleep(0.1)
    assert [r.json()["type"] for r in endpoint.requests] == ["batch.failed"]


def test_disabled_webhooks_receive_nothing(emulator):
    endpoint = emulator.endpoint()
    hook = register(emulator, endpoint)
    emulator.client().webhooks.update(id=hook.id, state="disabled")
    result = emulator.fire("batch.succeeded")
    assert result["deliveries"] == []


def test_every_subscribed_webhook_gets_its_own_signed_copy(emulator):
    first, second = emulator.endpoint(), emulator.endpoint()
    hook1, hook2 = register(emulator, first), register(emulator, second)
    emulator.fire("interaction.completed")
    [r1], [r2] = first.wait_for(1), second.wait_for(1)
    assert verify(hook1.new_signing_secret, r1) == verify(hook2.new_signing_secret, r2)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(hook2.new_signing_secret, r1)


def test_during_a_grace_period_each_valid_secret_signs(emulator):
    endpoint = emulator.endpoint()
    client = emulator.client()
    hook = register(emulator, endpoint)
    new_secret = client.webhooks.rotate_signing_secret(id=hook.id).secret
    emulator.fire("batch.succeeded")
    [request] = endpoint.wait_for(1)
    signature = request.headers["webhook-signature"]
    assert is_hmac_v1_list(signature) and len(signature.split(" ")) == 2
    assert verify(hook.new_signing_secret, request) == verify(new_secret, request)


def test_after_immediate_revocation_the_old_secret_no_longer_verifies(emulator):
    endpoint = emulator.endpoint()
    client = emulator.client()
    hook = register(emulator, endpoint)
    new_secret = client.webhooks.rotate_signing_secret(
        id=hook.id, revocation_behavior="revoke_previous_secrets_immediately"
    ).secret
    emulator.fire("batch.succeeded")
    [request] = endpoint.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    verify(new_secret, request)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(hook.new_signing_secret, request)


@pytest.mark.emulator_config(time_scale=24 * 3600 / 0.8)
def test_when_the_grace_period_ends_only_the_new_secret_signs(emulator):
    endpoint = emulator.endpoint()
    client = emulator.client()
    hook = register(emulator, endpoint)
    new_secret = client.webhooks.rotate_signing_secret(id=hook.id).secret
    time.sleep(0.9)
    emulator.fire("batch.succeeded")
    [request] = endpoint.wait_for(1)
    verify(new_secret, request)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verify(hook.new_signing_secret, request)


def test_ping_sends_a_test_event_to_the_webhook(emulator):
    endpoint = emulator.endpoint()
    hook = register(emulator, endpoint, ["batch.failed"])
    assert emulator.client().webhooks.ping(id=hook.id) is not None
    [request] = endpoint.wait_for(1)
    envelope = verify(hook.new_signing_secret, request)
    assert envelope["type"] == PING_EVENT_TYPE
    assert envelope["data"]["id"] == hook.id


def test_the_delivery_log_shows_attempts_status_codes_and_times(emulator):
    endpoint = emulator.endpoint()
    hook = register(emulator, endpoint)
    fired = emulator.fire("batch.expired")
    [entry] = emulator.wait_for_deliveries(1, webhook_id=hook.id)
    assert entry["id"] == fired["deliveries"][0]
    assert entry["event_id"] == fired["event_id"]
    assert entry["state"] == "delivered" and entry["kind"] == "static"
    [attempt] = entry["attempts"]
    assert attempt["status_code"] == 200 and attempt["time"].endswith("Z")
    assert attempt["duration_ms"] >= 0
    assert endpoint.requests[0].headers["webhook-id"] == entry["id"]
    assert emulator.control.delivery(entry["id"])["state"] == "delivered"


def test_reset_forgets_webhooks_and_deliveries(emulator):
    endpoint = emulator.endpoint()
    register(emulator, endpoint)
    emulator.fire("batch.succeeded")
    emulator.wait_for_deliveries(1)
    emulator.control.reset()
    assert emulator.deliveries() == []
    assert emulator.client().webhooks.list().webhooks in (None, [])


def test_the_control_api_rejects_unknown_event_types(emulator):
    with pytest.raises(ControlError, match="unknown event type") as caught:
        emulator.fire("batch.completed")
    assert caught.value.status_code == 400


def test_the_control_api_needs_the_api_key(emulator):
    from gemini_webhooks.emulator import ControlClient

    with ControlClient(emulator.base_url) as anonymous, pytest.raises(ControlError) as caught:
        anonymous.fire("batch.succeeded")
    assert caught.value.status_code == 401


def test_a_cluster_service_uri_is_delivered_through_an_in_process_override(emulator):
    endpoint = emulator.endpoint()
    address = endpoint.url.split("/")[2]
    emulator.client().webhooks.create(
        uri="http://gemini-receiver.default.svc.cluster.local:8080/hook",
        subscribed_events=["batch.succeeded"],
    )
    emulator.set_endpoint_overrides({"default/gemini-receiver:8080": address})
    emulator.fire("batch.succeeded")
    [request] = endpoint.wait_for(1)
    assert request.headers["Host"] == "gemini-receiver.default.svc.cluster.local:8080"


def test_a_cluster_service_uri_goes_through_http_proxy_read_at_delivery_time(
    emulator, cluster_proxy
):
    endpoint = emulator.endpoint()
    address = endpoint.url.split("/")[2]
    emulator.client().webhooks.create(
        uri="http://orders.shop.svc.cluster.local:9000/hook",
        subscribed_events=["batch.succeeded"],
    )
    cluster_proxy.serve_service("orders", "shop", 9000, address)
    emulator.fire("batch.succeeded")
    [entry] = emulator.wait_for_deliveries(1, state="delivered")
    assert entry["attempts"][0]["status_code"] == 200
    [request] = endpoint.wait_for(1)
    assert request.headers["Host"] == "orders.shop.svc.cluster.local:9000"


def test_the_delivery_log_keeps_a_bounded_number_of_settled_entries(emulator):
    from dataclasses import replace

    engine = emulator.emulator.engine
    engine.settings = replace(engine.settings, max_log_entries=3)
    register(emulator, emulator.endpoint())
    fired = [emulator.fire("batch.succeeded")["event_id"] for _ in range(1)]
    for _ in range(4):
        emulator.wait_for_deliveries(1, event_id=fired[-1])
        fired.append(emulator.fire("batch.succeeded")["event_id"])
    emulator.wait_for_deliveries(1, event_id=fired[-1])
    assert [d["event_id"] for d in emulator.deliveries()] == fired[-3:]
