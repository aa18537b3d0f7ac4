"""The budget rule (workflows/budget.py): what the job's workflow and `resume` decide by."""

from __future__ import annotations

from workflows.budget import UNLIMITED, budget_reached_reason, items_within_budget, projected_item_cost


def test_an_item_starts_only_while_spent_in_flight_and_it_fit_the_budget() -> None:
    # $1.00 budget, items projected at $0.30: three fit with nothing spent, fewer as spending grows.
    assert items_within_budget(1.0, 0.0, 0, 0.3) == 3
    assert items_within_budget(1.0, 0.0, 2, 0.3) == 1
    assert items_within_budget(1.0, 0.45, 1, 0.3) == 0
    assert items_within_budget(1.0, 0.9, 0, 0.3) == 0  # spent + the next one would pass it
    assert items_within_budget(1.0, 1.2, 0, 0.3) == 0  # never negative, also past the budget
    # Exactly at the budget still fits: summed float costs must not cost an item its start.
    assert items_within_budget(0.3, 0.1 + 0.1, 0, 0.1) == 1


def test_no_budget_or_no_projection_limits_nothing() -> None:
    assert items_within_budget(None, 5.0, 100, 0.3) == UNLIMITED
    assert items_within_budget(1.0, 0.0, 0, 0.0) == UNLIMITED


def test_the_projection_is_the_estimate_or_the_measured_mean_whichever_is_higher() -> None:
    assert projected_item_cost(0.02, 0.0, 0) == 0.02  # nothing ran yet
    assert projected_item_cost(0.02, 0.09, 3) == 0.03  # items cost more than estimated
    assert projected_item_cost(0.02, 0.01, 5) == 0.02  # cheap failures do not lower it


def test_the_reason_names_what_was_spent_of_what_budget() -> None:
    assert budget_reached_reason(0.01188, 0.0178) == "budget reached: $0.0119 of $0.0178"
