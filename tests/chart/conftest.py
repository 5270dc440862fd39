"""Fixtures of the chart tests; the rendering helpers live in `rendering.py`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.rendering import COMBINATIONS


@pytest.fixture(params=sorted(COMBINATIONS))
def combination(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    yield request.param, COMBINATIONS[request.param]
