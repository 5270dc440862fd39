"""Service endpoints the sandbox learns while components run reach them through a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gemini_webhooks.contracts.service_endpoints import (
    ENV_VAR,
    FILE_ENV_VAR,
    ServiceEndpointsError,
    overrides_from_env,
)


def _write(path: Path, mapping: dict[str, str], mtime_ns: int) -> None:
    path.write_text(json.dumps(mapping))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_the_file_is_merged_over_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    _write(path, {"default/a:80": "127.0.0.1:2"}, 1_000_000_000)
    env = {
        ENV_VAR: json.dumps({"default/a:80": "127.0.0.1:1", "default/b:80": "127.0.0.1:3"}),
        FILE_ENV_VAR: str(path),
    }
    assert overrides_from_env(env) == {"default/a:80": "127.0.0.1:2", "default/b:80": "127.0.0.1:3"}


def test_a_rewritten_file_is_seen_on_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    env = {FILE_ENV_VAR: str(path)}
    assert overrides_from_env(env) == {}  # not written yet
    _write(path, {"default/a:80": "127.0.0.1:1"}, 1_000_000_000)
    assert overrides_from_env(env) == {"default/a:80": "127.0.0.1:1"}
    _write(path, {"default/a:80": "127.0.0.1:1", "team/b:9090": "127.0.0.1:7"}, 2_000_000_000)
    assert overrides_from_env(env)["team/b:9090"] == "127.0.0.1:7"


def test_a_file_that_is_not_a_json_object_of_strings_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text('{"default/a:80": 8080}')
    with pytest.raises(ServiceEndpointsError, match=FILE_ENV_VAR):
        overrides_from_env({FILE_ENV_VAR: str(path)})


def test_a_replaced_file_is_seen_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    env = {FILE_ENV_VAR: str(path)}
    _write(path, {"default/a:80": "127.0.0.1:1111"}, 1_000_000_000)
    assert overrides_from_env(env) == {"default/a:80": "127.0.0.1:1111"}
    replacement = tmp_path / "endpoints.tmp"
    _write(replacement, {"default/a:80": "127.0.0.1:2222"}, 1_000_000_000)
    os.replace(replacement, path)  # as the sandbox writes it
    assert overrides_from_env(env) == {"default/a:80": "127.0.0.1:2222"}
