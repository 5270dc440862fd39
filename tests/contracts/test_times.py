"""RFC 3339 times: one writer and one reader for every component."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gemini_webhooks.contracts.times import Precision, parse_rfc3339, rfc3339

AT = datetime(2026, 12, 6, 12, 30, 45, 123456, tzinfo=UTC)


def test_written_in_utc_with_a_z_and_truncated_to_the_precision_asked() -> None:
    two_hours_east = AT.astimezone(timezone(timedelta(hours=2)))
    assert rfc3339(two_hours_east) == "2026-12-06T12:30:45Z"
    assert rfc3339(AT, "microseconds") == "2026-12-06T12:30:45.123456Z"
    assert rfc3339(AT, "auto") == "2026-12-06T12:30:45.123456Z"
    assert rfc3339(AT.replace(microsecond=0), "auto") == "2026-12-06T12:30:45Z"
    assert rfc3339(AT.replace(microsecond=999999)) == "2026-12-06T12:30:45Z"


@pytest.mark.parametrize("precision", ["seconds", "microseconds", "auto"])
def test_what_is_written_reads_back(precision: Precision) -> None:
    written = rfc3339(AT, precision)
    parsed = parse_rfc3339(written)
    assert parsed is not None and rfc3339(parsed, precision) == written


def test_reads_a_z_an_offset_and_more_digits_than_microseconds() -> None:
    assert parse_rfc3339("2026-12-06T12:30:45Z") == AT.replace(microsecond=0)
    assert parse_rfc3339("2026-12-06T14:30:45+02:00") == AT.replace(microsecond=0)
    assert parse_rfc3339("2026-12-06T12:30:45.123456789Z") == AT


@pytest.mark.parametrize(
    "value", [None, "", 1765024245, "yesterday", "2026-12-06", "2026-12-06T12:30:45"]
)
def test_anything_but_a_time_with_its_zone_reads_as_none(value: object) -> None:
    assert parse_rfc3339(value) is None
