"""Reading a GeminiWebhook: defaults, the remote-name marker, errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from gemini_webhook_operator import model
from gemini_webhook_operator.diff import Desired, RemoteWebhook, changes

UID = "6f1d2a3b-0000-4000-8000-123456789abc"


def _body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "url": "https://hooks.example.com/x",
        "events": ["batch.succeeded"],
        "apiKeySecretRef": {"name": "key"},
    }
    base.update(spec)
    return {"metadata": {"name": "w", "namespace": "ns", "uid": UID}, "spec": base}


def test_defaults() -> None:
    spec = model.parse(_body())
    assert spec.signing_secret_name == "w-signing-secret"
    assert spec.api_key_key == "api-key"
    assert spec.enabled and spec.deletion_policy == "Delete"
    assert spec.rotation.revocation == "Grace" and not spec.rotation.paused


def test_remote_name_carries_the_uid_marker() -> None:
    spec = model.parse(_body(displayName="Orders"))
    assert spec.remote_name.startswith("Orders ")
    assert model.marker_uid(spec.remote_name) == UID
    assert model.marker_uid("Orders") is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"events": ["batch.completed"]}, "spec.events[0]"),
        ({"events": ["batch.cancelled"]}, "spec.events[0]"),
        ({"url": None}, "spec.url"),
        ({"rotation": {"schedule": "61 * * * *"}}, "spec.rotation.schedule"),
        ({"rotation": {"interval": "30d"}}, "spec.rotation.interval"),
        ({"rotation": {"interval": "1h", "schedule": "0 * * * *"}}, "spec.rotation"),
        ({"deletionPolicy": "Keep"}, "spec.deletionPolicy"),
    ],
)
def test_invalid_spec_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(model.InvalidSpecError, match=field.replace("[", r"\[")):
        model.parse(_body(**spec))


def test_diff_sends_only_the_fields_that_differ() -> None:
    desired = Desired("n", "https://a", ("batch.succeeded", "batch.failed"), "enabled")
    observed = RemoteWebhook("id", "n", "https://b", ("batch.failed", "batch.succeeded"), "enabled")
    assert changes(desired, observed) == {"uri": "https://a"}


def test_diff_does_not_reenable_a_webhook_disabled_by_failures() -> None:
    desired = Desired("n", "https://a", ("batch.failed",), "enabled")
    observed = RemoteWebhook(
        "id", "n", "https://a", ("batch.failed",), "disabled_due_to_failed_deliveries"
    )
    assert changes(desired, observed) == {}
    assert changes(Desired("n", "https://a", ("batch.failed",), "disabled"), observed) == {
        "state": "disabled"
    }
