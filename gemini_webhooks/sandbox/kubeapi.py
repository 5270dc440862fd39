"""The few Kubernetes API calls the sandbox's kubelet and demo make, over plain HTTP.

The sandbox talks only to its own Kubernetes API sandbox (loopback, no authentication),
so a dozen lines of aiohttp serve better than a full client: no threads, no generated
models, and errors that say which call failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import yaml

from gemini_webhooks.kube_access import ClusterAccess

JSON = dict[str, Any]

_CORE = {
    "configmaps",
    "secrets",
    "services",
    "namespaces",
    "events",
    "pods",
    "serviceaccounts",
    "nodes",
}


class ReadApi(Protocol):
    """What the end-to-end scenario needs: reading objects."""

    async def get(self, resource: str, namespace: str | None, name: str) -> JSON | None: ...


class KubeApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def server_from_kubeconfig(text: str) -> str:
    """The API server URL of the kubeconfig's current context."""
    config = yaml.safe_load(text) or {}
    contexts = {c["name"]: c.get("context", {}) for c in config.get("contexts") or []}
    clusters = {c["name"]: c.get("cluster", {}) for c in config.get("clusters") or []}
    context = contexts.get(config.get("current-context", ""), {})
    cluster = clusters.get(context.get("cluster", ""))
    if not cluster or not cluster.get("server"):
        raise ValueError("the kubeconfig names no server for its current context")
    server: str = cluster["server"]
    return server.rstrip("/")


def resource_path(resource: str, namespace: str | None = None, name: str | None = None) -> str:
    """`/api/v1/...` for core resources, `/apis/<group>/<version>/...` otherwise.

    `resource` is `plural` for core types or `plural.group/version` (`deployments.apps/v1`).
    """
    if resource in _CORE:
        base = "/api/v1"
        plural = resource
    else:
        plural, _, group_version = resource.partition(".")
        base = f"/apis/{group_version}"
    path = base
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{quote(name, safe='')}"
    return path


class KubeApi:
    def __init__(
        self, server: str, *, timeout: float = 10.0, access: ClusterAccess | None = None
    ) -> None:
        """A client of `server`, unauthenticated over plain HTTP (the API sandbox), or with
        `access`'s credentials (a kubeconfig's, as `from_kubeconfig` loads them)."""
        self.server = server.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._access = access or ClusterAccess(server=self.server)

    @classmethod
    def from_kubeconfig(cls, path: Path | str, *, timeout: float = 10.0) -> KubeApi:
        """With the credentials of the kubeconfig's current context (`kube_access`: CA,
        client certificate, token or token file, as files or inline data)."""
        access = ClusterAccess.load(str(path))
        return cls(access.server, timeout=timeout, access=access)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._access.ssl_context())
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JSON:
        session = self._open()
        data = None if body is None else json.dumps(body)
        headers = {"content-type": content_type, "accept": "application/json"}
        headers.update(self._access.headers())  # a token file is re-read every minute
        async with session.request(
            method, self.server + path, params=params, data=data, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    message = text
                raise KubeApiError(response.status, f"{method} {path}: {response.status} {message}")
            result: JSON = json.loads(text) if text else {}
            return result

    async def text(self, path: str) -> str:
        """GET a non-JSON path (e.g. `/metrics`) with this client's credentials."""
        session = self._open()
        async with session.get(self.server + path, headers=self._access.headers()) as response:
            body = await response.text()
            if response.status >= 400:
                raise KubeApiError(response.status, f"GET {path}: {response.status}")
            return body

    async def served(self, path: str) -> bool:
        """Does the API serve `path` (e.g. a CRD's group version, once it is established)?"""
        try:
            await self._request("GET", path)
        except KubeApiError:
            return False
        return True

    async def get(self, resource: str, namespace: str | None, name: str) -> JSON | None:
        try:
            return await self._request("GET", resource_path(resource, namespace, name))
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[JSON]:
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        result = await self._request(
            "GET", resource_path(resource, namespace), params=params or None
        )
        items: list[JSON] = result.get("items") or []
        return items

    async def create(self, resource: str, namespace: str | None, body: JSON) -> JSON:
        return await self._request("POST", resource_path(resource, namespace), body=body)

    async def create_subresource(
        self, resource: str, namespace: str | None, name: str, subresource: str, body: JSON
    ) -> JSON:
        """POST to `<object>/<subresource>` (e.g. a ServiceAccount's `token`)."""
        path = resource_path(resource, namespace, name) + "/" + subresource
        return await self._request("POST", path, body=body)

    async def delete_now(
        self, resource: str, namespace: str | None, name: str, *, uid: str
    ) -> None:
        """Delete at once (grace period 0), only the object with this uid (a kubelet's
        final delete of a Pod whose containers it stopped)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        try:
            await self._request("DELETE", resource_path(resource, namespace, name), body=body)
        except KubeApiError as error:
            if error.status not in (404, 409):
                raise

    async def apply(self, resource: str, namespace: str | None, body: JSON) -> JSON:
        """Create, or replace the object's spec/data if it exists (last writer wins)."""
        name = body["metadata"]["name"]
        current = await self.get(resource, namespace, name)
        if current is None:
            return await self.create(resource, namespace, body)
        return await self.patch(resource, namespace, name, body)

    async def patch(
        self, resource: str, namespace: str | None, name: str, body: JSON, *, status: bool = False
    ) -> JSON:
        path = resource_path(resource, namespace, name) + ("/status" if status else "")
        return await self._request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def delete(self, resource: str, namespace: str | None, name: str) -> None:
        try:
            await self._request("DELETE", resource_path(resource, namespace, name))
        except KubeApiError as error:
            if error.status != 404:
                raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def run_kubectl(
    args: Sequence[str],
    *,
    kubeconfig: str,
    stdin: bytes | None = None,
    within: float | None = None,
    merge_stderr: bool = False,
) -> tuple[int, bytes, bytes]:
    """Run the virtualenv's `kubectl`; (exit code, stdout, stderr).

    A `kubectl` still running when the call is cancelled (Ctrl-C during a `kubectl wait`)
    or outlasts `within` seconds (TimeoutError) is killed and reaped: none outlives its caller."""
    from gemini_webhooks.sandbox.kubelet import venv_executable

    process = await asyncio.create_subprocess_exec(
        venv_executable("kubectl"),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
        env=dict(os.environ, KUBECONFIG=kubeconfig),
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate(stdin)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
    return process.returncode or 0, out or b"", err or b""


class KubectlApi:
    """The same reads as `KubeApi`, through `kubectl` (for real clusters and their auth)."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    @staticmethod
    def kind(resource: str) -> str:
        plural, _, group_version = resource.partition(".")
        group = group_version.split("/")[0] if "/" in group_version else group_version
        return f"{plural}.{group}" if group else plural

    async def _kubectl(self, *args: str) -> tuple[int, str]:
        code, out, err = await run_kubectl(args, kubeconfig=self.kubeconfig)
        return code, (out if code == 0 else err).decode(errors="replace")

    async def get(self, resource: str, namespace: str | None, name: str) -> JSON | None:
        args = ["get", self.kind(resource), name, "-o", "json"]
        if namespace is not None:
            args += ["-n", namespace]
        code, text = await self._kubectl(*args)
        if code != 0:
            if "NotFound" in text or "not found" in text:
                return None
            raise KubeApiError(500, f"kubectl get {resource} {name}: {text.strip()}")
        result: JSON = json.loads(text)
        return result

    async def close(self) -> None:
        return None
