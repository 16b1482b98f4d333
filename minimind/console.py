"""The headless observer: the seed's log lines, plus a progress bar with ETA on a terminal."""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from .events import (Alert, CheckpointSaved, EvalDone, EventHandler, RunEnded, RunStarted, RunState, StateChanged,
                     StepLogged)
from .formatting import resume_command


def classic_log_line(e: StepLogged) -> str:
    """The seed notebook's line, to the character (epoch_time is whole minutes left in the epoch)."""
    eta_min = e.epoch_eta // 60
    return (f"Epoch:[{e.epoch}/{e.epochs}]({e.step}/{e.iters}), loss: {e.loss:.4f}, "
            f"logits_loss: {e.logits_loss:.4f}, aux_loss: {e.aux_loss:.4f}, lr: {e.lr:.8f}, "
            f"epoch_time: {eta_min:.1f}min")


class ConsolePrinter(EventHandler):
    """Prints events as lines; on a terminal also keeps a progress bar at the bottom."""

    def __init__(self, out: Optional[TextIO] = None, err: Optional[TextIO] = None, progress: Optional[bool] = None):
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.use_progress = self.out.isatty() if progress is None else progress
        self._progress: Optional[Progress] = None
        self._task: Optional[TaskID] = None

    def _print(self, line: str, err: bool = False) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True,
                                         style="red" if err else None)
        else:
            print(line, file=self.err if err else self.out, flush=True)

    def on_run_started(self, e: RunStarted) -> None:
        self._print(f"run      {e.run_id}  ({e.run_dir})")
        self._print(f"model    {e.n_params / 1e6:.3f}M parameters ({e.model})")
        self._print(f"device   {e.device}, {e.precision}" + (f", world size {e.world_size}" if e.world_size > 1 else ""))
        self._print(f"data     {e.data_path}: {e.n_docs} docs, {e.iters_per_epoch} steps/epoch "
                    f"x {e.config['train']['epochs']} epochs = {e.total_steps} steps")
        for note in e.notes:
            self._print(f"note     {note}")
        if self.use_progress:
            progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=Console(file=self.out), transient=True)
            self._task = progress.add_task("training", total=e.total_steps, completed=e.start_step)
            progress.start()
            self._progress = progress

    def on_step_logged(self, e: StepLogged) -> None:
        self._print(classic_log_line(e))
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=e.global_step,
                                  description=f"loss {e.loss:.4f}  {e.tokens_per_s:,.0f} tok/s")

    def on_eval_done(self, e: EvalDone) -> None:
        self._print(f"eval: step {e.global_step}, loss {e.eval_loss:.4f}, ppl {e.eval_ppl:.2f}")

    def on_checkpoint_saved(self, e: CheckpointSaved) -> None:
        if e.kind == "weights":
            self._print(f"saved weights: {e.path} (step {e.global_step})")

    def on_state_changed(self, e: StateChanged) -> None:
        self._print(f"{e.state}" + (f": {e.reason}" if e.reason else ""))

    def on_alert(self, e: Alert) -> None:
        self._print(f"{e.level}: {e.message}", err=True)

    def on_run_ended(self, e: RunEnded) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if e.status == RunState.FINISHED:
            self._print(f"finished {e.global_step}/{e.total_steps} steps; run record: {e.run_dir}")
        elif e.status == RunState.STOPPED:
            hint = f"; resume with: {resume_command(e.run_dir)}" if e.resumable else ""
            self._print(f"stopped at step {e.global_step}/{e.total_steps}{hint}")
        else:
            hint = f" (resume from the last save with: {resume_command(e.run_dir)})" if e.resumable else ""
            self._print(f"error: {e.error}{hint}", err=True)
