"""The Train tab: progress, the live steps table, the loss curve, checkpoints, alerts, device."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widgets import ProgressBar, Static

from minimind.events import Alert, CheckpointSaved, Event, RunEnded, RunStarted, RunState, StepLogged, dispatch
from minimind.formatting import format_duration

from .loss_curve import LossCurve
from .steps_table import StepsTable
from .text_line import TextLine

FLUSH_S = 1.0  # batch updates: every UI redraw takes CPU and GIL time from the training thread


class TrainView(Vertical):
    """Draws a run's events; `handle(event)` dispatches to the on_<event> methods below."""

    def compose(self) -> ComposeResult:
        yield TextLine("no run yet: fill in the Config tab and press s to start", id="progress-line")
        yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="progress")
        with Container(id="live"):
            yield StepsTable(id="steps")
            yield LossCurve(id="curve")
        yield Static("", id="alert")
        yield TextLine("checkpoints: none yet", id="checkpoints")
        yield TextLine("", id="device-line")

    def on_mount(self) -> None:
        self._pending: list[StepLogged] = []
        self._saves: deque[str] = deque(maxlen=3)
        self._saves_changed = False
        self.last_step: StepLogged | None = None
        self.set_interval(FLUSH_S, self._flush)

    # ---- events --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.query_one("#steps", StepsTable).clear()
        self.query_one("#curve", LossCurve).clear()
        self._pending.clear()
        self._saves.clear()
        self.last_step = None
        self.query_one("#alert", Static).update("")
        self.query_one("#checkpoints", TextLine).set("checkpoints: none yet")
        self._saves_changed = False

    def handle(self, event: Event) -> None:
        dispatch(self, event)

    def on_run_started(self, event: RunStarted) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=event.total_steps, progress=event.start_step)
        self.query_one("#progress-line", TextLine).set(
            f"starting at step {event.start_step}/{event.total_steps} ({event.n_docs} docs, "
            f"{event.iters_per_epoch} steps/epoch)")

    def on_step_logged(self, event: StepLogged) -> None:
        self._pending.append(event)

    def on_checkpoint_saved(self, event: CheckpointSaved) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        self._saves.appendleft(f"{stamp}  {event.kind:<7} {event.path}  (step {event.global_step})")
        self._saves_changed = True  # shown at the next flush: saves can come every step

    def on_alert(self, event: Alert) -> None:
        self.query_one("#alert", Static).update(Text(f"⚠ {event.message}", style="bold red"))

    def on_run_ended(self, event: RunEnded) -> None:
        self._flush()
        line = self.query_one("#progress-line", TextLine)
        if event.status == RunState.FINISHED:
            line.set(f"finished: {event.global_step}/{event.total_steps} steps")
        elif event.status == RunState.STOPPED:
            line.set(f"stopped at step {event.global_step}/{event.total_steps}"
                     + (" (resumable from the Runs tab)" if event.resumable else ""))
        else:
            self.query_one("#alert", Static).update(Text(f"✗ {event.error}", style="bold red"))

    # ---- what the app asks of it ---------------------------------------------------------------
    def set_stacked(self, stacked: bool) -> None:
        """Steps table above the curve (narrow terminals) instead of beside it."""
        self.query_one("#live").set_class(stacked, "-stacked")

    def toggle_log_scale(self) -> None:
        self.query_one("#curve", LossCurve).toggle_log_scale()

    def toggle_smoothing(self) -> None:
        self.query_one("#curve", LossCurve).toggle_smoothing()

    def _flush(self) -> None:
        if not self.query("#steps"):  # being torn down
            return
        if self._saves_changed:
            self._saves_changed = False
            self.query_one("#checkpoints", TextLine).set("checkpoints:\n" + "\n".join(self._saves))
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self.query_one("#steps", StepsTable).add(pending)
        curve = self.query_one("#curve", LossCurve)
        for e in pending:
            curve.add_point(e.global_step, e.loss)
        last = self.last_step = pending[-1]
        self.query_one("#progress", ProgressBar).update(total=last.total_steps, progress=last.global_step)
        self.query_one("#progress-line", TextLine).set(
            f"epoch {last.epoch}/{last.epochs}  step {last.step}/{last.iters}  "
            f"ETA epoch {format_duration(last.epoch_eta)}  total {format_duration(last.total_eta)}  "
            f"{last.tokens_per_s:,.0f} tok/s")

    def show_device(self, line: str) -> None:
        for widget in self.query("#device-line").results(TextLine):  # absent while the app is torn down
            widget.set(line)

