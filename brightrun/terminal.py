"""Tables that fit the terminal: every command's listing goes through `render_table`.

Each column has a priority. When the rows are wider than the terminal, the least important
columns are left out first and the wrappable ones (names, messages) wrap at word boundaries;
headers are never cut and no value is truncated with an ellipsis. `wide` keeps every column at
its full width (the terminal wraps the lines, or a pager scrolls them).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

# Spaces between two columns.
GAP = 2
# A wrapped column keeps at least this width (or its header's); columns are left out until each
# wrapped one has room for this much of a line (a message wrapped at 12 is a column of words).
WRAP_MIN = 12
WRAP_COMFORTABLE = 24


@dataclass(frozen=True)
class Column:
    header: str
    # 0: always shown; higher numbers are left out first when the terminal is too narrow.
    priority: int = 0
    # Free text that may wrap over several lines rather than be left out.
    wrap: bool = False
    justify: Literal["left", "right"] = "left"


def _natural_width(column: Column, cells: Sequence[str]) -> int:
    lines = [line for cell in cells for line in cell.splitlines()]
    return max([cell_len(column.header), *(cell_len(line) for line in lines)])


def _narrowest(column: Column, natural: int) -> int:
    """A wrapped column's narrowest width: WRAP_MIN (longer words break), never under its header."""
    return min(natural, max(len(column.header), WRAP_MIN)) if column.wrap else natural


def fit_columns(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> dict[int, int]:
    """The columns to show (by index) and each one's width, within `width` (None: all, at full width)."""
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    natural = [_natural_width(column, cells[i]) for i, column in enumerate(columns)]
    if width is None:
        return dict(enumerate(natural))
    narrowest = [_narrowest(column, natural[i]) for i, column in enumerate(columns)]
    comfortable = [min(natural[i], max(narrowest[i], WRAP_COMFORTABLE)) for i in range(len(columns))]
    shown = list(range(len(columns)))

    def total(widths: Sequence[int]) -> int:
        return sum(widths[i] for i in shown) + GAP * (len(shown) - 1)

    # Leave out the least important columns (the rightmost of a priority first) until the rest fit.
    while total(comfortable) > width:
        droppable = [i for i in shown if columns[i].priority > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    # Take back, most important first, a left-out column that fits at its narrowest beside the
    # others at their comfortable widths (a short error column leaves room for the arc).
    reserved = {i: comfortable[i] for i in shown}
    for i in sorted(set(range(len(columns))) - set(shown), key=lambda i: (columns[i].priority, i)):
        if sum(reserved.values()) + narrowest[i] + GAP * len(reserved) <= width:
            reserved[i] = narrowest[i]
            shown = sorted(reserved)
    widths = {i: narrowest[i] for i in shown}
    # The room left goes to the wrapped columns, in order, each up to its natural width.
    room = width - total(narrowest)
    for i in shown:
        grow = min(max(room, 0), natural[i] - widths[i])
        widths[i] += grow
        room -= grow
    return widths


def _cell_lines(text: str, width: int) -> list[str]:
    """A cell's lines at its column's width: wrapped at spaces, a longer word broken."""
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        if cell_len(line) <= width:
            lines.append(line)
        else:
            lines.extend(textwrap.wrap(line, width, break_on_hyphens=False) or [""])
    return lines


def _lines(columns: Sequence[Column], widths: dict[int, int], cells: Sequence[str]) -> list[str]:
    """One row as the terminal lines it takes, its cells side by side, GAP spaces apart."""
    wrapped = {i: _cell_lines(cells[i], width) for i, width in widths.items()}
    height = max(len(lines) for lines in wrapped.values())
    lines = []
    for n in range(height):
        parts = []
        for i, width in widths.items():
            text = wrapped[i][n] if n < len(wrapped[i]) else ""
            padding = " " * max(width - cell_len(text), 0)
            parts.append(padding + text if columns[i].justify == "right" else text + padding)
        lines.append((" " * GAP).join(parts).rstrip())
    return lines


def render_table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    wide: bool = False,
    title: str | None = None,
    show_header: bool = True,
) -> None:
    """Print the rows under their headers, fitted to the console's width unless `wide`. Written
    as plain lines (a rich Table took 7 s for the 10,000 rows of a large job's items)."""
    widths = fit_columns(columns, rows, None if wide else console.width)
    if title:
        console.print(Text(title, style="italic"), soft_wrap=True)
    if show_header:
        header = _lines(columns, widths, [column.header for column in columns])
        console.print(Text("\n".join(header), style="bold"), soft_wrap=True)
    body = [line for row in rows for line in _lines(columns, widths, row)]
    if body:
        console.file.write("\n".join(body) + "\n")
        console.file.flush()


def render_fields(console: Console, fields: Sequence[tuple[str, str]], wide: bool = False) -> None:
    """Label and value pairs, one a line; a long value wraps under itself."""
    render_table(console, [Column(""), Column("", wrap=True)], [list(field) for field in fields], wide, show_header=False)
