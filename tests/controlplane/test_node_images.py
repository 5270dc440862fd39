"""The node's own image (pause, from Kubernetes' C source), written as an OCI image archive
without a registry: umoci (Debian's, as scripts/image uses) reads and unpacks it, checking
every digest; the same files give the same bytes. And the CoreDNS build's plugins."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from gemini_webhooks.controlplane import build, node_images

pytestmark = [pytest.mark.real_component, pytest.mark.late_build]


def _unpack(archive: Path, work: Path) -> tuple[Path, dict[str, object]]:
    layout = work / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    bundle = work / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return bundle, json.loads((bundle / "config.json").read_text())


def test_a_scratch_image_unpacks_with_its_files_user_and_entrypoint(tmp_path: Path) -> None:
    program = tmp_path / "hello"
    program.write_bytes(b"#!/bin/true\n")
    archive = node_images.scratch_image(
        tmp_path / "hello.oci.tar",
        "localhost/test/hello:v1",
        {"bin/hello": node_images.ImageFile(program)},
        ["/bin/hello", "--flag"],
    )
    bundle, runtime = _unpack(archive, tmp_path)
    assert (bundle / "rootfs" / "bin" / "hello").read_bytes() == b"#!/bin/true\n"
    assert (bundle / "rootfs" / "bin" / "hello").stat().st_mode & 0o777 == 0o755
    process = runtime["process"]
    assert isinstance(process, dict)
    assert process["args"] == ["/bin/hello", "--flag"]
    assert process["user"]["uid"] == 65532 and process["user"]["gid"] == 65532
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "localhost/test/hello:v1"


def test_the_same_files_give_the_same_archive(tmp_path: Path) -> None:
    program = tmp_path / "p"
    program.write_bytes(b"x" * 1000)
    files = {"p": node_images.ImageFile(program)}
    first = node_images.scratch_image(tmp_path / "a.tar", "localhost/t:1", files, ["/p"])
    second = node_images.scratch_image(tmp_path / "b.tar", "localhost/t:1", files, ["/p"])
    assert first.read_bytes() == second.read_bytes()


def test_the_pause_image_is_built_from_kubernetes_source(tmp_path: Path) -> None:
    binaries = build.binaries_if_built()
    assert binaries is not None, "run `scripts/control-plane build` first"
    bundle, runtime = _unpack(binaries["pause.oci.tar"], tmp_path)
    pause = bundle / "rootfs" / "pause"
    described = subprocess.run(
        ["file", str(pause)], capture_output=True, text=True, check=True
    ).stdout
    assert "statically linked" in described, described
    # pause.c prints its version with -v and exits 0
    version = subprocess.run([str(pause), "-v"], capture_output=True, text=True, timeout=10)
    assert version.returncode == 0
    assert f"v{node_images.PAUSE_VERSION}" in version.stdout + version.stderr
    assert runtime["process"]["args"] == ["/pause"]  # type: ignore[index]


def test_coredns_has_only_the_cluster_dns_plugins() -> None:
    binaries = build.binaries_if_built()
    assert binaries is not None, "run `scripts/control-plane build` first"
    plugins = subprocess.run(
        [str(binaries["coredns"]), "-plugins"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert "kubernetes" in plugins and "ready" in plugins
    assert "forward" not in plugins  # only what main.go imports, not core/plugin's hundred
