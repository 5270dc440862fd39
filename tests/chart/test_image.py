"""The container images: the Dockerfile's structure, read with the official BuildKit parser
(PyPI `dockerfile`), and its install steps, run for real in a clean virtualenv. The built
images themselves run in tests/chart/test_image_run.py.

No Docker engine runs here, so the build itself is replayed: the build context is assembled
exactly as `.dockerignore` filters it, and the builder stage's `RUN` lines that create and
fill the virtualenv are executed with the image paths mapped onto a temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest
import yaml

from gemini_webhooks.cli import SUBCOMMANDS, _available

pytestmark = pytest.mark.kube_independent  # alike on any API server: once

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gemini-webhook-operator"
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cc|make|cargo|rustc)\b")
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.source",
)


@dataclass
class Stage:
    name: str
    base: str
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]


def _stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for command in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if command.cmd == "FROM":
            base, _, name = command.value
            stages.append(Stage(name=name, base=base))
        elif not stages:
            if command.cmd == "ARG":
                key, _, default = command.value[0].partition("=")
                args[key] = default
        else:
            stages[-1].commands.append(command)
    return args, stages


def _labels(stage: Stage) -> dict[str, str]:
    labels: dict[str, str] = {}
    for command in stage.all("LABEL"):
        pairs = command.value
        for key, value in zip(pairs[::2], pairs[1::2], strict=True):
            labels[key] = value.strip('"')
    return labels


def _arg_default(stage: Stage, name: str) -> str | None:
    for command in stage.all("ARG"):
        key, _, default = command.value[0].partition("=")
        if key == name:
            return default
    return None


def _pyproject_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def _stage(name: str) -> Stage:
    (stage,) = [s for s in _stages()[1] if s.name == name]
    return stage


def test_image_is_built_in_stages_from_a_slim_python_base() -> None:
    args, stages = _stages()
    assert [s.name for s in stages] == [
        "builder",
        "tools-venv",
        "product-venv",
        "runtime",
        "tools",
        "product",
    ]
    assert stages[-1].name == "product", "`docker build .` without --target builds the product"
    earlier: set[str] = set()
    for stage in stages:
        if stage.base not in earlier:
            base = args.get(stage.base.strip("${}"), stage.base)
            assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
        earlier.add(stage.name)


def test_builder_stage_has_the_compilers() -> None:
    assert any(COMPILERS.search(c.value[0]) for c in _stage("builder").all("RUN"))


def test_builder_installs_with_python3_and_never_upgrades_pip() -> None:
    runs = [c.value[0] for c in _stage("builder").all("RUN")]
    assert any(re.match(r"python3 -m venv /opt/venv\b", run) for run in runs)
    assert not any("--upgrade pip" in run or "-U pip" in run for run in runs)


def test_builder_installs_the_dependencies_before_it_copies_the_sources() -> None:
    """A change to the sources then reinstalls only the project, not its dependencies."""
    steps = [(c.cmd, c.value) for c in _stage("builder").commands if c.cmd in ("COPY", "RUN")]
    dependencies = next(i for i, (cmd, v) in enumerate(steps) if "-r requirements.txt" in v[0])
    assert [v for cmd, v in steps[:dependencies] if cmd == "COPY"] == [("pyproject.toml", "./")]
    assert steps[-1] == ("RUN", ("/opt/venv/bin/pip install --no-deps /src",))


def test_product_venv_drops_the_tools_packages() -> None:
    (run,) = [c.value[0] for c in _stage("product-venv").all("RUN")]
    for package in ("emulator", "kubesandbox", "sandbox", "controlplane", "jobs", "kubectl"):
        assert re.search(rf"\brm -r\b[^&]*\b{package}\b", run), package
    assert _stage("product-venv").base == "builder"


def test_the_product_depends_on_none_of_the_tools_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tools = project["optional-dependencies"]["tools"]
    assert {"kmock", "jsonpatch"} <= {re.split(r"[<>=\[ ]", r)[0] for r in tools}
    assert not set(tools) & set(project["dependencies"])
    for stage in ("builder", "product-venv"):
        for run in _stage(stage).all("RUN"):
            assert "optional-dependencies" not in run.value[0], stage
    (install,) = _stage("tools-venv").all("RUN")
    assert '["optional-dependencies"]["tools"]' in install.value[0]
    assert _stage("tools-venv").base == "builder"


def test_final_stages_install_nothing_and_take_only_a_virtualenv() -> None:
    for name, venv_stage in (("tools", "tools-venv"), ("product", "product-venv")):
        final = _stage(name)
        assert final.base == "runtime"
        copies = final.all("COPY") + final.all("ADD")
        assert [(c.flags, c.value) for c in copies] == [
            ((f"--from={venv_stage}",), ("/opt/venv", "/opt/venv"))
        ], name
    for name in ("runtime", "tools", "product"):
        stage = _stage(name)
        assert stage.all("RUN") == [], f"{name} must not run package managers"
        assert not any(COMPILERS.search(c.original) for c in stage.commands if c.cmd != "LABEL")


def test_final_stages_run_as_a_numeric_non_root_user() -> None:
    users = _stage("runtime").all("USER")
    assert users, "no USER in the runtime stage"
    assert not _stage("tools").all("USER") and not _stage("product").all("USER")
    uid, _, gid = users[-1].value[0].partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid == "" or (gid.isdigit() and int(gid) != 0)


def test_one_entrypoint_serves_every_subcommand() -> None:
    (entrypoint,) = _stage("runtime").all("ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("gemini-webhooks",)


def test_both_images_carry_the_oci_labels_with_the_project_version() -> None:
    product = _labels(_stage("runtime")) | _labels(_stage("product"))
    tools = _labels(_stage("runtime")) | _labels(_stage("tools"))
    for labels in (product, tools):
        assert set(OCI_LABELS) <= set(labels)
        assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert (
        tools["org.opencontainers.image.title"]
        == product["org.opencontainers.image.title"] + "-tools"
    )
    assert _arg_default(_stage("runtime"), "VERSION") == _pyproject_version()


def test_chart_default_image_is_this_image_at_the_project_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == _pyproject_version()
    assert values["image"]["tag"] == "", "the tag defaults to the chart's appVersion"
    title = (_labels(_stage("runtime")) | _labels(_stage("product")))[
        "org.opencontainers.image.title"
    ]
    assert values["image"]["repository"].rsplit("/", 1)[-1] == title


# --- .dockerignore, with the moby patternmatcher's semantics -----------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.removeprefix("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif line.startswith("**", i):
                regex += ".*"
                i += 2
            elif line[i] == "*":
                regex += "[^/]*"
                i += 1
            elif line[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(line[i])
                i += 1
        patterns.append((negated, re.compile(regex + r"\Z")))
    return patterns


def _ignored(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, pattern in patterns:
        if any(pattern.match(c) for c in candidates):
            ignored = not negated
    return ignored


def _build_context(destination: Path) -> list[str]:
    patterns = _ignore_patterns()
    sent = []
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((".git/", ".venv/")) or path.is_dir():
            continue
        if _ignored(relative, patterns):
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        sent.append(relative)
    return sent


def test_dockerignore_keeps_tests_virtualenvs_and_git_out_of_the_context() -> None:
    patterns = _ignore_patterns()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "charts/x/values.yaml",
        "gemini_webhooks/__pycache__/cli.cpython-311.pyc",
        "bench/receiver/x.py",
    ):
        assert _ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "gemini_webhooks/cli.py"):
        assert not _ignored(path, patterns), path


@dataclass
class BuiltImage:
    venv: Path
    context: Path
    sent: list[str]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    """Replays the builder stage: COPY from the filtered context, then its RUN lines."""
    work = tmp_path_factory.mktemp("image")
    context, src, venv = work / "context", work / "src", work / "opt-venv"
    sent = _build_context(context)
    src.mkdir()
    builder = _stage("builder")
    python = getattr(sys, "_base_executable", sys.executable)
    for command in builder.commands:
        if command.cmd == "COPY":
            *sources, target = command.value
            for source in sources:
                origin = context / source
                assert origin.exists(), f"COPY {source}: not in the build context"
                dest = src / target.removeprefix("./")
                if origin.is_dir():
                    shutil.copytree(origin, dest, dirs_exist_ok=True)
                else:
                    dest = dest if not target.endswith("/") else dest / origin.name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, dest)
        elif command.cmd == "RUN" and ("venv" in command.value[0]):
            line = command.value[0].replace("/opt/venv", str(venv)).replace("/src", str(src))
            line = re.sub(r"^python3?\b", python, line)
            subprocess.run(line, shell=True, check=True, cwd=src, capture_output=True, timeout=240)
    yield BuiltImage(venv=venv, context=context, sent=sent)


@pytest.mark.real_component
def test_install_steps_produce_a_console_script_with_every_subcommand(
    image_venv: BuiltImage,
) -> None:
    out = subprocess.run(
        [image_venv.venv / "bin" / "gemini-webhooks", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    present = [name for name, (module, _) in SUBCOMMANDS.items() if _available(module)]
    assert present
    for name in present:
        assert name in out, f"subcommand {name!r} is in the repo but not in the image"


@pytest.mark.real_component
def test_installed_image_has_consistent_dependencies_and_no_dev_tools(
    image_venv: BuiltImage,
) -> None:
    pip = image_venv.venv / "bin" / "pip"
    subprocess.run([pip, "check"], check=True, capture_output=True, timeout=60)
    installed = subprocess.run(
        [pip, "list", "--format=freeze"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.lower()
    for dev_tool in ("pytest", "ruff", "mypy", "hypothesis"):
        assert f"\n{dev_tool}==" not in "\n" + installed, dev_tool


@pytest.mark.real_component
def test_installed_image_imports_every_component_package(image_venv: BuiltImage) -> None:
    python = image_venv.venv / "bin" / "python"
    packages = ["gemini_webhooks"] + [
        name
        for name in ("gemini_webhook_operator", "gemini_webhook_receiver")
        if any(
            (ROOT / folder / name / "__init__.py").exists() for folder in ("operator", "receiver")
        )
    ]
    code = "import importlib,sys;[importlib.import_module(p) for p in sys.argv[1:]]"
    subprocess.run(
        [python, "-c", code, *packages],
        check=True,
        capture_output=True,
        cwd=image_venv.venv,
        timeout=60,
    )


@pytest.mark.real_component
def test_product_venv_step_leaves_the_operator_and_receiver_only(
    image_venv: BuiltImage, tmp_path: Path
) -> None:
    """The product-venv stage replayed on a copy of the builder's virtualenv."""
    venv = tmp_path / "opt-venv"
    shutil.copytree(image_venv.venv, venv, symlinks=True)
    (run,) = _stage("product-venv").all("RUN")
    line = run.value[0].replace("/opt/venv", str(venv))
    subprocess.run(line, shell=True, check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own only
    out = subprocess.run(
        [python, "-m", "gemini_webhooks", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    ).stdout
    assert sorted(re.findall(r"^    (\S+)", out, re.MULTILINE)) == ["operator", "receiver"]
    gone = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print(u.find_spec('pip'), u.find_spec('kmock'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert gone == ["None", "None"]


@pytest.mark.parametrize("keep", ["0", "two", "-1"])
def test_scripts_image_refuses_a_bad_count_of_kept_builds(keep: str) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "image"), "paths"],
        env={**os.environ, "GWO_IMAGE_KEEP": keep},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"image: GWO_IMAGE_KEEP must be a positive integer, not '{keep}'\n"
