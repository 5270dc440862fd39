"""The krew manifest: its archive is what scripts/krew-archive builds (same sha256, every
time), it installs the launcher krew runs, and that launcher runs the plugin."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "plugins" / "krew" / "gemini.yaml"


def _build(target: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "krew-archive"), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_manifest_names_the_reproducible_archive_and_the_package_version(
    tmp_path: Path,
) -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "gemini"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert manifest["spec"]["version"] == f"v{version}"
    (platform,) = manifest["spec"]["platforms"]
    first, second = _build(tmp_path / "a.tar.gz"), _build(tmp_path / "b.tar.gz")
    assert first == second == platform["sha256"]
    assert hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest() == first
    assert platform["uri"].endswith(f"/v{version}/kubectl-gemini.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
    assert [f["from"] for f in platform["files"]] == names == [platform["bin"]]


def test_the_launcher_runs_the_plugin(tmp_path: Path) -> None:
    _build(tmp_path / "a.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    result = subprocess.run(
        [str(tmp_path / "kubectl-gemini"), "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, KUBECTL_GEMINI_PYTHON=sys.executable),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: kubectl gemini" in result.stdout
