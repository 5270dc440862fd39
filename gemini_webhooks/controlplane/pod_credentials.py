"""What a Pod our node runs authenticates with: projected ServiceAccount tokens, asked from
the TokenRequest API and bound to the Pod, and the kubeconfig that stands in for the
in-cluster config's fixed paths."""

from __future__ import annotations

from pathlib import Path

import yaml

from gemini_webhooks.sandbox.kubeapi import JSON, KubeApi

TOKEN_SECONDS = 3600


def token_audiences(pod: JSON) -> list[str]:
    """The audiences of every projected ServiceAccount token the Pod mounts ("" = default)."""
    found = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "serviceAccountToken" in source:
                found.append(source["serviceAccountToken"].get("audience", ""))
    return sorted(set(found))


async def request_tokens(api: KubeApi, pod: JSON, audiences: list[str]) -> dict[str, str]:
    """A token per audience for the Pod's ServiceAccount, bound to the Pod."""
    metadata = pod["metadata"]
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    tokens = {}
    for audience in audiences:
        spec: JSON = {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "uid": metadata["uid"],
            },
        }
        if audience:
            spec["audiences"] = [audience]
        answer = await api.create_subresource(
            "serviceaccounts",
            metadata.get("namespace", "default"),
            account,
            "token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        tokens[audience] = answer["status"]["token"]
    return tokens


def pod_kubeconfig(server: str, ca: Path, token_file: Path, namespace: str) -> bytes:
    """A kubeconfig with what in-cluster config reads: the server, its CA, the Pod's token."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cluster",
                    "cluster": {"server": server, "certificate-authority": str(ca)},
                }
            ],
            "users": [{"name": "pod", "user": {"tokenFile": str(token_file)}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "cluster", "user": "pod", "namespace": namespace},
                }
            ],
            "current-context": "pod",
        }
    ).encode()
