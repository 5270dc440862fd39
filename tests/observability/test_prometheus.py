"""A real Prometheus scrapes a running receiver and a running operator under generated
traffic; every dashboard query and every series the alert rules select must return data
(no panel may query a metric that does not exist), and `promtool check metrics` must find
nothing to warn about in our `/metrics`.

The stack, started once for this module, everything on loopback with ephemeral ports:
- the kube sandbox and the Gemini API emulator (threads);
- `gemini-webhooks operator` (subprocess) reconciling two GeminiWebhooks: `orders`, which
  rotates, has its health checked and loses its Secret once (a heal), and `broken`, whose
  API-key Secret is missing (reconcile retries);
- `gemini-webhooks receiver` (subprocess) in Redis mode (a real `redis-server`), fed signed
  deliveries, duplicates, forgeries and an unroutable event, forwarding to one target that
  works and one that fails;
- `prometheus` (Debian package) scraping both every second, with the chart's rule file,
  labelling the receiver's series as the chart's PodMonitor does (`namespace`, `webhook`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import receiver_config as rc
from gemini_webhooks.contracts import signing_secret as fmt
from gemini_webhooks.emulator import EmulatorConfig, ThreadedEmulator
from gemini_webhooks.kubesandbox import ThreadedKubeSandbox
from gemini_webhooks.observability import __main__ as generator
from gemini_webhooks.observability import series
from tests.chart.rendering import RELEASE_NAMESPACE, find, manifests
from tests.fixtures.cluster_proxy import ClusterProxy
from tests.fixtures.kube import KUBECTL
from tests.fixtures.redis import REDIS_SERVER
from tests.observability.test_generated import _panels, alert_expressions

pytestmark = [pytest.mark.real_component, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NAMESPACE = "team-a"
WEBHOOK = "orders"
API_KEY = "observability-test-key"
RATE_INTERVAL = "1m"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


class FailingTarget(BaseHTTPRequestHandler):
    """Test double for a forwarding target: answers 204, or 500 on paths under /fail."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(500 if self.path.startswith("/fail") else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Stack:
    workdir: Path
    prometheus_url: str = ""
    receiver_metrics_url: str = ""
    operator_metrics_url: str = ""
    operator_health_port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.processes.append(process)
        return log

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        for stop in reversed(self.stoppers):
            stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, selector: str) -> list[str]:
        url = f"{self.prometheus_url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            values: list[str] = json.load(response)["data"]
        return values


def _kubectl(kubeconfig: Path, workdir: Path, *args: str, stdin: str | None = None) -> None:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), KUBECACHEDIR=str(workdir / "kcache"))
    result = subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr


def _start_redis(stack: Stack) -> str:
    port = _free_port()
    data = stack.workdir / "redis"
    data.mkdir()
    stack.spawn(
        "redis",
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
        ],
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait("redis-server", answers)
    return f"redis://127.0.0.1:{port}/0"


def _start_targets(stack: Stack) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingTarget)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    stack.stoppers.append(stop)
    return f"http://127.0.0.1:{server.server_address[1]}"


def _start_receiver(stack: Stack, redis_url: str, targets: str, secret: str) -> str:
    secrets_file = stack.workdir / "signing-secrets.json"
    now = datetime.now(UTC)
    data = fmt.encode(
        fmt.SigningSecrets(webhook_id="wh_obs", secrets=(fmt.SigningSecret(secret, now),))
    )
    secrets_file.write_text(data[fmt.KEY_SECRETS])
    public, internal = _free_port(), _free_port()
    config = rc.ReceiverConfig(
        listen=rc.ListenConfig(host="127.0.0.1", port=public),
        internal=rc.InternalConfig(host="127.0.0.1", port=internal),
        static_webhooks=[
            rc.StaticWebhookConfig(
                name=WEBHOOK,
                secrets=rc.SecretsSource(file=rc.FileSecretRef(path=str(secrets_file))),
            )
        ],
        routes=[
            rc.RouteConfig(
                name="batches",
                match=rc.MatchConfig(types=["batch.*"]),
                targets=[rc.TargetConfig(url=f"{targets}/batches")],
            ),
            rc.RouteConfig(
                name="videos",
                match=rc.MatchConfig(types=["video.*"]),
                targets=[rc.TargetConfig(url=f"{targets}/fail/videos")],
            ),
        ],
        forwarding=rc.ForwardingConfig(
            timeout_seconds=2, backoff_initial_seconds=0.1, backoff_max_seconds=0.2
        ),
        redis=rc.RedisConfig(url=redis_url, max_attempts=2, claim_idle_seconds=1),
        dedup=rc.DedupConfig(backend="redis"),
        # A forgery right after good deliveries would be a retryable 503 while a rotated
        # secret may still be on its way (secret_reload_pending); here it must be a 401.
        replay=rc.ReplayConfig(reload_pending_seconds=0),
    )
    config_file = stack.workdir / "receiver.yaml"
    config_file.write_text(rc.dump(config))
    log = stack.spawn(
        "receiver",
        [sys.executable, "-m", "gemini_webhooks", "receiver", "--config", str(config_file)],
    )
    metrics = f"http://127.0.0.1:{internal}/metrics"

    def up() -> bool:
        stack_alive(stack, log)
        try:
            return httpx.get(f"http://127.0.0.1:{internal}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("receiver ready", up)
    stack.receiver_metrics_url = metrics
    return f"http://127.0.0.1:{public}/"


def stack_alive(stack: Stack, log: Path) -> None:
    for process in stack.processes:
        if process.poll() is not None:
            raise AssertionError(f"a process exited early; {log.name}:\n{log.read_text()[-3000:]}")


def _send_traffic(receiver_url: str, secret: str) -> None:
    """Accepted, duplicate, forged, failing-target and unroutable deliveries."""
    signer = Webhook(secret)
    forger = Webhook("whsec_" + base64.b64encode(b"0" * 32).decode())
    with httpx.Client(timeout=10) as client:

        def send(event_type: str, msg_id: str, by: Webhook = signer) -> int:
            body = json.dumps(
                {
                    "type": event_type,
                    "version": "v1",
                    "timestamp": "2026-11-25T12:00:00Z",
                    "data": {"id": msg_id},
                }
            )
            now = datetime.now(UTC)
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": by.sign(msg_id, now, body),
                "content-type": "application/json",
            }
            return client.post(receiver_url, content=body, headers=headers).status_code

        for i in range(20):
            assert send("batch.succeeded", f"msg_ok_{i}") < 300
        assert send("batch.succeeded", "msg_ok_0") < 300  # a duplicate
        assert send("batch.succeeded", "msg_forged", forger) == 401
        assert send("video.generated", "msg_video") < 300  # accepted; its target fails
        assert send("interaction.completed", "msg_unroutable") < 300


# What the traffic must have produced, downstream of the acknowledgement (Redis mode
# delivers asynchronously): sample patterns in the receiver's /metrics.
PIPELINE = (
    r'gemini_receiver_forwards_total\{[^}]*outcome="ok"[^}]*\} [1-9]',
    r'gemini_receiver_forwards_total\{[^}]*outcome="('
    + "|".join(series.FORWARD_FAILURES)
    + r')"[^}]*\} [1-9]',
    r'gemini_receiver_dead_letters_total\{reason="max_attempts"\} [1-9]',
    r'gemini_receiver_dead_letters_total\{reason="unroutable"\} [1-9]',
    r"gemini_receiver_end_to_end_seconds_count [1-9]",
)


def _wait_for_the_pipeline(stack: Stack) -> None:
    def delivered() -> bool:
        text = httpx.get(stack.receiver_metrics_url, timeout=2).text
        return all(re.search(pattern, text) for pattern in PIPELINE)

    _wait("forwards and dead letters", delivered)

    def scraped() -> bool:  # Prometheus has seen the final values
        result = stack.query('gemini_receiver_dead_letters_total{reason="max_attempts"} > 0')
        return bool(result) and bool(stack.query("gemini_receiver_end_to_end_seconds_count > 0"))

    _wait("prometheus to scrape them", scraped)
    time.sleep(2)  # two more scrapes, so that every rate has two points after the traffic


def _start_operator(stack: Stack, kubeconfig: Path, emulator_url: str) -> Path:
    _kubectl(kubeconfig, stack.workdir, "apply", "-f", str(ROOT / "crds"))
    api_key = base64.b64encode(API_KEY.encode()).decode()
    resources = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gemini-api-key", "namespace": NAMESPACE},
            "data": {"api-key": api_key},
        },
        *[
            {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "url": f"https://hooks.example.com/{name}",
                    "events": ["batch.succeeded"],
                    "apiKeySecretRef": {"name": key_secret},
                    "apiBaseUrl": emulator_url,
                    "rotation": {"interval": "720h"},
                },
            }
            for name, key_secret in ((WEBHOOK, "gemini-api-key"), ("broken", "missing-api-key"))
        ],
    ]
    _kubectl(kubeconfig, stack.workdir, "apply", "-f", "-", stdin=yaml.safe_dump_all(resources))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    stack.operator_health_port = _free_port()
    log = stack.spawn(
        "operator",
        [
            sys.executable,
            "-m",
            "gemini_webhooks",
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--metrics-port=0",
            "--metrics-address=127.0.0.1",
            "--drift-interval=2",
            f"--liveness=http://127.0.0.1:{stack.operator_health_port}/healthz",
        ],
        env=env,
    )

    def metrics_port() -> bool:
        stack_alive(stack, log)
        return re.search(r"metrics on port (\d+)", log.read_text(errors="replace")) is not None

    _wait("operator metrics", metrics_port)
    port = re.search(r"metrics on port (\d+)", log.read_text(errors="replace"))
    assert port
    stack.operator_metrics_url = f"http://127.0.0.1:{port.group(1)}/metrics"
    return log


def _operator_activity(stack: Stack, kubeconfig: Path, log: Path) -> None:
    """Wait for a ready webhook, then request a rotation and delete its Secret (a heal)."""

    def metric_has(name: str) -> Callable[[], bool]:
        def probe() -> bool:
            stack_alive(stack, log)
            text = httpx.get(stack.operator_metrics_url, timeout=2).text
            return re.search(rf"^{name}(\{{.*\}})? [1-9]", text, flags=re.M) is not None

        return probe

    _wait("a signing secret", metric_has(series.SECRET_AGE.removesuffix("_total")), timeout=40)
    _kubectl(
        kubeconfig,
        stack.workdir,
        "annotate",
        "-n",
        NAMESPACE,
        crd.PLURAL,
        WEBHOOK,
        f"{crd.ANNOTATION_ROTATE}=now",
    )
    _wait("a rotation", metric_has(series.ROTATIONS), timeout=40)
    _kubectl(
        kubeconfig,
        stack.workdir,
        "delete",
        "secret",
        "-n",
        NAMESPACE,
        f"{WEBHOOK}{crd.DEFAULT_SIGNING_SECRET_SUFFIX}",
    )
    _wait("a heal", metric_has(series.HEALS), timeout=40)


def _start_prometheus(stack: Stack) -> None:
    port = _free_port()
    receiver = urllib.parse.urlparse(stack.receiver_metrics_url)
    operator = urllib.parse.urlparse(stack.operator_metrics_url)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(generator.RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": series.RECEIVER_JOB,
                "static_configs": [
                    {
                        "targets": [receiver.netloc],
                        "labels": {"namespace": NAMESPACE, "webhook": WEBHOOK, "pod": "orders-0"},
                    }
                ],
            },
            {
                "job_name": series.OPERATOR_JOB,
                "honor_labels": True,
                "static_configs": [{"targets": [operator.netloc]}],
            },
        ],
    }
    config_file = stack.workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    data = stack.workdir / "prometheus-data"
    log = stack.spawn(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
    )
    stack.prometheus_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        stack_alive(stack, log)
        try:
            return httpx.get(f"{stack.prometheus_url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("prometheus ready", ready)

    def scraping() -> bool:  # both targets scraped before any traffic, so rates see it
        return len([r for r in stack.query("up == 1")]) == 2

    _wait("prometheus scraping both targets", scraping)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert Path(PROMETHEUS).exists(), "prometheus is not installed (apt-get install prometheus)"
    workdir = tmp_path_factory.mktemp("observability")
    stack = Stack(workdir)
    try:
        kubeconfig = workdir / "kubeconfig"
        sandbox = ThreadedKubeSandbox(kubeconfig=kubeconfig)
        sandbox.start()
        stack.stoppers.append(sandbox.stop)
        emulator = ThreadedEmulator(EmulatorConfig(api_keys=(API_KEY,)))
        emulator.start()
        stack.stoppers.append(emulator.stop)

        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        receiver_url = _start_receiver(stack, _start_redis(stack), _start_targets(stack), secret)
        operator_log = _start_operator(stack, kubeconfig, emulator.base_url)
        _start_prometheus(stack)
        _operator_activity(stack, kubeconfig, operator_log)
        _send_traffic(receiver_url, secret)
        _wait_for_the_pipeline(stack)
        yield stack
    finally:
        stack.close()


# --- the checks ------------------------------------------------------------------------------


def _concrete(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace('"$namespace"', f'"{NAMESPACE}"')
        .replace('"$webhook"', f'"{WEBHOOK}"')
    )


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(r["value"][1] not in ("NaN",) for r in result)


# Panels whose series only a feature this stack cannot run produces, and why. Their metric
# must still be exposed (checked below), so a renamed metric is caught all the same.
NOT_EXERCISED = {
    "Delivery verified (end-to-end health)": (
        series.DELIVERY_VERIFIED,
        "needs a receiver deployed by the operator, and the kube sandbox runs no pods",
    ),
}


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    empty = []
    for panel in _panels():
        if panel["title"] in NOT_EXERCISED:
            continue
        for target in panel["targets"]:
            if not _has_data(stack.query(_concrete(target["expr"]))):
                empty.append(f"{panel['title']}: {target['expr']}")
    assert empty == []


def test_panels_not_exercised_here_still_query_exposed_metrics(stack: Stack) -> None:
    exposition = httpx.get(stack.operator_metrics_url, timeout=5).text
    for title, (metric, _why) in NOT_EXERCISED.items():
        (panel,) = [p for p in _panels() if p["title"] == title]
        assert all(metric in t["expr"] for t in panel["targets"])
        assert f"# TYPE {metric} " in exposition


def test_dashboard_variables_list_the_namespace_and_the_webhook(stack: Stack) -> None:
    selector = f'{series.SECRET_AGE}{{job="{series.OPERATOR_JOB}"}}'
    assert NAMESPACE in stack.label_values("namespace", selector)
    assert WEBHOOK in stack.label_values("name", selector)


def test_every_series_the_alert_rules_select_exists(stack: Stack) -> None:
    """Each selector, relaxed to its metric name and job, has series; the full expressions
    (thresholds, `for`) are pinned by the promtool unit tests."""
    selector = re.compile(r"\b([a-z_]+)\{([^}]*)\}")
    missing = []
    for alert, expr in alert_expressions().items():
        for metric, matchers in selector.findall(expr):
            job = re.search(r'job="[^"]+"', matchers)
            relaxed = f"{metric}{{{job.group(0) if job else ''}}}"
            if not stack.query(relaxed):
                missing.append(f"{alert}: {relaxed}")
    assert missing == []


def test_alert_rules_load_and_evaluate_in_prometheus(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == set(alert_expressions())
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


@pytest.mark.parametrize("component", ["receiver", "operator"])
def test_promtool_check_metrics_finds_nothing_to_warn_about(stack: Stack, component: str) -> None:
    url = stack.receiver_metrics_url if component == "receiver" else stack.operator_metrics_url
    text = httpx.get(url, timeout=5).text
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_charts_helm_test_hook_passes_against_a_running_operator(
    stack: Stack, cluster_proxy: ClusterProxy
) -> None:
    metrics_port = int(urllib.parse.urlparse(stack.operator_metrics_url).port or 0)
    values = {"metricsPort": metrics_port, "healthPort": stack.operator_health_port}
    (pod,) = find(manifests(values), "Pod")
    script = pod["spec"]["containers"][0]["args"][0]
    # The hook finds the Service by its cluster name; the cluster proxy serves it here.
    service = "gwo-gemini-webhook-operator-metrics"
    for port in (metrics_port, stack.operator_health_port):
        cluster_proxy.serve_service(service, RELEASE_NAMESPACE, port, f"127.0.0.1:{port}")
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **cluster_proxy.environment()},
    )
    assert result.returncode == 0, result.stderr
    assert "operator healthy" in result.stdout
