"""`gemini-webhooks receiver`: start-up errors are clear and exit non-zero; SIGTERM drains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unknown_config_key_fails_start_up_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("dynamic: {enabled: true, audiences: [x]}\nlistn: {port: 1}\n")
    result = _run("--config", str(config))
    assert result.returncode == 2
    assert "listn: unknown key" in result.stderr


def test_missing_config_option_is_reported() -> None:
    result = _run()
    assert result.returncode == 2
    assert "--config FILE is required" in result.stderr


def test_replay_without_redis_explains_why(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "dynamic: {enabled: true, audiences: [x]}\ndead_letter: {target: {url: 'http://x/'}}\n"
    )
    result = _run("replay", "--config", str(config))
    assert result.returncode == 2
    assert "no 'redis' section" in result.stderr
