"""The demo's tour as tests: one GeminiWebhook through its whole life, in order.

apply -> Ready -> every event type arrives (static and dynamic) -> a rotation under traffic
verifies everything -> the metrics moved -> delete removes the remote webhook.
Each test is one step of the tour and relies on the steps before it (pytest runs them in
file order), as a user's session would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gemini_webhooks.sandbox.scenario import Scenario
from tests.e2e.conftest import System

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tour(system: System) -> AsyncIterator[Scenario]:
    scenario = await system.scenario("tour")
    yield scenario
    await system.kubectl(
        "delete",
        "geminiwebhook",
        scenario.name,
        "-n",
        system.namespace,
        "--ignore-not-found",
        "--wait=false",
        check=False,
    )


async def test_applying_the_example_creates_the_resource(tour: Scenario) -> None:
    await tour.apply()
    assert await tour.resource() is not None


async def test_the_resource_becomes_ready_with_a_registered_webhook_and_a_running_receiver(
    tour: Scenario,
) -> None:
    await tour.wait_ready()
    assert tour.webhook_id
    assert await tour.signing_secrets() == 1


@pytest.mark.sandbox_only
async def test_every_subscribable_event_type_arrives_verified_and_routed(tour: Scenario) -> None:
    await tour.static_events()


@pytest.mark.sandbox_only
async def test_every_event_type_arrives_through_a_dynamic_webhook_with_its_metadata(
    tour: Scenario,
) -> None:
    await tour.dynamic_events()


@pytest.mark.sandbox_only
async def test_a_rotation_under_traffic_has_zero_verification_failures(tour: Scenario) -> None:
    await tour.rotate_under_traffic()


@pytest.mark.sandbox_only
async def test_the_receiver_and_operator_metrics_moved(tour: Scenario) -> None:
    await tour.metrics_moved()


async def test_deleting_the_resource_deletes_the_remote_webhook(tour: Scenario) -> None:
    await tour.delete()
