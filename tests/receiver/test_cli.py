"""`gemini-webhooks receiver`: start-up errors are clear and exit non-zero; SIGTERM drains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DYNAMIC_ANY_PROJECT = (
    "dynamic: {enabled: true, audiences: [x], accept_jobs_from_any_project: true}\n"
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_config_key_fails_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(DYNAMIC_ANY_PROJECT + "listn: {port: 1}\n")
    result = _run("--config", str(config))
    assert result.returncode == 2
    assert "listn: unknown key" in result.stderr


def test_missing_config_option_is_reported() -> None:
    result = _run()
    assert result.returncode == 2
    assert "--config FILE is required" in result.stderr


def test_replay_without_redis_explains_why(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(DYNAMIC_ANY_PROJECT + "dead_letter: {target: {url: 'http://x/'}}\n")
    result = _run("replay", "--config", str(config))
    assert result.returncode == 2
    assert "no 'redis' section" in result.stderr


def test_a_missing_job_key_file_stops_start_up_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"dynamic: {{enabled: true, audiences: [x], job_key_file: {tmp_path}/absent}}\n"
        "dead_letter: {target: {url: 'http://x/'}}\n"
        "listen: {host: 127.0.0.1, port: 0}\ninternal: {host: 127.0.0.1, port: 0}\n"
    )
    result = _run("--config", str(config))
    assert result.returncode == 2
    assert f"cannot read dynamic.job_key_file {tmp_path}/absent" in result.stderr
