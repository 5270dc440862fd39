"""Which suites each `GWO_KUBE` mode runs (`tests/fixtures/control_plane.misplaced`): a
suite collected where it cannot run is refused at collection, with what to run instead."""

from __future__ import annotations

from tests.fixtures.control_plane import misplaced

E2E = "tests/e2e/test_tour.py::test_applying_the_example_creates_the_resource"
OPERATOR = "tests/operator/test_rbac_enforced.py::test_a_missing_rule"


def test_the_sandbox_runs_every_suite() -> None:
    assert misplaced("sandbox", [E2E, OPERATOR]) is None


def test_the_real_control_plane_refuses_tests_e2e_and_names_the_real_node() -> None:
    refused = misplaced("real", [OPERATOR, E2E])
    assert refused is not None
    assert "GWO_KUBE=real-node pytest tests/e2e" in refused
    assert "--ignore=tests/e2e" in refused
    assert misplaced("real", [OPERATOR]) is None


def test_the_real_node_runs_tests_e2e_only_and_names_what_it_refused() -> None:
    assert misplaced("real-node", [E2E]) is None
    refused = misplaced("real-node", [E2E, OPERATOR])
    assert refused is not None
    assert "tests/operator/test_rbac_enforced.py" in refused
    assert "GWO_KUBE=real" in refused
