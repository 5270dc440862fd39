"""Every command block of README.md runs, and does what the README says.

Each ```sh block is preceded by `<!-- readme-test: RUNNER -->`, naming how it is run
(a block without one fails this suite, so no command goes unexercised):

- `two-commands` — `scripts/sandbox` and `scripts/test`:
  `scripts/sandbox` serves until Ctrl-C, so it runs exactly as written (with
  `GEMINI_WEBHOOKS_SANDBOX_DIR` pointing at a temporary directory) until it prints that it
  is up; then every `session` block runs against it, then it gets SIGINT and must exit 0
  leaving none of its processes behind.
  `scripts/test` is the suite this test belongs to (running it here would recurse); CI's
  `.ci/run` executes exactly it, which is checked instead.
- `session` — run by bash, from a directory where `.sandbox` is that sandbox's state.
- `demo` — run to completion; it must exit 0 and say that every step held.
- `install` — run by bash against a fresh Kubernetes API sandbox, from the repository root.
  There is no `helm` binary here (the project uses the Helm SDK), so `helm install` is a
  shell function that does what it does: render the chart with the Helm SDK with the
  command's `--set` values, then `kubectl apply` the manifests (hooks excluded).
- `shell` — run by bash from the repository root, each within a minute.
- `server` — one long-running command, run exactly as written from the repository root:
  it must say it is listening within a minute, and stop cleanly (exit 0) on Ctrl-C.
- `control-plane` — each line in order from the repository root: `scripts/control-plane
  up` (it serves until Ctrl-C or `down`) in the background until it writes its `env`, the
  others by bash; the node must be Ready, `down` must stop `up` leaving none of its
  processes, and the demo must hold every step.
- `real-cluster` — needs a real cluster and a Google account: only checked for
  consistency (the variables it sets are the ones `tests/e2e/conftest.py` reads).

```yaml blocks preceded by `<!-- readme-test: manifest -->` are applied with
`kubectl apply --dry-run=server` against the running sandbox (schema-validated), and
```python blocks preceded by `<!-- readme-test: python-with-client -->` run with `client`
bound to a `google-genai` client of the Gemini API emulator.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = Path(os.environ.get("GWO_README") or ROOT / "README.md")  # override: drafts only
VENV_BIN = Path(sys.executable).parent
RUNNERS = (
    "two-commands",
    "session",
    "demo",
    "install",
    "shell",
    "server",
    "real-cluster",
    "control-plane",
    "real-node",
    "manifest",
    "python-with-client",
)
_MARKER = re.compile(r"^<!-- readme-test: ([a-z-]+) -->\s*$")


@dataclass(frozen=True)
class Block:
    runner: str
    language: str
    text: str
    line: int

    @property
    def commands(self) -> list[str]:
        """Logical command lines: continuations joined, comments and blanks dropped."""
        joined = self.text.replace("\\\n", " ")
        lines = []
        for raw in joined.splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                lines.append(re.sub(r"\s+#\s.*$", "", line))
        return lines


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```") and len(line) > 3:
            language = line[3:].strip()
            marker = _MARKER.match(lines[index - 1]) if index else None
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            body = "\n".join(lines[index + 1 : end]) + "\n"
            runner = marker.group(1) if marker else ""
            blocks.append(Block(runner, language, body, index + 1))
            index = end + 1
            continue
        index += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _blocks(runner: str) -> list[Block]:
    return [b for b in BLOCKS if b.runner == runner]


def _bash(script: str, *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}:\n{output}"
    return output


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# -- the README's shape --------------------------------------------------------------------


def test_every_command_block_says_how_it_is_tested() -> None:
    untested = [
        f"line {b.line}: ```{b.language}"
        for b in BLOCKS
        if b.language in ("sh", "bash", "shell", "console") and b.runner not in RUNNERS
    ]
    assert not untested, f"README command blocks without a known readme-test marker: {untested}"
    assert all(b.runner in RUNNERS for b in BLOCKS if b.runner)


def test_the_first_block_is_the_two_commands() -> None:
    first = next(b for b in BLOCKS if b.language == "sh")
    assert first.runner == "two-commands"
    assert first.commands == ["scripts/sandbox", "scripts/test"]


# -- scripts/test --------------------------------------------------------------------------


def test_scripts_test_is_what_ci_runs() -> None:
    # Running scripts/test from inside the suite it runs would recurse; CI runs it.
    assert "exec scripts/test\n" in (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / "scripts" / "test", os.X_OK)


# -- scripts/sandbox, with the session blocks against it -------------------------------------


@dataclass
class RunningSandbox:
    process: subprocess.Popen[str]
    state_dir: Path
    lines: list[str]

    def start_reading(self) -> None:
        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)

        threading.Thread(target=pump, daemon=True).start()

    def drain(self) -> str:
        return "".join(self.lines)

    def read_until(self, needle: str, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if needle in self.drain():
                return
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the pump take the last lines
                break
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not printed within {within}s:\n{self.drain()}")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    (block,) = _blocks("two-commands")
    assert "scripts/sandbox" in block.commands
    state_dir = Path(tempfile.mkdtemp(prefix="readme-sandbox-")) / "state"
    process = subprocess.Popen(
        ["bash", "-c", "scripts/sandbox"],  # exactly the README's command
        cwd=ROOT,
        env=_env(GEMINI_WEBHOOKS_SANDBOX_DIR=str(state_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = RunningSandbox(process, state_dir, [])
    running.start_reading()
    try:
        running.read_until("The sandbox is up", within=120)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _session_cwd(sandbox: RunningSandbox) -> Path:
    cwd = Path(tempfile.mkdtemp(prefix="readme-session-"))
    (cwd / ".sandbox").symlink_to(sandbox.state_dir)
    return cwd


@pytest.mark.parametrize("block", _blocks("session"), ids=lambda b: f"line-{b.line}")
def test_a_session_block_runs_against_the_running_sandbox(
    sandbox: RunningSandbox, block: Block
) -> None:
    _bash(block.text, cwd=_session_cwd(sandbox), env=_env(), timeout=150)


def test_the_event_fired_in_the_session_reaches_the_sample_consumer(
    sandbox: RunningSandbox,
) -> None:
    fired = [
        m.group(1)
        for b in _blocks("session")
        for m in re.finditer(r'"type":\s*"([a-z_.]+)"', b.text)
    ]
    assert fired, "the session fires no event"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        output = sandbox.drain()
        if all(re.search(rf"consumer /\S*: {re.escape(t)} ", output) for t in fired):
            return
        time.sleep(0.2)
    raise AssertionError(f"the consumer did not print {fired}:\n{sandbox.drain()[-3000:]}")


@pytest.mark.parametrize("block", _blocks("manifest"), ids=lambda b: f"line-{b.line}")
def test_a_manifest_in_the_readme_is_accepted_by_the_api_server(
    sandbox: RunningSandbox, block: Block
) -> None:
    script = "source .sandbox/env\nkubectl apply --dry-run=server -f - <<'EOF'\n"
    script += block.text + "EOF\n"
    _bash(script, cwd=_session_cwd(sandbox), env=_env(), timeout=60)


def test_ctrl_c_stops_the_sandbox_cleanly_leaving_no_process(sandbox: RunningSandbox) -> None:
    pids = [int(p) for p in re.findall(r"\(pid (\d+),", sandbox.drain())]
    assert pids, "the sandbox reported no child processes"
    os.killpg(sandbox.process.pid, signal.SIGINT)
    assert sandbox.process.wait(60) == 0
    output = sandbox.drain()
    assert "no processes left behind" in output
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


# -- scripts/sandbox --demo ----------------------------------------------------------------


@pytest.mark.parametrize("block", _blocks("demo"), ids=lambda b: f"line-{b.line}")
def test_the_demo_exits_zero_with_every_step_held(block: Block, tmp_path: Path) -> None:
    output = _bash(
        block.text,
        cwd=ROOT,
        env=_env(GEMINI_WEBHOOKS_SANDBOX_DIR=str(tmp_path / "state")),
        timeout=240,
    )
    assert "Every step held." in output


# -- installing in a real cluster, against the Kubernetes API sandbox ------------------------

HELM_SHIM = """
helm() {{ {python} {this} helm "$@"; }}
"""


@pytest.mark.parametrize("block", _blocks("install"), ids=lambda b: f"line-{b.line}")
def test_the_install_commands_apply_against_a_kubernetes_api(block: Block, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = subprocess.Popen(
        [str(VENV_BIN / "gemini-webhooks"), "kube-sandbox", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shim = HELM_SHIM.format(python=shlex.quote(sys.executable), this=shlex.quote(__file__))
        _bash(
            shim + block.text,
            cwd=ROOT,
            env=_env(KUBECONFIG=str(kubeconfig), GEMINI_API_KEY="readme-test-key-not-real"),
            timeout=120,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


# -- plain commands --------------------------------------------------------------------------


@pytest.mark.parametrize("block", _blocks("shell"), ids=lambda b: f"line-{b.line}")
def test_a_plain_command_block_succeeds(block: Block) -> None:
    _bash(block.text, cwd=ROOT, env=_env(), timeout=60)


@pytest.mark.parametrize("block", _blocks("server"), ids=lambda b: f"line-{b.line}")
def test_a_server_command_starts_listening_and_stops_on_ctrl_c(block: Block) -> None:
    (command,) = block.commands
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = RunningSandbox(process, ROOT, [])
    running.start_reading()
    try:
        running.read_until("listening on", within=60)
        url = re.search(r"listening on (http://\S+)", running.drain())
        assert url, running.drain()
        # The SDK's view of it: an empty webhook list, through the real client.
        from google import genai
        from google.genai import types

        client = genai.Client(
            api_key="readme", http_options=types.HttpOptions(base_url=url.group(1))
        )
        assert client.webhooks.list().webhooks in (None, [])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
    assert process.wait(30) == 0, running.drain()


# -- Python snippets, against the emulator ------------------------------------------------


@pytest.mark.parametrize("block", _blocks("python-with-client"), ids=lambda b: f"line-{b.line}")
def test_a_python_snippet_runs_against_the_emulator(block: Block) -> None:
    from google import genai
    from google.genai import types

    from gemini_webhooks.emulator import EmulatorConfig, ThreadedEmulator

    with ThreadedEmulator(EmulatorConfig(batch_seconds=600)) as emulator:
        client = genai.Client(
            api_key="readme", http_options=types.HttpOptions(base_url=emulator.base_url)
        )
        exec(compile(block.text, f"README.md:{block.line}", "exec"), {"client": client})
        assert list(client.batches.list()), "the snippet created no batch"


# -- the real control plane ----------------------------------------------------------------


@pytest.mark.real_component
@pytest.mark.late_build  # `up` runs the real node: one per machine (scripts/test)
@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", _blocks("control-plane"), ids=lambda b: f"line-{b.line}")
def test_the_control_plane_commands_build_run_and_stop_it(block: Block, tmp_path: Path) -> None:
    state = ROOT / ".control-plane"
    assert not (state / "up.pid").exists(), "a control plane is already running from .control-plane"
    env = _env(GEMINI_WEBHOOKS_SANDBOX_DIR=str(tmp_path / "sandbox"))
    up: subprocess.Popen[str] | None = None
    up_log = tmp_path / "up.log"
    outputs: list[str] = []
    try:
        for command in block.commands:
            if command == "scripts/control-plane up":
                up = subprocess.Popen(
                    ["bash", "-c", command],
                    cwd=ROOT,
                    env=env,
                    stdout=up_log.open("w"),
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
                deadline = time.monotonic() + 240
                while not (state / "up.pid").exists():
                    assert up.poll() is None, f"up exited with {up.returncode}"
                    assert time.monotonic() < deadline, "up did not come up in 240 s"
                    time.sleep(0.2)
                continue
            outputs.append(_bash(command, cwd=ROOT, env=env, timeout=600))
            if command.startswith("scripts/control-plane down"):
                assert up is not None
                assert up.wait(60) == 0
                assert "[control-plane] stopped" in up_log.read_text()
                assert not _group_alive(up.pid), "up left processes behind"
        nodes = next(o for o in outputs if "gwo-node" in o)
        assert " Ready " in nodes
    finally:
        if up is not None and up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(60)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the real-cluster e2e command ------------------------------------------------------------


@pytest.mark.parametrize("block", _blocks("real-cluster"), ids=lambda b: f"line-{b.line}")
def test_the_real_cluster_command_sets_what_the_e2e_suite_reads(block: Block) -> None:
    from tests.e2e.conftest import REAL_ENV

    text = " ".join(block.commands)
    assert "pytest tests/e2e" in text
    for name in ("KUBECONFIG", *REAL_ENV):
        assert f"{name}=" in text, f"{name} is not set by the README's command"


# -- `helm install`, done with the Helm SDK (used by the install block's shell function) ----


def _helm_install(argv: list[str]) -> int:
    import helm_python as helm
    import yaml

    if not argv or argv[0] != "install":
        print(f"helm (README test shim): only `helm install` is supported, not {argv}")
        return 2
    positional: list[str] = []
    namespace, create_namespace, values = "default", False, {}
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-n", "--namespace"):
            namespace = next(args)
        elif arg == "--create-namespace":
            create_namespace = True
        elif arg == "--set":
            values = _merge(values, helm.parse_set_string(next(args)))
        elif arg.startswith("-"):
            print(f"helm (README test shim): unsupported flag {arg}")
            return 2
        else:
            positional.append(arg)
    release, chart_path = positional
    rendered = helm.Chart.load(chart_path).render(
        values, name=release, namespace=namespace, is_install=True
    )
    documents = []
    for name, text in sorted(rendered.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            annotations = (document or {}).get("metadata", {}).get("annotations") or {}
            if document and "helm.sh/hook" not in annotations:
                documents.append(document)
    kubectl = str(VENV_BIN / "kubectl")
    if create_namespace:
        subprocess.run(
            [kubectl, "create", "namespace", namespace], check=False, capture_output=True
        )
    result = subprocess.run(
        [kubectl, "apply", "-n", namespace, "-f", "-"],
        input=yaml.safe_dump_all(documents),
        text=True,
    )
    return result.returncode


def _merge(base: dict[str, object], extra: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)  # type: ignore[arg-type]
        else:
            merged[key] = value
    return merged


if __name__ == "__main__" and sys.argv[1:2] == ["helm"]:
    sys.path.insert(0, str(ROOT))
    sys.exit(_helm_install(sys.argv[2:]))
