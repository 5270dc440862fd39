"""WebhookService, driven only through the real google-genai SDK."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
from google.genai import _interactions_errors as sdk_errors

from gemini_webhooks.contracts.events import SUBSCRIBABLE_EVENT_TYPES
from gemini_webhooks.contracts.signing_secret import matches_truncated

URI = "https://consumer.example/hook"


def create(client, **kw):
    kw.setdefault("uri", URI)
    kw.setdefault("subscribed_events", ["batch.succeeded"])
    return client.webhooks.create(**kw)


def test_create_returns_the_webhook_with_its_secret_once(emulator):
    client = emulator.client()
    hook = create(client, name="orders", subscribed_events=list(SUBSCRIBABLE_EVENT_TYPES))
    assert hook.id and hook.name == "orders" and hook.uri == URI
    assert hook.state == "enabled"
    assert hook.subscribed_events == list(SUBSCRIBABLE_EVENT_TYPES)
    assert hook.new_signing_secret.startswith("whsec_")
    assert hook.create_time == hook.update_time
    assert len(hook.signing_secrets) == 1
    assert matches_truncated(hook.new_signing_secret, hook.signing_secrets[0].truncated_secret)
    fetched = client.webhooks.get(id=hook.id)
    assert fetched.new_signing_secret is None
    assert fetched.signing_secrets[0].truncated_secret == hook.signing_secrets[0].truncated_secret


def test_truncated_secret_is_not_usable_as_the_secret(emulator):
    hook = create(emulator.client())
    truncated = hook.signing_secrets[0].truncated_secret
    assert len(truncated) < len(hook.new_signing_secret) / 2
    assert hook.new_signing_secret not in truncated


def test_get_unknown_webhook_is_not_found(emulator):
    with pytest.raises(sdk_errors.NotFoundError):
        emulator.client().webhooks.get(id="does-not-exist")


def test_delete_removes_the_webhook(emulator):
    client = emulator.client()
    hook = create(client)
    client.webhooks.delete(id=hook.id)
    with pytest.raises(sdk_errors.NotFoundError):
        client.webhooks.get(id=hook.id)
    with pytest.raises(sdk_errors.NotFoundError):
        client.webhooks.delete(id=hook.id)


def test_list_pages_with_opaque_tokens(emulator):
    client = emulator.client()
    ids = [create(client, name=f"w{i}").id for i in range(5)]
    seen, token, pages = [], None, 0
    while True:
        page = client.webhooks.list(page_size=2, page_token=token)
        pages += 1
        seen += [w.id for w in page.webhooks]
        token = page.next_page_token
        if not token:
            break
        assert not token.isdigit()
    assert seen == ids
    assert pages == 3


def test_list_pages_stay_stable_while_webhooks_come_and_go(emulator):
    client = emulator.client()
    ids = [create(client, name=f"w{i}").id for i in range(4)]
    first = client.webhooks.list(page_size=2)
    client.webhooks.delete(id=ids[0])  # already shown
    client.webhooks.delete(id=ids[3])  # not yet shown
    added = create(client, name="late").id
    rest = client.webhooks.list(page_size=10, page_token=first.next_page_token)
    assert [w.id for w in first.webhooks] == ids[:2]
    assert [w.id for w in rest.webhooks] == [ids[2], added]


def test_list_rejects_a_forged_page_token(emulator):
    with pytest.raises(sdk_errors.BadRequestError):
        emulator.client().webhooks.list(page_token="MTIz")


def test_update_with_mask_changes_only_masked_fields(emulator):
    client = emulator.client()
    hook = create(client, name="before")
    updated = client.webhooks.update(
        id=hook.id, name="after", uri="https://other.example/h", update_mask="name"
    )
    assert updated.name == "after"
    assert updated.uri == URI
    assert updated.update_time > hook.update_time


def test_update_without_mask_changes_the_fields_given(emulator):
    client = emulator.client()
    hook = create(client, name="keep")
    updated = client.webhooks.update(
        id=hook.id, subscribed_events=["batch.failed", "video.generated"], state="disabled"
    )
    assert updated.subscribed_events == ["batch.failed", "video.generated"]
    assert updated.state == "disabled"
    assert updated.name == "keep"


def test_an_update_that_changes_nothing_keeps_the_update_time(emulator):
    client = emulator.client()
    hook = create(client, name="same")
    assert client.webhooks.update(id=hook.id, name="same").update_time == hook.update_time


def test_update_with_unknown_mask_field_is_invalid_and_changes_nothing(emulator):
    client = emulator.client()
    hook = create(client, name="same")
    with pytest.raises(sdk_errors.BadRequestError, match="update_mask"):
        client.webhooks.update(id=hook.id, name="new", update_mask="name,colour")
    assert client.webhooks.get(id=hook.id).name == "same"


def test_update_with_a_bad_field_applies_none_of_the_others(emulator):
    client = emulator.client()
    hook = create(client, name="same")
    with pytest.raises(sdk_errors.BadRequestError):
        client.webhooks.update(id=hook.id, name="new", uri="ftp://nope")
    assert client.webhooks.get(id=hook.id).name == "same"


def test_update_unknown_webhook_is_not_found(emulator):
    with pytest.raises(sdk_errors.NotFoundError):
        emulator.client().webhooks.update(id="nope", name="x")


def test_state_disabled_due_to_failed_deliveries_is_not_user_settable(emulator):
    client = emulator.client()
    hook = create(client)
    with pytest.raises(sdk_errors.BadRequestError, match="set by the service"):
        client.webhooks.update(id=hook.id, state="disabled_due_to_failed_deliveries")


@pytest.mark.parametrize("event", ["batch.completed", "nope.nothing", "batch.cancelled"])
def test_create_rejects_events_a_static_webhook_cannot_subscribe_to(emulator, event):
    client = emulator.client()
    with pytest.raises(sdk_errors.BadRequestError, match=event.replace(".", r"\.")):
        create(client, subscribed_events=["batch.succeeded", event])
    assert client.webhooks.list().webhooks in (None, [])


@pytest.mark.parametrize(
    "uri", ["", "ftp://files.example/x", "not a uri", "/relative/path", "http://"]
)
def test_create_rejects_empty_or_non_http_uris(emulator, uri):
    with pytest.raises(sdk_errors.BadRequestError, match="uri"):
        create(emulator.client(), uri=uri)


def test_create_rejects_empty_subscriptions(emulator):
    with pytest.raises(sdk_errors.BadRequestError, match="subscribed_events"):
        create(emulator.client(), subscribed_events=[])


def test_malformed_json_is_invalid_argument(emulator):
    response = httpx.post(
        f"{emulator.base_url}/v1/webhooks",
        content=b"{not json",
        headers={"x-goog-api-key": emulator.api_key, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_missing_api_key_is_unauthenticated(emulator):
    response = httpx.get(f"{emulator.base_url}/v1/webhooks")
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_wrong_api_key_is_permission_denied(emulator):
    with pytest.raises(sdk_errors.PermissionDeniedError):
        emulator.client(api_key="wrong-key").webhooks.list()


@pytest.mark.emulator_config(api_keys=())
def test_without_configured_keys_any_caller_is_accepted(emulator):
    assert emulator.client(api_key="anything").webhooks.list().webhooks in (None, [])


def test_rotate_immediately_leaves_only_the_new_secret(emulator):
    client = emulator.client()
    hook = create(client)
    rotated = client.webhooks.rotate_signing_secret(
        id=hook.id, revocation_behavior="revoke_previous_secrets_immediately"
    )
    assert rotated.secret.startswith("whsec_") and rotated.secret != hook.new_signing_secret
    secrets = client.webhooks.get(id=hook.id).signing_secrets
    assert len(secrets) == 1
    assert matches_truncated(rotated.secret, secrets[0].truncated_secret)
    assert secrets[0].expire_time is None


def test_rotate_after_h24_keeps_the_old_secret_with_an_expire_time(emulator):
    client = emulator.client()
    hook = create(client)
    before = datetime.now(UTC)
    rotated = client.webhooks.rotate_signing_secret(
        id=hook.id, revocation_behavior="revoke_previous_secrets_after_h24"
    )
    new, old = client.webhooks.get(id=hook.id).signing_secrets
    assert matches_truncated(rotated.secret, new.truncated_secret) and new.expire_time is None
    assert matches_truncated(hook.new_signing_secret, old.truncated_secret)
    grace = (old.expire_time - before).total_seconds()
    assert 24 * 3600 - 5 < grace <= 24 * 3600 + 5


def test_rotate_without_behaviour_defaults_to_a_24h_grace(emulator):
    client = emulator.client()
    hook = create(client)
    client.webhooks.rotate_signing_secret(id=hook.id)
    assert len(client.webhooks.get(id=hook.id).signing_secrets) == 2


@pytest.mark.emulator_config(time_scale=24 * 3600 / 0.8)
def test_old_secret_disappears_when_the_grace_period_ends(emulator):
    client = emulator.client()
    hook = create(client)
    client.webhooks.rotate_signing_secret(id=hook.id)
    assert len(client.webhooks.get(id=hook.id).signing_secrets) == 2
    time.sleep(0.9)
    assert len(client.webhooks.get(id=hook.id).signing_secrets) == 1


def test_rotate_accepts_the_guides_rest_spelling(emulator):
    client = emulator.client()
    hook = create(client)
    response = httpx.post(
        f"{emulator.base_url}/v1/webhooks/{hook.id}/rotate_secret",
        json={"revocation_behavior": "REVOKE_PREVIOUS_SECRETS_AFTER_H24"},
        headers={"x-goog-api-key": emulator.api_key},
    )
    assert response.status_code == 200
    assert response.json()["secret"].startswith("whsec_")
    assert len(client.webhooks.get(id=hook.id).signing_secrets) == 2


def test_rotate_rejects_an_unknown_revocation_behaviour(emulator):
    # The SDK validates the enum itself, so send what another client might.
    client = emulator.client()
    hook = create(client)
    response = httpx.post(
        f"{emulator.base_url}/v1/webhooks/{hook.id}:rotateSigningSecret",
        json={"revocation_behavior": "sometime"},
        headers={"x-goog-api-key": emulator.api_key},
    )
    assert response.status_code == 400
    assert "revocation_behavior" in response.json()["error"]["message"]
    assert len(client.webhooks.get(id=hook.id).signing_secrets) == 1


def test_rotate_unknown_webhook_is_not_found(emulator):
    with pytest.raises(sdk_errors.NotFoundError):
        emulator.client().webhooks.rotate_signing_secret(id="nope")


def test_ping_unknown_webhook_is_not_found(emulator):
    with pytest.raises(sdk_errors.NotFoundError):
        emulator.client().webhooks.ping(id="nope")


async def test_async_sdk_client_works_too(emulator):
    client = emulator.client()
    hook = await client.aio.webhooks.create(uri=URI, subscribed_events=["video.generated"])
    assert (await client.aio.webhooks.get(id=hook.id)).uri == URI
