"""Suite-wide rules.

- A skipped test fails the run: CI must not pass by skipping a real-component test.
  The one exception: tests marked `sandbox_only` (they need the Kubernetes sandbox's fault
  injection or the emulator's control API) skip when KUBECONFIG points at a real cluster.
- Shared fixtures live in `tests/fixtures/` and are registered below.
- `GWO_KUBE=real`: the session runs on a real control plane (etcd, kube-apiserver,
  kube-controller-manager and kube-scheduler, no node: no Pod runs there;
  `tests/fixtures/control_plane.py`), started once before collection; `KUBECONFIG` then
  names its admin, and operators run as the chart's ServiceAccount. Tests marked
  `real_cluster_only` run only there (they are deselected, not skipped, on the sandbox);
  tests marked `kube_independent` (the images built and run, pure decisions) only on the
  sandbox, since they run alike on both.
- `GWO_KUBE=real-node`: tests/e2e only, the session's sandbox on its own control plane
  and real node (tests/e2e/conftest.py); counts as a real cluster for the markers and
  skips above. Any other suite collected with it, or tests/e2e with `GWO_KUBE=real`, is
  refused at collection (`control_plane.misplaced`).
- `scripts/test` runs the suites with pytest-xdist (`-n`, whole files per worker: module
  fixtures and loops stay in one process); with `GWO_KUBE=real` each worker starts its own
  control plane. Tests on a real node (`late_build`) run in one process, one at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.fixtures.control_plane import (
    MODE_ENV,
    SessionCluster,
    misplaced,
    real_mode,
    real_node_mode,
)

pytest_plugins: list[str] = [
    "tests.fixtures.emulator",
    "tests.fixtures.redis",
    "tests.fixtures.kube",
    "tests.fixtures.operator",
    "tests.fixtures.real_node",
    "tests.fixtures.cluster_proxy",
]

_session_cluster: SessionCluster | None = None


def real_cluster() -> bool:
    return bool(os.environ.get("KUBECONFIG")) or real_node_mode()


def _xdist_controller(config: pytest.Config) -> bool:
    """Under pytest-xdist (`-n N`), the process that only hands tests to its workers."""
    return bool(config.getoption("numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    global _session_cluster
    # One control plane per process that runs tests: with `-n N`, each worker has its own
    # (the tests share namespaces such as `default`, so workers must not share one).
    if real_mode() and _session_cluster is None and not _xdist_controller(config):
        root = Path(tempfile.mkdtemp(prefix="gwo-real-kube-"))
        _session_cluster = SessionCluster(root)
        try:
            _session_cluster.start()
        except BaseException:
            _session_cluster.stop()
            raise


def pytest_unconfigure(config: pytest.Config) -> None:
    global _session_cluster
    if _session_cluster is not None:
        _session_cluster.stop()
        _session_cluster = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    refused = misplaced(os.environ.get(MODE_ENV, "sandbox"), (item.nodeid for item in items))
    if refused:
        raise pytest.UsageError(refused)
    # On a real cluster, what runs alike on any API server ran in the sandbox's run already;
    # on the sandbox, what needs a real API server cannot run.
    unwanted = "kube_independent" if real_cluster() else "real_cluster_only"
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker(unwanted) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    if real_cluster() and item.get_closest_marker("sandbox_only") is not None:
        return
    if os.environ.get("GWO_ALLOW_SKIPS") == "1":
        return
    report.outcome = "failed"
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.longrepr = f"skipped tests fail this suite (set GWO_ALLOW_SKIPS=1 locally): {reason}"
