"""The Train tab: progress, the live steps table, the loss curve, checkpoints, alerts, device."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widgets import DataTable, ProgressBar, Static

from minimind.console import format_duration
from minimind.engine.events import Alert, CheckpointSaved, Event, RunEnded, RunStarted, StepLogged

from .loss_curve import LossCurve

MAX_TABLE_ROWS = 500  # the full history is in metrics.jsonl
FLUSH_S = 0.25  # batch table updates: a fast GPU can log hundreds of steps a second
COLUMNS = [("ep", 4), ("step", 11), ("loss", 8), ("logits", 8), ("aux", 7), ("lr", 9), ("gnorm", 7),
           ("tok/s", 8), ("ETA ep", 8), ("ETA all", 8)]


class TrainView(Vertical):
    def compose(self) -> ComposeResult:
        yield Static("no run yet: fill in the Config tab and press s to start", id="progress-line")
        yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="progress")
        with Container(id="live"):
            yield DataTable(id="steps", cursor_type="row", zebra_stripes=True, show_cursor=False)
            yield LossCurve(id="curve")
        yield Static("", id="alert")
        yield Static("checkpoints: none yet", id="checkpoints")
        yield Static("", id="device-line")

    def on_mount(self) -> None:
        table = self.query_one("#steps", DataTable)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        self._pending: list[StepLogged] = []
        self._saves: deque[str] = deque(maxlen=3)
        self.last_step: StepLogged | None = None
        self.set_interval(FLUSH_S, self._flush)

    # ---- events --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.query_one("#steps", DataTable).clear()
        self.query_one("#curve", LossCurve).clear()
        self._pending.clear()
        self._saves.clear()
        self.last_step = None
        self.query_one("#alert", Static).update("")
        self.query_one("#checkpoints", Static).update("checkpoints: none yet")

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            bar = self.query_one("#progress", ProgressBar)
            bar.update(total=event.total_steps, progress=event.start_step)
            self.query_one("#progress-line", Static).update(
                f"starting at step {event.start_step}/{event.total_steps} ({event.n_docs} docs, "
                f"{event.iters_per_epoch} steps/epoch)")
        elif isinstance(event, StepLogged):
            self._pending.append(event)
        elif isinstance(event, CheckpointSaved):
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            self._saves.appendleft(f"{stamp}  {event.kind:<7} {event.path}  (step {event.global_step})")
            self.query_one("#checkpoints", Static).update("checkpoints:\n" + "\n".join(self._saves))
        elif isinstance(event, Alert):
            self.query_one("#alert", Static).update(Text(f"⚠ {event.message}", style="bold red"))
        elif isinstance(event, RunEnded):
            self._flush()
            line = self.query_one("#progress-line", Static)
            if event.status == "finished":
                line.update(f"finished: {event.global_step}/{event.total_steps} steps")
            elif event.status == "stopped":
                line.update(f"stopped at step {event.global_step}/{event.total_steps}"
                            + (" (resumable from the Runs tab)" if event.resumable else ""))
            else:
                self.query_one("#alert", Static).update(Text(f"✗ {event.error}", style="bold red"))

    def _flush(self) -> None:
        if not self._pending or not self.query("#steps"):  # nothing to do, or being torn down
            return
        pending, self._pending = self._pending, []
        table = self.query_one("#steps", DataTable)
        curve = self.query_one("#curve", LossCurve)
        for e in pending:
            table.add_row(str(e.epoch), f"{e.step}/{e.iters}", f"{e.loss:.4f}", f"{e.logits_loss:.4f}",
                          f"{e.aux_loss:.4f}", f"{e.lr:.2e}", f"{e.grad_norm:.3f}", f"{e.tokens_per_s:,.0f}",
                          format_duration(e.epoch_eta), format_duration(e.total_eta))
            curve.add_point(e.global_step, e.loss)
        while table.row_count > MAX_TABLE_ROWS:
            table.remove_row(next(iter(table.rows)))
        self.call_after_refresh(table.scroll_end, animate=False)
        last = self.last_step = pending[-1]
        self.query_one("#progress", ProgressBar).update(total=last.total_steps, progress=last.global_step)
        self.query_one("#progress-line", Static).update(
            f"epoch {last.epoch}/{last.epochs}  step {last.step}/{last.iters}  "
            f"ETA epoch {format_duration(last.epoch_eta)}  total {format_duration(last.total_eta)}  "
            f"{last.tokens_per_s:,.0f} tok/s")

    def show_device(self, line: str) -> None:
        for widget in self.query("#device-line"):  # absent while the app is torn down
            widget.update(line)
