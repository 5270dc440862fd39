"""Building the control plane's binaries from the official Go modules, cached by version.

Each component is a small wrapper module committed under `modules/<name>/` (`go.mod` and
`go.sum`, nothing else): it requires the official module at a pinned version and names the
commands as `tool` directives, so `go build` fetches exactly those versions through the
Go module proxy. `k8s.io/kubernetes` cannot be required as it is — its `go.mod` replaces
its staging modules with `./staging/...` directories — so the wrapper's `replace` lines
are generated from that `go.mod` (`kubernetes_go_mod`), one per staging module.

Binaries land in `<cache>/<component>-<version>-<key>/`, `key` hashing everything the
build depends on (go.mod, go.sum, flags, the Go toolchain); a directory is used only when
its `.complete` stamp exists, so an interrupted build is rebuilt, and a second run
rebuilds nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MODULES = Path(__file__).parent / "modules"
CACHE_ENV = "GWO_CONTROL_PLANE_CACHE"

KUBERNETES_VERSION = "v1.37.2"
# The etcd Kubernetes 1.37.2 is built and tested with (its build/dependencies.yaml, and
# the etcd client modules its go.mod requires).
ETCD_VERSION = "v3.7.0"
HELM_VERSION = "v4.3.2"
# The node: Kubernetes 1.37 needs containerd 2.3+ (containerd's RELEASES.md support table).
CONTAINERD_VERSION = "v2.4.2"
RUNC_VERSION = "v1.5.3"
CRI_TOOLS_VERSION = "v1.37.0"  # crictl, released with Kubernetes 1.37
CNI_PLUGINS_VERSION = "v1.10.0"
COREDNS_VERSION = "v1.15.0"
# NetworkPolicy: kube-router's firewall (iptables and ipset). Its v2.1.0 is the only
# release of the v2 module on the Go module proxy.
KUBE_ROUTER_VERSION = "v2.1.0"
# Kubernetes' own release date of v1.37.2 (the module's commit time): builds are
# reproducible, and `/version` says when the release was made, not when we compiled it.
KUBERNETES_BUILD_DATE = "2026-10-27T12:01:04Z"

Progress = Callable[[str], None]


def _kubernetes_ldflags() -> list[str]:
    major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate={KUBERNETES_BUILD_DATE}",
        ]
    return flags


@dataclass(frozen=True)
class Component:
    name: str  # the wrapper module's folder under modules/
    version: str
    commands: dict[str, str]  # binary name -> Go package
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # Go build tags
    # cgo and a fully static link (runc needs libseccomp through cgo); every other
    # component is pure Go, built with CGO_ENABLED=0 as Kubernetes builds its servers.
    cgo_static: bool = False

    @property
    def module_dir(self) -> Path:
        return MODULES / self.name

    def key(self, go_version: str) -> str:
        digest = hashlib.sha256()
        for part in (
            (self.module_dir / "go.mod").read_bytes(),
            (self.module_dir / "go.sum").read_bytes(),
            json.dumps([self.commands, self.ldflags, go_version, *self._options()]).encode(),
            # our own Go sources, where a wrapper has any (CoreDNS's main.go)
            *(path.read_bytes() for path in sorted(self.module_dir.glob("*.go"))),
        ):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()[:12]

    def _options(self) -> list[object]:
        # Only when set, so that adding them kept the keys (and caches) of the others.
        return [self.tags, self.cgo_static] if self.tags or self.cgo_static else []

    def env(self) -> dict[str, str]:
        env = go_env()
        if self.cgo_static:
            env["CGO_ENABLED"] = "1"
        return env

    def build_flags(self) -> list[str]:
        ldflags = ["-s", "-w", *self.ldflags]
        if self.cgo_static:
            ldflags.append("-extldflags=-static")
        flags = ["-trimpath", "-ldflags", " ".join(ldflags)]
        if self.tags:
            flags += ["-tags", ",".join(self.tags)]
        return flags


KUBERNETES = Component(
    "kubernetes",
    KUBERNETES_VERSION,
    {
        name: f"k8s.io/kubernetes/cmd/{name}"
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    },
    tuple(_kubernetes_ldflags()),
)
ETCD = Component("etcd", ETCD_VERSION, {"etcd": "go.etcd.io/etcd/server/v3"})
HELM = Component(
    "helm",
    HELM_VERSION,
    {"helm": "helm.sh/helm/v4/cmd/helm"},
    (
        f"-X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v4/internal/version.metadata=",
        "-X helm.sh/helm/v4/internal/version.gitTreeState=clean",
    ),
)
# kubelet and kube-proxy from the same Kubernetes release, in a wrapper of their own so
# that the control plane's binaries (and their cache) do not depend on the node's.
KUBERNETES_NODE = Component(
    "kubernetes-node",
    KUBERNETES_VERSION,
    {name: f"k8s.io/kubernetes/cmd/{name}" for name in ("kubelet", "kube-proxy")},
    tuple(_kubernetes_ldflags()),
)
CONTAINERD = Component(
    "containerd",
    CONTAINERD_VERSION,
    {
        name: f"github.com/containerd/containerd/v2/cmd/{name}"
        for name in ("containerd", "ctr", "containerd-shim-runc-v2")
    },
    (f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",),
    tags=("no_btrfs",),  # the btrfs snapshotter needs cgo and btrfs headers; overlayfs is used
)
RUNC = Component(
    "runc",
    RUNC_VERSION,
    {"runc": "github.com/opencontainers/runc"},  # its version is embedded from its VERSION
    # runc's own default tags but `libpathrs` (a Rust library, optional: runc falls back to
    # Go's path resolution without it).
    tags=("seccomp", "urfave_cli_no_docs"),
    cgo_static=True,  # libseccomp (Debian's libseccomp-dev), linked statically as runc ships
)
CRI_TOOLS = Component(
    "cri-tools",
    CRI_TOOLS_VERSION,
    {"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
    (f"-X sigs.k8s.io/cri-tools/pkg/version.Version={CRI_TOOLS_VERSION}",),
)
CNI_PLUGINS = Component(
    "cni-plugins",
    CNI_PLUGINS_VERSION,
    {
        name: f"github.com/containernetworking/plugins/plugins/{kind}/{name}"
        for kind, name in (
            ("main", "bridge"),
            ("main", "loopback"),
            ("ipam", "host-local"),
            ("meta", "portmap"),
        )
    },
    (
        "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion="
        + CNI_PLUGINS_VERSION,
    ),
)
# Our own main package (modules/coredns/main.go) with only the plugins the cluster's DNS uses.
COREDNS = Component(
    "coredns",
    COREDNS_VERSION,
    {"coredns": "gemini-webhook-operator/controlplane/coredns"},
)
# Only its network policy controller runs (`nodeconfig.kube_router_argv`). SIG Network's
# kube-network-policies would need nftables' `queue` (CONFIG_NFT_QUEUE), which our
# kernels lack; kube-router needs only the iptables and ipset modules.
KUBE_ROUTER = Component(
    "kube-router",
    KUBE_ROUTER_VERSION,
    {"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
    (
        f"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={KUBE_ROUTER_VERSION}",
        "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate=2024-03-03T05:25:26Z",
    ),
)
CONTROL_PLANE_COMPONENTS = (ETCD, KUBERNETES, HELM)
NODE_COMPONENTS = (
    KUBERNETES_NODE,
    CONTAINERD,
    RUNC,
    CRI_TOOLS,
    CNI_PLUGINS,
    COREDNS,
    KUBE_ROUTER,
)
COMPONENTS = CONTROL_PLANE_COMPONENTS + NODE_COMPONENTS

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", re.MULTILINE)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The staging modules that `k8s.io/kubernetes`'s go.mod replaces with local folders."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def staging_replaces(kubernetes_go_mod: str, kubernetes_version: str) -> list[str]:
    """`replace` lines pinning each staging module to its tag (`v0.<minor>.<patch>`)."""
    staging_version = "v0." + kubernetes_version.lstrip("v").split(".", 1)[1]
    return [f"{m} => {m} {staging_version}" for m in staging_modules(kubernetes_go_mod)]


def replaces_in(go_mod: str) -> list[str]:
    """The `replace` lines of a go.mod, normalised to `a => b v`."""
    lines: list[str] = []
    block = False
    for raw in go_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if line == "replace (":
            block = True
        elif block and line == ")":
            block = False
        elif block and "=>" in line:
            lines.append(" ".join(line.split()))
        elif line.startswith("replace ") and "=>" in line:
            lines.append(" ".join(line.removeprefix("replace ").split()))
    return sorted(lines)


class BuildError(RuntimeError):
    pass


def go_binary() -> str:
    found = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if found is None:
        raise BuildError("the Go toolchain is not installed (`go` is not on PATH)")
    return found


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"  # static, as Kubernetes builds its server binaries
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["GOWORK"] = "off"
    return env


def go_version() -> str:
    result = subprocess.run(  # noqa: S603 - our own argv
        [go_binary(), "env", "GOVERSION"], capture_output=True, text=True, check=True, env=go_env()
    )
    return result.stdout.strip()


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gemini-webhook-operator" / "control-plane"


def output_dir(component: Component, go: str | None = None) -> Path:
    return (
        cache_root() / f"{component.name}-{component.version}-{component.key(go or go_version())}"
    )


def built(component: Component, go: str | None = None) -> Path | None:
    directory = output_dir(component, go)
    return directory if (directory / ".complete").exists() else None


def _package_count(component: Component) -> int:
    tags = ["-tags", ",".join(component.tags)] if component.tags else []
    result = subprocess.run(  # noqa: S603 - our own argv
        [go_binary(), "list", "-deps", *tags, *component.commands.values()],
        cwd=component.module_dir,
        capture_output=True,
        text=True,
        env=component.env(),
        check=False,
    )
    return len(result.stdout.split()) if result.returncode == 0 else 0


def _default_binary_name(package: str) -> str:
    """What `go build -o dir/` names a command: its last path element, skipping a major
    version suffix (`go.etcd.io/etcd/server/v3` -> `server`)."""
    parts = package.split("/")
    if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]):
        return parts[-2]
    return parts[-1]


@contextlib.contextmanager
def exclusive(lock_path: Path, waiting: Callable[[], None]) -> Iterator[None]:
    """One build of a component at a time across processes (two `scripts/test` runs, say):
    a second waits for the first, then finds its result in the cache."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(component: Component, progress: Progress, *, every: float = 10.0) -> Path:
    """The component's binaries, built unless the cache has them; shows progress."""
    go = go_version()
    directory = output_dir(component, go)
    if (directory / ".complete").exists():
        progress(f"{component.name} {component.version}: cached in {directory}")
        return directory
    lock = directory.with_name(directory.name + ".lock")
    with exclusive(
        lock, lambda: progress(f"{component.name} {component.version}: waiting for another build")
    ):
        return _build_locked(component, progress, every, go, directory)


def _build_locked(
    component: Component, progress: Progress, every: float, go: str, directory: Path
) -> Path:
    if (directory / ".complete").exists():  # built by the build we waited for
        progress(f"{component.name} {component.version}: cached in {directory}")
        return directory
    if directory.exists():
        shutil.rmtree(directory)  # an interrupted build
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    progress(f"{component.name} {component.version}: resolving modules ({go})")
    total = _package_count(component)
    argv = [
        go_binary(),
        "build",
        "-v",
        *component.build_flags(),
        "-o",
        str(staging) + "/",
        *component.commands.values(),
    ]
    started = time.monotonic()
    compiled = 0
    tail: list[str] = []
    process = subprocess.Popen(  # noqa: S603 - our own argv
        argv,
        cwd=component.module_dir,
        env=component.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    done = threading.Event()

    def report() -> None:
        while not done.wait(every):
            of = f" of {total}" if total else ""
            progress(
                f"{component.name} {component.version}: {compiled} packages compiled{of}, "
                f"{time.monotonic() - started:.0f}s"
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        for line in process.stdout:
            compiled += 1
            tail = [*tail[-40:], line.rstrip()]
        code = process.wait()
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"go build of {component.name} failed:\n" + "\n".join(tail))
    for name, package in component.commands.items():
        produced = staging / _default_binary_name(package)
        if produced.name != name:
            produced.rename(staging / name)
    (staging / ".complete").write_text(
        json.dumps(
            {"version": component.version, "go": go, "seconds": round(time.monotonic() - started)}
        )
        + "\n"
    )
    staging.rename(directory)
    progress(
        f"{component.name} {component.version}: built in {time.monotonic() - started:.0f}s "
        f"-> {directory}"
    )
    return directory


def build_control_plane(progress: Progress) -> dict[str, Path]:
    """The control plane's binaries and helm, by name."""
    binaries: dict[str, Path] = {}
    for component in CONTROL_PLANE_COMPONENTS:
        directory = build(component, progress)
        binaries.update({name: directory / name for name in component.commands})
    return binaries


def build_all(progress: Progress) -> dict[str, Path]:
    """Every binary the control plane, the node and the chart tests run, by name, and the
    node's pause image (`pause.oci.tar`)."""
    from gemini_webhooks.controlplane import node_images  # it builds on this module

    binaries = build_control_plane(progress)
    for component in NODE_COMPONENTS:
        directory = build(component, progress)
        binaries.update({name: directory / name for name in component.commands})
    return binaries | node_images.build_images(progress)


def binaries_if_built() -> dict[str, Path] | None:
    go = go_version()
    binaries: dict[str, Path] = {}
    for component in COMPONENTS:
        directory = built(component, go)
        if directory is None:
            return None
        binaries.update({name: directory / name for name in component.commands})
    from gemini_webhooks.controlplane import node_images  # it builds on this module

    images = node_images.images_if_built()
    return None if images is None else binaries | images
