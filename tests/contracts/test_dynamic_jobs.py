"""The job MAC contract: what the client helper signs, the receiver verifies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_webhooks.contracts import dynamic_jobs as jobs

KEY = jobs.decode_key(jobs.generate_key())
OTHER_KEY = jobs.decode_key(jobs.generate_key())


def test_a_generated_key_is_256_random_bits_as_base64url_text() -> None:
    text = jobs.generate_key()
    assert len(jobs.decode_key(text)) == 32
    assert "=" not in text and "+" not in text and "/" not in text
    assert jobs.generate_key() != text


@pytest.mark.parametrize("text", ["", "   ", "short", "a+b/" * 20, "é" * 50])
def test_a_malformed_or_short_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(jobs.JobKeyError) as caught:
        jobs.decode_key(text)
    assert text.strip() == "" or text not in str(caught.value)


def test_signed_metadata_verifies_under_its_key() -> None:
    signed = jobs.sign({"team": "finance", "job": "q3"}, KEY)
    assert set(signed) == {"team", "job", jobs.JOB_MAC_KEY}
    assert signed[jobs.JOB_MAC_KEY].startswith("v1,")
    assert jobs.verify(signed, KEY)


def test_the_mac_is_hmac_sha256_of_the_sorted_compact_json() -> None:
    signed = jobs.sign({"b": "2", "a": "é"}, KEY)
    body = b'{"a":"\\u00e9","b":"2"}'
    assert jobs.canonical(signed) == body
    expected = base64.urlsafe_b64encode(hmac.new(KEY, body, hashlib.sha256).digest())
    assert signed[jobs.JOB_MAC_KEY] == "v1," + expected.rstrip(b"=").decode()


def test_key_order_does_not_matter() -> None:
    signed = jobs.sign({"a": "1", "b": "2"}, KEY)
    reordered = {jobs.JOB_MAC_KEY: signed[jobs.JOB_MAC_KEY], "b": "2", "a": "1"}
    assert jobs.verify(reordered, KEY)


def test_empty_metadata_can_be_signed() -> None:
    assert jobs.verify(jobs.sign({}, KEY), KEY)


def test_a_changed_value_fails() -> None:
    signed = jobs.sign({"team": "finance"}, KEY)
    assert not jobs.verify({**signed, "team": "payroll"}, KEY)


def test_an_added_field_fails() -> None:
    signed = jobs.sign({"team": "finance"}, KEY)
    assert not jobs.verify({**signed, "route": "admin"}, KEY)


def test_a_removed_field_fails() -> None:
    signed = jobs.sign({"team": "finance", "job": "q3"}, KEY)
    del signed["job"]
    assert not jobs.verify(signed, KEY)


def test_another_key_fails() -> None:
    assert not jobs.verify(jobs.sign({"team": "finance"}, OTHER_KEY), KEY)


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "text",
        [],
        {},
        {"team": "finance"},
        {jobs.JOB_MAC_KEY: 7},
        {jobs.JOB_MAC_KEY: "v1,"},
        {jobs.JOB_MAC_KEY: "v1," + "A" * 10_000},
        {jobs.JOB_MAC_KEY: "\ud800"},
    ],
)
def test_missing_or_malformed_macs_fail(metadata: object) -> None:
    assert not jobs.verify(metadata, KEY)


def test_a_non_string_value_is_never_ours() -> None:
    signed = jobs.sign({"n": "1"}, KEY)
    assert not jobs.verify({**signed, "n": 1}, KEY)
    with pytest.raises(jobs.MetadataError):
        jobs.sign({"n": 1}, KEY)  # type: ignore[dict-item]
    with pytest.raises(jobs.MetadataError):
        jobs.sign({"nested": {"a": "b"}}, KEY)  # type: ignore[dict-item]


def test_the_reserved_key_cannot_be_signed_over() -> None:
    with pytest.raises(jobs.MetadataError, match="reserved"):
        jobs.sign({jobs.JOB_MAC_KEY: "mine"}, KEY)


def test_oversized_metadata_is_refused_and_never_verifies() -> None:
    big = {"blob": "x" * jobs.MAX_CANONICAL_BYTES}
    with pytest.raises(jobs.MetadataError):
        jobs.sign(big, KEY)
    assert not jobs.verify({**big, jobs.JOB_MAC_KEY: "v1,AAAA"}, KEY)


@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_any_string_metadata_survives_a_json_round_trip(metadata: dict[str, str]) -> None:
    metadata.pop(jobs.JOB_MAC_KEY, None)
    signed = jobs.sign(metadata, KEY)
    assert jobs.verify(json.loads(json.dumps(signed)), KEY)


def test_the_secret_name_fits_a_dns_subdomain() -> None:
    assert jobs.job_key_secret_name("orders") == "orders-dynamic-job-key"
    long = jobs.job_key_secret_name("a" * 253)
    assert len(long) <= 253 and long.endswith(jobs.SECRET_SUFFIX)
    assert long != jobs.job_key_secret_name("a" * 252 + "b")
