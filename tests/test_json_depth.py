"""json_depth: nesting measured without recursion, so that deep JSON is refused as a
ValueError before a recursive decoder sees it."""

from __future__ import annotations

import json

import pytest

from gemini_webhooks import json_depth


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[{{{"}', 1),  # brackets inside a string do not nest
        (b'["\\"[[[", "\\\\", []]', 2),  # nor do they after an escaped quote
    ],
)
def test_depth_counts_the_brackets_outside_strings(raw: bytes, depth: int) -> None:
    assert json_depth.depth(raw) == depth


def test_a_document_at_the_limit_is_parsed() -> None:
    raw = b"[" * json_depth.MAX_DEPTH + b"]" * json_depth.MAX_DEPTH
    assert json_depth.loads(raw) == json.loads(raw)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_document_over_the_limit_is_a_value_error_in_every_encoding_json_reads(
    encoding: str,
) -> None:
    text = '["\\"", ' + "[" * 5_000 + "]" * 5_000 + "]"
    with pytest.raises(ValueError, match="nested deeper"):
        json_depth.loads(text.encode(encoding))


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        json_depth.loads(b"\xff[")
