"""The operator's own Kubernetes client: Secrets, the receiver's objects, our resources'
status (the signing Secret's own rules are `signing_store`; who we are and how we connect
is `gemini_webhooks.kube_access`; where each kind lives, the server's discovery read by
`rest_mapper`).

kopf watches and patches GeminiWebhooks; everything else goes through this small async
client (aiohttp, the same credentials kopf logs in with). Secret values are never logged
and never part of an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from gemini_webhook_operator import rest_mapper
from gemini_webhook_operator.rest_mapper import RESTMapper
from gemini_webhook_receiver import json_depth
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.kube_access import ClusterAccess

JSON = dict[str, Any]
JSONPatch = list[JSON]  # RFC 6902 operations (an alias: inside Kube, `list` is a method)


class KubeError(Exception):
    """A Kubernetes API call failed; the message holds the API's status, never a body we sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status


FIELD_MANAGER = contract.MANAGED_BY  # the one field manager of everything the operator applies
SECRET = ("v1", "Secret")  # (apiVersion, kind)


def _message(body: bytes) -> str:
    """The `message` of a Status body, if it is one."""
    try:
        status = json_depth.loads(body)
    except ValueError:
        return ""
    return str(status.get("message", ""))[:300] if isinstance(status, dict) else ""


def label_selector(labels: Mapping[str, str]) -> str:
    """Labels as an equality-based `labelSelector` query."""
    return str(label_selectors.from_labels(labels))


class Kube:
    """A minimal async Kubernetes client for the operator's own objects."""

    def __init__(
        self,
        access: ClusterAccess,
        *,
        timeout: float = 30.0,
        write_guard: Callable[[str], None] | None = None,
    ) -> None:
        self.access = access
        # Called with a description before every request that is not a GET; raises to refuse
        # it (the leader fence: `leader.Fence.check`).
        self.write_guard = write_guard
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # Shared listings: (monotonic time, by name).
        # Shared listings by (apiVersion, kind, namespace, label selector).
        self._listed: dict[tuple[str, str, str, str], tuple[float, dict[str, JSON]]] = {}
        self._listing: dict[tuple[str, str, str, str], asyncio.Lock] = {}
        self.mapper = RESTMapper(self._discovery)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Short requests only (no watches): more connections would cost memory, not time
            # (bench/operator --kube real: 16 instead of 32, Ready as fast, 12 MiB less).
            connector = aiohttp.TCPConnector(ssl=self.access.ssl_context(), limit=16)
            self._session = aiohttp.ClientSession(
                base_url=self.access.server.rstrip("/") + "/",
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                connector=connector,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        body: JSON | JSONPatch | None = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JSON | None:
        """Call the API; None for 404; KubeError for any other failure (and whatever the
        write guard raises for a write it refuses)."""
        if method != "GET" and self.write_guard is not None:
            self.write_guard(f"{method} {path}")
        headers = self._authorized({"Content-Type": content_type} if body is not None else {})
        try:
            async with self._http().request(
                method, path.lstrip("/"), json=body, headers=headers, params=params
            ) as response:
                if response.status == 404:
                    return None
                payload = await response.json(content_type=None)
                if response.status >= 400:
                    message = payload.get("message", "") if isinstance(payload, dict) else ""
                    raise KubeError(response.status, str(message)[:300])
                return payload if isinstance(payload, dict) else {}
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, f"unreachable ({type(error).__name__})") from None

    def _authorized(self, headers: dict[str, str]) -> dict[str, str]:
        token = self.access.bearer_token()  # per request: a token file may have been replaced
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _discovery(self, path: str, accept: str) -> tuple[str, bytes] | None:
        """One discovery document, bounded: (Content-Type, body), None for 404."""
        headers = self._authorized({"Accept": accept})
        try:
            async with self._http().get(path.lstrip("/"), headers=headers) as response:
                if response.status == 404:
                    return None
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > rest_mapper.MAX_BYTES:
                        raise KubeError(
                            0, f"discovery at {path} is over {rest_mapper.MAX_BYTES} bytes"
                        )
                if response.status >= 400:
                    raise KubeError(
                        response.status, f"discovery at {path}: {_message(bytes(body))}"
                    )
                return response.headers.get("Content-Type", ""), bytes(body)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeError(0, f"unreachable ({type(error).__name__})") from None

    async def path(
        self, api_version: str, kind: str, namespace: str, name: str | None = None
    ) -> str | None:
        """Where an object (or, without `name`, its collection) lives; None when the API
        does not serve its kind (KubeError when discovery fails)."""
        try:
            mapping = await self.mapper.mapping(api_version, kind)
        except rest_mapper.DiscoveryError as error:
            raise KubeError(0, f"discovery unusable: {error}") from None
        return None if mapping is None else mapping.path(namespace, name)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> JSON | None:
        path = await self.path(api_version, kind, namespace, name)
        found = None if path is None else await self.request("GET", path)
        self._remember((api_version, kind, namespace), name, found)
        return found

    async def create(self, obj: JSON, *, field_manager: str | None = None) -> JSON | None:
        """Create `obj` (409 when it exists); under `field_manager`, so that a later apply
        by the same manager owns, and can remove, the fields it wrote."""
        metadata = obj["metadata"]
        params = {"fieldManager": field_manager} if field_manager else None
        of = (obj["apiVersion"], obj["kind"], metadata["namespace"])
        path = await self.path(*of)
        stored = None if path is None else await self.request("POST", path, obj, params=params)
        self._remember(of, metadata["name"], stored)
        return stored

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: JSON
    ) -> JSON | None:
        path = await self.path(api_version, kind, namespace, name)
        stored = None
        if path is not None:
            stored = await self.request(
                "PATCH", path, patch, content_type="application/merge-patch+json"
            )
        self._remember((api_version, kind, namespace), name, stored)
        return stored

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        path = await self.path(api_version, kind, namespace, name)
        if path is not None:
            await self.request("DELETE", path)
        self._remember((api_version, kind, namespace), name, None)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        label_selector: str,
        *,
        max_age: float = 0.0,
    ) -> list[JSON]:
        """The objects of a kind in a namespace (none when the API does not serve it). With
        `max_age`, from a listing at most that old, shared by every caller (kept in step
        with what this client writes)."""
        of = (api_version, kind, namespace)
        if max_age > 0:
            return list((await self._shared(of, label_selector, max_age)).values())
        path = await self.path(*of)
        if path is None:
            return []
        found = await self.request("GET", path, params={"labelSelector": label_selector})
        return list((found or {}).get("items") or [])

    async def apply(self, obj: JSON) -> JSON | None:
        """Server-side apply of the whole intended object under our one field manager (forced:
        the operator owns what it renders); the object as stored (None when the API does not
        serve its kind)."""
        metadata = obj["metadata"]
        of = (obj["apiVersion"], obj["kind"], metadata["namespace"])
        path = await self.path(*of, metadata["name"])
        stored = None
        if path is not None:
            stored = await self.request(
                "PATCH",
                path,
                obj,
                content_type="application/apply-patch+yaml",
                params={"fieldManager": FIELD_MANAGER, "force": "true"},
            )
        self._remember(of, metadata["name"], stored)
        return stored

    async def _status_path(self, resource: Mapping[str, Any]) -> str | None:
        metadata = resource["metadata"]
        api_version = resource.get("apiVersion") or crd.API_VERSION
        path = await self.path(api_version, crd.KIND, metadata["namespace"], metadata["name"])
        return None if path is None else f"{path}/status"

    async def apply_status(
        self, resource: Mapping[str, Any], status: JSON, *, field_manager: str
    ) -> JSON | None:
        """Server-side apply of `status` fields of one of our resources (its status
        subresource) under `field_manager`, forced; the resource as stored, None if gone."""
        metadata = resource["metadata"]
        body = {
            "apiVersion": resource.get("apiVersion") or crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
            "status": status,
        }
        path = await self._status_path(resource)
        if path is None:
            return None
        return await self.request(
            "PATCH",
            path,
            body,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": "true"},
        )

    async def merge_patch_status(self, resource: Mapping[str, Any], status: JSON) -> JSON | None:
        """A merge patch of one of our resources' status subresource (None values remove)."""
        path = await self._status_path(resource)
        if path is None:
            return None
        return await self.request(
            "PATCH",
            path,
            {"status": status},
            content_type="application/merge-patch+json",
            params={"fieldManager": FIELD_MANAGER},
        )

    async def json_patch_status(
        self, resource: Mapping[str, Any], ops: JSONPatch, *, field_manager: str
    ) -> JSON | None:
        """A JSON patch (RFC 6902, with its `test` guards) of a resource's status subresource;
        422 when a guard fails (the object changed since it was read)."""
        path = await self._status_path(resource)
        if path is None:
            return None
        return await self.request(
            "PATCH",
            path,
            ops,
            content_type="application/json-patch+json",
            params={"fieldManager": field_manager},
        )

    # -- Secrets ---------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str, *, max_age: float = 0.0) -> JSON | None:
        """A Secret, or None. With `max_age`, from a listing of its namespace at most that
        many seconds old, shared by every caller: a drift check of N resources costs one
        list per namespace per interval, not 2N GETs. What this client wrote itself is in the
        listing as written; a name the listing lacks is read directly (it may be newer)."""
        if max_age > 0:
            found = (await self._shared((*SECRET, namespace), "", max_age)).get(name)
            if found is not None:
                return found
        return await self.get(*SECRET, namespace, name)

    async def _shared(
        self, of: tuple[str, str, str], selector: str, max_age: float
    ) -> dict[str, JSON]:
        key = (*of, selector)
        async with self._listing.setdefault(key, asyncio.Lock()):
            listed = self._listed.get(key)
            if listed is not None and time.monotonic() - listed[0] < max_age:
                return listed[1]
            started = time.monotonic()
            params = {"labelSelector": selector} if selector else None
            path = await self.path(*of)
            found = None if path is None else await self.request("GET", path, params=params)
            items = (found or {}).get("items") or []
            by_name = {str(item["metadata"]["name"]): item for item in items}
            self._listed[key] = (started, by_name)
            return by_name

    def _remember(self, of: tuple[str, str, str], name: str, stored: JSON | None) -> None:
        """Keep the shared listings in step with what this client read or wrote (`of`:
        apiVersion, kind, namespace)."""
        for (*listed, selector), (_, by_name) in self._listed.items():
            if tuple(listed) != of:
                continue
            if (
                stored
                and stored.get("metadata")
                and label_selectors.parse(selector).selects(stored)
            ):
                by_name[name] = stored
            else:
                by_name.pop(name, None)

    async def secret_value(
        self, namespace: str, name: str, key: str, *, max_age: float = 0.0
    ) -> str | None:
        """One value of a Secret, decoded; None when the Secret or the key is missing."""
        secret = await self.read_secret(namespace, name, max_age=max_age)
        if secret is None:
            return None
        raw = (secret.get("data") or {}).get(key)
        if raw is None:
            value = (secret.get("stringData") or {}).get(key)
            return str(value).strip() if value else None
        try:
            return base64.b64decode(raw, validate=True).decode().strip() or None
        except (ValueError, UnicodeDecodeError):
            return None


def owner_reference(resource: Mapping[str, Any]) -> JSON:
    metadata = resource["metadata"]
    return {
        "apiVersion": resource.get("apiVersion", "gemini.webhooks.dev/v1alpha1"),
        "kind": resource.get("kind", "GeminiWebhook"),
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
