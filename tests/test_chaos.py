"""The short chaos scenarios (bench/chaos.py): 32 items through two worker processes while
workers are killed, Temporal restarts, PostgreSQL or S3 is down 20 s, 30% of the API calls fail,
or an operator terminates or resets an item. Each ends with the suite's invariants, checked
against PostgreSQL, S3 and the stand-in's log. `make chaos` runs the long ones."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.chaos import FULL, QUICK, SCENARIOS, SETTINGS, ChaosRunner, Scenario
from brightrun.settings import Settings
from models.enums import Tier


@pytest.fixture(scope="module")
async def runner(outage_stack: tuple[Path, dict[str, str]]) -> AsyncIterator[ChaosRunner]:
    async with ChaosRunner(*outage_stack) as chaos:
        yield chaos


@pytest.mark.parametrize("scenario", QUICK, ids=lambda scenario: scenario.name)
async def test_every_item_ends_exactly_once(runner: ChaosRunner, scenario: Scenario) -> None:
    result = await runner.run(scenario)

    broken = [name for name, held in result["invariants"].items() if not held]
    assert broken == [], json.dumps(result, indent=2, default=str)


def test_the_long_postgresql_outage_outlasts_every_attempt_a_call_could_spend_waiting() -> None:
    """`make chaos` runs it (over an hour); the mechanism is proven in seconds by
    tests/test_claude_attempts.py. Capped attempts that each wait out their whole timeout would
    have given up before the outage ends, so 0 failed items means waiting spent no attempt."""
    scenario = SCENARIOS["postgres_down_60min"]
    settings = Settings.model_validate(SETTINGS)

    assert scenario in FULL and scenario.failed_allowed == 0
    assert scenario.outage_s > settings.claude_max_attempts * settings.claude_attempt_timeout_s(Tier.TEMPLATE)
