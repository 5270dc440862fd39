"""The operator's credentials from a kubeconfig: a bearer token (inline or `tokenFile`, as
a ServiceAccount's kubeconfig or a pod's in-cluster config has it) is sent, not dropped —
kube-apiserver answered such an operator as `system:anonymous` before this was fixed."""

from __future__ import annotations

from pathlib import Path

import yaml

from gemini_webhook_operator.kube import ClusterAccess


def _kubeconfig(tmp_path: Path, user: dict[str, str]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "u", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "u",
            }
        )
    )
    return path


def test_an_inline_token_is_used(tmp_path: Path) -> None:
    access = ClusterAccess.load(str(_kubeconfig(tmp_path, {"token": "inline-token"})))
    assert access.token == "inline-token"
    assert "inline-token" not in repr(access)


def test_a_token_file_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    access = ClusterAccess.load(str(_kubeconfig(tmp_path, {"tokenFile": str(token_file)})))
    assert access.token == "file-token"


def test_the_watch_timeout_kopf_sends_is_a_whole_number_of_seconds() -> None:
    from gemini_webhook_operator import runtime

    settings = runtime.kopf_settings(runtime.RunConfig(watch_timeout=5.4))
    assert settings.watching.server_timeout == 5
    assert isinstance(settings.watching.server_timeout, int)
