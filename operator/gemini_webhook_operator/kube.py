"""The operator's own Kubernetes client: Secrets, the receiver's objects, our resources'
status (the signing Secret's own rules are `signing_store`; who we are and how we connect
is `gemini_webhooks.kube_access`; where each kind lives, the server's discovery read by
`rest_mapper`; the watches it reads through are `watch_cache`).

kopf watches and patches GeminiWebhooks; everything else goes through this small async
client (aiohttp, the same credentials kopf logs in with). Secret values are never logged
and never part of an exception message.
"""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from gemini_webhook_operator import rest_mapper
from gemini_webhook_operator.rest_mapper import RESTMapper
from gemini_webhooks import json_depth
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.kube_access import ClusterAccess
from gemini_webhooks.watch_events import name as object_name

from .watch_cache import Keep, WatchCaches, WatchSettings, read_bounded

JSON = dict[str, Any]
# Aliases: inside Kube, `list` is a method.
JSONPatch = list[JSON]  # RFC 6902 operations
Objects = list[JSON]


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


def abortive_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A socket whose close discards what the peer has not acknowledged (SO_LINGER 0: a
    reset, not a FIN after the kernel's retransmissions). A request cancelled before its
    answer came (the leader Lease lost, a timeout) is then never delivered later: with a
    plain close the kernel keeps retransmitting it, and a leader cut from the API server
    had its writes applied when the path healed, long after another replica took over
    (tests/chart/test_real_rollout.py). A connection closed idle loses nothing."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return sock


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
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self.access = access
        # Called with a description before every request that is not a GET; raises to refuse
        # it (the leader fence: `leader.Fence.check`).
        self.write_guard = write_guard
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.mapper = RESTMapper(self._discovery)
        self._caches = WatchCaches(access, watch_settings)
        # Per namespace, the Secrets read by name: only these are kept whole in its cache.
        self._wanted_secrets: dict[str, set[str]] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Short requests only (watches have their own pool): more connections would cost
            # memory, not time (bench/operator --kube real: 16 instead of 32, Ready as fast,
            # 12 MiB less).
            connector = aiohttp.TCPConnector(
                ssl=self.access.ssl_context(), limit=16, socket_factory=abortive_socket
            )
            self._session = aiohttp.ClientSession(
                base_url=self.access.server.rstrip("/") + "/",
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                connector=connector,
            )
        return self._session

    async def close(self) -> None:
        """Ends every watch and closes both connection pools."""
        await self._caches.close()
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
                body = await read_bounded(response, rest_mapper.MAX_BYTES)
                if body is None:
                    raise KubeError(0, f"discovery at {path} is over {rest_mapper.MAX_BYTES} bytes")
                if response.status >= 400:
                    raise KubeError(response.status, f"discovery at {path}: {_message(body)}")
                return response.headers.get("Content-Type", ""), body
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
        """Read from the API (not from a cache)."""
        path = await self.path(api_version, kind, namespace, name)
        found = None if path is None else await self.request("GET", path)
        if found is not None:  # a 404 says less than the watch: it may predate a create
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

    async def json_patch_resource(self, resource: Mapping[str, Any], ops: JSONPatch) -> JSON | None:
        """A JSON patch (RFC 6902, with its `test` guards) of one of our resources itself;
        422 when a guard fails (the object changed since it was read), None if it is gone."""
        metadata = resource["metadata"]
        api_version = resource.get("apiVersion") or crd.API_VERSION
        path = await self.path(api_version, crd.KIND, metadata["namespace"], metadata["name"])
        return await self._json_patch(path, ops, FIELD_MANAGER)

    async def _json_patch(self, path: str | None, ops: JSONPatch, manager: str) -> JSON | None:
        if path is None:
            return None
        content_type = "application/json-patch+json"
        params = {"fieldManager": manager}
        return await self.request("PATCH", path, ops, content_type=content_type, params=params)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        path = await self.path(api_version, kind, namespace, name)
        if path is not None:
            await self.request("DELETE", path)
        self._remember((api_version, kind, namespace), name, None)

    async def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[JSON]:
        """The objects of a kind in a namespace, listed now (none when the API does not
        serve the kind)."""
        path = await self.path(api_version, kind, namespace)
        if path is None:
            return []
        found = await self.request("GET", path, params={"labelSelector": label_selector})
        return list((found or {}).get("items") or [])

    async def watched(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> Objects:
        """The objects of a kind in a namespace, from the watch cache of that selector
        (started on first use; listed directly while it is not known good); none when the
        API does not serve the kind."""
        path = await self.path(api_version, kind, namespace)
        if path is None:
            return []
        cache = await self._caches.synced((kind, namespace, label_selector), path)
        found = cache.objects() if cache is not None else None
        if found is not None:
            return found
        return await self.list(api_version, kind, namespace, label_selector)

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
        return await self._json_patch(await self._status_path(resource), ops, field_manager)

    # -- Secrets ---------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> JSON | None:
        """A Secret, or None: from the watch cache of its namespace's Secrets, read directly
        while that is not known good (or knows the name only).

        The cache watches every Secret of the namespace: the API-key Secret is the user's
        and carries no label of ours, and a Secret that merely has our signing Secret's name
        must be seen to be refused. It keeps whole only the Secrets read here by name (ours
        and the API keys our resources name); the rest by name only, so a namespace full of
        other Secrets costs their names, not their data."""
        wanted = self._wanted_secrets.setdefault(namespace, set())
        wanted.add(name)  # before any read: from here on, its events are kept whole
        key = ("Secret", namespace, "")
        path = await self.path(*SECRET, namespace)
        cache = None if path is None else await self._caches.synced(key, path, self._keep(wanted))
        if cache is not None:
            known, found = cache.cached(name)
            if known:
                return found
        return await self.get(*SECRET, namespace, name)

    @staticmethod
    def _keep(wanted: set[str]) -> Keep:
        return lambda secret: secret if object_name(secret) in wanted else None

    def _remember(self, of: tuple[str, str, str], name: str, stored: JSON | None) -> None:
        """Into the watch caches at once (`of`: apiVersion, kind, namespace): a
        reconciliation sees its own writes."""
        _, kind, namespace = of
        self._caches.remember(kind, namespace, name, stored)

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One value of a Secret, decoded; None when the Secret or the key is missing."""
        secret = await self.read_secret(namespace, name)
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
