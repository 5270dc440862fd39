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
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import yaml

from gemini_webhook_operator.kube import Kube, KubeError, label_selector
from gemini_webhooks.contracts import crd
from gemini_webhooks.kube_access import (
    SERVICE_ACCOUNT_DIR,
    ClusterAccess,
    KubeConfigError,
)

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
        found = await self.kube.get(crd.API_VERSION, crd.KIND, self.namespace, name)
        if found is None:
            raise NotFound(f'{crd.SINGULAR} "{name}" not found in namespace "{self.namespace}"')
        return found

    async def get(self, api_version: str, kind: str, name: str) -> JSON | None:
        return await self.kube.get(api_version, kind, self.namespace, name)

    async def select(self, api_version: str, kind: str, selector: Mapping[str, str]) -> list[JSON]:
        return await self.kube.list(api_version, kind, self.namespace, label_selector(selector))

    async def events_about(self, uid: str) -> list[JSON]:
        found = await self.kube.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/events",
            params={"fieldSelector": f"involvedObject.uid={uid}"},
        )
        return list((found or {}).get("items") or [])

    async def exec(
        self, pod: str, container: str, command: Sequence[str], *, within: float
    ) -> ExecResult:
        """Run `command` in the Pod's container as `kubectl exec` does (the API server's
        `pods/exec`, streamed over WebSocket), with the user's own credentials; PluginError
        when the cluster refuses or cannot, or the command outlasts `within` seconds."""
        access = self.kube.access
        headers = {}
        token = access.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        params = [("container", container), ("stdout", "true"), ("stderr", "true")]
        params += [("command", word) for word in command]
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}/exec"
        url = access.server.rstrip("/") + path
        output: dict[int, bytearray] = {STDOUT: bytearray(), STDERR: bytearray()}
        status: Mapping[str, Any] | None = None
        connector = aiohttp.TCPConnector(ssl=access.ssl_context())
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                asyncio.timeout(within),
                http.ws_connect(
                    url, params=params, headers=headers, protocols=EXEC_PROTOCOLS
                ) as socket,
            ):
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                        continue
                    channel, payload = message.data[0], message.data[1:]
                    if channel in output:
                        room = MAX_EXEC_OUTPUT - len(output[channel])
                        output[channel] += payload[: max(room, 0)]
                    elif channel == ERROR and payload:
                        try:
                            status = json.loads(payload)
                        except ValueError:
                            status = {"message": payload.decode("utf-8", "replace")[:300]}
        except aiohttp.WSServerHandshakeError as error:
            said = ""
            if error.status not in (401, 403):
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=access.ssl_context()),
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as http:
                    said = await _said(http, url, params=params, headers=headers)
            raise PluginError(exec_refused(error.status, said, self.namespace, pod)) from None
        except TimeoutError:
            raise PluginError(
                f"the command in Pod {self.namespace}/{pod} did not finish in {within:g}s"
            ) from None
        except aiohttp.ClientError as error:
            raise PluginError(
                f"cannot exec into Pod {self.namespace}/{pod}: the cluster is unreachable "
                f"({type(error).__name__})"
            ) from None
        code, why = exec_outcome(status)
        return ExecResult(
            code,
            output[STDOUT].decode("utf-8", "replace"),
            output[STDERR].decode("utf-8", "replace"),
            why,
        )

    async def patch_webhook(self, name: str, patch: JSON) -> JSON:
        stored = await self.kube.merge_patch(crd.API_VERSION, crd.KIND, self.namespace, name, patch)
        if stored is None:
            raise NotFound(f'{crd.SINGULAR} "{name}" not found in namespace "{self.namespace}"')
        return stored


# `kubectl exec`'s streaming protocols over WebSocket, newest first: each binary message's
# first byte is its channel (stdout, stderr, then the error channel, where the API server
# writes the command's outcome as a metav1.Status; v5 adds a stream-close message, 255).
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, ERROR, CLOSE = 1, 2, 3, 255
MAX_EXEC_OUTPUT = 1024 * 1024  # per stream; more is cut (the replay prints one line)


@dataclass(frozen=True)
class ExecResult:
    """A finished command: its exit code (None: it did not run, `message` says why)."""

    code: int | None
    stdout: str
    stderr: str
    message: str = ""


def exec_outcome(status: Mapping[str, Any] | None) -> tuple[int | None, str]:
    """The exit code and message the error channel's metav1.Status reports: (0, "") for
    Success, the `ExitCode` cause's number for NonZeroExitCode, else (None, message)."""
    if status is None:
        return None, "the cluster closed the exec stream without the command's outcome"
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or status.get("reason") or "the command failed")
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), message
            except (TypeError, ValueError):
                break
    return None, message


def exec_refused(status: int, said: str, namespace: str, pod: str) -> str:
    """The one line for an exec the API server refused to open: its handshake's HTTP
    status and what the server said (its Status message, else the status's reason)."""
    target = f"Pod {namespace}/{pod}"
    if status == 401:
        return f"cannot exec into {target}: the cluster does not accept your credentials"
    if status == 403:
        return (
            f"cannot exec into {target}: your user may not (it needs `create` on `pods/exec`; "
            f"try `kubectl auth can-i create pods/exec -n {namespace}`)"
        )
    return f"the cluster cannot exec into {target}: HTTP {status}: {said}".rstrip(": ")


async def _said(http: aiohttp.ClientSession, url: str, **request: Any) -> str:
    """What the API server says to the same request without the upgrade: the handshake's
    error (aiohttp keeps no body) is in its Status message. Exec starts nothing without
    the upgrade."""
    try:
        async with http.get(url, **request) as response:
            payload = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return ""
    message = payload.get("message") if isinstance(payload, dict) else None
    return str(message)[:300] if message else ""


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
