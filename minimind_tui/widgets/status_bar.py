"""The top line: run, state, device/precision, parameters, data. Always visible."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from minimind.events import RunState

STATE_STYLES = {
    RunState.IDLE: "dim", RunState.STARTING: "yellow", RunState.RUNNING: "bold green", RunState.PAUSED: "bold yellow",
    RunState.STOPPING: "yellow", RunState.FINISHED: "bold cyan", RunState.STOPPED: "bold magenta",
    RunState.FAILED: "bold red",
}


class StatusBar(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state = RunState.IDLE
        self.run_id = ""
        self.details = ""
        self.where = ""

    def on_mount(self) -> None:
        self._render_line()

    def show(self, state: RunState | None = None, run_id: str | None = None, details: str | None = None,
             where: str | None = None) -> None:
        if state is not None:
            self.state = state
        if run_id is not None:
            self.run_id = run_id
        if details is not None:
            self.details = details
        if where is not None:
            self.where = where
        self._render_line()

    def _render_line(self) -> None:
        line = Text(" MiniMind ", style="bold reverse")
        if self.run_id:
            line.append(f"  run {self.run_id}")
        line.append("  ")
        line.append(self.state.value.upper(), style=STATE_STYLES.get(self.state, "bold"))
        if self.where:
            line.append(f" ({self.where})", style="dim")
        if self.details:
            line.append(f"  {self.details}")
        self.update(line)
