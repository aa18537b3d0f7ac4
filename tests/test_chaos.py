"""The short chaos scenarios (bench/chaos.py): 32 items through two worker processes while
workers are killed, Temporal restarts, PostgreSQL or S3 is down 20 s, 30% of the API calls fail,
or an operator terminates or resets an item. Each ends with the suite's invariants, checked
against PostgreSQL, S3 and the stand-in's log. `make chaos` runs the long ones."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.chaos import QUICK, ChaosRunner, Scenario


@pytest.fixture(scope="module")
async def runner(outage_stack: tuple[Path, dict[str, str]]) -> AsyncIterator[ChaosRunner]:
    async with ChaosRunner(*outage_stack) as chaos:
        yield chaos


@pytest.mark.parametrize("scenario", QUICK, ids=lambda scenario: scenario.name)
async def test_every_item_ends_exactly_once(runner: ChaosRunner, scenario: Scenario) -> None:
    result = await runner.run(scenario)

    broken = [name for name, held in result["invariants"].items() if not held]
    assert broken == [], json.dumps(result, indent=2, default=str)
