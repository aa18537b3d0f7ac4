"""Claude calls paced evenly at the configured calls per minute, across every worker of a Claude
task queue.

Temporal's own task queue rate limit is split evenly among the queue's partitions (four by
default), each with its own backlog: near the end of a run, once one partition's backlog has run
out, its share of the limit goes unused (measured: a 14-call backlog went out at one call per 2 s
at 120/min), and with a single partition the dev server let 3 calls through at once. A turn taken
from one database row per queue is exact for any number of workers and partitions: each call
starts at least 60/calls_per_minute seconds after the one before it, so no 60 s window holds more
than the limit, and a backlog goes out at the full rate to its last call."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# Calls arrive a few ms off their turns (event loop, network), so turns exactly 60/limit apart put
# limit + 1 arrivals in some 60 s windows (measured: 121 at 120/min, as for curator and a plain
# script). Each minute's turns are spread over this much longer: windows hold at most the limit
# while arrival jitter stays below it, for 0.17% of the rate.
WINDOW_MARGIN_S = 0.1

# The queue's next free start, at least `min_lead_s` from now, moves one gap further; a turn
# further away than the call can wait is not taken (it would be wasted), and the row says how far
# away the next one is.
_TAKE_TURN = text("""
    INSERT INTO claude_call_pacing AS pacing (task_queue, next_call_at)
    VALUES (:task_queue, clock_timestamp() + make_interval(secs => CAST(:min_lead_s AS float8) + :gap_s))
    ON CONFLICT (task_queue) DO UPDATE
        SET next_call_at = GREATEST(pacing.next_call_at, clock_timestamp() + make_interval(secs => :min_lead_s))
            + make_interval(secs => :gap_s)
        WHERE GREATEST(pacing.next_call_at, clock_timestamp() + make_interval(secs => :min_lead_s))
            <= clock_timestamp() + make_interval(secs => :max_wait_s)
    RETURNING EXTRACT(EPOCH FROM pacing.next_call_at - clock_timestamp())::float8 - :gap_s
""")
_NEXT_FREE_IN = text(
    "SELECT EXTRACT(EPOCH FROM next_call_at - clock_timestamp())::float8 FROM claude_call_pacing WHERE task_queue = :task_queue"
)


class TurnTooFar(Exception):
    """The queue's next free turn comes later than the call could start."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"the next turn at the calls-per-minute limit is {wait_s:.0f} s away")
        self.wait_s = wait_s


# A turn handed over by the worker's slot (activities/claude_slots.py) is kept for a call that
# starts at most this late: a call later than its turn by the window margin could put one call
# too many in a 60 s window. A later call takes a turn of its own.
HANDED_OVER_TURN_GRACE_S = WINDOW_MARGIN_S / 2


class CallPacer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        task_queue: str,
        calls_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._task_queue = task_queue
        self._gap_s = (60.0 + WINDOW_MARGIN_S) / calls_per_minute
        self._clock = clock
        # Turns (clock values) the worker's slots took, earliest first; the worker's core hands
        # them over from its own threads.
        self._handed_over: list[float] = []
        self._handed_over_lock = threading.Lock()

    def hand_over(self, turn_at: float) -> None:
        """A turn taken with the slot a call just got: the call's (any call of this worker's,
        as turns are alike). Turns no call took in time are dropped here (a retry that only
        stores its paid reply takes none)."""
        stale_before = self._clock() - HANDED_OVER_TURN_GRACE_S
        with self._handed_over_lock:
            del self._handed_over[: bisect.bisect_left(self._handed_over, stale_before)]
            bisect.insort(self._handed_over, turn_at)

    async def turn_for_call(self, max_wait_s: float) -> float:
        """Seconds from now to the call's turn: a turn handed over by its slot, else the queue's
        next one (take_turn)."""
        now = self._clock()
        with self._handed_over_lock:
            while self._handed_over:
                turn_at = self._handed_over.pop(0)
                if turn_at >= now - HANDED_OVER_TURN_GRACE_S:
                    return max(0.0, turn_at - now)
        return await self.take_turn(max_wait_s)

    async def take_turn(self, max_wait_s: float, min_lead_s: float = 0.0) -> float:
        """Takes the queue's next free turn, at least min_lead_s from now; returns how many
        seconds from now it starts. Raises TurnTooFar, taking nothing, when that is more than
        max_wait_s away."""
        params = {
            "task_queue": self._task_queue,
            "gap_s": self._gap_s,
            "max_wait_s": max(0.0, max_wait_s),
            "min_lead_s": min_lead_s,
        }
        async with self._sessions.begin() as session:
            starts_in = await session.scalar(_TAKE_TURN, params)
            if starts_in is None:
                raise TurnTooFar(await session.scalar(_NEXT_FREE_IN, params) or 0.0)
        return max(0.0, starts_in)
