"""The Runs tab: every run recorded under save_dir; Enter opens one.

The table shows the columns that fit its width, most useful first (run, state, steps, losses, best
eval, then family, duration, stage, started: at 100 columns the family shows, which tells classic and
MiniMind-3 runs apart): no row is ever wider than the screen, and the title line says when more
columns show on a wider terminal. The run column is as wide as the longest run id listed (up to
RUN_WIDTH), and best eval is offered only when a run evaluates: the room goes to the other columns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable

from .text_line import TextLine

from minimind.formatting import format_duration, format_loss, format_started
from minimind.storage.run_store import RunStore, RunSummary, list_runs

CELL_PADDING = 1  # DataTable's, on each side of a column
SCROLLBAR = 2  # the table's vertical scrollbar, once there are more runs than rows


@dataclass(frozen=True)
class RunColumn:
    label: str
    width: int
    keep: int  # the lower, the sooner it is left out
    cell: Callable[[RunSummary], str]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


RUN_WIDTH = 20  # the most cells a run id gets (longer ones are clipped)
COLUMNS = [
    RunColumn("run", RUN_WIDTH, 10, lambda s: s.run_id),  # its width: the longest id listed, see columns_for
    RunColumn("family", 9, 5, lambda s: s.arch),
    RunColumn("stage", 8, 2, lambda s: s.stage),
    RunColumn("state", 8, 9, lambda s: str(s.state)),
    RunColumn("steps", 11, 8, lambda s: f"{s.global_step}/{s.total_steps}"),
    RunColumn("last loss", 9, 7, lambda s: format_loss(s.last_loss)),
    RunColumn("best loss", 9, 6, lambda s: format_loss(s.best_loss)),
    RunColumn("best eval", 9, 6, lambda s: format_loss(s.best_eval)),
    RunColumn("duration", 8, 3, lambda s: format_duration(s.duration)),
    RunColumn("started", 16, 1, lambda s: format_started(s.started)),
]


def table_width(columns: list[RunColumn]) -> int:
    return sum(c.width + 2 * CELL_PADDING for c in columns) + SCROLLBAR


def offered_columns(run_width: int = RUN_WIDTH, evals: bool = True) -> list[RunColumn]:
    """Every column the listed runs call for: `run_width` the longest run id listed; `evals` whether
    any of them evaluates (else no best eval column)."""
    return [replace(c, width=run_width) if c.label == "run" else c for c in COLUMNS if evals or c.label != "best eval"]


def columns_for(width: int, run_width: int = RUN_WIDTH, evals: bool = True) -> list[RunColumn]:
    """The offered columns that fit `width` cells, in display order; the least useful go first."""
    offered = offered_columns(run_width, evals)
    kept = list(offered)
    for column in sorted(offered, key=lambda c: c.keep):
        if table_width(kept) <= width or column.keep >= 10:
            break
        kept.remove(column)
    return kept


class RunsView(Vertical):
    class Open(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, save_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_dir = save_dir
        self.columns: list[RunColumn] = []
        self._width: Optional[int] = None
        self._listed = (RUN_WIDTH, True)  # (run column width, any run evaluates) of the runs listed

    def compose(self) -> ComposeResult:
        yield TextLine("", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True, cell_padding=CELL_PADDING)

    def on_mount(self) -> None:
        self._set_columns(self.size.width or 80)
        self.reload()

    def on_resize(self, event) -> None:
        if self._set_columns(event.size.width):
            self.reload()

    def _set_columns(self, width: int) -> bool:
        """Choose the columns for this width; True when they changed (the rows must be filled again)."""
        columns = columns_for(width, *self._listed)
        if columns == self.columns:
            return False
        self.columns = columns
        table = self.query_one("#runs-table", DataTable)
        table.clear(columns=True)
        for c in columns:
            table.add_column(c.label, width=c.width, key=c.label)
        return True

    def set_save_dir(self, save_dir: str) -> None:
        """Follow the save_dir being configured; the list is read again when shown."""
        if save_dir != self.save_dir:
            self.save_dir = save_dir
            if self.is_on_screen:
                self.reload()

    def focus_table(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    def reload(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        selected = table.cursor_row
        stores: list[RunStore] = list(reversed(list_runs(self.save_dir)))  # newest first
        summaries = [RunSummary.of(store) for store in stores]
        listed = (min(max([len("run"), *(len(s.run_id) for s in summaries)]), RUN_WIDTH),
                  not summaries or any(s.evals for s in summaries))
        if listed != self._listed:
            self._listed = listed
            self._set_columns(self.size.width or 80)
        table.clear()
        for store, s in zip(stores, summaries):
            table.add_row(*(_clip(c.cell(s), c.width) for c in self.columns), key=str(store.path))
        if stores:
            table.move_cursor(row=min(selected, len(stores) - 1))
        title = self.query_one("#runs-title", TextLine)
        if not stores:
            title.set(f"no runs under {self.save_dir}/runs yet")
            return
        more = "  ·  more columns when wider" if len(self.columns) < len(offered_columns(*self._listed)) else ""
        where = f"{len(stores)} run(s) under {self.save_dir}/runs"
        title.set(f"{where}  ·  Enter: open  ·  r: refresh{more}", f"{where}  ·  Enter: open{more}",
                  f"{where}  ·  Enter: open", f"{len(stores)} run(s)  ·  Enter: open")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.Open(Path(str(event.row_key.value))))
