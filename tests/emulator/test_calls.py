"""The control API's record of WebhookService calls by caller address (`/emulator/v1/calls`):
each operation named, its webhook and answer, counted per source; reset forgets them."""

from __future__ import annotations

import pytest

from gemini_webhooks.emulator.calls import operation


@pytest.mark.parametrize(
    ("method", "path", "named"),
    [
        ("POST", "/v1beta/webhooks", ("create", None)),
        ("GET", "/v1/webhooks", ("list", None)),
        ("GET", "/v1/webhooks/abc", ("get", "abc")),
        ("PATCH", "/v1/webhooks/abc", ("update", "abc")),
        ("DELETE", "/v1alpha/webhooks/abc", ("delete", "abc")),
        ("POST", "/v1/webhooks/abc:ping", ("ping", "abc")),
        ("POST", "/v1/webhooks/abc:rotateSigningSecret", ("rotateSigningSecret", "abc")),
        ("POST", "/v1/webhooks/abc/rotate_secret", ("rotateSigningSecret", "abc")),
        ("POST", "/v1/batches/abc", None),
        ("GET", "/emulator/v1/deliveries", None),
    ],
)
def test_each_webhook_service_path_names_its_operation(method, path, named):
    assert operation(method, path) == named


def test_calls_are_recorded_in_order_by_source_with_their_answers(emulator):
    client = emulator.client()
    hook = client.webhooks.create(
        uri="https://consumer.example/hook", subscribed_events=["batch.succeeded"]
    )
    client.webhooks.rotate_signing_secret(id=hook.id)
    client.webhooks.get(id=hook.id)
    with pytest.raises(Exception, match=r"404"):
        client.webhooks.get(id="missing")
    emulator.control.fire("batch.succeeded")  # the control API is not the WebhookService

    recorded = emulator.control.calls()
    assert recorded["by_source"] == {"127.0.0.1": {"create": 1, "get": 2, "rotateSigningSecret": 1}}
    calls = recorded["calls"]
    assert [(c["operation"], c["webhook_id"], c["status_code"]) for c in calls] == [
        ("create", None, 200),
        ("rotateSigningSecret", hook.id, 200),
        ("get", hook.id, 200),
        ("get", "missing", 404),
    ]
    assert {c["source"] for c in calls} == {"127.0.0.1"}
    assert calls[0]["time"] <= calls[-1]["time"]
    assert emulator.control.calls(source="10.0.0.9") == {"by_source": {}, "calls": []}

    emulator.control.reset()
    assert emulator.control.calls() == {"by_source": {}, "calls": []}
