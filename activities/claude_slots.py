"""The Claude worker takes a call from its task queue only once the call has a turn.

Calls used to wait for their turns inside the worker: every call slot took the queue's next turn
when its task arrived, first come, first served, so the calls a worker had already taken held
the next turns, and a job launched behind them waited for all of them (with 400 slots at 120
calls/min, 54 s for a 4-item job behind three jobs of 100). Here a slot is reserved, and the
worker polls for a call, only shortly before the turn it booked: the calls that have no turn
yet wait in Temporal's task queue, which hands them out fairly between jobs (their fairness
key), and a small job's call is the next one out whatever the backlog. The turn reserved with
the slot is the call's (activities/claude_pacing.py `CallPacer.turn_for_call` hands it over).

Slots are not a tuning knob: a call in flight holds one, so the calls in flight follow the
turns and the latency (calls per minute x seconds per call / 60) up to a cap that only bounds
a worker's memory."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable

from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)

from activities.claude_pacing import CallPacer, TurnTooFar
from brightrun.logs import get_logger

log = get_logger(__name__)

# A reservation books the queue's next turn up to this far ahead, then sleeps until shortly
# before it: one database round trip a turn, however busy the queue (a reservation per poller
# and worker books ahead, each bound to no job until its poll).
BOOKING_HORIZON_S = 10.0
# It polls for its call this long before the turn: time for the poll to hand over a waiting call
# and for the call to reach its turn. No turn is booked sooner.
CALL_READY_S = 0.25
# Past the horizon, a reservation looks again at least this much later (with jitter, so the
# pollers of many workers do not ask at once).
MIN_RECHECK_S = 0.05
# A PostgreSQL outage (or any failure to take a turn) holds reservations: no call goes out
# without a turn, and none fails for it. They try again with this backoff.
OUTAGE_RETRY_FIRST_S = 1.0
OUTAGE_RETRY_CAP_S = 15.0


class TurnPermit(SlotPermit):
    """A slot with the turn (time.monotonic()) taken for the call it will get."""

    def __init__(self, turn_at: float) -> None:
        super().__init__()
        self.turn_at = turn_at


class CallSlots(CustomSlotSupplier):
    """The Claude worker's activity slots: at most `max_calls` reserved or in use, each reserved
    with the queue's next turn. The worker calls these methods from its event loop and from the
    core's threads, so the count is guarded by a lock and waiters are woken on their loop."""

    def __init__(self, pacer: CallPacer, max_calls: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._pacer = pacer
        self._max_calls = max_calls
        self._clock = clock
        self._lock = threading.Lock()
        self._held = 0  # reserved or in use
        self._freed: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        await self._hold_one()
        try:
            return TurnPermit(turn_at=await self._next_turn())
        except BaseException:  # cancelled while waiting: the slot was never handed out
            self._release_one()
            raise

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        """Eager tasks would skip the turn: none are taken (the queue's poll hands them out)."""
        return None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        if isinstance(ctx.permit, TurnPermit):
            self._pacer.hand_over(ctx.permit.turn_at)

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        self._release_one()

    async def _hold_one(self) -> None:
        while True:
            with self._lock:
                if self._held < self._max_calls:
                    self._held += 1
                    return
                freed = asyncio.Event()
                self._freed.append((asyncio.get_running_loop(), freed))
            await freed.wait()

    def _release_one(self) -> None:
        with self._lock:
            self._held -= 1
            waiters, self._freed = self._freed, []
        for loop, freed in waiters:
            loop.call_soon_threadsafe(freed.set)

    async def _next_turn(self) -> float:
        """The queue's next turn, as a time.monotonic() value, once it is CALL_READY_S away;
        through a PostgreSQL outage, however long."""
        outage_delay = OUTAGE_RETRY_FIRST_S
        while True:
            try:
                starts_in = await self._pacer.take_turn(max_wait_s=BOOKING_HORIZON_S, min_lead_s=CALL_READY_S)
            except TurnTooFar as exc:
                await asyncio.sleep(max(MIN_RECHECK_S, exc.wait_s - BOOKING_HORIZON_S) * random.uniform(1.0, 1.2))
                continue
            except Exception as exc:  # noqa: BLE001  # a reservation that raises is retried at once, in a loop
                log.warning(
                    "no turn for a Claude call yet: trying again",
                    error=f"{exc.__class__.__name__}: {exc}",
                    retry_in_s=outage_delay,
                )
                await asyncio.sleep(outage_delay)
                outage_delay = min(outage_delay * 2, OUTAGE_RETRY_CAP_S)
                continue
            turn_at = self._clock() + starts_in
            await asyncio.sleep(max(0.0, starts_in - CALL_READY_S))
            return turn_at
