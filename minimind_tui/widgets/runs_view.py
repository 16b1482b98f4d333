"""The Runs tab: every run recorded under save_dir; Enter opens one."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from minimind.formatting import format_duration, format_loss, format_started
from minimind.storage.run_store import RunSummary, list_runs

COLUMNS = [("run", 22), ("family", 9), ("stage", 8), ("state", 9), ("steps", 11), ("last loss", 9), ("best loss", 9),
           ("duration", 9), ("started", 16)]


class RunsView(Vertical):
    class Open(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, save_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_dir = save_dir

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        self.reload()

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
        table.clear()
        stores = list(reversed(list_runs(self.save_dir)))  # newest first
        for store in stores:
            s = RunSummary.of(store)
            table.add_row(s.run_id, s.arch, s.stage, s.state, f"{s.global_step}/{s.total_steps}", format_loss(s.last_loss),
                          format_loss(s.best_loss), format_duration(s.duration), format_started(s.started),
                          key=str(store.path))
        if stores:
            table.move_cursor(row=min(selected, len(stores) - 1))
        self.query_one("#runs-title", Static).update(
            f"{len(stores)} run(s) under {self.save_dir}/runs  ·  Enter: open  ·  r: refresh" if stores
            else f"no runs under {self.save_dir}/runs yet")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.Open(Path(str(event.row_key.value))))
