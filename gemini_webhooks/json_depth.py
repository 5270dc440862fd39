"""JSON from outside, parsed without deep recursion.

The standard library's decoder (ours for exact integers, and PyJWT's for every token)
recurses once per nesting level; `[[[[…` 100,000 deep raises RecursionError, which is not
a ValueError and escaped as a 5xx. The depth is therefore measured first, without
recursion, and a document nested deeper than `MAX_DEPTH` is refused as not JSON. The limit
is far above any event envelope or key set, and far below the interpreter's recursion
limit (1,000 frames, which the caller's own frames share).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 256

# A JSON string (escapes included): brackets inside one do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def depth(utf8: bytes) -> int:
    """How deeply UTF-8 JSON nests arrays and objects (anything else may be measured
    wrongly, but only past where a decoder stops)."""
    brackets = _STRING.sub(b"", utf8).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(raw: bytes, **hooks: Any) -> Any:
    """`json.loads` (with its `parse_*` hooks), refusing (ValueError) a document nested
    deeper than `MAX_DEPTH`."""
    encoding = json.detect_encoding(raw)
    if encoding != "utf-8":
        # json.loads takes UTF-16 and UTF-32 too, where the scan above would misread
        # escaped quotes: measured (and parsed) as UTF-8.
        raw = raw.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    if depth(raw) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(raw, **hooks)
