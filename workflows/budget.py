"""The budget rule of `launch --max-cost` (docs/cost.md), shared by the job's workflow, which
applies it, and `resume`, which says before resuming whether the job would pause again.

An item may start only while what the job spent, plus every item in flight and the new one at
the projected item cost, stays within the budget. The projected item cost is the larger of the
estimate's (made at launch) and the mean cost of the items that ran so far, so neither an
optimistic estimate nor a run of cheap failures lets the job start what it cannot pay for."""

from __future__ import annotations

import math

# Items the budget lets start when the job has none (or the item cost is unknown): no limit.
UNLIMITED = 2**31
# Rounding of summed float costs must not cost an item its start.
_EPSILON_USD = 1e-9


def projected_item_cost(estimated_usd: float, spent_usd: float, items_ran: int) -> float:
    """What the next item is expected to cost: the estimate, or the mean so far if higher."""
    measured = spent_usd / items_ran if items_ran else 0.0
    return max(estimated_usd, measured)


def items_within_budget(max_cost_usd: float | None, spent_usd: float, in_flight: int, item_cost_usd: float) -> int:
    """How many more items may start now."""
    if max_cost_usd is None or item_cost_usd <= 0:
        return UNLIMITED
    affordable = math.floor((max_cost_usd - spent_usd + _EPSILON_USD) / item_cost_usd)
    return max(0, affordable - in_flight)


def budget_reached_reason(spent_usd: float, max_cost_usd: float) -> str:
    """The job's pause reason, as `status` shows it."""
    return f"budget reached: ${spent_usd:.4f} of ${max_cost_usd:.4f}"
