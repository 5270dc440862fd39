from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_webhooks.contracts import signing_secret as fmt

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _secrets() -> fmt.SigningSecrets:
    return fmt.SigningSecrets(
        webhook_id="wh_1",
        secrets=(
            fmt.SigningSecret(SECRET, created_at=NOW),
            fmt.SigningSecret(
                OLD, created_at=NOW - timedelta(days=30), expire_time=NOW + timedelta(hours=24)
            ),
        ),
    )


def test_round_trip_through_string_data_and_base64_data() -> None:
    assert fmt.decode(fmt.encode(_secrets())) == _secrets()
    assert fmt.decode_data(fmt.encode_data(_secrets())) == _secrets()


def test_current_key_holds_the_newest_secret() -> None:
    assert fmt.encode(_secrets())[fmt.KEY_CURRENT] == SECRET


def test_a_secret_past_its_expiry_is_no_longer_valid() -> None:
    assert len(_secrets().valid(NOW)) == 2
    assert [s.secret for s in _secrets().valid(NOW + timedelta(hours=25))] == [SECRET]


def test_truncated_form_identifies_the_secret_but_is_not_the_secret() -> None:
    truncated = fmt.truncate_secret(SECRET)
    assert truncated != SECRET and len(truncated) < 20
    assert fmt.matches_truncated(SECRET, truncated)
    assert not fmt.matches_truncated(OLD, truncated)


def test_star_masked_truncation_is_understood_too() -> None:
    masked = SECRET[:10] + "*" * 20 + SECRET[-4:]
    assert fmt.matches_truncated(SECRET, masked)
    assert not fmt.matches_truncated(OLD, masked)


def test_too_short_a_fingerprint_matches_nothing() -> None:
    assert not fmt.matches_truncated(SECRET, "whsec_a...b")


def test_the_remote_knows_a_secret_one_of_its_entries_denotes() -> None:
    reported = ("whsec_zzzz...zzzz", fmt.truncate_secret(SECRET))
    assert fmt.remote_identity(SECRET, reported) == fmt.KNOWN


def test_only_a_readable_list_without_the_secret_proves_it_unknown() -> None:
    assert fmt.remote_identity(SECRET, (fmt.truncate_secret(OLD),)) == fmt.UNKNOWN


@pytest.mark.parametrize(
    "reported",
    [
        (),  # absent or empty list
        ("",),  # an entry without truncated_secret
        ("whsec_********",),  # fully masked
        ("********",),
        ("whsec_ab...yz",),  # too few visible characters to tell
        ("whsec_abcdef...",),
        ("abcd...wxyz",),  # another prefix
        ("fingerprint-1234",),  # no recognisable mask
        (fmt.truncate_secret(OLD), "whsec_********"),  # one readable stranger, one masked
    ],
    ids=[
        "empty",
        "no-field",
        "masked",
        "masked-no-prefix",
        "short",
        "head-only-short",
        "other-prefix",
        "unrecognised",
        "mixed",
    ],
)
def test_an_unreadable_list_never_counts_as_proof_the_secret_is_unknown(
    reported: tuple[str, ...],
) -> None:
    assert fmt.remote_identity(SECRET, reported) == fmt.UNVERIFIABLE


def test_other_visible_lengths_still_identify_the_secret() -> None:
    body = SECRET.removeprefix("whsec_")
    for head, tail in ((8, 0), (6, 6), (0, 8), (12, 12)):
        shown = f"whsec_{body[:head]}...{body[len(body) - tail :] if tail else ''}"
        assert fmt.remote_identity(SECRET, (shown,)) == fmt.KNOWN, (head, tail)
        assert fmt.remote_identity(OLD, (shown,)) == fmt.UNKNOWN, (head, tail)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {fmt.KEY_SECRETS: "not json"},
        {fmt.KEY_SECRETS: "[" * 100_000 + "]" * 100_000},
        {fmt.KEY_SECRETS: '{"version": 2}'},
        {fmt.KEY_SECRETS: '{"version":1,"webhookId":"w","secrets":[{"secret":"nope"}]}'},
    ],
)
def test_malformed_secret_is_a_clear_error(data: dict[str, str]) -> None:
    with pytest.raises(fmt.SecretFormatError):
        fmt.decode(data)


@given(st.text())
def test_error_messages_never_contain_secret_material(created_at: str) -> None:
    document = {
        "version": 1,
        "webhookId": "w",
        "secrets": [{"secret": SECRET, "createdAt": created_at}],
    }
    try:
        fmt.decode({fmt.KEY_SECRETS: json.dumps(document)})
    except fmt.SecretFormatError as error:
        assert SECRET not in str(error) and SECRET not in repr(error)
