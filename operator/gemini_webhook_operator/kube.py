"""The operator's own Kubernetes client: Secrets, the receiver's objects, our resources'
status (the signing Secret's own rules are `signing_store`; who we are and how we connect
is `gemini_webhooks.kube_access`; the watches it reads through are `watch_cache`).

kopf watches and patches GeminiWebhooks; everything else goes through this small async
client (aiohttp, the same credentials kopf logs in with). Secret values are never logged
and never part of an exception message.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import label_selector as label_selectors
from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.kube_access import ClusterAccess
from gemini_webhooks.watch_events import name as object_name

from .watch_cache import Keep, WatchCaches, WatchSettings

JSON = dict[str, Any]
# Aliases: inside Kube, `list` is a method.
JSONPatch = list[JSON]  # RFC 6902 operations
Objects = list[JSON]

# Where each kind the operator applies lives in the API.
_KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    crd.KIND: (f"/apis/{contract.API_GROUP}/{crd.VERSION}", crd.PLURAL),
}


class KubeError(Exception):
    """A Kubernetes API call failed; the message holds the API's status, never a body we sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API answered {status}: {message}")
        self.status = status


FIELD_MANAGER = contract.MANAGED_BY  # the one field manager of everything the operator applies


def label_selector(labels: Mapping[str, str]) -> str:
    """Labels as an equality-based `labelSelector` query."""
    return str(label_selectors.from_labels(labels))


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = _KINDS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


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
        self._caches = WatchCaches(access, watch_settings)
        # Per namespace, the Secrets read by name: only these are kept whole in its cache.
        self._wanted_secrets: dict[str, set[str]] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Short requests only (watches have their own pool): more connections would cost
            # memory, not time (bench/operator --kube real: 16 instead of 32, Ready as fast,
            # 12 MiB less).
            connector = aiohttp.TCPConnector(ssl=self.access.ssl_context(), limit=16)
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
        headers = {"Content-Type": content_type} if body is not None else {}
        token = self.access.bearer_token()  # per request: a token file may have been replaced
        if token:
            headers["Authorization"] = f"Bearer {token}"
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

    async def get(self, kind: str, namespace: str, name: str) -> JSON | None:
        """Read from the API (not from a cache)."""
        found = await self.request("GET", object_path(kind, namespace, name))
        if found is not None:  # a 404 says less than the watch: it may predate a create
            self._remember(kind, namespace, name, found)
        return found

    async def create(self, obj: JSON, *, field_manager: str | None = None) -> JSON | None:
        """Create `obj` (409 when it exists); under `field_manager`, so that a later apply
        by the same manager owns, and can remove, the fields it wrote."""
        metadata = obj["metadata"]
        params = {"fieldManager": field_manager} if field_manager else None
        path = object_path(obj["kind"], metadata["namespace"])
        stored = await self.request("POST", path, obj, params=params)
        self._remember(obj["kind"], metadata["namespace"], metadata["name"], stored)
        return stored

    async def merge_patch(self, kind: str, namespace: str, name: str, patch: JSON) -> JSON | None:
        stored = await self.request(
            "PATCH",
            object_path(kind, namespace, name),
            patch,
            content_type="application/merge-patch+json",
        )
        self._remember(kind, namespace, name, stored)
        return stored

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self.request("DELETE", object_path(kind, namespace, name))
        self._remember(kind, namespace, name, None)

    async def list(self, kind: str, namespace: str, label_selector: str) -> list[JSON]:
        """The objects of a kind in a namespace, listed now."""
        found = await self.request(
            "GET", object_path(kind, namespace), params={"labelSelector": label_selector}
        )
        return list((found or {}).get("items") or [])

    async def watched(self, kind: str, namespace: str, label_selector: str) -> Objects:
        """The objects of a kind in a namespace, from the watch cache of that selector
        (started on first use; listed directly while it is not known good)."""
        key = (kind, namespace, label_selector)
        cache = await self._caches.synced(key, object_path(kind, namespace))
        found = cache.objects() if cache is not None else None
        if found is not None:
            return found
        return await self.list(kind, namespace, label_selector)

    async def apply(self, obj: JSON) -> JSON | None:
        """Server-side apply of the whole intended object under our one field manager (forced:
        the operator owns what it renders); the object as stored (None when the API does not
        serve its kind)."""
        metadata = obj["metadata"]
        stored = await self.request(
            "PATCH",
            object_path(obj["kind"], metadata["namespace"], metadata["name"]),
            obj,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
        self._remember(obj["kind"], metadata["namespace"], metadata["name"], stored)
        return stored

    async def apply_status(
        self, resource: Mapping[str, Any], status: JSON, *, field_manager: str
    ) -> JSON | None:
        """Server-side apply of `status` fields of one of our resources (its status
        subresource) under `field_manager`, forced; the resource as stored, None if gone."""
        metadata = resource["metadata"]
        body = {
            "apiVersion": resource.get("apiVersion") or f"{contract.API_GROUP}/{crd.VERSION}",
            "kind": crd.KIND,
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
            "status": status,
        }
        path = object_path(crd.KIND, metadata["namespace"], metadata["name"]) + "/status"
        return await self.request(
            "PATCH",
            path,
            body,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": field_manager, "force": "true"},
        )

    async def merge_patch_status(self, resource: Mapping[str, Any], status: JSON) -> JSON | None:
        """A merge patch of one of our resources' status subresource (None values remove)."""
        metadata = resource["metadata"]
        path = object_path(crd.KIND, metadata["namespace"], metadata["name"]) + "/status"
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
        metadata = resource["metadata"]
        path = object_path(crd.KIND, metadata["namespace"], metadata["name"]) + "/status"
        return await self.request(
            "PATCH",
            path,
            ops,
            content_type="application/json-patch+json",
            params={"fieldManager": field_manager},
        )

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
        cache = await self._caches.synced(key, object_path("Secret", namespace), self._keep(wanted))
        if cache is not None:
            known, found = cache.cached(name)
            if known:
                return found
        return await self.get("Secret", namespace, name)

    @staticmethod
    def _keep(wanted: set[str]) -> Keep:
        return lambda secret: secret if object_name(secret) in wanted else None

    def _remember(self, kind: str, namespace: str, name: str, stored: JSON | None) -> None:
        """Into the watch caches at once: a reconciliation sees its own writes."""
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
