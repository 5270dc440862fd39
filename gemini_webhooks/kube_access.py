"""How our processes reach the Kubernetes API: which credentials (a kubeconfig or a pod's
ServiceAccount, in client-go's order), and what they hold (token, tokenFile, client
certificate, CA, as files or inline data) turned into a bearer token and a TLS context.

The operator, the receiver's Secret watch and our tools (kubectl, jobs) all load their
credentials here. A token file (a pod's projected token, a kubeconfig's `tokenFile`) is
read again every minute, as client-go does, so the kubelet's token rotation is followed. A
kubeconfig user with an `exec` or `auth-provider` plugin is handed to the `kubernetes`
package's loader, imported only then (it costs 22 MiB of resident memory). The token never
reaches a log.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_KUBECONFIG = "~/.kube/config"
# Read buffer of each TLS connection. asyncio's is 256 KiB (`SSLProtocol.max_size`), filled
# with zeros at connect, so resident: the operator keeps one TLS connection per watch stream
# plus both pools' (~60 with 1,000 resources), 15 MiB. A TLS record is at most 16 KiB.
TLS_READ_BUFFER = 64 * 1024
# A token file is read again when the copy in memory is older than this: the kubelet
# replaces a pod's projected ServiceAccount token long before it expires (client-go's
# cached file token source re-reads every minute too).
TOKEN_FILE_REFRESH_SECONDS = 60.0


class KubeConfigError(Exception):
    """A kubeconfig that names no usable context, cluster or credentials."""


@dataclass(frozen=True)
class CredentialSource:
    """Where the credentials come from: these kubeconfig files (merged), or, with none,
    the pod's ServiceAccount."""

    kubeconfigs: tuple[str, ...] = ()

    @property
    def in_cluster(self) -> bool:
        return not self.kubeconfigs


IN_CLUSTER = CredentialSource()


def credential_source(explicit: str | None, environ: Mapping[str, str]) -> CredentialSource:
    """client-go's (and controller-runtime's) order: an explicit kubeconfig path, then
    `KUBECONFIG` (a list joined by os.pathsep), then the pod's ServiceAccount when
    `KUBERNETES_SERVICE_HOST` says we run in a pod, then `~/.kube/config`."""
    for paths in (explicit, environ.get("KUBECONFIG")):
        named = tuple(os.path.expanduser(p) for p in (paths or "").split(os.pathsep) if p)
        if named:
            return CredentialSource(named)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return IN_CLUSTER
    return CredentialSource((os.path.expanduser(DEFAULT_KUBECONFIG),))


def _relative(kubeconfig: str, path: str) -> str:
    """A path in a kubeconfig is relative to that kubeconfig's directory (as kubectl has it)."""
    return os.path.join(os.path.dirname(os.path.abspath(kubeconfig)), os.path.expanduser(path))


def _file_of(kubeconfig: str, entry: Mapping[str, Any], field: str) -> str | None:
    """The file a kubeconfig entry names in `field`, or its inline `field-data` written to
    a private temporary file (what ssl.load_cert_chain needs), removed when we exit."""
    if entry.get(field):
        return _relative(kubeconfig, str(entry[field]))
    data = entry.get(f"{field}-data")
    if not data:
        return None
    descriptor, path = tempfile.mkstemp(prefix="gwo-kubeconfig-")  # mode 0600
    with os.fdopen(descriptor, "wb") as file:
        file.write(base64.b64decode(data))
    atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@dataclass
class _TokenFile:
    path: str
    token: str | None = None
    read_at: float = float("-inf")

    def current(self, now: float) -> str | None:
        if now - self.read_at >= TOKEN_FILE_REFRESH_SECONDS:
            try:
                with open(self.path, encoding="utf-8") as file:
                    self.token = file.read().strip() or None
            except OSError:
                if self.token is None:
                    raise
                # Being replaced (the kubelet swaps a symlink): keep the last one we read.
            self.read_at = now
        return self.token


@dataclass(frozen=True)
class ClusterAccess:
    server: str
    ca_path: str | None = None
    insecure: bool = False
    token: str | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    token_file: str | None = None  # read instead of `token`, again every minute
    _token_cache: _TokenFile | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.token_file:
            object.__setattr__(self, "_token_cache", _TokenFile(self.token_file))

    def bearer_token(self) -> str | None:
        """The token to send now: a token file's current contents, else the fixed token."""
        if self._token_cache is not None:
            return self._token_cache.current(time.monotonic())
        return self.token

    def headers(self) -> dict[str, str]:
        """The request headers that authenticate us now (none without a token)."""
        token = self.bearer_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def __repr__(self) -> str:  # the token stays out of logs
        return f"ClusterAccess(server={self.server!r})"

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> ClusterAccess:
        """From where `credential_source` says: a kubeconfig (`kubeconfig`, else
        $KUBECONFIG), else in-cluster, else ~/.kube/config."""
        source = credential_source(kubeconfig, os.environ)
        if source.in_cluster:
            return cls._in_cluster()
        return cls._from_kubeconfig(list(source.kubeconfigs), context)

    @classmethod
    def _in_cluster(cls, directory: str = SERVICE_ACCOUNT_DIR) -> ClusterAccess:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        access = cls(
            server=f"https://{host}:{port}",
            ca_path=os.path.join(directory, "ca.crt"),
            token_file=os.path.join(directory, "token"),
        )
        access.bearer_token()  # a pod without its token fails here, at start
        return access

    @classmethod
    def _from_kubeconfig(cls, paths: list[str], context: str | None) -> ClusterAccess:
        """kubectl's merge of several files: the first file that names an entry wins."""
        import yaml  # only here: a pod's in-cluster credentials need no YAML

        current: str | None = None
        entries: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
            "contexts": {},
            "clusters": {},
            "users": {},
        }
        for path in paths:
            with open(path, encoding="utf-8") as file:
                config = yaml.safe_load(file) or {}
            current = current or config.get("current-context")
            for section, named in entries.items():
                field = section.removesuffix("s")
                for item in config.get(section) or []:
                    named.setdefault(item["name"], (path, item.get(field) or {}))
        name = context or current
        if not name or name not in entries["contexts"]:
            raise KubeConfigError(f"kubeconfig has no context {name!r}")
        _, ctx = entries["contexts"][name]
        if ctx.get("cluster") not in entries["clusters"]:
            raise KubeConfigError(f"context {name!r} names no known cluster")
        cluster_file, cluster = entries["clusters"][ctx["cluster"]]
        user_file, user = entries["users"].get(ctx.get("user") or "", (cluster_file, {}))
        if "exec" in user or "auth-provider" in user:
            return cls._through_kubernetes_client(paths, name)
        token = user.get("token")
        token_file = None if token else user.get("tokenFile")
        access = cls(
            server=str(cluster["server"]),
            ca_path=_file_of(cluster_file, cluster, "certificate-authority"),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            token=str(token).strip() or None if token else None,
            certificate_path=_file_of(user_file, user, "client-certificate"),
            private_key_path=_file_of(user_file, user, "client-key"),
            token_file=_relative(user_file, token_file) if token_file else None,
        )
        access.bearer_token()  # an unreadable token file fails here, at start
        return access

    @classmethod
    def _through_kubernetes_client(cls, paths: list[str], context: str) -> ClusterAccess:
        """A credential plugin: the `kubernetes` package runs it (once, at start)."""
        import kubernetes

        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # splits and merges os.pathsep-joined paths
            config_file=os.pathsep.join(paths), context=context, client_configuration=configuration
        )
        # The client keeps the token under `BearerToken` (older releases: `authorization`).
        keys = configuration.api_key or {}
        authorization = keys.get("BearerToken") or keys.get("authorization") or ""
        return cls(
            server=configuration.host,
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            token=authorization.removeprefix("Bearer ").strip() or None,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=self.ca_path)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certificate_path and self.private_key_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context


def bound_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Caps the read buffer asyncio gives each TLS connection of this process at `size`.

    The operator's process calls it once at start (`gemini-webhooks operator`):
    bench/operator --kube real, 1,000 resources, peak RSS 201-209 -> 195-199 MiB. The buffer
    only bounds how many bytes one read takes from the socket; larger responses arrive in
    more reads. asyncio has no public setting for it, so this lowers the class attribute
    its TLS protocol reads the size from, and does nothing where that attribute is absent
    (another event loop, a future Python)."""
    from asyncio import sslproto

    protocol = getattr(sslproto, "SSLProtocol", None)
    current = getattr(protocol, "max_size", None)
    if isinstance(current, int) and current > size:
        protocol.max_size = size  # type: ignore[union-attr]
