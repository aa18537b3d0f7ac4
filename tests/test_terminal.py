"""The shared table renderer: what it leaves out, wraps and keeps at a terminal's width."""

from __future__ import annotations

import io

from rich.console import Console

from brightrun.terminal import Column, render_table

COLUMNS = (
    Column("id"), Column("status"), Column("error", 1, wrap=True), Column("persona", 2, wrap=True),
    Column("path", 3),
)
MESSAGE = "Claude API 400: messages: prompt is too long for this model (invalid_request_error)"
ROWS = [["726efc82", "failed", MESSAGE, "Maria Gonzalez", "conversations/local-user/726efc82/final.json"]]


def rendered(width: int, wide: bool = False) -> list[str]:
    out = io.StringIO()
    render_table(Console(file=out, width=width), COLUMNS, ROWS, wide)
    return out.getvalue().splitlines()


def test_a_narrow_terminal_loses_the_least_useful_columns_and_wraps_text_without_cutting_it() -> None:
    lines = rendered(60)

    assert lines[0].split() == ["id", "status", "error", "persona"]
    assert max(len(line) for line in lines) <= 60
    assert lines[1].split()[:2] == ["726efc82", "failed"]
    shown = [word for line in lines[1:] for word in line.split()]
    assert set(MESSAGE.split()) <= set(shown) and "…" not in "".join(lines)
    assert len(lines) > 2, "the message wraps"


def test_wide_keeps_every_column_at_full_width() -> None:
    lines = rendered(60, wide=True)

    assert lines[0].split() == ["id", "status", "error", "persona", "path"]
    assert lines[1].split() == ["726efc82", "failed", *MESSAGE.split(), "Maria", "Gonzalez", ROWS[0][4]]


def test_a_left_out_column_comes_back_narrow_when_it_fits_beside_the_others() -> None:
    lines = rendered(30)

    assert lines[0].split() == ["id", "status", "error"], "error before persona: it matters more"
    assert lines[1].split() == ["726efc82", "failed", "Claude", "API"]
    assert max(len(line) for line in lines) <= 30


def test_only_the_columns_that_must_stay_are_left_when_nothing_else_fits() -> None:
    lines = rendered(24)

    assert lines[0].split() == ["id", "status"]
    assert lines[1].split() == ["726efc82", "failed"]
