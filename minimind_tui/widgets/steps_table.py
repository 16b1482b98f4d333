"""The live steps table: the newest logged steps that fit, newest at the bottom.

A plain widget that renders fixed-width text lines once per update. Textual's DataTable re-lays
out the screen every time it grows and a Rich Table re-measures every cell: on a 2-core machine
each cost several percent of the training throughput (the UI thread shares the GIL and the cores
with the training thread).
Up/Down/PageUp/PageDown/Home/End scroll back through the last MAX_ROWS steps.
"""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

from minimind.events import StepLogged
from minimind.formatting import format_duration

MAX_ROWS = 1000  # the full history is in metrics.jsonl
COLUMNS = [("ep", 4), ("step", 11), ("loss", 8), ("logits", 8), ("aux", 7), ("lr", 9), ("gnorm", 7),
           ("tok/s", 8), ("ETA ep", 8), ("ETA all", 8)]


def row_cells(e: StepLogged) -> tuple[str, ...]:
    return (str(e.epoch), f"{e.step}/{e.iters}", f"{e.loss:.4f}", f"{e.logits_loss:.4f}", f"{e.aux_loss:.4f}",
            f"{e.lr:.2e}", f"{e.grad_norm:.3f}", f"{e.tokens_per_s:,.0f}", format_duration(e.epoch_eta),
            format_duration(e.total_eta))


class StepsTable(Widget, can_focus=True):
    BINDINGS = [
        Binding("up", "scroll_rows(1)", "Older", show=False),
        Binding("down", "scroll_rows(-1)", "Newer", show=False),
        Binding("pageup", "scroll_rows(10)", show=False),
        Binding("pagedown", "scroll_rows(-10)", show=False),
        Binding("home", "scroll_rows(1000000)", show=False),
        Binding("end", "scroll_rows(-1000000)", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: deque[tuple[str, ...]] = deque(maxlen=MAX_ROWS)
        self.back = 0  # rows scrolled back from the newest

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

    def render(self) -> Text:
        visible = max(self.size.height - 1, 1)
        end = len(self.rows) - self.back
        text = Text(HEADER, style="bold", no_wrap=True, overflow="crop")
        for cells in list(self.rows)[max(0, end - visible):end]:
            text.append("\n" + _line(cells))
        if self.back:
            text.append(f"\n(scrolled back {self.back} rows: End shows the newest)", style="dim")
        return text


def _line(cells: tuple[str, ...]) -> str:
    return " ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, (_, w)) in enumerate(zip(cells, COLUMNS)))


HEADER = _line(tuple(label for label, _ in COLUMNS))
