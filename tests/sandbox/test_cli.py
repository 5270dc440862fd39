"""`gemini-webhooks sandbox [--demo]` as a newcomer runs it: a real process, real output.

The interactive tests share one sandbox and run in file order, like one user's session:
it starts with visible progress, says it is up and what to do next; the commands it
prints, run as printed in a shell, make an event arrive at the sample consumer, which
prints it; the `/metrics` URLs it prints serve metrics; Ctrl-C stops everything and no
process is left. The demo test runs the whole tour to its exit code.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

EXE = Path(sys.executable).parent / "gemini-webhooks"
DEMO_STEPS = (
    "apply the example",
    "wait for Ready",
    "fire every event type (static)",
    "fire every event type (dynamic)",
    "rotate the secret under traffic",
    "metrics that moved",
    "delete: remote webhook gone",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "GWO_E2E_NAMESPACE")}
    env.pop("GEMINI_WEBHOOKS_SANDBOX_DIR", None)
    return env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"started \S+ \(pid (\d+),", output)]


def _assert_all_gone(pids: list[int], output: str) -> None:
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"processes left behind: {left}\n{output[-3000:]}"


@dataclass
class Running:
    process: subprocess.Popen[str]
    state_dir: Path
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.process.poll() is not None:
                time.sleep(0.2)  # the pump takes the last lines
                found = re.search(pattern, self.output())
                if found:
                    return found
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not printed within {within}s:\n{self.output()}")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    cwd = tmp_path_factory.mktemp("newcomer")
    process = subprocess.Popen(
        [str(EXE), "sandbox", "--state-dir", str(cwd / ".sandbox")],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = Running(process, cwd / ".sandbox")

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        running.wait_for("The sandbox is up", within=120)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _assert_all_gone(_pids(running.output()), running.output())


def test_progress_is_visible_while_it_starts(sandbox: Running) -> None:
    output = sandbox.output()
    order = [
        "sample consumer listening on http://127.0.0.1:",
        "started emulator (pid ",
        "emulator is ready (",
        "started kube-sandbox (pid ",
        "kube-sandbox is ready (",
        "CRD geminiwebhooks.gemini.webhooks.dev installed",
        "kubelet watching receiver Deployments",
        "started operator (pid ",
        "operator is ready (",
        "The sandbox is up",
    ]
    positions = [output.find(line) for line in order]
    assert -1 not in positions, output
    assert positions == sorted(positions), output
    kubeconfig = sandbox.state_dir / "kubeconfig"
    assert f"(kubeconfig: {kubeconfig})" in output
    assert "server: http://127.0.0.1:" in kubeconfig.read_text()


def _printed_commands(output: str) -> str:
    """The shell commands the sandbox printed under "The sandbox is up", as printed."""
    block = output.split("The sandbox is up", 1)[1].split("Where things are:", 1)[0]
    commands = [line[2:] for line in block.splitlines() if line.startswith("  ")]
    return "\n".join(commands) + "\n"


def test_the_printed_next_steps_make_an_event_arrive_and_the_consumer_prints_it(
    sandbox: Running, tmp_path: Path
) -> None:
    script = _printed_commands(sandbox.output())
    assert "source " in script and "kubectl apply -f " in script and "curl " in script
    # Another terminal: a fresh shell, another directory, no KUBECONFIG of its own.
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "geminiwebhook.gemini.webhooks.dev/sandbox-demo condition met" in result.stdout
    assert "deployment.apps/sandbox-demo-receiver condition met" in result.stdout
    delivery = re.search(r'"deliveries": \["(msg_[0-9a-f]+)"\]', result.stdout)
    assert delivery, result.stdout
    # The receiver was Available before the event was fired: it arrives on the first try.
    sandbox.wait_for(
        rf"consumer /batches: batch\.succeeded batches/\S+ \(id {delivery.group(1)}\)", within=10
    )


def test_the_printed_metrics_urls_serve_metrics(sandbox: Running) -> None:
    output = sandbox.output()
    operator = re.search(r"operator /metrics\s+(http://\S+)", output)
    receiver = sandbox.wait_for(
        r"kubelet: default/sandbox-demo-receiver metrics at (http://\S+)", within=10
    )
    assert operator, output
    with urllib.request.urlopen(operator.group(1), timeout=10) as response:
        assert "gemini_webhook_operator_reconciles_total" in response.read().decode()
    with urllib.request.urlopen(receiver.group(1), timeout=10) as response:
        text = response.read().decode()
    assert re.search(r'gemini_receiver_deliveries_total\{outcome="accepted"[^}]*\} [1-9]', text)


def _listening_addresses(pid: int) -> set[str]:
    """The local addresses of the TCP sockets process `pid` listens on ("ip:port")."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    ip = ".".join(str(b) for b in reversed(raw))
                else:  # four little-endian 32-bit words
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    ip = str(ipaddress.IPv6Address(b"".join(words)))
                found.add(f"{ip}:{int(port, 16)}")
    return found


def test_everything_listens_on_loopback_only(sandbox: Running) -> None:
    pids = [sandbox.process.pid, *_pids(sandbox.output())]
    listening = {pid: _listening_addresses(pid) for pid in pids}
    everything = set().union(*listening.values())
    # the consumer; the emulator; the kube sandbox; the operator's metrics and liveness;
    # the receiver's public and internal ports
    assert len(everything) >= 7, listening
    assert all(a.startswith("127.0.0.1:") for a in everything), listening


def test_ctrl_c_stops_everything_and_leaves_no_process(sandbox: Running) -> None:
    pids = _pids(sandbox.output())
    assert len(pids) == 4, sandbox.output()  # emulator, kube sandbox, operator, receiver
    assert all(_alive(pid) for pid in pids)
    sandbox.process.send_signal(signal.SIGINT)
    assert sandbox.process.wait(60) == 0
    sandbox.wait_for("no processes left behind", within=5)
    _assert_all_gone(pids, sandbox.output())


def test_the_demo_exits_zero_with_every_step_held_and_leaves_no_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(EXE), "sandbox", "--demo", "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    table = output.split("  step ", 1)[1]
    for step in DEMO_STEPS:
        assert re.search(rf"^  {re.escape(step)}\s+ok\s+\d+\.\d+s  \S", table, re.M), output
    assert "Every step held." in output
    assert "0 verification failures" in output
    assert re.search(r"webhook [0-9a-f]+ gone from the Gemini API", output)
    assert "stopped; no processes left behind" in output
    _assert_all_gone(_pids(output), output)


def _processes_using(path: Path) -> list[int]:
    """Live processes whose environment mentions `path` (e.g. its kubeconfig)."""
    found = []
    needle = str(path).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes() and _alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def test_ctrl_c_during_the_demo_stops_everything_even_a_running_kubectl(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [str(EXE), "sandbox", "--demo", "--state-dir", str(state)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = Running(process, state)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        running.wait_for(r"\$ kubectl wait --for=condition=Ready", within=120)
        time.sleep(0.3)  # kubectl is running (unless Ready came at once)
        kubectl = _processes_using(state / "kubeconfig")  # with the operator's, if caught
        process.send_signal(signal.SIGINT)  # to the sandbox alone, as `kill -INT` does
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    running.wait_for("no processes left behind", within=5)
    assert "demo interrupted" in running.output()
    _assert_all_gone(_pids(running.output()) + kubectl, running.output())
    assert _processes_using(state / "kubeconfig") == []
