"""Which credentials a process of ours uses: client-go's and controller-runtime's order,
the same for the operator, the receiver and the tools."""

from __future__ import annotations

import os

from gemini_webhooks.kube_access import IN_CLUSTER, CredentialSource, credential_source

IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
HOME_CONFIG = CredentialSource((os.path.expanduser("~/.kube/config"),))


def test_an_explicit_kubeconfig_wins_over_everything() -> None:
    env = {**IN_A_POD, "KUBECONFIG": "/env/config"}
    assert credential_source("/explicit", env) == CredentialSource(("/explicit",))


def test_kubeconfig_variable_wins_over_in_cluster_credentials() -> None:
    env = {**IN_A_POD, "KUBECONFIG": f"/a{os.pathsep}{os.pathsep}/b"}
    assert credential_source(None, env) == CredentialSource(("/a", "/b"))


def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used() -> None:
    assert credential_source(None, IN_A_POD) == IN_CLUSTER
    assert credential_source("", {**IN_A_POD, "KUBECONFIG": ""}).in_cluster


def test_outside_a_pod_the_home_kubeconfig_is_used() -> None:
    assert credential_source(None, {}) == HOME_CONFIG
    assert not HOME_CONFIG.in_cluster
