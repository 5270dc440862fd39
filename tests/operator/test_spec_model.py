"""Reading a GeminiWebhook: defaults, the remote-name marker, errors naming the field; the
typed view against the CRD schema generated from it."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from pydantic import BaseModel

from gemini_webhook_operator import model
from gemini_webhook_operator.diff import Desired, RemoteWebhook, changes
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError
from gemini_webhooks.contracts.crd_spec import ApiKeySecretRefSpec, GeminiWebhookSpec, RotationSpec
from gemini_webhooks.contracts.crd_spec_schema import SPEC_SCHEMA
from gemini_webhooks.kubesandbox.schema import admit
from tests.operator.schema_values import values

pytestmark = pytest.mark.kube_independent  # alike on any API server: once

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
    ("spec", "message"),
    [
        ({"events": ["batch.completed"]}, "spec.events[0]: unknown event type 'batch.completed'"),
        ({"events": ["batch.cancelled"]}, "spec.events[0]: event type 'batch.cancelled' is "),
        ({"events": [7]}, "spec.events[0]: Input should be a valid string"),
        ({"events": []}, "spec.events: subscribe to at least one event type"),
        ({"events": None}, "spec.events: Field required"),
        ({"events": "batch.failed"}, "spec.events: Input should be a valid list"),
        ({"events": ["batch.failed", "batch.failed"]}, "spec.events: lists an event type twice"),
        ({"url": None}, "spec.url: required unless spec.receiver.enabled is true"),
        ({"url": "ftp://hooks.example.com/x"}, "spec.url: must be an http(s) URL"),
        ({"apiBaseUrl": "emulator:8000"}, "spec.apiBaseUrl: must be an http(s) URL"),
        ({"displayName": ""}, "spec.displayName: String should have at least 1 character"),
        ({"displayName": 5}, "spec.displayName: Input should be a valid string"),
        ({"state": "enabled"}, "spec.state: Input should be 'Enabled' or 'Disabled'"),
        ({"apiKeySecretRef": None}, "spec.apiKeySecretRef: Field required"),
        ({"apiKeySecretRef": "key"}, "spec.apiKeySecretRef: expected an object"),
        ({"apiKeySecretRef": {}}, "spec.apiKeySecretRef.name: Field required"),
        ({"apiKeySecretRef": {"name": "Key_1"}}, "spec.apiKeySecretRef.name: String should match"),
        ({"apiKeySecretRef": {"name": "k", "key": "a/b"}}, "spec.apiKeySecretRef.key: String"),
        ({"signingSecretName": "-x"}, "spec.signingSecretName: String should match pattern"),
        ({"webhookId": "a b"}, "spec.webhookId: String should match pattern"),
        ({"rotation": {"schedule": "61 * * * *"}}, "spec.rotation.schedule: '61 * * * *' is not"),
        ({"rotation": {"schedule": "@daily"}}, "spec.rotation.schedule: String should match"),
        ({"rotation": {"interval": "30d"}}, "spec.rotation.interval: must be a duration in hours"),
        ({"rotation": {"interval": "0h0m"}}, "spec.rotation.interval: must be longer than zero"),
        ({"rotation": {"interval": "9" * 20 + "h"}}, "spec.rotation.interval: duration '999"),
        ({"rotation": {"interval": "1h", "schedule": "0 * * * *"}}, "spec.rotation: set either"),
        ({"rotation": {"revocation": "Later"}}, "spec.rotation.revocation: Input should be 'Gra"),
        ({"rotation": {"paused": "yes"}}, "spec.rotation.paused: Input should be a valid boolean"),
        ({"rotation": []}, "spec.rotation: expected an object"),
        ({"deletionPolicy": "Keep"}, "spec.deletionPolicy: Input should be 'Delete' or 'Orphan'"),
        ({"receiver": "on"}, "spec.receiver: expected an object"),
        ({"receiver": {"enabled": "true"}}, "spec.receiver.enabled: Input should be a valid bool"),
        ({"evnts": ["batch.failed"]}, "spec.evnts: unknown field"),
        ({"rotation": {"intervall": "1h"}}, "spec.rotation.intervall: unknown field"),
    ],
)
def test_invalid_spec_names_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(model.InvalidSpecError, match=re.escape(message)):
        model.parse(_body(**spec))


def test_a_resource_without_a_spec_is_an_invalid_spec() -> None:
    with pytest.raises(model.InvalidSpecError, match=r"^spec: required$"):
        model.parse({"metadata": {"name": "w"}})


def test_every_invalid_field_is_named_at_once() -> None:
    with pytest.raises(model.InvalidSpecError) as raised:
        model.parse(_body(state="On", deletionPolicy="Keep", url="x"))
    named = [line.split(":")[0] for line in str(raised.value).split("; ")]
    assert named == ["spec.url", "spec.state", "spec.deletionPolicy"]


def test_an_invalid_url_is_never_shown_back() -> None:
    # A URL may carry a token (`?key=...`); the message names the field, not the value.
    for field in ("url", "apiBaseUrl"):
        with pytest.raises(model.InvalidSpecError) as raised:
            model.parse(_body(**{field: "hooks.example.com/?key=s3cr3t-t0ken"}))
        assert "s3cr3t" not in str(raised.value)


def test_null_fields_of_the_spec_are_absent_as_the_api_server_reads_them() -> None:
    spec = model.parse(
        _body(state=None, displayName=None, rotation={"paused": None}, deletionPolicy=None)
    )
    assert spec.enabled and spec.display_name == "w" and not spec.rotation.paused
    assert spec.deletion_policy == "Delete"
    assert model.parse(_body(apiKeySecretRef={"name": "k", "key": None})).api_key_key == "api-key"


def test_the_spec_is_read_into_typed_values() -> None:
    spec = model.parse(
        _body(
            events=["batch.failed", "video.generated"],
            state="Disabled",
            apiKeySecretRef={"name": "key", "key": "token"},
            signingSecretName="orders-secret",
            rotation={"interval": "1h30m", "revocation": "Immediate", "paused": True},
            deletionPolicy="Orphan",
            webhookId="wh_1",
            apiBaseUrl="http://emulator:8000",
        )
    )
    assert (spec.events, spec.enabled, spec.api_key_key) == (
        ("batch.failed", "video.generated"),
        False,
        "token",
    )
    assert spec.signing_secret_name == "orders-secret" and spec.deletion_policy == "Orphan"
    assert spec.rotation == model.RotationPolicy(
        interval=timedelta(minutes=90), revocation="Immediate", paused=True
    )
    assert (spec.adopt_id, spec.api_base_url) == ("wh_1", "http://emulator:8000")
    assert model.parse(_body(rotation={"schedule": "0 3 1 * *"})).rotation.schedule == ("0 3 1 * *")


def test_an_invalid_receiver_is_the_receivers_problem_not_the_specs() -> None:
    # spec.receiver's own errors are reported as InvalidReceiver (the reconciler reads
    # `receiver` and gets a CrdReceiverError); only what the URL depends on is the spec's.
    spec = model.parse(_body(receiver={"enabled": True, "replicas": 0}))
    assert spec.receiver_enabled
    with pytest.raises(CrdReceiverError, match=r"spec\.receiver\.replicas"):
        spec.receiver  # noqa: B018
    disabled = model.parse(_body(receiver={"expose": {"ingress": {}}}))
    with pytest.raises(CrdReceiverError, match=r"spec\.receiver\.expose\.ingress\.host"):
        disabled.receiver  # noqa: B018
    # A health check is the health checker's to read (DeliveryVerified says what is wrong).
    assert model.parse(_body(healthCheck={"interval": "1s"})).url is not None


# --- The typed view and the CRD's schema ---------------------------------------------

CRD_SCHEMA = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
# What a spec the CRD's schema accepts may still be refused for: what the schema cannot
# express (and Go's regular expressions, which treat only ASCII as `\s`).
BEYOND_THE_SCHEMA = (
    "spec.url: required unless spec.receiver.enabled is true",
    "spec.url: leave it unset with spec.receiver.expose",
    "spec.rotation.schedule: ",
    "spec.rotation.interval: must be longer than zero",
    "spec.rotation.interval: duration ",  # too long for a timedelta
)


def _resource(spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "w", "namespace": "ns", "uid": UID},
        "spec": spec,
    }


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(spec=values(SPEC_SCHEMA))
def test_any_spec_the_crd_schema_accepts_is_read_or_refused_for_what_it_cannot_say(
    spec: dict[str, Any],
) -> None:
    body = _resource(spec)
    _, causes = admit(body, CRD_SCHEMA)  # as the API server hands it out: defaults applied
    assume(not causes)
    try:
        parsed = model.parse(body)
    except model.InvalidSpecError as error:
        assert str(error).startswith(BEYOND_THE_SCHEMA), str(error)
    else:
        assert parsed.events == tuple(body["spec"]["events"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=values(SPEC_SCHEMA, wild=True))
def test_any_json_at_all_is_read_or_is_an_invalid_spec(spec: Any) -> None:
    # What a cluster without schema validation could hand over: no other exception.
    try:
        model.parse(_resource(spec))
    except model.InvalidSpecError as error:
        assert str(error).startswith("spec"), str(error)


def test_the_schema_and_the_typed_view_name_the_same_fields_with_the_same_defaults() -> None:
    sections: list[tuple[dict[str, Any], type[BaseModel]]] = [
        (SPEC_SCHEMA, GeminiWebhookSpec),
        (SPEC_SCHEMA["properties"]["apiKeySecretRef"], ApiKeySecretRefSpec),
        (SPEC_SCHEMA["properties"]["rotation"], RotationSpec),
    ]
    for schema, section in sections:
        fields = {(f.alias or n): f for n, f in section.model_fields.items()}
        assert list(schema["properties"]) == list(fields)
        for name, field in fields.items():
            node = schema["properties"][name]
            assert node["description"], name
            if "default" in node:
                assert node["default"] == field.get_default(call_default_factory=True), name
            elif not field.is_required():
                assert field.get_default(call_default_factory=True) in (None, RotationSpec()), name
    assert SPEC_SCHEMA["required"] == ["events", "apiKeySecretRef"]
    assert SPEC_SCHEMA["properties"]["rotation"]["not"] == {"required": ["interval", "schedule"]}


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
