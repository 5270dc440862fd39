"""Building the control plane: the wrapper modules, the staging replaces, the cache, and
what the built binaries say of themselves."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from gemini_webhooks.controlplane import build

pytestmark = [pytest.mark.real_component, pytest.mark.late_build]


def test_binary_names_skip_a_major_version_suffix() -> None:
    assert build._default_binary_name("go.etcd.io/etcd/server/v3") == "server"
    assert build._default_binary_name("k8s.io/kubernetes/cmd/kube-apiserver") == "kube-apiserver"


def test_staging_replaces_pin_each_staging_module_to_its_tag() -> None:
    go_mod = (
        "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/b => ./staging/src/k8s.io/b\n)\n"
    )
    assert build.staging_replaces(go_mod, "v1.37.2") == [
        "k8s.io/api => k8s.io/api v0.37.2",
        "k8s.io/b => k8s.io/b v0.37.2",
    ]


@pytest.mark.parametrize("component", [build.KUBERNETES, build.KUBERNETES_NODE], ids=str)
def test_committed_replaces_are_generated_from_the_kubernetes_go_mod(
    component: build.Component,
) -> None:
    """Each Kubernetes wrapper's replace lines are exactly one per staging module that
    k8s.io/kubernetes@v1.37.2's own go.mod replaces (the set changes between releases)."""
    found = subprocess.run(
        [
            build.go_binary(),
            "mod",
            "download",
            "-json",
            f"k8s.io/kubernetes@{build.KUBERNETES_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=build.go_env(),
        cwd=component.module_dir,
    )
    upstream = Path(json.loads(found.stdout)["GoMod"]).read_text()
    committed = (component.module_dir / "go.mod").read_text()
    wanted = build.staging_replaces(upstream, build.KUBERNETES_VERSION)
    assert len(wanted) > 20
    assert build.replaces_in(committed) == sorted(wanted)


def test_a_second_build_rebuilds_nothing() -> None:
    lines: list[str] = []
    binaries = build.build_all(lines.append)
    assert all("cached in" in line for line in lines), lines
    assert set(binaries) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "helm",
        "kubelet",
        "kube-proxy",
        "containerd",
        "ctr",
        "containerd-shim-runc-v2",
        "runc",
        "crictl",
        "bridge",
        "loopback",
        "host-local",
        "portmap",
        "coredns",
        "kube-router",
        "pause.oci.tar",
    }


def test_adding_build_options_kept_the_control_planes_cache_keys() -> None:
    """Components without tags or cgo hash as before the node's were added: upgrading the
    project does not rebuild a cached control plane."""
    assert build.KUBERNETES._options() == []
    assert build.RUNC._options() == [("seccomp", "urfave_cli_no_docs"), True]


def test_the_binaries_report_the_pinned_versions() -> None:
    binaries = build.binaries_if_built()
    assert binaries is not None

    def version(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout

    assert version(str(binaries["kube-apiserver"]), "--version").strip() == "Kubernetes v1.37.2"
    assert "etcd Version: 3.7.0" in version(str(binaries["etcd"]), "--version")
    assert 'Version:"v4.3.2"' in version(str(binaries["helm"]), "version")
    assert version(str(binaries["kubelet"]), "--version").strip() == "Kubernetes v1.37.2"
    assert version(str(binaries["kube-proxy"]), "--version").strip() == "Kubernetes v1.37.2"
    assert "containerd github.com/containerd/containerd/v2 v2.4.2" in version(
        str(binaries["containerd"]), "--version"
    )
    runc = version(str(binaries["runc"]), "--version")
    assert "runc version 1.5.3" in runc
    assert "seccomp" in runc  # built with libseccomp, as the kubelet's RuntimeDefault needs
    assert "v1.37.0" in version(str(binaries["crictl"]), "--version")
    assert "CoreDNS-1.15.0" in version(str(binaries["coredns"]), "-version")
    kube_router = subprocess.run(  # it prints its version on stderr
        [str(binaries["kube-router"]), "--version"], capture_output=True, text=True, timeout=30
    )
    assert "version v2.1.0, built on 2024-03-03" in kube_router.stderr
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        about = subprocess.run([str(binaries[plugin])], capture_output=True, text=True, timeout=30)
        assert "v1.10.0" in about.stderr


def test_runc_and_the_pause_container_are_static() -> None:
    """They run inside containers' namespaces, where no host library is present."""
    binaries = build.binaries_if_built()
    assert binaries is not None
    for name in ("runc", "coredns", "containerd-shim-runc-v2"):
        described = subprocess.run(
            ["file", "-L", str(binaries[name])], capture_output=True, text=True, check=True
        ).stdout
        assert "statically linked" in described or "static-pie" in described, described


def test_the_cache_key_follows_the_module_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "etcd"
    module.mkdir()
    for name in ("go.mod", "go.sum"):
        (module / name).write_text((build.ETCD.module_dir / name).read_text())
    monkeypatch.setattr(build, "MODULES", tmp_path)
    before = build.ETCD.key("go1.26.8")
    assert build.ETCD.key("go1.26.8") == before
    assert build.ETCD.key("go1.27.3") != before
    (module / "go.sum").write_text((module / "go.sum").read_text() + "\n")
    assert build.ETCD.key("go1.26.8") != before


def test_a_second_build_of_a_component_waits_for_the_first(tmp_path: Path) -> None:
    lock = tmp_path / "etcd.lock"
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with build.exclusive(lock, lambda: order.append("first waited")):
            order.append("first builds")
            holding.set()
            release.wait(5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    assert holding.wait(5)
    threading.Timer(0.2, release.set).start()
    with build.exclusive(lock, lambda: order.append("second waits")):
        order.append("second builds")
    thread.join(5)
    assert order == ["first builds", "second waits", "first done", "second builds"]


def test_two_makers_of_a_node_image_make_it_once_and_the_second_finds_it(
    tmp_path: Path,
) -> None:
    # scripts/test's background build and a test's `scripts/control-plane build` once made
    # the pause image at once, each emptying the other's staging directory.
    from gemini_webhooks.controlplane import node_images

    directory = tmp_path / "pause-1-abc"
    made: list[str] = []
    lines: list[str] = []
    started, release = threading.Event(), threading.Event()

    def make(staging: Path) -> None:
        made.append(staging.name)
        started.set()
        release.wait(5)
        (staging / "pause.oci.tar").write_bytes(b"archive")

    first = threading.Thread(target=node_images._cached, args=(directory, make, lines.append))
    first.start()
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    second = node_images._cached(directory, make, lines.append)
    first.join(5)
    assert made == ["pause-1-abc.partial"]
    assert second == directory
    assert (directory / "pause.oci.tar").read_bytes() == b"archive"
    assert lines == [
        "pause-1-abc: waiting for another build",
        f"pause-1-abc: built -> {directory}",
        f"pause-1-abc: cached in {directory}",
    ]
