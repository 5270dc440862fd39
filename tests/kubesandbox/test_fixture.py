"""The `kube` fixture's real-cluster mode reads the cluster from the kubeconfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemini_webhooks.kubesandbox import kubeconfig_text
from tests.fixtures.kube import _real_cluster


def test_a_real_cluster_is_taken_from_the_current_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(kubeconfig_text("https://10.0.0.1:6443"))
    kube = _real_cluster(str(path))
    assert kube.base_url == "https://10.0.0.1:6443"
    assert kube.is_sandbox is False and kube.faults is None and kube.audit == []


def test_a_list_of_kubeconfigs_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError, match="one kubeconfig"):
        _real_cluster(f"{tmp_path}/a:{tmp_path}/b")
