"""The images run: built by `scripts/image` (cached; built here if needed, never skipped),
unpacked with umoci and run with runc under the chart's security settings (the image's
UID 65532 without a passwd entry, a read-only root, no capabilities, no new privileges,
writable only through a tmpfs at /tmp), in the host's network namespace."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from gemini_webhook_operator.receiver_names import CONFIG_DIR, CONFIG_PATH
from tests.chart.container import Container, Image, build_images, readable_by_everyone, unpack
from tests.fixtures.kube import KUBECTL
from tests.operator.harness import Cluster, is_ready, operator_kubeconfig, resource
from tests.receiver.conftest import (
    RecordingTarget,
    envelope,
    new_secret,
    signed_headers,
    start_app,
    write_secrets,
)

# A cold build (a Debian base, then both images) takes about five minutes.
# Alike on any API server (the one test reconciling from the image is shown on
# kube-apiserver by the real node's install): once, in the sandbox's run.
pytestmark = [
    pytest.mark.real_component,
    pytest.mark.kube_independent,
    pytest.mark.timeout(1200),
]

UID = 65532
TOOLS_PACKAGES = ("emulator", "kubesandbox", "sandbox", "controlplane", "jobs", "kubectl")
SECRETS_DIR = "/etc/gemini-webhook-receiver-secrets"
KUBE_DIR = "/etc/gemini-webhook-operator-kube"

NewContainer = Callable[..., Container]


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return build_images()


def _unpacked(archive: Path, factory: pytest.TempPathFactory, name: str) -> Iterator[Image]:
    destination = factory.mktemp(name)
    try:
        yield unpack(archive, destination)
    finally:
        shutil.rmtree(destination, ignore_errors=True)  # hundreds of MiB


@pytest.fixture(scope="module")
def product(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    yield from _unpacked(archives["product"], tmp_path_factory, "product")


@pytest.fixture(scope="module")
def tools(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    yield from _unpacked(archives["tools"], tmp_path_factory, "tools")


@pytest.fixture
def container(tmp_path: Path) -> Iterator[NewContainer]:
    made: list[Container] = []

    def new(image: Image, **kwargs: Any) -> Container:
        made.append(Container(image, tmp_path / f"bundle-{len(made)}", **kwargs))
        return made[-1]

    yield new
    for each in made:
        each.delete()


def _site_packages(image: Image) -> Path:
    (path,) = (image.rootfs / "opt" / "venv" / "lib").glob("python3*/site-packages")
    return path


def test_operator_and_receiver_help_work(product: Image, container: NewContainer) -> None:
    for name in ("operator", "receiver"):
        result = container(product, args=[name, "--help"]).run()
        assert result.returncode == 0, result.stderr
        assert f"usage: gemini-webhooks {name}" in result.stdout


def test_the_product_cli_has_no_emulator_nor_sandboxes(
    product: Image, container: NewContainer
) -> None:
    listing = container(product, args=["--help"]).run()
    assert listing.returncode == 0, listing.stderr
    commands = re.findall(r"^    (\S+)", listing.stdout, re.MULTILINE)
    assert sorted(commands) == ["operator", "receiver"]
    emulator = container(product, args=["emulator", "--help"]).run()
    assert emulator.returncode == 2
    assert "invalid choice: 'emulator'" in emulator.stderr


def test_the_product_image_holds_none_of_the_tools_packages(product: Image) -> None:
    site = _site_packages(product)
    assert (site / "gemini_webhook_operator").is_dir()
    assert (site / "gemini_webhook_receiver").is_dir()
    for package in TOOLS_PACKAGES:
        assert not (site / "gemini_webhooks" / package).exists(), package
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert not installed & {"kmock", "pip", "setuptools"}
    # The users' kubectl plugin is a tools-image (and pip package) command only.
    assert not (product.rootfs / "opt" / "venv" / "bin" / "kubectl-gemini").exists()


def test_the_tools_image_runs_the_kubectl_plugin(tools: Image, container: NewContainer) -> None:
    result = container(tools, command=["kubectl-gemini", "--help"]).run()
    assert result.returncode == 0, result.stderr
    assert "usage: kubectl gemini" in result.stdout


def test_operator_and_receiver_import_none_of_the_tools_packages(
    product: Image, container: NewContainer
) -> None:
    # Every module of both components, imported in the image: one that needed a removed
    # package would fail here, and none may come in through another.
    code = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import gemini_webhooks.cli
        for name in ("gemini_webhook_operator", "gemini_webhook_receiver"):
            package = importlib.import_module(name)
            for module in pkgutil.walk_packages(package.__path__, name + "."):
                importlib.import_module(module.name)
        print(json.dumps(sorted(sys.modules)))
        """
    )
    result = container(product, command=["python3", "-c", code]).run()
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout)
    assert {"gemini_webhook_operator.cli", "gemini_webhook_receiver.app"} <= set(modules)
    tools = tuple(f"gemini_webhooks.{package}" for package in TOOLS_PACKAGES)
    assert [m for m in modules if m.startswith(tools) or m == "kmock"] == []
    # The lazy imports, inside functions, are not imported above: none names a tools package.
    site = _site_packages(product)
    sources: list[Path] = []
    for folder in ("gemini_webhook_operator", "gemini_webhook_receiver", "gemini_webhooks"):
        sources.extend(site.glob(f"{folder}/**/*.py"))
    for source in sources:
        text = source.read_text()
        for package in TOOLS_PACKAGES:
            assert f"gemini_webhooks.{package}" not in text.replace(
                f'"gemini_webhooks.{package}.cli"', ""
            ), f"{source.relative_to(site)} names gemini_webhooks.{package}"


def test_the_process_runs_as_65532_and_writes_only_to_its_mounts(
    product: Image, container: NewContainer
) -> None:
    code = textwrap.dedent(
        """
        import json, os
        def write(path):
            try:
                with open(path, "w") as f:
                    f.write("x")
                return "written"
            except OSError as error:
                return error.strerror
        status = dict(
            line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
        )
        print(json.dumps({
            "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
            "CapEff": status["CapEff"], "CapBnd": status["CapBnd"],
            "NoNewPrivs": status["NoNewPrivs"],
            "/": write("/probe"), "/opt/venv": write("/opt/venv/probe"),
            "/tmp": write("/tmp/probe"),
        }))
        """
    )
    result = container(product, command=["python3", "-c", code]).run()
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert (seen["uid"], seen["gid"], seen["euid"]) == (UID, UID, UID)
    assert seen["CapEff"] == seen["CapBnd"] == "0000000000000000"
    assert seen["NoNewPrivs"] == "1"
    assert seen["/"] == seen["/opt/venv"] == "Read-only file system"
    assert seen["/tmp"] == "written"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_ready(url: str, running: Container, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if running.exited():
                raise AssertionError(f"the receiver exited: {running.log()[-4000:]}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout} s")


async def test_the_receiver_verifies_a_signed_delivery_and_forwards_it_to_the_host(
    product: Image, container: NewContainer, tmp_path: Path
) -> None:
    target = RecordingTarget()
    app = web.Application()
    app.router.add_post("/{tail:.*}", target.handle)
    runner, target_port = await start_app(app)
    config_dir, secrets_dir = tmp_path / "config", tmp_path / "secrets"
    config_dir.mkdir()
    secrets_dir.mkdir()
    secret = new_secret()
    write_secrets(secrets_dir / "signing-secrets.json", secret)
    public, internal = _free_port(), _free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": public},
        "internal": {"host": "127.0.0.1", "port": internal},
        "default_route": {"targets": [{"url": f"http://127.0.0.1:{target_port}/events"}]},
        "static_webhooks": [
            {"name": "orders", "secrets": {"file": {"path": f"{SECRETS_DIR}/signing-secrets.json"}}}
        ],
    }
    (config_dir / Path(CONFIG_PATH).name).write_text(json.dumps(config))
    readable_by_everyone(config_dir, secrets_dir, *config_dir.iterdir(), *secrets_dir.iterdir())
    receiver = container(
        product,
        args=["receiver", "--config", CONFIG_PATH],
        binds={CONFIG_DIR: config_dir, SECRETS_DIR: secrets_dir},
    )
    receiver.start()
    try:
        await _wait_ready(f"http://127.0.0.1:{internal}/readyz", receiver)
        body = json.dumps(envelope()).encode()
        headers = signed_headers([secret], body)
        forged = signed_headers([new_secret()], body)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{public}/", data=body, headers=forged) as r:
                assert r.status == 401
            async with session.post(f"http://127.0.0.1:{public}/", data=body, headers=headers) as r:
                assert 200 <= r.status < 300, await r.text()
        await target.wait_for(1)
        assert target.ids() == [headers["webhook-id"]]
        assert json.loads(target.requests[0].body) == json.loads(body)
        assert receiver.stop() == 0, receiver.log()[-4000:]
    finally:
        receiver.delete()
        await runner.cleanup()


def _self_contained(kubeconfig: str) -> dict[str, Any]:
    """`--flatten` embeds certificates but not a user's `tokenFile` (the real control
    plane's ServiceAccount token): that one is read here too."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig)
    for entry in config.get("users") or []:
        user = entry.get("user") or {}
        if "tokenFile" in user:
            user["token"] = Path(user.pop("tokenFile")).read_text().strip()
    return config


async def test_the_operator_reconciles_a_resource_to_ready_from_the_image(
    product: Image,
    container: NewContainer,
    gemini: Cluster,
    emulator: Any,
    kube: Any,
    tmp_path: Path,
) -> None:
    """The operator as the chart runs it — no HOME, no passwd entry for its UID, nothing
    writable but /tmp — with a mounted kubeconfig, against this session's API server and
    the Gemini API emulator on the host."""
    kube_dir = tmp_path / "kube"
    kube_dir.mkdir()
    flattened = subprocess.run(
        [KUBECTL, "--kubeconfig", operator_kubeconfig(kube), "config", "view", "--flatten"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (kube_dir / "kubeconfig").write_text(yaml.safe_dump(_self_contained(flattened)))
    readable_by_everyone(kube_dir, kube_dir / "kubeconfig")
    operator = container(
        product,
        args=["operator", "--kubeconfig", f"{KUBE_DIR}/kubeconfig", "--metrics-port=0"],
        binds={KUBE_DIR: kube_dir},
    )
    operator.start()
    try:
        await gemini.apply(resource("from-the-image", emulator.endpoint().url, emulator.base_url))
        try:
            await gemini.wait_for(
                "from-the-image", lambda obj: operator.exited() or is_ready(obj), timeout=60
            )
            assert not operator.exited(), "the operator exited"
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{operator.log()[-4000:]}") from None
        # This operator created the remote webhook, no other.
        assert f"POST {emulator.base_url.rstrip('/')}/v1/webhooks" in operator.log()
        assert operator.stop() == 0, operator.log()[-4000:]
    finally:
        operator.delete()


def test_the_tools_image_runs_the_emulator(tools: Image, container: NewContainer) -> None:
    assert tools.labels["org.opencontainers.image.title"] == "gemini-webhook-operator-tools"
    listing = container(tools, args=["--help"]).run()
    assert listing.returncode == 0, listing.stderr
    for name in ("emulator", "kube-sandbox", "operator", "receiver", "sandbox"):
        assert name in listing.stdout
    emulator = container(tools, args=["emulator", "--help"]).run()
    assert emulator.returncode == 0, emulator.stderr
    # Its module imports kmock (the `tools` extra), which the product image does not carry.
    sandbox = container(tools, args=["kube-sandbox", "--help"]).run()
    assert sandbox.returncode == 0, sandbox.stderr
