"""The project's fixed shape: one console script, nothing shadowing the standard library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_plain_operator_import_is_the_standard_library_even_from_the_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not out.startswith(str(ROOT)), out


def test_console_script_lists_its_subcommands() -> None:
    exe = Path(sys.executable).parent / "gemini-webhooks"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "gemini-webhooks" in out
    assert "COMMAND" in out


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in readme
    assert "exec scripts/test\n" in ci
