"""The turns Claude calls take at the calls-per-minute limit, from the real database."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from activities.claude_pacing import WINDOW_MARGIN_S, CallPacer, TurnTooFar

TURN_S = 2.0  # 30 calls per minute
# The database's clock moves on between a turn's taking and the next (a few ms here).
CLOCK_SLACK_S = 0.5


async def test_turns_are_a_gap_apart_whoever_takes_them(sessions: async_sessionmaker) -> None:
    queue = f"pacing-{uuid.uuid4()}"
    pacers = [CallPacer(sessions, queue, 60 / TURN_S) for _ in range(2)]  # as in two workers

    starts = await asyncio.gather(*(pacers[n % 2].take_turn(max_wait_s=60) for n in range(5)))

    # One at once, then one a turn after another, whichever worker and order the database saw.
    assert sorted(starts) == pytest.approx([n * TURN_S for n in range(5)], abs=CLOCK_SLACK_S)


async def test_a_turn_further_away_than_the_call_can_wait_is_not_taken(sessions: async_sessionmaker) -> None:
    pacer = CallPacer(sessions, f"pacing-{uuid.uuid4()}", 60 / TURN_S)
    assert await pacer.take_turn(max_wait_s=60) == pytest.approx(0, abs=CLOCK_SLACK_S)
    assert await pacer.take_turn(max_wait_s=60) == pytest.approx(TURN_S, abs=CLOCK_SLACK_S)

    with pytest.raises(TurnTooFar) as too_far:
        await pacer.take_turn(max_wait_s=1)

    assert too_far.value.wait_s == pytest.approx(2 * TURN_S, abs=CLOCK_SLACK_S)
    # The refused call took nothing: the next call gets the turn it would have had.
    assert await pacer.take_turn(max_wait_s=60) == pytest.approx(2 * TURN_S, abs=CLOCK_SLACK_S)


async def test_no_60_s_window_holds_more_calls_than_the_limit_though_arrivals_jitter(sessions: async_sessionmaker) -> None:
    calls_per_minute = 60
    pacer = CallPacer(sessions, f"pacing-{uuid.uuid4()}", calls_per_minute)

    starts = [time.time() + await pacer.take_turn(max_wait_s=120) for _ in range(calls_per_minute + 1)]

    # The call after a minute's worth starts the margin an arrival may be late or early more than
    # 60 s after the first (each start read off this clock within a few ms of the database's).
    assert starts[-1] - starts[0] == pytest.approx(60 + WINDOW_MARGIN_S, abs=0.03)
