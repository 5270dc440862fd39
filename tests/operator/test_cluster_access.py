"""The operator's credentials from a kubeconfig: a bearer token (inline or `tokenFile`, as
a ServiceAccount's kubeconfig or a pod's in-cluster config has it) is sent, not dropped —
kube-apiserver answered such an operator as `system:anonymous` before this was fixed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from gemini_webhooks.kube_access import ClusterAccess


def _kubeconfig(tmp_path: Path, user: Mapping[str, object]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "u", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "u",
            }
        )
    )
    return path


def test_an_inline_token_is_used(tmp_path: Path) -> None:
    access = ClusterAccess.load(str(_kubeconfig(tmp_path, {"token": "inline-token"})))
    assert access.token == "inline-token"
    assert "inline-token" not in repr(access)


def test_a_token_file_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    access = ClusterAccess.load(str(_kubeconfig(tmp_path, {"tokenFile": "token"})))
    assert access.bearer_token() == "file-token"  # relative to the kubeconfig


def test_an_unreadable_token_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ClusterAccess.load(str(_kubeconfig(tmp_path, {"tokenFile": "absent"})))


def test_a_replaced_token_file_is_read_again_after_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet replaces a pod's projected token well before it expires; client-go
    re-reads it every minute, and so do we. A file missing mid-swap keeps the last one."""
    from gemini_webhooks import kube_access

    now = [1000.0]
    monkeypatch.setattr(kube_access.time, "monotonic", lambda: now[0])
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    access = ClusterAccess(server="https://k", token_file=str(token_file))
    assert access.bearer_token() == "first"
    token_file.write_text("second\n")
    now[0] += kube_access.TOKEN_FILE_REFRESH_SECONDS - 1
    assert access.bearer_token() == "first"
    now[0] += 1
    assert access.bearer_token() == "second"
    token_file.unlink()
    now[0] += kube_access.TOKEN_FILE_REFRESH_SECONDS
    assert access.bearer_token() == "second"


async def test_the_kube_client_sends_the_current_token_of_a_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-running operator keeps working across the kubelet's token rotation: each
    request carries the token file's current contents (a recording HTTP server, a test
    double standing in for kube-apiserver's authentication)."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from gemini_webhook_operator import kube
    from gemini_webhooks import kube_access

    now = [0.0]
    monkeypatch.setattr(kube_access.time, "monotonic", lambda: now[0])
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"kind": "Secret"})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/n/secrets/s", record)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    port = server.port
    token_file = tmp_path / "token"
    token_file.write_text("before")
    client = kube.Kube(ClusterAccess(server=f"http://127.0.0.1:{port}", token_file=str(token_file)))
    try:
        await client.request("GET", "/api/v1/namespaces/n/secrets/s")
        token_file.write_text("after")
        now[0] += kube_access.TOKEN_FILE_REFRESH_SECONDS
        await client.request("GET", "/api/v1/namespaces/n/secrets/s")
    finally:
        await client.close()
        await server.close()
    assert seen == ["Bearer before", "Bearer after"]


def test_the_watch_timeout_kopf_sends_is_a_whole_number_of_seconds() -> None:
    from gemini_webhook_operator import runtime

    settings = runtime.kopf_settings(runtime.RunConfig(watch_timeout=5.4))
    assert settings.watching.server_timeout == 5
    assert isinstance(settings.watching.server_timeout, int)


async def test_kopfs_session_bounds_its_connections_and_sends_the_token() -> None:
    """kopf's own pool is unbounded: 1,000 resources arriving at once opened ~800 TLS
    connections to kube-apiserver and cost ~65 MiB of peak RSS (bench/operator --kube real).
    The session the login handler gives kopf keeps at most one per watch stream plus
    KOPF_SPARE_CONNECTIONS open, and with every watch stream open, other calls still get
    through (a bound below the watches would starve them). A counting HTTP server stands in
    for kube-apiserver (a test double)."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from gemini_webhook_operator import runtime
    from gemini_webhook_operator.cluster_access import KOPF_SPARE_CONNECTIONS, kopf_session

    open_now = most = 0
    tokens: set[str] = set()
    release_watches = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal open_now, most
        tokens.add(request.headers.get("Authorization", ""))
        open_now += 1
        most = max(most, open_now)
        try:
            if request.query.get("watch"):
                await release_watches.wait()
            else:
                await asyncio.sleep(0.02)
        finally:
            open_now -= 1
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    port = server.port
    # Operating in 40 namespaces: more watch streams than spare connections.
    config = runtime.RunConfig(namespaces=[f"ns{i}" for i in range(40)])
    streams = runtime.kopf_watch_streams(config)
    assert streams == 42
    try:
        access = ClusterAccess(server=f"http://127.0.0.1:{port}", token="kopf-token")
        info = kopf_session(access, watch_streams=streams)
        session = info.aiohttp_session

        async def call(watch: bool = False) -> None:
            params = {"watch": "1"} if watch else {}
            async with session.get(info.server + "/", params=params) as response:
                assert response.status == 200

        watches = [asyncio.create_task(call(watch=True)) for _ in range(streams)]
        await asyncio.wait_for(asyncio.gather(*(call() for _ in range(200))), 10)
        release_watches.set()
        await asyncio.gather(*watches)
        await session.close()
    finally:
        release_watches.set()
        await server.close()
    assert streams < most <= streams + KOPF_SPARE_CONNECTIONS
    assert tokens == {"Bearer kopf-token"}


def test_kopf_watch_streams_count_namespaces_and_observers() -> None:
    from gemini_webhook_operator import runtime

    assert runtime.kopf_watch_streams(runtime.RunConfig()) == 3
    assert runtime.kopf_watch_streams(runtime.RunConfig(namespaces=["a", "b"])) == 4


def _write(tmp_path: Path, name: str, config: dict[str, object]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_paths_are_relative_to_the_kubeconfig_and_inline_data_becomes_private_files(
    tmp_path: Path,
) -> None:
    import base64
    import stat

    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text("CA")
    path = _write(
        tmp_path,
        "kubeconfig",
        {
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": "https://k", "certificate-authority": "pki/ca.crt"},
                }
            ],
            "users": [
                {
                    "name": "u",
                    "user": {
                        "client-certificate-data": base64.b64encode(b"CERT").decode(),
                        "client-key-data": base64.b64encode(b"KEY").decode(),
                    },
                }
            ],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        },
    )
    access = ClusterAccess.load(str(path))
    assert access.ca_path == str(tmp_path / "pki" / "ca.crt")
    assert access.certificate_path and access.private_key_path
    assert Path(access.certificate_path).read_bytes() == b"CERT"
    assert Path(access.private_key_path).read_bytes() == b"KEY"
    assert stat.S_IMODE(Path(access.private_key_path).stat().st_mode) == 0o600
    assert access.token is None and not access.insecure


def test_several_files_merge_first_wins_and_a_context_can_be_chosen(tmp_path: Path) -> None:
    first = _write(
        tmp_path,
        "a",
        {
            "current-context": "one",
            "clusters": [{"name": "c", "cluster": {"server": "https://first"}}],
            "users": [{"name": "u", "user": {"token": "t1"}}],
            "contexts": [{"name": "one", "context": {"cluster": "c", "user": "u"}}],
        },
    )
    second = _write(
        tmp_path,
        "b",
        {
            "current-context": "two",
            "clusters": [
                {"name": "c", "cluster": {"server": "https://second"}},
                {"name": "d", "cluster": {"server": "https://d", "insecure-skip-tls-verify": True}},
            ],
            "users": [{"name": "v", "user": {"token": "t2"}}],
            "contexts": [{"name": "two", "context": {"cluster": "d", "user": "v"}}],
        },
    )
    import os

    joined = os.pathsep.join([str(first), str(second)])
    one = ClusterAccess.load(joined)
    assert (one.server, one.token) == ("https://first", "t1")
    two = ClusterAccess.load(joined, "two")
    assert (two.server, two.token, two.insecure) == ("https://d", "t2", True)


def test_an_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    from gemini_webhooks.kube_access import KubeConfigError

    path = _kubeconfig(tmp_path, {"token": "x"})
    with pytest.raises(KubeConfigError, match="no context 'elsewhere'"):
        ClusterAccess.load(str(path), "elsewhere")


def test_in_cluster_credentials_come_from_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("pod-token\n")
    (tmp_path / "ca.crt").write_text("CA")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    access = ClusterAccess._in_cluster(str(tmp_path))
    assert access == ClusterAccess(
        server="https://10.0.0.1:6443",
        ca_path=str(tmp_path / "ca.crt"),
        token_file=str(tmp_path / "token"),
    )
    assert access.bearer_token() == "pod-token"
    assert "pod-token" not in repr(access)


def test_an_exec_plugin_is_run_by_the_kubernetes_client(tmp_path: Path) -> None:
    """A credential plugin (EKS', GKE's) is the official client's job: it runs the command."""
    import sys

    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': {'token': 'exec-token'}}))\n"
    )
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    access = ClusterAccess.load(str(_kubeconfig(tmp_path, exec_user)))
    assert (access.server, access.token) == ("https://127.0.0.1:6443", "exec-token")


def test_the_operator_process_does_not_load_the_kubernetes_client() -> None:
    """kopf would import it (22 MiB resident) only to recognise its model objects."""
    import subprocess
    import sys

    probe = (
        "import sys, gemini_webhook_operator.cli, gemini_webhook_operator.runtime;"
        "print('kubernetes' in sys.modules, 'kubernetes.client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


_TLS_BUFFER_PROBE = r"""
import asyncio, sys, tracemalloc
from pathlib import Path
from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import TestServer
import ssl
from gemini_webhooks.controlplane.pki import CertificateAuthority
from gemini_webhooks.kube_access import ClusterAccess, bound_tls_read_buffer

BODY = bytes(range(256)) * (3 * 4096)  # 3 MiB, larger than any read buffer

async def main() -> None:
    if sys.argv[2] == "bounded":
        bound_tls_read_buffer()
    ca = CertificateAuthority(Path(sys.argv[1]))
    pair = ca.issue("serving", common_name="127.0.0.1", server=True)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(pair.cert, pair.key)

    async def body(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/", body)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=serving)
    access = ClusterAccess(server=f"https://127.0.0.1:{server.port}", ca_path=str(ca.cert_path))
    connector = TCPConnector(ssl=access.ssl_context(), limit=20)
    async with ClientSession(connector=connector) as session:
        tracemalloc.start()

        async def fetch() -> bytes:
            async with session.get(access.server + "/") as response:
                return await response.read()

        bodies = await asyncio.gather(*(fetch() for _ in range(20)))
        snapshot = tracemalloc.take_snapshot()
        assert all(b == BODY for b in bodies), "a response arrived damaged"
        buffers = snapshot.filter_traces([tracemalloc.Filter(True, "*asyncio/sslproto.py")])
        print(sum(stat.size for stat in buffers.statistics("filename")))
    await server.close()

asyncio.run(main())
"""


def test_the_operator_bounds_each_tls_connections_read_buffer(tmp_path: Path) -> None:
    """asyncio keeps a 256 KiB read buffer per TLS connection, resident from the connect;
    the operator holds ~60 to kube-apiserver (bench/operator --kube real: 15 MiB of its
    peak RSS). Bounded to 64 KiB, 20 connections cost a quarter as much, and 3 MiB
    responses still arrive whole. Each case runs in its own process: the bound is
    process-wide, so both ends of the 20 connections (40 TLS protocols: the test server
    runs in the same process) take it."""
    import subprocess
    import sys

    from gemini_webhooks.kube_access import TLS_READ_BUFFER

    def sslproto_bytes(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _TLS_BUFFER_PROBE, str(tmp_path / mode), mode],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    unbounded = sslproto_bytes("unbounded")
    bounded = sslproto_bytes("bounded")
    assert unbounded >= 40 * 256 * 1024
    assert 40 * TLS_READ_BUFFER <= bounded < 40 * (TLS_READ_BUFFER + 16 * 1024)


def test_the_operator_command_bounds_tls_buffers_and_freezes_its_imports(tmp_path: Path) -> None:
    """`gemini-webhooks operator` itself bounds the TLS read buffers and freezes the
    imported objects out of the garbage collector's sight, before it loads credentials."""
    import subprocess
    import sys

    probe = (
        "import sys, asyncio.sslproto as p\n"
        "from gemini_webhooks.cli import main\n"
        "try:\n"
        f"    main(['operator', '--kubeconfig', {str(tmp_path / 'missing')!r}])\n"
        "except SystemExit as stop:\n"
        "    print(stop.code)\n"
        "print(p.SSLProtocol.max_size)\n"
        "import gc\n"
        "print(gc.get_freeze_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    from gemini_webhooks.kube_access import TLS_READ_BUFFER

    lines = out.stdout.splitlines()
    assert "cannot load the cluster's credentials" in lines[0]
    assert lines[-2] == str(TLS_READ_BUFFER)
    assert int(lines[-1]) > 100_000  # the imported modules' objects, frozen (gc.freeze)
