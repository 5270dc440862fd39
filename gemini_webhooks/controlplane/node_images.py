"""The node's own image, made here without a registry or a container engine: **pause**, the
sandbox container of every Pod, compiled from Kubernetes' own `build/pause/linux/pause.c`
(in the `k8s.io/kubernetes` module the control plane is built from) with `gcc -static`, as
Kubernetes builds it, and packed `FROM scratch`. (CoreDNS runs as a process in the node's
namespace, so it needs no image.)

`scratch_image` writes an OCI image archive (the image layout of the OCI image spec, as a
tar: what `ctr images import` and `buildah`/`skopeo` read) holding one layer of files. It is
deterministic: the same files give the same digests, so a re-import is a no-op.

Our own images (product and tools) are `scripts/image`'s: `our_images` finds them,
`our_images_built` builds them first when these sources have none yet.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gemini_webhooks.controlplane import build, nodeconfig
from gemini_webhooks.sandbox.supervisor import ChildFailedError

IMAGE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "image"  # our images' builder
# The pause version Kubernetes 1.37.2 ships (build/pause/Makefile's TAG; kubeadm's
# PauseVersion; containerd 2.4's default sandbox image).
PAUSE_VERSION = "3.10.2"
# A local name, so that nobody mistakes it for the registry's image.
PAUSE_IMAGE = f"localhost/gemini-webhook-operator/pause:{PAUSE_VERSION}"
NONROOT = "65532:65532"
PAUSE_SOURCE = Path("build/pause/linux/pause.c")  # in the k8s.io/kubernetes module


@dataclass(frozen=True)
class ImageFile:
    source: Path
    mode: int = 0o755


def _layer(files: Mapping[str, ImageFile]) -> bytes:
    """An uncompressed tar layer of `files` (path in the image -> file), owned by root,
    every timestamp 0, parent directories included, in a fixed order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for target in sorted(files):
            parts = target.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            data = files[target].source.read_bytes()
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(data)
            info.mode = files[target].mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def scratch_image(
    archive: Path,
    name: str,
    files: Mapping[str, ImageFile],
    entrypoint: list[str],
    *,
    user: str = NONROOT,
    exposed_ports: tuple[str, ...] = (),
) -> Path:
    """Writes an OCI image archive `FROM scratch` holding `files`; returns `archive`."""
    layer = _layer(files)
    compressed = gzip.compress(layer, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "User": user,
            **({"ExposedPorts": {port: {} for port in exposed_ports}} if exposed_ports else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
        "history": [{"created_by": f"gemini_webhooks.controlplane.node_images: {name}"}],
    }
    partial = archive.with_name(archive.name + ".partial")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        config_digest, config_size = _blob(tar, _canonical(config))
        layer_digest, layer_size = _blob(tar, compressed)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
        manifest_digest, manifest_size = _blob(tar, _canonical(manifest))
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        # containerd names an imported image by this one…
                        "io.containerd.image.name": name,
                        # …and the OCI spec's tools by this one.
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        for member, data in (
            ("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _canonical(index)),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    partial.rename(archive)
    return archive


def kubernetes_source() -> Path:
    """The `k8s.io/kubernetes` module's source in the Go module cache (downloaded through
    the module proxy if it is not there yet)."""
    result = subprocess.run(  # noqa: S603 - our own argv
        [
            build.go_binary(),
            "mod",
            "download",
            "-json",
            f"k8s.io/kubernetes@{build.KUBERNETES_VERSION}",
        ],
        cwd=build.KUBERNETES_NODE.module_dir,
        capture_output=True,
        text=True,
        env=build.go_env(),
        check=False,
    )
    if result.returncode != 0:
        raise build.BuildError(
            f"cannot download k8s.io/kubernetes: {result.stderr or result.stdout}"
        )
    return Path(json.loads(result.stdout)["Dir"])


def _compiler() -> str:
    found = shutil.which("gcc")
    if found is None:
        raise build.BuildError("gcc is not installed: it compiles the pause container")
    return found


def _directory(name: str, key_parts: list[bytes]) -> Path:
    """Where an image's archive is cached: the key covers this module's own source too, so a
    change to the image writer rebuilds."""
    digest = hashlib.sha256()
    for part in [Path(__file__).read_bytes(), *key_parts]:
        digest.update(hashlib.sha256(part).digest())
    return build.cache_root() / f"{name}-{digest.hexdigest()[:12]}"


def _cached(directory: Path, make: Callable[[Path], None], progress: build.Progress) -> Path:
    """`make(directory)` unless done; a directory counts only with its `.complete` stamp.
    One maker at a time across processes (`scripts/test`'s background build and a test's
    `scripts/control-plane build`, say): a second waits, then finds the first's result."""
    if (directory / ".complete").exists():
        progress(f"{directory.name}: cached in {directory}")
        return directory
    lock = directory.with_name(directory.name + ".lock")
    with build.exclusive(lock, lambda: progress(f"{directory.name}: waiting for another build")):
        if (directory / ".complete").exists():  # made by the maker we waited for
            progress(f"{directory.name}: cached in {directory}")
            return directory
        return _make(directory, make, progress)


def _make(directory: Path, make: Callable[[Path], None], progress: build.Progress) -> Path:
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    make(staging)
    (staging / ".complete").write_text("\n")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    progress(f"{directory.name}: built -> {directory}")
    return directory


def _gcc() -> tuple[str, bytes]:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise build.BuildError("gcc is not installed: it compiles the pause container")
    version = subprocess.run(  # noqa: S603 - our own argv
        [gcc, "--version"], capture_output=True, check=True
    ).stdout
    return gcc, version


def _pause_directory(source: Path, gcc_version: bytes) -> Path:
    key = [source.read_bytes(), gcc_version, PAUSE_IMAGE.encode()]
    return _directory(f"pause-{PAUSE_VERSION}", key)


def pause_image(progress: build.Progress) -> Path:
    """The pause image's OCI archive, compiled from Kubernetes' C source (cached)."""
    source = kubernetes_source() / PAUSE_SOURCE
    gcc, gcc_version = _gcc()

    def make(directory: Path) -> None:
        binary = directory / "pause"
        # build/pause/Makefile's CFLAGS
        argv = [gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}"]
        result = subprocess.run(  # noqa: S603 - our own argv
            [*argv, "-s", "-o", str(binary), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise build.BuildError(f"gcc could not build the pause container:\n{result.stderr}")
        scratch_image(
            directory / "pause.oci.tar", PAUSE_IMAGE, {"pause": ImageFile(binary)}, ["/pause"]
        )

    return _cached(_pause_directory(source, gcc_version), make, progress) / "pause.oci.tar"


def build_images(progress: build.Progress) -> dict[str, Path]:
    """The node's images' OCI archives, by file name (`pause.oci.tar`)."""
    pause = pause_image(progress)
    return {pause.name: pause}


def images_if_built() -> dict[str, Path] | None:
    pause = _pause_directory(kubernetes_source() / PAUSE_SOURCE, _gcc()[1]) / "pause.oci.tar"
    return {pause.name: pause} if (pause.parent / ".complete").exists() else None


def our_images(directory: Path | None = None) -> dict[str, Path]:
    """The product and tools images, by name: those `scripts/image build --output DIR` put
    in `directory`, else those of these sources in `scripts/image`'s cache."""
    if directory is not None:
        images = {name: directory / f"{name}.oci.tar" for name in nodeconfig.IMAGE_REPOSITORIES}
        missing = [str(path) for path in images.values() if not path.is_file()]
        if missing:
            raise ChildFailedError(f"no image archive {', '.join(missing)}")
        return images
    result = subprocess.run(  # noqa: S603 - our own script
        [str(IMAGE_SCRIPT), "paths"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ChildFailedError(
            f"the real node runs our images, which are not built: {result.stderr.strip()} "
            "(run `scripts/image build`)"
        )
    pairs = (line.partition("=") for line in result.stdout.splitlines() if "=" in line)
    return {name: Path(path) for name, _, path in pairs if name in nodeconfig.IMAGE_REPOSITORIES}


def our_images_built(say: Callable[[str], None]) -> dict[str, Path]:
    """Our images' OCI archives for these sources, built by `scripts/image build` first
    when there are none."""
    try:
        return our_images()
    except ChildFailedError:
        pass
    say(
        "our images (product, tools) are not built for these sources: running "
        "`scripts/image build` (its progress below; several minutes the first time)"
    )
    result = subprocess.run(  # noqa: S603 - our own script
        [str(IMAGE_SCRIPT), "build"], stdout=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise ChildFailedError(
            f"`scripts/image build` failed (exit {result.returncode}; its messages above); "
            "the real node runs our images. Behind a TLS-inspecting proxy, name the CA "
            "bundle apt and pip must trust: GWO_IMAGE_CA_BUNDLE=/etc/ssl/certs/"
            "ca-certificates.crt (see scripts/image); then try again"
        )
    return our_images()
