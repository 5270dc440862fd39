"""Our images, built by `scripts/image` and run with runc as the chart runs them.

`unpack` turns an OCI archive into a root file system and the image's runtime config
(umoci); a `Container` runs one process in it with the chart's and the operator's
security settings: the image's user, a read-only root, no capabilities, no new
privileges, writable only through its mounts. The host's network namespace is kept, so
a server in the container is reachable on loopback.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def build_images(output: Path | None = None) -> dict[str, Path]:
    """`scripts/image build` (cached): the archive of each image, by name (copied to
    `output` if given, where no other build replaces them).

    The host's CA bundle (or GWO_IMAGE_CA_BUNDLE) is handed to the build, for machines
    whose outbound HTTPS passes a TLS-inspecting proxy; it does not change what is built."""
    command = [str(ROOT / "scripts" / "image"), "build"]
    if output is not None:
        command += ["--output", str(output)]
    if HOST_CA_BUNDLE.exists() and not os.environ.get("GWO_IMAGE_CA_BUNDLE"):
        command += ["--ca-bundle", str(HOST_CA_BUNDLE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise AssertionError(f"scripts/image build failed:\n{result.stderr[-4000:]}")
    pairs = (line.partition("=") for line in result.stdout.splitlines() if "=" in line)
    return {name: Path(path) for name, _, path in pairs}


@dataclass(frozen=True)
class Image:
    rootfs: Path
    config: dict[str, Any]  # the OCI runtime spec umoci derives from the image's config
    entrypoint: list[str]
    labels: dict[str, str]


def unpack(archive: Path, destination: Path) -> Image:
    """Unpacks the archive's one image with umoci: its root file system and runtime config."""
    layout = destination / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = index["manifests"]
    tag = manifest["annotations"]["org.opencontainers.image.ref.name"]
    image_config = _json_blob(layout, _json_blob(layout, manifest)["config"])["config"]
    rootfs, config = destination / "rootfs", destination / "config.json"
    image = f"{layout}:{tag}"
    for argv in (
        ["umoci", "raw", "unpack", "--image", image, str(rootfs)],
        ["umoci", "raw", "runtime-config", "--image", image, "--rootfs", str(rootfs), str(config)],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
    shutil.rmtree(layout)
    return Image(
        rootfs=rootfs,
        config=json.loads(config.read_text()),
        entrypoint=image_config.get("Entrypoint") or [],
        labels=image_config.get("Labels") or {},
    )


def _json_blob(layout: Path, descriptor: dict[str, Any]) -> Any:
    algorithm, _, digest = descriptor["digest"].partition(":")
    return json.loads((layout / "blobs" / algorithm / digest).read_text())


@dataclass
class Container:
    """One process in the image, in its own bundle (the root file system is shared)."""

    image: Image
    bundle: Path
    args: list[str] | None = None  # after the entrypoint, as `docker run IMAGE ARGS`
    command: list[str] | None = None  # instead of the entrypoint
    binds: dict[str, Path] = field(default_factory=dict)  # read-only: container path -> host
    id: str = field(default_factory=lambda: "gwo-test-" + secrets.token_hex(6))
    process: subprocess.Popen[bytes] | None = None

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(self.image.config)
        process = spec["process"]
        if self.command is not None:
            process["args"] = self.command
        elif self.args is not None:
            process["args"] = self.image.entrypoint + self.args
        process["terminal"] = False
        process["noNewPrivileges"] = True
        process["capabilities"] = {key: [] for key in process.get("capabilities", {})}
        spec["root"] = {"path": str(self.image.rootfs), "readonly": True}
        spec["linux"]["namespaces"] = [
            n for n in spec["linux"]["namespaces"] if n["type"] != "network"
        ]
        # /tmp: an emptyDir in the chart and the receiver's Deployment.
        spec["mounts"].append(
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=16m"],
            }
        )
        for target, source in self.binds.items():
            spec["mounts"].append(
                {
                    "destination": target,
                    "type": "bind",
                    "source": str(source),
                    "options": ["rbind", "ro", "nosuid", "nodev"],
                }
            )
        return spec

    def _prepare(self) -> list[str]:
        self.bundle.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").write_text(json.dumps(self.spec()))
        return ["runc", "run", "--bundle", str(self.bundle), self.id]

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs the process to its end."""
        try:
            return subprocess.run(
                self._prepare(), capture_output=True, text=True, timeout=timeout, check=False
            )
        finally:
            self.delete()

    @property
    def log_path(self) -> Path:
        return self.bundle / "output.log"

    def log(self) -> str:
        """What a started process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Starts a long-running process, its output to `log()`; `stop` ends it."""
        argv = self._prepare()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as the kubelet sends; its exit code."""
        assert self.process is not None
        subprocess.run(["runc", "kill", self.id, "TERM"], capture_output=True, check=False)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.delete()

    def delete(self) -> None:
        """Whatever happened: the container is gone and its runc process reaped."""
        subprocess.run(
            ["runc", "delete", "--force", self.id], capture_output=True, check=False, timeout=30
        )
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def readable_by_everyone(*paths: Path) -> None:
    """pytest's temporary folders are 0700; the container's user is not their owner."""
    for path in paths:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
