"""networking.k8s.io/v1 Ingress and NetworkPolicy, served as built-ins: the Ingress with
its status subresource (what an ingress controller writes), both with Kubernetes' own
schema for kubectl's validation and `explain`. Runs against a real API server too."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.kubesandbox.conftest import Api, KubectlRun, unique

pytestmark = pytest.mark.real_component

INGRESSES = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
NETWORK_POLICIES = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"


def _ingress(name: str, **extra: Any) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {
            "rules": [
                {
                    "host": "hooks.example.com",
                    "http": {"paths": [{"path": "/", "pathType": "Exact", "backend": backend}]},
                }
            ]
        },
        **extra,
    }


def _network_policy(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": name}},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": "http"}]}],
        },
    }


ADDRESS = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}


def test_ingress_status_is_written_only_through_its_status_subresource(api: Api) -> None:
    name = unique("ing")
    created = api.post(INGRESSES, _ingress(name, status=ADDRESS)).body
    assert created["metadata"]["generation"] == 1
    assert (created.get("status") or {}).get("loadBalancer", {}).get("ingress") in (None, [])
    ignored = api.patch(f"{INGRESSES}/{name}", {"status": ADDRESS}).body
    assert not (ignored.get("status") or {}).get("loadBalancer", {}).get("ingress")
    written = api.patch(f"{INGRESSES}/{name}/status", {"status": ADDRESS}).body
    assert written["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.7"}]
    assert written["metadata"]["generation"] == 1  # status does not move the generation
    changed = api.patch(f"{INGRESSES}/{name}", {"spec": {"ingressClassName": "nginx"}}).body
    assert changed["metadata"]["generation"] == 2
    assert changed["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.7"}]


def test_kubectl_strictly_validates_ingresses_and_network_policies(kubectl: KubectlRun) -> None:
    name = unique("net")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([_ingress(name), _network_policy(name)]))
    typo = _network_policy(unique("net"))
    typo["spec"]["podSelektor"] = {}
    result = kubectl("apply", "-f", "-", input=yaml.safe_dump(typo), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.podSelektor"' in result.stderr
    out = kubectl("get", "ingresses,networkpolicies", "-o", "name").stdout
    assert f"ingress.networking.k8s.io/{name}" in out
    assert f"networkpolicy.networking.k8s.io/{name}" in out


def test_kubectl_explains_ingress_and_network_policy(kubectl: KubectlRun) -> None:
    assert "KIND:       Ingress" in kubectl("explain", "ingress.spec.rules").stdout
    out = kubectl("explain", "networkpolicy.spec.podSelector").stdout
    assert "KIND:       NetworkPolicy" in out


def test_network_policies_are_listed_by_label(api: Api) -> None:
    name = unique("np")
    body = _network_policy(name)
    body["metadata"]["labels"] = {"owner": name}
    api.post(NETWORK_POLICIES, body)
    api.post(NETWORK_POLICIES, _network_policy(unique("np")))
    found = api.get(f"{NETWORK_POLICIES}?labelSelector=owner%3D{name}").body
    assert [i["metadata"]["name"] for i in found["items"]] == [name]


def test_kubectl_get_shows_the_columns_a_real_server_shows(kubectl: KubectlRun) -> None:
    name = unique("cols")
    ingress = _ingress(name)
    ingress["spec"]["ingressClassName"] = "nginx"
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([ingress, _network_policy(name)]))
    header, row = kubectl("get", "ingress", name).stdout.splitlines()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert row.split()[:4] == [name, "nginx", "hooks.example.com", "80"]
    header, row = kubectl("get", "networkpolicy", name).stdout.splitlines()
    assert header.split() == ["NAME", "POD-SELECTOR", "AGE"]
    assert row.split()[:2] == [name, f"app={name}"]
