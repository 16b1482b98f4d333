"""The live steps table: the newest logged steps that fit, newest at the bottom.

A plain widget that renders fixed-width text lines once per update. Textual's DataTable re-lays
out the screen every time it grows and a Rich Table re-measures every cell: on a 2-core machine
each cost several percent of the training throughput (the UI thread shares the GIL and the cores
with the training thread).

The columns are those that fit the widget's width: the least useful are left out first (positions/s,
the epoch ETA, aux loss, ...) and come back when the table is wider; a dim last line then says what
is hidden and that every value is in the run's metrics.jsonl. No line is ever wider than the widget.
Up/Down/PageUp/PageDown/Home/End scroll back through the last MAX_ROWS steps.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

from minimind.events import StepLogged
from minimind.formatting import format_duration

MAX_ROWS = 1000  # the full history is in metrics.jsonl


@dataclass(frozen=True)
class Column:
    label: str
    width: int
    keep: int  # the lower, the sooner it is left out when the table is narrow
    cell: Callable[[StepLogged, int], str]  # (event, width) -> text of at most width characters


def fit_number(x: float, width: int, decimals: int) -> str:
    """x with as many of `decimals` as fit in width, else in e-notation; never wider than width."""
    if not math.isfinite(x):
        return str(x)[:width]
    for d in range(decimals, -1, -1):
        text = f"{x:.{d}f}"
        if len(text) <= width:
            return text
    for d in (2, 1, 0):
        text = f"{x:.{d}e}"
        if len(text) <= width:
            return text
    return "…"


def fit_count(x: float, width: int) -> str:
    """A rate such as tokens/s: 12,345 / 123k / 1.23M, never wider than width."""
    if not math.isfinite(x):
        return str(x)[:width]
    for text in (f"{x:,.0f}", f"{x / 1e3:.0f}k", f"{x / 1e6:.2f}M", f"{x / 1e6:.0f}M", f"{x / 1e9:.1f}G"):
        if len(text) <= width:
            return text
    return "…"


def fit_duration(seconds: float, width: int) -> str:
    if not math.isfinite(seconds):
        return "-"
    text = format_duration(seconds)
    if len(text) > width:  # 100 hours and more
        days, hours = divmod(int(seconds) // 3600, 24)
        text = f"{days}d{hours:02d}h"
    return text if len(text) <= width else "…"


def fit_text(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


# In display order. keep: 10 always stays; then tok/s, lr, grad norm, the run ETA, logits, aux, the epoch ETA and
# positions/s (the hardware's padded positions: only telling next to tok/s) are left out in that reverse order.
COLUMNS = [
    Column("ep", 3, 10, lambda e, w: fit_text(str(e.epoch), w)),
    Column("step", 11, 10, lambda e, w: fit_text(f"{e.step}/{e.iters}", w) if len(f"{e.step}/{e.iters}") <= w
           else fit_text(str(e.step), w)),
    Column("loss", 7, 10, lambda e, w: fit_number(e.loss, w, 4)),
    Column("logits", 7, 4, lambda e, w: fit_number(e.logits_loss, w, 4)),
    Column("aux", 6, 3, lambda e, w: fit_number(e.aux_loss, w, 4)),
    Column("lr", 8, 7, lambda e, w: f"{e.lr:.2e}" if len(f"{e.lr:.2e}") <= w else fit_number(e.lr, w, 6)),
    Column("gnorm", 6, 6, lambda e, w: fit_number(e.grad_norm, w, 3)),
    Column("tok/s", 7, 8, lambda e, w: fit_count(e.tokens_per_s, w)),
    Column("pos/s", 7, 1, lambda e, w: fit_count(e.positions_per_s, w)),
    Column("ETA ep", 7, 2, lambda e, w: fit_duration(e.epoch_eta, w)),
    Column("ETA all", 8, 5, lambda e, w: fit_duration(e.total_eta, w)),
]
FULL_WIDTH = sum(c.width for c in COLUMNS) + len(COLUMNS) - 1


def columns_for(width: int) -> list[Column]:
    """The columns that fit `width` characters (one space between columns), in display order."""
    kept = list(COLUMNS)
    for column in sorted(COLUMNS, key=lambda c: c.keep):
        if sum(c.width for c in kept) + len(kept) - 1 <= width or column.keep >= 10:
            break
        kept.remove(column)
    return kept


def hidden_note(hidden: list[Column], width: int) -> str:
    """The dim line that says what is left out and where every value is; the longest wording that fits."""
    names = ", ".join(c.label for c in hidden)
    for text in (f"+{names} when wider · every value is in the run's metrics.jsonl",
                 f"+{names} when wider · all values in metrics.jsonl",
                 "more columns when wider · all values in metrics.jsonl",
                 "all values in metrics.jsonl"):
        if len(text) <= width:
            return text
    return ""


def row_cells(e: StepLogged) -> tuple[str, ...]:
    """Every column's text for one step, at its full width."""
    return tuple(c.cell(e, c.width) for c in COLUMNS)


class StepsTable(Widget, can_focus=True):
    DEFAULT_CSS = "StepsTable { text-wrap: nowrap; text-overflow: clip; }"
    BINDINGS = [
        Binding("up", "scroll_rows(1)", "Older step", show=False),
        Binding("down", "scroll_rows(-1)", "Newer step", show=False),
        Binding("pageup", "scroll_rows(10)", "10 steps older", show=False),
        Binding("pagedown", "scroll_rows(-10)", "10 steps newer", show=False),
        Binding("home", "scroll_rows(1000000)", "Oldest kept step", show=False),
        Binding("end", "scroll_rows(-1000000)", "Newest step", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: deque[tuple[str, ...]] = deque(maxlen=MAX_ROWS)
        self.back = 0  # rows scrolled back from the newest
        self._layout: tuple[int, list[int], str, str] = (-1, [], "", "")  # width, column indices, header, note

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def add(self, events: list[StepLogged]) -> None:
        self.rows.extend(row_cells(e) for e in events)
        if self.back:
            self.back = min(self.back + len(events), max(len(self.rows) - 1, 0))  # keep the same rows in view
        self.refresh()

    def clear(self) -> None:
        self.rows.clear()
        self.back = 0
        self.refresh()

    def action_scroll_rows(self, n: int) -> None:
        self.back = max(0, min(self.back + n, max(len(self.rows) - 1, 0)))
        self.refresh()

    def layout_for(self, width: int) -> tuple[list[int], str, str]:
        """(indices of the shown columns, header line, note line) for this width; cached."""
        if self._layout[0] != width:
            shown = columns_for(width)
            indices = [COLUMNS.index(c) for c in shown]
            hidden = [c for c in COLUMNS if c not in shown]
            header = _line(tuple(c.label for c in COLUMNS), indices)
            self._layout = (width, indices, header, hidden_note(hidden, width) if hidden else "")
        return self._layout[1], self._layout[2], self._layout[3]

    def render(self) -> Text:
        indices, header, note = self.layout_for(self.size.width)
        visible = max(self.size.height - 1 - bool(note) - bool(self.back), 1)
        end = len(self.rows) - self.back
        text = Text(header, style="bold", no_wrap=True, overflow="crop")
        for cells in list(self.rows)[max(0, end - visible):end]:
            text.append("\n" + _line(cells, indices))
        if self.back:
            text.append(f"\n(scrolled back {self.back} rows: End shows the newest)"[:self.size.width + 1], style="dim")
        if note:
            text.append("\n" + note, style="dim")
        return text


def _line(cells: tuple[str, ...], indices: list[int]) -> str:
    return " ".join(cells[i].ljust(COLUMNS[i].width) if i == 0 else cells[i].rjust(COLUMNS[i].width) for i in indices)
