"""Helpers for the sandbox's tests: an API client and kubectl, both from the kubeconfig.

Both work against the sandbox and against a real cluster alike (see tests/fixtures/kube.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.fixtures.kube import KUBECTL, Kube

GROUP = "test.kubesandbox.dev"
KOPF_PEERING = Path(__file__).parents[2] / "gemini_webhooks" / "kubesandbox" / "kopf-peering.yaml"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/default/widgets"
WIDGET_CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wg"],
            "categories": ["gadgets"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "color": {
                                        "type": "string",
                                        "enum": ["red", "green", "blue"],
                                        "default": "red",
                                    },
                                    "tag": {"type": "string", "pattern": "^[a-z]+$"},
                                    "extra": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """Raw requests with the kubeconfig's credentials; errors are replies, not exceptions."""

    def __init__(self, kubeconfig: Path) -> None:
        self.client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        all_headers = {"Content-Type": content_type, "Accept": "application/json"}
        all_headers.update(headers or {})
        raw = (
            None
            if body is None
            else body.encode()
            if isinstance(body, str)
            else json.dumps(body).encode()
        )
        response = self._send(method, path, query or {}, all_headers, raw)
        data = response.data
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return Reply(response.status, parsed, dict(response.headers))

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes | None,
        *,
        stream: bool = False,
    ) -> Any:
        # The generated client rewrites bodies and content types; send exactly what we mean.
        _, url, auth_headers, _, _ = self.client.param_serialize(
            method,
            path,
            query_params=list(query.items()),
            header_params=dict(headers),
            auth_settings=["BearerToken"],
        )
        return self.client.rest_client.pool_manager.request(
            method,
            url,
            body=body,
            headers=auth_headers,
            preload_content=not stream,
            timeout=30,
        )

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("PUT", path, body, **kw)

    def patch(
        self, path: str, body: Any, content_type: str = "application/merge-patch+json", **kw: Any
    ) -> Reply:
        return self.request("PATCH", path, body, content_type=content_type, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("DELETE", path, body, **kw)

    def watch(
        self, path: str, query: dict[str, str], *, until: int | None = None
    ) -> list[dict[str, Any]]:
        """Events of a watch the server ends after `timeoutSeconds` (or after `until` events)."""
        response = self._send(
            "GET",
            path,
            {"watch": "true", **query},
            {"Accept": "application/json"},
            None,
            stream=True,
        )
        events: list[dict[str, Any]] = []
        buffer = b""
        try:
            if until == 0:
                return events
            for chunk in response.stream(1024, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        events.append(json.loads(line))
                if until is not None and len(events) >= until:
                    break
        finally:
            response.close()  # a watch connection is not reusable: hang up
        return events

    def wait_gone(self, path: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.get(path).status != 404:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} still exists after {timeout}s")
            time.sleep(0.05)

    def install_widgets(self) -> None:
        # A real API server deletes a CRD asynchronously (its objects first): an earlier
        # test's Widget CRD may still be terminating, and refuses new objects until gone.
        existing = self.get(WIDGET_CRD_PATH)
        if existing.status == 200 and existing.body["metadata"].get("deletionTimestamp"):
            self.wait_gone(WIDGET_CRD_PATH, timeout=60)
        reply = self.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
        assert reply.status in (201, 409), reply.body
        deadline = time.monotonic() + 30
        while self.get(WIDGETS).status != 200:
            assert time.monotonic() < deadline, "the Widget CRD was never served"
            time.sleep(0.1)

    def install_kopf_peering(self) -> None:
        """kopf's peering CRDs (pre-installed in the sandbox; a real cluster needs them)."""
        for crd in yaml.safe_load_all(KOPF_PEERING.read_text()):
            reply = self.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            assert reply.status in (201, 409), reply.body
        deadline = time.monotonic() + 30
        while self.get("/apis/kopf.dev/v1/clusterkopfpeerings").status != 200 or (
            self.get("/apis/kopf.dev/v1/kopfpeerings").status != 200
        ):
            assert time.monotonic() < deadline, "kopf's peering CRDs were never served"
            time.sleep(0.1)


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll until `check()` is truthy (real clusters do some things asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {check}")
        time.sleep(0.05)


def widget(name: str, size: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size, **spec},
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def api(kube: Kube) -> Iterator[Api]:
    client = Api(kube.kubeconfig)
    yield client
    client.client.rest_client.pool_manager.clear()


@pytest.fixture()
def widgets(api: Api) -> Iterator[Api]:
    """The API, with the throwaway Widget CRD installed (and removed afterwards)."""
    api.install_widgets()
    yield api
    api.delete(WIDGET_CRD_PATH)
    api.wait_gone(WIDGET_CRD_PATH, timeout=60)


KubectlRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture()
def kubectl(kube: Kube, tmp_path: Path) -> KubectlRun:
    env = kube.kubectl_env(tmp_path / "kubectl-cache")

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, *args],
            input=input,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run
