"""The Train tab: progress, the live steps table, the loss curve, evaluations, checkpoints, alerts, device.

Laid out for 80x24 and up: the progress text and bar share one line, the eval line shows only for a
run that evaluates, and below COMPACT_BELOW rows the checkpoint list is one line (the newest save;
`k` shows the full list) so that the curve keeps at least 8 rows of plot.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from minimind.events import (Alert, CheckpointSaved, EvalDone, Event, RunEnded, RunStarted, RunState, StepLogged,
                             dispatch)
from .loss_curve import LossCurve
from .step_bar import StepBar
from .steps_table import StepsTable, fit_duration
from .text_line import TextLine

# Updates are batched: every redraw takes CPU (and, for a run in a thread, GIL time) from training. On a
# 2-core machine a millisecond taken from one core stalls training's parallel regions on both, so the
# pace adapts: as often as every FLUSH_S, but no more often than keeps the app's main thread (drawing,
# events) under UI_CPU_SHARE of one core, and at least every MAX_FLUSH_S.
FLUSH_S = 1.0
MAX_FLUSH_S = 3.0
UI_CPU_SHARE = 0.01
TICK_S = 0.25  # how often the pace is checked (a check costs microseconds)
COMPACT_BELOW = 30  # terminal rows: below this the checkpoint list is one line unless `k` expands it
SAVES_KEPT = 3


class Pacer:
    """When the next batched update is due: `due()` is True at most every `fastest` s and at least every
    `slowest` s, the interval chosen so that the calling thread's CPU time between updates (what one
    update and the rest of its work cost) stays under `share` of the wall time."""

    def __init__(self, fastest: float = FLUSH_S, slowest: float = MAX_FLUSH_S, share: float = UI_CPU_SHARE):
        self.fastest, self.slowest, self.share = fastest, slowest, share
        self.interval = fastest
        self._cpu: Optional[float] = None  # the thread's CPU time at the last update
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        cpu = time.thread_time()
        if self._cpu is not None:
            self.interval = min(max((cpu - self._cpu) / self.share, self.fastest), self.slowest)
        self._cpu, self._next = cpu, now + self.interval
        return True


def format_ppl(ppl: float) -> str:
    if not math.isfinite(ppl):
        return str(ppl)
    return f"{ppl:.2f}" if ppl < 1000 else f"{ppl:,.0f}" if ppl < 1e7 else f"{ppl:.2e}"


def evaluates(config: dict) -> bool:
    """Does a run with this config (RunStarted.config) evaluate on held-out rows?"""
    train = config.get("train", {}) if isinstance(config, dict) else {}
    split = train.get("eval_split") or 0
    return bool(train.get("eval_data")) or (isinstance(split, (int, float)) and split > 0)


def shorten_path(path: str, width: int) -> str:
    """The path's tail (the file name matters most) in at most width cells."""
    if cell_len(path) <= width:
        return path
    return "…" + path[-max(width - 1, 1):] if width > 1 else "…"


@dataclass(frozen=True)
class Save:
    stamp: str
    kind: str
    path: str
    step: int


class CheckpointList(Widget):
    """The newest saves, newest first; one line (the newest only) when collapsed. Each line fits the
    width: a long path keeps its end."""

    DEFAULT_CSS = "CheckpointList { text-wrap: nowrap; text-overflow: clip; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.saves: deque[Save] = deque(maxlen=SAVES_KEPT)
        self.collapsed = False

    def set_saves(self, saves: list[Save]) -> None:
        self.saves = deque(saves, maxlen=SAVES_KEPT)
        self.refresh()

    def set_collapsed(self, collapsed: bool) -> None:
        if collapsed != self.collapsed:
            self.collapsed = collapsed
            self.styles.height = 1 if collapsed else SAVES_KEPT + 1
            self.refresh(layout=True)

    def lines(self, width: int) -> list[str]:
        if not self.saves:
            return ["checkpoints: none yet"]
        if self.collapsed:
            s = self.saves[0]
            more = "  · k: all" if len(self.saves) > 1 else ""
            head = f"last save {s.stamp} {s.kind} step {s.step}  "
            return [head + shorten_path(s.path, width - cell_len(head) - cell_len(more)) + more]
        rows = []
        for s in self.saves:
            head = f"{s.stamp}  {s.kind:<7} step {s.step:<7} "
            rows.append(head + shorten_path(s.path, width - cell_len(head)))
        return ["checkpoints:" + ("  (k: newest only)" if width >= 40 else ""), *rows]

    def render(self) -> str:
        return "\n".join(self.lines(max(self.size.width, 10)))


class TrainView(Vertical):
    """Draws a run's events; `handle(event)` dispatches to the on_<event> methods below."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="progress-row"):
            yield TextLine("no run yet: fill in the Config tab and press s to start", id="progress-line")
            yield StepBar(id="progress")
        with Container(id="live"):
            yield StepsTable(id="steps")
            yield LossCurve(id="curve", redraw_every=None)  # redrawn by _flush: one screen update a tick
        yield Static("", id="alert")
        yield TextLine("", id="eval-line")
        yield CheckpointList(id="checkpoints")
        yield TextLine("", id="device-line")

    def on_mount(self) -> None:
        self._pending: list[StepLogged] = []
        self._steps_total = 0  # the current session's total steps: the unit of the curve's x axis
        self._saves: deque[Save] = deque(maxlen=SAVES_KEPT)
        self._saves_changed = False
        self._expanded: Optional[bool] = None  # the user's choice (k); None: by the terminal's height
        self.last_step: StepLogged | None = None
        self.last_eval: EvalDone | None = None
        self.best_eval: EvalDone | None = None
        self.query_one("#eval-line").display = False
        self._pacer = Pacer()
        self.set_interval(TICK_S, self._tick)

    # ---- events --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.query_one("#steps", StepsTable).clear()
        self.query_one("#curve", LossCurve).clear()
        self.query_one("#curve", LossCurve).redraw_if_dirty()
        self._pending.clear()
        self._steps_total = 0  # the current session's total steps: the unit of the curve's x axis
        self._saves.clear()
        self.last_step = self.last_eval = self.best_eval = None
        self.query_one("#alert", Static).update("")
        self.query_one("#checkpoints", CheckpointList).set_saves([])
        self.query_one("#eval-line", TextLine).set("")
        self.query_one("#eval-line").display = False
        self._saves_changed = False

    def handle(self, event: Event) -> None:
        dispatch(self, event)

    def on_run_started(self, event: RunStarted) -> None:
        # A resume with another process count renumbers the steps: what is drawn so far moves onto the
        # new session's step axis (as the run detail's curve, run_store.loss_curve, draws it).
        self._flush()
        if self._steps_total and event.total_steps > 0 and event.total_steps != self._steps_total:
            self.query_one("#curve", LossCurve).rescale_steps(event.total_steps / self._steps_total)
        self._steps_total = event.total_steps
        self.query_one("#progress", StepBar).update(event.total_steps, event.start_step)
        self.query_one("#progress-line", TextLine).set(
            f"starting at step {event.start_step}/{event.total_steps} ({event.n_docs} docs, "
            f"{event.iters_per_epoch} steps/epoch)", f"starting at step {event.start_step}/{event.total_steps}")
        if evaluates(event.config):  # the line appears once, at the start, not in the middle of the run
            every = event.config.get("train", {}).get("eval_interval") or 0
            when = f"every {every} optimizer steps and at the end" if every else "at the end"
            self._show_eval_line(f"eval   held-out loss {when}: none yet", "eval   none yet")

    def on_step_logged(self, event: StepLogged) -> None:
        self._pending.append(event)

    def on_eval_done(self, event: EvalDone) -> None:
        self._flush()  # the steps up to this evaluation first: the table never trails the eval line
        self.last_eval = event
        if event.best or self.best_eval is None and math.isfinite(event.eval_loss):
            self.best_eval = event
        self.query_one("#curve", LossCurve).add_eval(event.global_step, event.eval_loss)
        last, best = event, self.best_eval
        lines = [f"eval   last {last.eval_loss:.4f} (ppl {format_ppl(last.eval_ppl)}) at step {last.global_step}"]
        if best is not None:
            lines = [lines[0] + f"  ·  best {best.eval_loss:.4f} (ppl {format_ppl(best.eval_ppl)}) at step "
                     f"{best.global_step}",
                     f"eval {last.eval_loss:.4f} ppl {format_ppl(last.eval_ppl)} @{last.global_step} · best "
                     f"{best.eval_loss:.4f} ppl {format_ppl(best.eval_ppl)} @{best.global_step}",
                     f"eval {last.eval_loss:.4f} @{last.global_step} · best {best.eval_loss:.4f} @{best.global_step}"]
        self._show_eval_line(*lines)

    def _show_eval_line(self, *texts: str) -> None:
        line = self.query_one("#eval-line", TextLine)
        line.set(*texts)
        if not line.display:
            line.display = True

    def on_checkpoint_saved(self, event: CheckpointSaved) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        self._saves.appendleft(Save(stamp, event.kind, event.path, event.global_step))
        self._saves_changed = True  # shown at the next flush: saves can come every step

    def on_alert(self, event: Alert) -> None:
        self.query_one("#alert", Static).update(Text(f"⚠ {event.message}", style="bold red"))

    def on_run_ended(self, event: RunEnded) -> None:
        self._flush()
        self.query_one("#curve", LossCurve).redraw_if_dirty()  # the whole run, at once
        line = self.query_one("#progress-line", TextLine)
        if event.status == RunState.FINISHED:
            line.set(f"finished: {event.global_step}/{event.total_steps} steps")
        elif event.status == RunState.STOPPED:
            line.set(f"stopped at step {event.global_step}/{event.total_steps}"
                     + (" (resumable from the Runs tab)" if event.resumable else ""),
                     f"stopped at step {event.global_step}/{event.total_steps}")
        else:
            self.query_one("#alert", Static).update(Text(f"✗ {event.error}", style="bold red"))

    # ---- what the app asks of it ---------------------------------------------------------------
    def set_stacked(self, stacked: bool) -> None:
        """Steps table above the curve (narrow terminals) instead of beside it."""
        self.query_one("#live").set_class(stacked, "-stacked")

    def set_height(self, rows: int) -> None:
        """The terminal's height: below COMPACT_BELOW rows the checkpoint list is one line (unless expanded)."""
        self._terminal_rows = rows
        self._apply_checkpoints_size()

    def toggle_checkpoints(self) -> None:
        """Show the full checkpoint list, or only the newest save. A choice that is what this terminal size
        shows anyway goes back to following the size."""
        expanded = self.query_one("#checkpoints", CheckpointList).collapsed
        self._expanded = None if expanded == self._expanded_by_size() else expanded
        self._apply_checkpoints_size()

    def _expanded_by_size(self) -> bool:
        return getattr(self, "_terminal_rows", COMPACT_BELOW) >= COMPACT_BELOW

    def _apply_checkpoints_size(self) -> None:
        expanded = self._expanded if self._expanded is not None else self._expanded_by_size()
        self.query_one("#checkpoints", CheckpointList).set_collapsed(not expanded)

    def toggle_log_scale(self) -> None:
        self.query_one("#curve", LossCurve).toggle_log_scale()

    def toggle_smoothing(self) -> None:
        self.query_one("#curve", LossCurve).toggle_smoothing()

    def _tick(self) -> None:
        if self._pacer.due():
            self._flush()

    def _flush(self) -> None:
        if not self.query("#steps"):  # being torn down
            return
        if self._saves_changed:
            self._saves_changed = False
            self.query_one("#checkpoints", CheckpointList).set_saves(list(self._saves))
        curve = self.query_one("#curve", LossCurve)
        pending, self._pending = self._pending, []
        for e in pending:
            curve.add_point(e.global_step, e.loss)
        curve.redraw_if_dirty(streaming=True)  # also what an earlier tick left for later
        if not pending:
            return
        self.query_one("#steps", StepsTable).add(pending)
        last = self.last_step = pending[-1]
        self.query_one("#progress", StepBar).update(last.total_steps, last.global_step)
        eta_epoch, eta_all = fit_duration(last.epoch_eta, 12), fit_duration(last.total_eta, 12)  # inf/nan: "-"
        self.query_one("#progress-line", TextLine).set(
            f"epoch {last.epoch}/{last.epochs}  step {last.step}/{last.iters}  "
            f"ETA epoch {eta_epoch}  total {eta_all}  {last.tokens_per_s:,.0f} tok/s",
            f"ep {last.epoch}/{last.epochs}  {last.step}/{last.iters}  ETA {eta_epoch} / {eta_all}  "
            f"{last.tokens_per_s:,.0f} tok/s",
            f"ep {last.epoch}/{last.epochs} {last.step}/{last.iters} ETA {eta_all}")

    def show_device(self, line: str, short: str = "") -> None:
        for widget in self.query("#device-line").results(TextLine):  # absent while the app is torn down
            widget.set(line, *([short] if short else []))
