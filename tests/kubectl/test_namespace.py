"""Without `-n`, the plugin works in the namespace kubectl would: the chosen context's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from gemini_webhooks.kubectl.cluster import default_namespace


def _config(path: Path, current: str | None, contexts: dict[str, str | None]) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "contexts": [
            {"name": name, "context": {"cluster": "c", **({"namespace": ns} if ns else {})}}
            for name, ns in contexts.items()
        ],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_the_current_contexts_namespace_else_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    config = _config(tmp_path / "a", "one", {"one": "team-a", "two": None})
    assert default_namespace(config, None) == "team-a"
    assert default_namespace(config, "two") == "default"


def test_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _config(tmp_path / "a", None, {"one": "from-first"})
    second = _config(tmp_path / "b", "one", {"one": "from-second", "two": "team-b"})
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([first, second]))
    assert default_namespace(None, None) == "from-first"  # the first file naming it wins
    assert default_namespace(None, "two") == "team-b"
