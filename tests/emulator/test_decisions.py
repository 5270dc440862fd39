"""The emulator's pure decisions, without any server."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_webhooks.emulator import decisions
from gemini_webhooks.emulator.delivery import resolve_target
from gemini_webhooks.emulator.errors import ApiError

T0 = datetime(2026, 1, 22, 12, 0, tzinfo=UTC)
POLICY = decisions.RetryPolicy()


@given(st.integers(min_value=1, max_value=200), st.integers())
def test_backoff_stays_between_half_and_all_of_the_capped_exponential(attempt, seed):
    delay = decisions.backoff_delay(attempt, POLICY, random.Random(seed)).total_seconds()
    nominal = min(5 * 2 ** min(attempt - 1, 60), 3600)
    assert nominal / 2 <= delay <= nominal


def test_backoff_grows_until_the_cap():
    rng = random.Random(1)
    ceilings = [decisions.backoff_delay(n, POLICY, rng).total_seconds() for n in range(1, 15)]
    assert ceilings[0] <= 5 and ceilings[5] >= 80 and max(ceilings) <= 3600


def test_retries_stop_once_the_window_would_be_exceeded():
    rng = random.Random(0)
    assert decisions.next_retry(T0, T0, 1, POLICY, rng) is not None
    late = T0 + timedelta(hours=23, minutes=59, seconds=59)
    assert decisions.next_retry(T0, late, 20, POLICY, rng) is None


def test_scaled_retries_wait_proportionally_less():
    delay = decisions.next_retry(T0, T0, 1, POLICY, random.Random(0), scale=1000)
    assert delay is not None and delay <= timedelta(milliseconds=5)


def test_a_schedule_spans_about_a_day():
    rng, now, attempts = random.Random(3), T0, 1
    while (wait := decisions.next_retry(T0, now, attempts, POLICY, rng)) is not None:
        now += wait
        attempts += 1
    assert timedelta(hours=22) < now - T0 <= timedelta(hours=24)
    assert 20 < attempts < 60


def test_should_disable_only_after_the_whole_window_of_failures():
    window = timedelta(hours=24)
    assert not decisions.should_disable(None, T0, window)
    assert not decisions.should_disable(T0, T0 + timedelta(hours=23), window)
    assert decisions.should_disable(T0, T0 + window, window)


def secret(name, expire=None):
    return decisions.SecretEntry(secret=name, created_at=T0, expire_time=expire)


def test_rotation_with_grace_keeps_previous_secrets_until_the_deadline():
    rotated = decisions.rotate_secrets(
        [secret("a")], "b", "revoke_previous_secrets_after_h24", T0, timedelta(hours=24)
    )
    assert [s.secret for s in rotated] == ["b", "a"]
    assert rotated[1].expire_time == T0 + timedelta(hours=24)
    later = T0 + timedelta(hours=24)
    assert [s.secret for s in decisions.valid_secrets(rotated, later)] == ["b"]


def test_rotation_immediately_drops_previous_secrets():
    rotated = decisions.rotate_secrets(
        [secret("a"), secret("z", T0 + timedelta(hours=1))],
        "b",
        "revoke_previous_secrets_immediately",
        T0,
        timedelta(hours=24),
    )
    assert [s.secret for s in rotated] == ["b"]


def test_a_secret_already_in_grace_keeps_its_earlier_end():
    rotated = decisions.rotate_secrets(
        [secret("a"), secret("z", T0 + timedelta(hours=1))],
        "b",
        "revoke_previous_secrets_after_h24",
        T0,
        timedelta(hours=24),
    )
    assert rotated[2].expire_time == T0 + timedelta(hours=1)


def test_expired_secrets_are_not_carried_into_a_rotation():
    rotated = decisions.rotate_secrets(
        [secret("a"), secret("old", T0 - timedelta(seconds=1))],
        "b",
        "revoke_previous_secrets_after_h24",
        T0,
        timedelta(hours=24),
    )
    assert [s.secret for s in rotated] == ["b", "a"]


def test_secret_entries_never_show_their_material():
    assert "hunter2" not in repr(secret("whsec_hunter2"))


def test_static_targets_are_enabled_and_subscribed():
    views = [
        decisions.WebhookView("a", "enabled", ("batch.failed",)),
        decisions.WebhookView("b", "disabled", ("batch.failed",)),
        decisions.WebhookView("c", "enabled", ("video.generated",)),
        decisions.WebhookView("d", "disabled_due_to_failed_deliveries", ("batch.failed",)),
    ]
    assert decisions.static_targets(views, "batch.failed") == ["a"]


def test_update_mask_accepts_both_spellings_and_rejects_unknown_fields():
    assert decisions.parse_update_mask("name, subscribedEvents") == ["name", "subscribed_events"]
    assert decisions.parse_update_mask(None) is None
    with pytest.raises(ApiError, match="id"):
        decisions.parse_update_mask("id")


def test_masked_name_absent_from_the_body_is_cleared():
    assert decisions.parse_update({}, ["name"]) == {"name": ""}


def test_masked_uri_absent_from_the_body_is_invalid():
    with pytest.raises(ApiError, match="uri"):
        decisions.parse_update({}, ["uri"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "revoke_previous_secrets_after_h24"),
        ({}, "revoke_previous_secrets_after_h24"),
        (
            {"revocation_behavior": "REVOKE_PREVIOUS_SECRETS_IMMEDIATELY"},
            "revoke_previous_secrets_immediately",
        ),
        (
            {"revocationBehavior": "revoke_previous_secrets_after_h24"},
            "revoke_previous_secrets_after_h24",
        ),
    ],
)
def test_revocation_spellings(raw, expected):
    assert decisions.parse_revocation(raw) == expected


def test_page_size_defaults_and_caps():
    assert decisions.parse_page_size(None) == 50
    assert decisions.parse_page_size("0") == 50
    assert decisions.parse_page_size("5000") == 1000
    with pytest.raises(ApiError):
        decisions.parse_page_size("-1")
    with pytest.raises(ApiError):
        decisions.parse_page_size("ten")


def test_event_data_fills_catalogue_fields_and_keeps_extras():
    data = decisions.event_data(
        "batch.succeeded", {"id": "batches/x", "error_count": 0}, {"output_file_uri": "f"}
    )
    assert data == {"id": "batches/x", "output_file_uri": "f", "error_count": 0}


def test_resolve_target_prefers_an_exact_host_port_override():
    url, host = resolve_target(
        "https://api.example:8443/p?q=1", {"api.example:8443": "127.0.0.1:9"}
    )
    assert url == "https://127.0.0.1:9/p?q=1" and host == "api.example:8443"


def test_resolve_target_maps_a_cluster_service_by_its_service_key():
    url, host = resolve_target(
        "http://gemini-receiver.default.svc.cluster.local:8080/",
        {"default/gemini-receiver:8080": "127.0.0.1:4000"},
    )
    assert url == "http://127.0.0.1:4000/"
    assert host == "gemini-receiver.default.svc.cluster.local:8080"


def test_resolve_target_leaves_other_uris_alone():
    assert resolve_target("http://elsewhere:80/", {"x:80": "y:1"}) == ("http://elsewhere:80/", None)
