"""The plugin's edge to the cluster: kubectl's kubeconfig precedence and namespace, and
the reads every subcommand shares.

The client is the operator's own (`gemini_webhook_operator.kube.Kube`): it reads every
kubeconfig form kubectl does (files or inline data, token files, exec and auth-provider
plugins, several files in `KUBECONFIG`, in-cluster), keeps tokens out of its errors, and
costs no generated models. The sandbox's `KubeApi` knows only the sandbox's kubeconfigs
(no context choice, no inline credentials), so it does not fit a user's machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from gemini_webhook_operator.kube import (
    SERVICE_ACCOUNT_DIR,
    ClusterAccess,
    Kube,
    KubeConfigError,
    KubeError,
    object_path,
)
from gemini_webhooks.contracts import crd

JSON = dict[str, Any]
T = TypeVar("T")


class PluginError(Exception):
    """A failure the plugin explains in one line (exit code 1, no traceback)."""


class NotFound(PluginError):
    pass


def _kubeconfig_paths(kubeconfig: str | None) -> list[str]:
    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [os.path.expanduser(p) for p in path.split(os.pathsep) if p]


def in_cluster(kubeconfig: str | None) -> bool:
    """client-go's order: --kubeconfig, $KUBECONFIG, ~/.kube/config, then in-cluster."""
    if kubeconfig or os.environ.get("KUBECONFIG"):
        return False
    if os.path.exists(os.path.expanduser("~/.kube/config")):
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def default_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace kubectl would use without `-n`: the context's, else `default` (in a
    pod: the pod's own)."""
    if in_cluster(kubeconfig):
        try:
            with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace"), encoding="utf-8") as file:
                return file.read().strip() or "default"
        except OSError:
            return "default"
    current: str | None = None
    contexts: dict[str, Mapping[str, Any]] = {}
    for path in _kubeconfig_paths(kubeconfig):
        try:
            with open(path, encoding="utf-8") as file:
                config = yaml.safe_load(file) or {}
        except (OSError, yaml.YAMLError):
            continue  # the client reports an unreadable kubeconfig when it loads it
        current = current or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(item.get("name"), item.get("context") or {})
    chosen = contexts.get(context or current or "") or {}
    return str(chosen.get("namespace") or "default")


@dataclass
class Session:
    """One cluster connection and the namespace the command works in."""

    kube: Kube
    namespace: str

    @classmethod
    def open(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Session:
        files = [] if in_cluster(kubeconfig) else _kubeconfig_paths(kubeconfig)
        paths = os.pathsep.join(files) or None
        try:
            access = ClusterAccess.load(paths, None if paths is None else context)
        except FileNotFoundError as error:
            if error.filename in files:
                raise PluginError(f"no kubeconfig at {error.filename}") from None
            raise PluginError(f"cannot read {error.filename}: {error.strerror}") from None
        except OSError as error:  # a token, certificate or key file it names
            raise PluginError(f"cannot read {error.filename}: {error.strerror}") from None
        except (KubeConfigError, yaml.YAMLError, KeyError, TypeError) as error:
            raise PluginError(f"unusable kubeconfig: {error}") from None
        return cls(Kube(access, timeout=20.0), namespace or default_namespace(kubeconfig, context))

    async def close(self) -> None:
        await self.kube.close()

    async def webhook(self, name: str) -> JSON:
        found = await self.kube.get(crd.KIND, self.namespace, name)
        if found is None:
            raise NotFound(f'{crd.SINGULAR} "{name}" not found in namespace "{self.namespace}"')
        return found

    async def get(self, kind: str, name: str) -> JSON | None:
        return await self.kube.get(kind, self.namespace, name)

    async def select(self, kind: str, selector: Mapping[str, str]) -> list[JSON]:
        terms = ",".join(f"{k}={v}" for k, v in selector.items())
        return await self.kube.list(kind, self.namespace, terms)

    async def events_about(self, uid: str) -> list[JSON]:
        found = await self.kube.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/events",
            params={"fieldSelector": f"involvedObject.uid={uid}"},
        )
        return list((found or {}).get("items") or [])

    async def patch_webhook(self, name: str, patch: JSON) -> JSON:
        stored = await self.kube.request(
            "PATCH",
            object_path(crd.KIND, self.namespace, name),
            patch,
            content_type="application/merge-patch+json",
        )
        if stored is None:
            raise NotFound(f'{crd.SINGULAR} "{name}" not found in namespace "{self.namespace}"')
        return stored


async def readable(read: Awaitable[T]) -> tuple[T | None, str | None]:
    """A read whose refusal is part of the answer (a user may not read Secrets):
    (value, None), or (None, why)."""
    try:
        return await read, None
    except KubeError as error:
        return None, str(error)


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], *, within: float, interval: float = 0.5
) -> T | None:
    """Poll `probe` until it returns a value or `within` seconds pass (then None)."""
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
