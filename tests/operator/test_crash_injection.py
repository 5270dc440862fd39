"""Crash the operator process at every step boundary of create and rotate; after a
restart there is still exactly one remote webhook and the Secret verifies the next
delivery.

Each case runs the operator's own `cli.run` as a child process through a test double of its
process (`tests/fixtures/crashpoint.py`) with `GWO_TEST_CRASHPOINT=<step>`: at that
boundary the process sends itself SIGKILL — no `finally` block, no kopf shutdown. A second
process, without the crash point, then heals. Runs against the kube sandbox, or a real
cluster when KUBECONFIG is set.
"""

from __future__ import annotations

import ast
import asyncio
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from prometheus_client.parser import text_string_to_metric_families

from gemini_webhook_operator import reconciler
from gemini_webhook_operator.metrics import HEALS_TOTAL
from gemini_webhook_operator.reconciler import (
    HEAL_DUPLICATE_DELETED,
    HEAL_FOUND_BY_MARKER,
    HEAL_RECREATED,
    STEPS,
)
from gemini_webhooks.contracts.signing_secret import SigningSecrets
from tests.fixtures import crashpoint
from tests.operator.harness import Cluster, is_ready, operator_kubeconfig, resource

ROOT = Path(__file__).resolve().parents[2]  # where `tests.fixtures.crashpoint` imports from
ROTATE_ANNOTATION = "gemini.webhooks.dev/rotate"
ROTATE = {"metadata": {"annotations": {ROTATE_ANNOTATION: "crash-test"}}}
CASES = [
    ("create.called", "Grace"),
    ("create.secret_written", "Grace"),
    ("rotate.called", "Grace"),
    ("rotate.called", "Immediate"),
    ("rotate.secret_written", "Grace"),
    ("rotate.secret_written", "Immediate"),
]
pytestmark = pytest.mark.timeout(120)


@dataclass
class OperatorProcess:
    """One `gemini-webhooks operator` child process and its combined stdout/stderr log."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def until(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; log:\n{self.log()[-4000:]}")
            await asyncio.sleep(0.1)

    async def crashed(self) -> int:
        """Until the process is gone; its exit status (negative: the killing signal)."""
        await self.until(lambda: self.process.poll() is not None, "the crash", timeout=30)
        return self.process.returncode

    async def metrics_port(self) -> int:
        found = await self.until(
            lambda: re.search(r"metrics on port (\d+)", self.log()), "the metrics endpoint"
        )
        return int(found.group(1))

    async def heals(self, reason: str) -> float:
        url = f"http://127.0.0.1:{await self.metrics_port()}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        return sum(
            sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
            if sample.name == HEALS_TOTAL and sample.labels.get("reason") == reason
        )


@asynccontextmanager
async def operator_process(
    kube: Any, log_path: Path, *, crash_at: str | None = None, as_uid: int | None = None
) -> AsyncIterator[OperatorProcess]:
    """`as_uid`: run as that user id with no passwd entry, no HOME and no user name in the
    environment, as the image runs it — in a user namespace mapping our user to it."""
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env.pop(crashpoint.ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if crash_at is not None:
        env[crashpoint.ENV] = crash_at
    prefix: list[str] = []
    if as_uid is not None:
        for variable in ("USER", "LOGNAME", "LNAME", "USERNAME", "HOME", "POD_ID", "POD_NAME"):
            env.pop(variable, None)
        prefix = ["unshare", "--user", f"--map-user={as_uid}", f"--map-group={as_uid}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "tests.fixtures.crashpoint",
                "--kubeconfig",
                operator_kubeconfig(kube),
                "--drift-interval=1",
                "--metrics-port=0",
                "--metrics-address=127.0.0.1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        yield OperatorProcess(process, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)


def _verifies(secret: str, request: Any) -> bool:
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        standardwebhooks.Webhook(secret).verify(request.body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


def _remote_ids(client: Any) -> list[str]:
    return sorted(w.id for w in client.webhooks.list().webhooks or [])


def _settled(obj: dict[str, Any]) -> bool:
    annotations = obj["metadata"].get("annotations") or {}
    return is_ready(obj) and ROTATE_ANNOTATION not in annotations


@pytest.mark.parametrize(("step", "revocation"), CASES)
async def test_a_sigkill_at_each_step_boundary_heals_to_one_webhook_and_a_verifying_secret(
    step: str, revocation: str, gemini: Cluster, emulator: Any, kube: Any, tmp_path: Path
) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    body = resource("crashy", endpoint.url, emulator.base_url, rotation={"revocation": revocation})
    before: SigningSecrets | None = None

    async with operator_process(kube, tmp_path / "crashing.log", crash_at=step) as crashing:
        await gemini.apply(body)
        if step.startswith("rotate"):
            await gemini.wait_for("crashy", is_ready, timeout=30)
            before = await gemini.signing_secrets("crashy")
            await gemini.patch("crashy", ROTATE)
        assert await crashing.crashed() == -signal.SIGKILL, crashing.log()[-4000:]
        assert crashing.log().rstrip().endswith(f"{crashpoint.MARKER} {step}")

    # The crash left one webhook behind (created, or rotated); the restart must keep it.
    remote_ids = _remote_ids(client)
    assert len(remote_ids) == 1
    async with operator_process(kube, tmp_path / "restarted.log") as restarted:
        obj = await gemini.wait_for("crashy", _settled, timeout=30)
        webhook_id = obj["status"]["webhookId"]
        assert _remote_ids(client) == remote_ids == [webhook_id]
        held = await gemini.signing_secrets("crashy")
        assert held is not None and held.webhook_id == webhook_id and held.current is not None
        if before is not None:  # the rotation the crash interrupted was completed
            assert before.current is not None
            assert held.current.secret != before.current.secret
        emulator.fire("batch.succeeded")
        delivery = endpoint.wait_for(1)[-1]
        assert _verifies(held.current.secret, delivery)
        assert await restarted.heals(HEAL_DUPLICATE_DELETED) == 0
        assert await restarted.heals(HEAL_RECREATED) == 0
        if step == "create.called":  # the ID was recorded nowhere: found by its marker
            assert await restarted.heals(HEAL_FOUND_BY_MARKER) == 1
            healed = await gemini.wait_event("crashy", {"Healed"})
            assert webhook_id in healed["message"]


async def test_the_operator_runs_as_the_images_user_without_a_passwd_entry(
    gemini: Cluster, emulator: Any, kube: Any, tmp_path: Path
) -> None:
    """The image runs as UID 65532, which has no passwd entry: kopf's own identity
    (`getpass.getuser()`) raised KeyError there and the operator exited at start."""
    uid = 65532
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # the premise: no such user on this machine either
    endpoint = emulator.endpoint()
    async with operator_process(kube, tmp_path / "operator.log", as_uid=uid) as operator:
        await gemini.apply(resource("nobody", endpoint.url, emulator.base_url))
        await gemini.wait_for("nobody", is_ready, timeout=30)
        assert operator.process.poll() is None, operator.log()[-4000:]
    assert "getpwuid" not in operator.log()


def test_the_matrix_covers_every_step_boundary_the_reconciler_has() -> None:
    source = Path(reconciler.__file__).read_text()
    called = {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "step"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert called == set(STEPS)
    assert {step for step, _ in CASES} == set(STEPS)


def test_no_crash_point_is_armed_unless_the_variable_names_one() -> None:
    assert crashpoint.hook_from_environment({}) is None
    assert crashpoint.hook_from_environment({crashpoint.ENV: ""}) is None
    assert crashpoint.hook_from_environment({crashpoint.ENV: " "}) is None
    assert crashpoint.crash_point({crashpoint.ENV: " rotate.called "}) == "rotate.called"


@pytest.mark.parametrize("value", ["create", "rotate.called,create.called", "Create.Called"])
def test_a_crash_point_that_names_no_step_is_refused(value: str) -> None:
    with pytest.raises(crashpoint.CrashPointError, match="is not a step boundary"):
        crashpoint.hook_from_environment({crashpoint.ENV: value})


def test_the_double_refuses_an_unknown_crash_point_before_it_starts(tmp_path: Path) -> None:
    env = dict(os.environ, **{crashpoint.ENV: "create.typo"})
    env.pop("KUBECONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.crashpoint", "--kubeconfig", "/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "create.typo" in result.stderr and "is not a step boundary" in result.stderr


async def test_the_armed_hook_passes_other_steps_and_kills_the_process_at_its_own(
    tmp_path: Path,
) -> None:
    script = (
        "import asyncio, sys\n"
        "from tests.fixtures import crashpoint\n"
        "hook = crashpoint.hook_from_environment({crashpoint.ENV: 'rotate.called'})\n"
        "async def main():\n"
        "    for step in ('create.called', 'create.secret_written', 'rotate.called'):\n"
        "        await hook(step)\n"
        "        print('passed', step, flush=True)\n"
        "    print('survived', flush=True)\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "finally:\n"
        "    print('finally ran', flush=True)\n"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        env=dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.splitlines() == ["passed create.called", "passed create.secret_written"]
    assert result.stderr.strip().endswith(f"{crashpoint.MARKER} rotate.called")
