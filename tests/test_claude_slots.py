"""The Claude worker's slots: one is reserved once the queue's next turn is near, and the call
that gets it takes that turn (activities/claude_slots.py), on the real database."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.worker import SlotMarkUsedContext, SlotReleaseContext, SlotReserveContext

from activities import claude_slots
from activities.claude_pacing import CallPacer
from activities.claude_slots import CALL_READY_S, CallSlots, TurnPermit
from brightrun.settings import Settings
from models.enums import Tier

TURN_S = 1.0  # 60 calls per minute
CLOCK_SLACK_S = 0.3
RESERVE = cast(SlotReserveContext, SimpleNamespace(slot_type="activity", task_queue="q"))


def _pacer(sessions: async_sessionmaker) -> CallPacer:
    return CallPacer(sessions, f"slots-{uuid.uuid4()}", 60 / TURN_S)


async def _reserve(slots: CallSlots) -> tuple[TurnPermit, float]:
    """The permit, and when (time.monotonic()) it was handed out."""
    permit = await slots.reserve_slot(RESERVE)
    assert isinstance(permit, TurnPermit)
    return permit, time.monotonic()


def _used(permit: TurnPermit) -> SlotMarkUsedContext:
    return cast(SlotMarkUsedContext, SimpleNamespace(slot_info=None, permit=permit))


async def test_slots_are_reserved_a_turn_apart_each_just_before_its_turn(sessions: async_sessionmaker) -> None:
    slots = CallSlots(_pacer(sessions), max_calls=10)
    booked_at = time.monotonic()

    reserved = sorted(await asyncio.gather(*(_reserve(slots) for _ in range(3))), key=lambda r: r[0].turn_at)

    turns = [permit.turn_at for permit, _ in reserved]
    assert [b - a for a, b in itertools.pairwise(turns)] == pytest.approx([TURN_S, TURN_S], abs=CLOCK_SLACK_S)
    # The first turn leaves the poll and the call time to reach it.
    assert turns[0] - booked_at == pytest.approx(CALL_READY_S, abs=0.1)
    # The worker polls a call for a slot only as its turn comes.
    for permit, handed_out_at in reserved:
        assert permit.turn_at - CALL_READY_S - 0.05 <= handed_out_at <= permit.turn_at


async def test_no_slot_beyond_the_cap_until_one_is_released(sessions: async_sessionmaker) -> None:
    slots = CallSlots(CallPacer(sessions, f"slots-{uuid.uuid4()}", 6000), max_calls=2)
    first, _ = await _reserve(slots)
    await _reserve(slots)

    third = asyncio.create_task(_reserve(slots))
    await asyncio.sleep(0)  # it runs up to its first wait: a slot past the cap would count now
    assert not third.done() and slots.held == 2

    slots.release_slot(cast(SlotReleaseContext, SimpleNamespace(slot_info=None, permit=first)))
    await asyncio.wait_for(third, timeout=5)
    assert slots.held == 2


async def test_a_turn_is_booked_no_sooner_than_the_lead_asked(sessions: async_sessionmaker) -> None:
    pacer = _pacer(sessions)

    assert await pacer.take_turn(max_wait_s=60, min_lead_s=0.5) == pytest.approx(0.5, abs=0.1)
    assert await pacer.take_turn(max_wait_s=60, min_lead_s=0.5) == pytest.approx(0.5 + TURN_S, abs=0.1)


async def test_a_call_takes_the_turn_its_slot_reserved_without_asking_the_database(sessions: async_sessionmaker) -> None:
    pacer = _pacer(sessions)
    slots = CallSlots(pacer, max_calls=10)
    permit = TurnPermit(turn_at=time.monotonic() + 0.5)

    slots.mark_slot_used(_used(permit))

    assert await pacer.turn_for_call(max_wait_s=60) == pytest.approx(0.5, abs=0.1)
    # The queue's turns were not touched: its first turn is still free.
    assert await pacer.take_turn(max_wait_s=60) == pytest.approx(0, abs=CLOCK_SLACK_S)


async def test_a_call_later_than_its_slots_turn_takes_a_turn_of_its_own(sessions: async_sessionmaker) -> None:
    pacer = _pacer(sessions)
    CallSlots(pacer, max_calls=10).mark_slot_used(_used(TurnPermit(turn_at=time.monotonic() - 1)))

    # Sent now, the late turn could put one call too many in a 60 s window: the queue's next is taken.
    assert await pacer.turn_for_call(max_wait_s=60) == pytest.approx(0, abs=CLOCK_SLACK_S)
    assert await pacer.take_turn(max_wait_s=60) == pytest.approx(TURN_S, abs=CLOCK_SLACK_S)


class _DatabaseDown(CallPacer):
    """A pacer whose database refuses connections `failures` times, then answers."""

    def __init__(self, sessions: async_sessionmaker, failures: int) -> None:
        super().__init__(sessions, f"slots-{uuid.uuid4()}", 60)
        self.failures = failures

    async def take_turn(self, max_wait_s: float, min_lead_s: float = 0.0) -> float:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        return await super().take_turn(max_wait_s, min_lead_s)


async def test_a_reservation_waits_through_a_database_outage(sessions: async_sessionmaker, monkeypatch: Any) -> None:
    monkeypatch.setattr(claude_slots, "OUTAGE_RETRY_FIRST_S", 0.01)
    pacer = _DatabaseDown(sessions, failures=3)

    permit, _ = await asyncio.wait_for(_reserve(CallSlots(pacer, max_calls=1)), timeout=10)

    assert pacer.failures == 0 and permit.turn_at <= time.monotonic() + CALL_READY_S


def test_a_workers_cap_on_calls_in_flight_follows_the_rate_unless_set() -> None:
    settings = Settings(claude_calls_per_minute=120)
    slowest_s = max(settings.claude_timeout_s(tier) for tier in Tier)

    # Every call the rate lets start while the slowest one lasts: no call waits for a slot.
    assert settings.claude_max_calls_in_flight() == math.ceil(120 * slowest_s / 60)
    assert Settings(claude_calls_per_minute=120, claude_max_concurrent_calls=7).claude_max_calls_in_flight() == 7
