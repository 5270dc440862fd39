"""Batches created through the SDK are event sources: they finish by themselves."""

from __future__ import annotations

import time

import jwt
import pytest
import standardwebhooks
from google.genai import errors as genai_errors

MODEL = "gemini-2.5-flash"
FAST = pytest.mark.emulator_config(batch_seconds=0.2)


def wait_state(client, name, state, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.get(name=name)
        if batch.state.name == state:
            return batch
        assert time.monotonic() < deadline, f"batch stayed {batch.state}"
        time.sleep(0.02)


@FAST
def test_a_batch_succeeds_by_itself_and_notifies_subscribed_webhooks(emulator):
    client = emulator.client()
    endpoint = emulator.endpoint()
    hook = client.webhooks.create(uri=endpoint.url, subscribed_events=["batch.succeeded"])
    batch = client.batches.create(
        model=MODEL, src="files/input", config={"display_name": "nightly"}
    )
    assert batch.state.name == "JOB_STATE_PENDING" and batch.display_name == "nightly"
    [request] = endpoint.wait_for(1)
    envelope = standardwebhooks.Webhook(hook.new_signing_secret).verify(
        request.body, request.headers
    )
    assert envelope["type"] == "batch.succeeded"
    assert envelope["data"]["id"] == batch.name
    done = client.batches.get(name=batch.name)
    assert done.state.name == "JOB_STATE_SUCCEEDED"
    assert done.dest.file_name == envelope["data"]["output_file_uri"]
    assert done.end_time is not None


@pytest.mark.emulator_config(batch_seconds=2.0, time_scale=10)
def test_time_scale_shortens_the_batch_run_time(emulator):
    client = emulator.client()
    batch = client.batches.create(model=MODEL, src="files/input")
    started = time.monotonic()
    wait_state(client, batch.name, "JOB_STATE_SUCCEEDED")
    assert time.monotonic() - started < 1.0


@FAST
def test_a_batch_with_webhook_config_notifies_its_uris_with_user_metadata(emulator):
    client = emulator.client()
    registered, own = emulator.endpoint(), emulator.endpoint()
    client.webhooks.create(uri=registered.url, subscribed_events=["batch.succeeded"])
    batch = client.batches.create(
        model=MODEL,
        src="files/input",
        config={"webhook_config": {"uris": [own.url], "user_metadata": {"job": "j1"}}},
    )
    [request] = own.wait_for(1)
    token = request.headers["webhook-signature"]
    key = jwt.PyJWKClient(f"{emulator.base_url}/.well-known/jwks.json").get_signing_key_from_jwt(
        token
    )
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=own.url)
    assert claims["type"] == "batch.succeeded"
    assert claims["data"]["id"] == batch.name
    assert claims["user_metadata"] == {"job": "j1"}
    time.sleep(0.1)
    assert registered.requests == []


def test_cancel_ends_the_batch_and_notifies_its_uris(emulator):
    client = emulator.client()
    own = emulator.endpoint()
    batch = client.batches.create(
        model=MODEL, src="files/input", config={"webhook_config": {"uris": [own.url]}}
    )
    client.batches.cancel(name=batch.name)
    assert client.batches.get(name=batch.name).state.name == "JOB_STATE_CANCELLED"
    [request] = own.wait_for(1)
    assert request.json()["type"] == "batch.cancelled"
    assert request.json()["data"] == {"id": batch.name}


def test_cancelling_a_finished_batch_is_refused(emulator):
    client = emulator.client()
    batch = client.batches.create(model=MODEL, src="files/input")
    client.batches.cancel(name=batch.name)
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.cancel(name=batch.name)
    assert caught.value.code == 400


def test_get_unknown_batch_is_not_found(emulator):
    with pytest.raises(genai_errors.ClientError) as caught:
        emulator.client().batches.get(name="batches/nothing")
    assert caught.value.code == 404


def test_list_pages_through_all_batches(emulator):
    client = emulator.client()
    names = [client.batches.create(model=MODEL, src="files/input").name for _ in range(3)]
    listed = [b.name for b in client.batches.list(config={"page_size": 2})]
    assert listed == names


@pytest.mark.parametrize(
    ("outcome", "state", "fields"),
    [
        ("succeeded", "JOB_STATE_SUCCEEDED", {"id", "output_file_uri"}),
        ("failed", "JOB_STATE_FAILED", {"id", "error_code", "error_message"}),
        ("expired", "JOB_STATE_EXPIRED", {"id"}),
        ("cancelled", "JOB_STATE_CANCELLED", {"id"}),
    ],
)
def test_the_control_api_forces_any_batch_outcome(emulator, outcome, state, fields):
    client = emulator.client()
    own = emulator.endpoint()
    batch = client.batches.create(
        model=MODEL, src="files/input", config={"webhook_config": {"uris": [own.url]}}
    )
    emulator.control.finish_batch(
        batch.name, outcome, error_code=9, error_message="quota exhausted"
    )
    assert client.batches.get(name=batch.name).state.name == state
    [request] = own.wait_for(1)
    envelope = request.json()
    assert envelope["type"] == f"batch.{outcome}"
    assert set(envelope["data"]) == fields
    if outcome == "failed":
        assert envelope["data"]["error_code"] == 9
        assert envelope["data"]["error_message"] == "quota exhausted"


@FAST
def test_a_planned_outcome_applies_when_the_batch_finishes_by_itself(emulator):
    client = emulator.client()
    batch = client.batches.create(model=MODEL, src="files/input")
    emulator.control.plan_batch(batch.name, "failed", error_message="bad rows")
    wait_state(client, batch.name, "JOB_STATE_FAILED")


@FAST
def test_a_default_outcome_applies_to_every_later_batch(emulator):
    client = emulator.client()
    emulator.control.set_batch_outcome("expired")
    batch = client.batches.create(model=MODEL, src="files/input")
    wait_state(client, batch.name, "JOB_STATE_EXPIRED")


def test_a_batch_without_input_is_refused(emulator):
    import httpx

    response = httpx.post(
        f"{emulator.base_url}/v1/models/{MODEL}:batchGenerateContent",
        json={"batch": {"displayName": "x"}},
        headers={"x-goog-api-key": emulator.api_key},
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_batch_with_a_bad_webhook_uri_is_refused_and_not_created(emulator):
    client = emulator.client()
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.create(
            model=MODEL, src="files/input", config={"webhook_config": {"uris": ["mailto:x@y"]}}
        )
    assert caught.value.code == 400
    assert list(client.batches.list()) == []


def test_delete_removes_a_batch(emulator):
    client = emulator.client()
    batch = client.batches.create(model=MODEL, src="files/input")
    client.batches.delete(name=batch.name)
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.get(name=batch.name)
    assert caught.value.code == 404


def test_a_batch_of_inline_requests_is_accepted(emulator):
    batch = emulator.client().batches.create(
        model=f"models/{MODEL}",
        src=[{"contents": [{"parts": [{"text": "hello"}], "role": "user"}]}],
    )
    assert batch.model == f"models/{MODEL}"
    assert batch.state.name == "JOB_STATE_PENDING"
