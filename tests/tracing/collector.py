"""A real trace backend for the tracing tests: the OpenTelemetry Collector, built here from
its Go modules (`go.opentelemetry.io/collector` and the contrib file exporter) as the
control plane's binaries are (`gemini_webhooks.controlplane.build`: through the Go module
proxy, cached by a key over everything the build reads, a second build costs nothing).

`modules/otelcol/main.go` is what the Collector builder (`ocb`) would generate for two
components: the OTLP receiver and the file exporter. A test starts it on free ports, sends
it spans over OTLP/HTTP, and reads back what it stored (`Collector.spans`):

    python -m tests.tracing.collector build     # what scripts/test runs in the background
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemini_webhooks.controlplane import build

MODULES = Path(__file__).resolve().parent / "modules"
VERSION = "v0.161.0"  # the newest release whose file exporter the Go module proxy serves


@dataclass(frozen=True)
class _Module(build.Component):
    """Our wrapper module under tests/tracing/modules/ (its key covers our main.go)."""

    @property
    def module_dir(self) -> Path:
        return MODULES / self.name


OTELCOL = _Module("otelcol", VERSION, {"otelcol": "gemini-webhook-operator/tracing/otelcol"})


def progress(line: str) -> None:
    print(f"[otelcol] {line}", file=sys.stderr, flush=True)


def binary() -> Path:
    """The Collector's binary, built unless cached (progress on stderr)."""
    return build.build(OTELCOL, progress) / "otelcol"


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    """An OTLP JSON item's (span's, event's, resource's) attributes as a dict of values
    (integers stay strings, as OTLP JSON writes them)."""
    return {a["key"]: next(iter(a["value"].values())) for a in item.get("attributes", [])}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Collector:
    """A running Collector: OTLP/HTTP on `endpoint`, every span written to `path`."""

    endpoint: str  # for OTEL_EXPORTER_OTLP_ENDPOINT
    path: Path

    def spans(self) -> list[dict[str, Any]]:
        """Every span stored so far, flattened: the OTLP JSON span with its resource's
        attributes added as `resource` (a dict of their values) and `service.name` as
        `service`."""
        found: list[dict[str, Any]] = []
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = attributes(resource_spans.get("resource", {}))
                service = resource.get("service.name")
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        found.append({**span, "resource": resource, "service": service})
        return found

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The spans once `predicate(spans)` holds (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector did not get the spans in {timeout}s: {spans}")
            time.sleep(0.2)


def _config(http_port: int, path: Path) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        # Written as each batch arrives: the test reads the file while the Collector runs.
        "exporters": {"file": {"path": str(path), "flush_interval": "100ms"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["file"]}},
            # No metrics of its own: no port to bind beside the OTLP one.
            "telemetry": {"metrics": {"level": "none"}},
        },
    }


@contextmanager
def running(directory: Path) -> Iterator[Collector]:
    """Start the Collector (built unless cached), wait until it takes OTLP, stop it after."""
    http_port = _free_port()
    path = directory / "spans.jsonl"
    config = directory / "otelcol.json"
    # The Collector reads YAML, and JSON is YAML.
    config.write_text(json.dumps(_config(http_port, path)))
    log = directory / "otelcol.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary()), f"--config={config}"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_listening(http_port, process, log)
        yield Collector(f"http://127.0.0.1:{http_port}", path)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("the collector exited: " + log.read_text())
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the collector did not listen in 60s: " + log.read_text())


def main(argv: list[str]) -> int:
    if argv != ["build"]:
        print("usage: python -m tests.tracing.collector build", file=sys.stderr)
        return 2
    build.build(OTELCOL, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
