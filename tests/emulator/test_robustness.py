"""Nothing a client sends crashes the emulator or leaves half-made state."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["https://ok.example/h", "ftp://x", "", "batch.succeeded", "enabled"]),
    st.lists(st.sampled_from(["batch.succeeded", "batch.completed", "video.generated", 3])),
)
webhook_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "name": field_values,
            "uri": field_values,
            "subscribed_events": field_values,
            "state": field_values,
            "revocation_behavior": field_values,
            "colour": field_values,
        },
    ),
)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def http(emulator):
    with httpx.Client(
        base_url=emulator.base_url, headers={"x-goog-api-key": emulator.api_key}
    ) as client:
        yield client


def count_webhooks(http):
    return len(http.get("/v1/webhooks", params={"page_size": 1000}).json().get("webhooks", []))


@FUZZ
@given(body=webhook_bodies)
def test_create_answers_200_or_400_and_stores_only_what_it_returns(emulator, http, body):
    before = count_webhooks(http)
    response = http.post("/v1/webhooks", json=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert count_webhooks(http) == before + (response.status_code == 200)


@FUZZ
@given(body=webhook_bodies, mask=st.sampled_from([None, "name", "uri,state", "bogus", ""]))
def test_update_answers_200_or_400_and_a_refusal_changes_nothing(emulator, http, body, mask):
    created = http.post(
        "/v1/webhooks", json={"uri": "https://a.example/", "subscribed_events": ["batch.failed"]}
    ).json()
    params = {"update_mask": mask} if mask is not None else {}
    response = http.patch(f"/v1/webhooks/{created['id']}", json=body, params=params)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        after = http.get(f"/v1/webhooks/{created['id']}").json()
        created.pop("new_signing_secret")
        assert after == created


@FUZZ
@given(body=webhook_bodies)
def test_rotate_ping_and_events_never_fail_with_a_server_error(emulator, http, body):
    created = http.post(
        "/v1/webhooks", json={"uri": "http://127.0.0.1:9/", "subscribed_events": ["batch.failed"]}
    ).json()
    for path in (
        f"/v1/webhooks/{created['id']}:rotateSigningSecret",
        f"/v1/webhooks/{created['id']}:ping",
        "/v1/models/m:batchGenerateContent",
        "/emulator/v1/events",
    ):
        response = http.post(path, json=body)
        assert response.status_code in (200, 400), (path, response.text)


@pytest.mark.parametrize(
    "raw", [b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b'{"uri": NaN}', b"null"]
)
def test_undecodable_bodies_are_invalid_argument(http, raw):
    response = http.post("/v1/webhooks", content=raw)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_an_oversized_body_is_refused_with_a_json_error(http):
    response = http.post("/v1/webhooks", content=b" " * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413


def test_unknown_paths_are_a_json_not_found(http):
    response = http.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_unknown_custom_methods_are_not_found(http):
    created = http.post(
        "/v1/webhooks", json={"uri": "https://a.example/", "subscribed_events": ["batch.failed"]}
    ).json()
    assert http.post(f"/v1/webhooks/{created['id']}:explode").status_code == 404


def test_api_keys_never_appear_in_the_logs(emulator, http, caplog):
    caplog.set_level("DEBUG")
    http.get("/v1/webhooks", params={"key": "secret-in-query"})
    created = http.post(
        "/v1/webhooks", json={"uri": "https://a.example/", "subscribed_events": ["batch.failed"]}
    ).json()
    rotated = http.post(f"/v1/webhooks/{created['id']}:rotateSigningSecret").json()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gemini_webhooks"))
    assert "webhook created" in text
    assert emulator.api_key not in text and "secret-in-query" not in text
    assert created["new_signing_secret"] not in text and rotated["secret"] not in text
