"""Dynamic (request-level) webhooks: RS256 JWTs verified with PyJWT against the served JWKS."""

from __future__ import annotations

import time

import jwt
import pytest

from gemini_webhooks.contracts.delivery import GOOGLE_ISSUER, signature_scheme
from gemini_webhooks.contracts.events import ALL_EVENT_TYPES, CATALOGUE, EventType

METADATA = {"order": "o-42", "tenant": {"id": 7}}


def verify_jwt(emulator, request, audience):
    token = request.headers["webhook-signature"]
    assert signature_scheme(token) == "jwt"
    jwks = jwt.PyJWKClient(f"{emulator.base_url}/.well-known/jwks.json", cache_keys=False)
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=GOOGLE_ISSUER)


@pytest.mark.parametrize("event_type", ALL_EVENT_TYPES)
def test_every_event_type_reaches_a_jobs_own_uris_with_its_user_metadata(emulator, event_type):
    endpoint = emulator.endpoint()
    emulator.fire(event_type, webhook_config={"uris": [endpoint.url], "user_metadata": METADATA})
    [request] = endpoint.wait_for(1)
    envelope = request.json()
    assert envelope["type"] == event_type
    assert envelope["user_metadata"] == METADATA
    assert set(CATALOGUE[EventType(event_type)].data_fields) <= set(envelope["data"])
    claims = verify_jwt(emulator, request, endpoint.url)
    assert {k: claims[k] for k in envelope} == envelope


def test_jwt_carries_registered_claims_with_jti_equal_to_webhook_id(emulator):
    endpoint = emulator.endpoint()
    emulator.fire("batch.succeeded", webhook_config={"uris": [endpoint.url]})
    [request] = endpoint.wait_for(1)
    claims = verify_jwt(emulator, request, endpoint.url)
    assert claims["jti"] == request.headers["webhook-id"]
    assert claims["iss"] == GOOGLE_ISSUER and claims["aud"] == endpoint.url
    assert claims["iat"] == int(request.headers["webhook-timestamp"])
    assert claims["exp"] > claims["iat"]
    header = jwt.get_unverified_header(request.headers["webhook-signature"])
    assert header["alg"] == "RS256"
    assert header["kid"] in {k["kid"] for k in emulator.control.jwks()["keys"]}


def test_a_token_for_one_uri_does_not_verify_for_another(emulator):
    first, second = emulator.endpoint(), emulator.endpoint()
    emulator.fire("video.generated", webhook_config={"uris": [first.url, second.url]})
    [request] = first.wait_for(1)
    second.wait_for(1)
    with pytest.raises(jwt.InvalidAudienceError):
        verify_jwt(emulator, request, second.url)


def test_dynamic_events_do_not_go_to_registered_webhooks(emulator):
    registered, own = emulator.endpoint(), emulator.endpoint()
    emulator.client().webhooks.create(uri=registered.url, subscribed_events=["batch.succeeded"])
    emulator.fire("batch.succeeded", webhook_config={"uris": [own.url]})
    own.wait_for(1)
    time.sleep(0.1)
    assert registered.requests == []


def test_after_a_key_rollover_new_tokens_use_the_new_key_and_both_keys_are_served(emulator):
    endpoint = emulator.endpoint()
    old_kid = emulator.control.jwks()["keys"][0]["kid"]
    new_kid = emulator.control.rollover_signing_key()
    assert {k["kid"] for k in emulator.control.jwks()["keys"]} == {old_kid, new_kid}
    emulator.fire("batch.succeeded", webhook_config={"uris": [endpoint.url]})
    [request] = endpoint.wait_for(1)
    assert jwt.get_unverified_header(request.headers["webhook-signature"])["kid"] == new_kid
    verify_jwt(emulator, request, endpoint.url)


@pytest.mark.emulator_config(time_scale=24 * 3600 / 0.8)
def test_a_retired_key_leaves_the_jwks_after_the_overlap(emulator):
    old_kid = emulator.control.jwks()["keys"][0]["kid"]
    new_kid = emulator.control.rollover_signing_key()
    time.sleep(0.9)
    assert [k["kid"] for k in emulator.control.jwks()["keys"]] == [new_kid]
    assert old_kid != new_kid


def test_jwks_is_public_even_when_api_keys_are_required(emulator):
    import httpx

    response = httpx.get(f"{emulator.base_url}/.well-known/jwks.json")
    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and "d" not in key


@pytest.mark.parametrize(
    "config",
    [
        {"uris": []},
        {"uris": ["ftp://x.example/"]},
        {"uris": ["https://x.example/"], "user_metadata": "not an object"},
        {"uris": ["https://x.example/"], "colour": "blue"},
    ],
)
def test_bad_webhook_configs_are_refused(emulator, config):
    from gemini_webhooks.emulator import ControlError

    with pytest.raises(ControlError) as caught:
        emulator.fire("batch.succeeded", webhook_config=config)
    assert caught.value.status_code == 400
