"""The headless observer: the seed's log lines, plus a progress bar with ETA on a terminal.

How much it prints is its `verbosity` (see ConsolePrinter). In every mode the seed's log lines are
printed exactly as the notebook prints them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from .events import (Alert, CheckpointSaved, EvalDone, EventHandler, RunEnded, RunStarted, RunState, StateChanged,
                     StepLogged)
from .formatting import resume_command

VERBOSITIES = ("quiet", "normal", "verbose")
EXPECTED_KEPT = 64  # scheduled saves awaiting their CheckpointSaved


def classic_log_line(e: StepLogged) -> str:
    """The seed notebook's line, to the character (epoch_time is whole minutes left in the epoch)."""
    eta_min = e.epoch_eta // 60
    return (f"Epoch:[{e.epoch}/{e.epochs}]({e.step}/{e.iters}), loss: {e.loss:.4f}, "
            f"logits_loss: {e.logits_loss:.4f}, aux_loss: {e.aux_loss:.4f}, lr: {e.lr:.8f}, "
            f"epoch_time: {eta_min:.1f}min")


class ConsolePrinter(EventHandler):
    """Prints events as lines; on a terminal also keeps a progress bar at the bottom.

    verbosity:
      "quiet"   only problems (alerts and errors, on stderr), the evaluation lines and the final line
                (finished / stopped, with the resume command); no progress bar unless progress=True.
      "normal"  (the default) also the run's header (run, model, device, data, notes), the seed's log
                lines, pauses and resumes, and the weights saves. When every scheduled save falls on a
                logged step (save_interval is a multiple of log_interval, as with the seed's 1 and 1),
                one line at the start says where and how often the weights are saved instead of a
                line after every log line; a save off that schedule (save-now, a stop) still prints.
      "verbose" also a line for every save: scheduled weights, the best eval's weights and the
                exact-resume state.
    """

    def __init__(self, out: Optional[TextIO] = None, err: Optional[TextIO] = None, progress: Optional[bool] = None,
                 verbosity: str = "normal", on_output_closed: Optional[Callable[[], None]] = None):
        if verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity must be one of {', '.join(VERBOSITIES)}, not {verbosity!r}")
        self.out, self.err = out or sys.stdout, err or sys.stderr
        # Called once when the reader of our output goes away (`minimind train | head`, a closed terminal):
        # the CLI stops the run at a step boundary and saves, as for Ctrl-C, instead of the write failing it.
        self.on_output_closed = on_output_closed
        self._out_closed = False
        self.verbosity = verbosity
        default_progress = self.out.isatty() and verbosity != "quiet"
        self.use_progress = default_progress if progress is None else progress
        self._progress: Optional[Progress] = None
        self._task: Optional[TaskID] = None
        self._save_schedule: Optional[tuple[int, int]] = None  # (save_interval, accumulation) when summarised
        self._weights_path: Optional[str] = None  # where the summary line said the weights go
        # Global steps of scheduled saves the start line covers; a save is reported once its file is written,
        # which can be after later steps were logged.
        self._expected_saves: set[int] = set()

    @property
    def _normal(self) -> bool:
        return self.verbosity != "quiet"

    def _print(self, line: str, err: bool = False) -> None:
        if self._out_closed and not err:
            return
        try:
            if self._progress is not None:
                self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True,
                                             style="red" if err else None)
            else:
                print(line, file=self.err if err else self.out, flush=True)
        except OSError:  # a closed pipe (EPIPE) or a hung-up terminal (EIO): nobody reads this stream any more
            self._output_closed(self.err if err else self.out)

    def _output_closed(self, stream: TextIO) -> None:
        if stream is self.err:
            return  # nowhere left to say anything; the run record still has it all
        self._out_closed = True
        _silence(stream)
        if self.on_output_closed is not None:
            self.on_output_closed()
            self._print("stdout closed (its reader exited): stopping after this step and saving the resume state",
                        err=True)

    def on_run_started(self, e: RunStarted) -> None:
        self._plan_saves(e)
        if not self._normal:
            self._start_progress(e)
            return
        self._print(f"run      {e.run_id}  ({e.run_dir})")
        self._print(f"model    {e.n_params / 1e6:.3f}M parameters ({e.model})")
        self._print(f"device   {e.device}, {e.precision}" + (f", world size {e.world_size}" if e.world_size > 1 else ""))
        self._print(f"data     {e.data_path}: {e.n_docs} docs, {e.iters_per_epoch} steps/epoch "
                    f"x {e.config['train']['epochs']} epochs = {e.total_steps} steps")
        for note in e.notes:
            self._print(f"note     {note}")
        if self._save_schedule is not None:
            every = self._save_schedule[0]
            when = "after every step" if every == 1 else f"every {every} steps and at each epoch's end"
            self._print(f"saves    weights {when} to {self._weights_path}")
        train = e.config.get("train", {}) if isinstance(e.config, dict) else {}
        weights = self._weights_path or _weights_path(e)
        if train.get("save_best") and weights and self.verbosity == "normal":
            best = Path(weights)
            self._print(f"saves    the best eval's weights to {best.with_name(f'{best.stem}_best{best.suffix}')}")
        self._start_progress(e)

    def _plan_saves(self, e: RunStarted) -> None:
        """From the run's config: are the scheduled weights saves all on logged steps? Then one line
        at the start tells about them, and a line per save would only repeat it."""
        self._save_schedule, self._weights_path = None, None
        self._expected_saves.clear()
        train = e.config.get("train", {}) if isinstance(e.config, dict) else {}
        save, log = train.get("save_interval"), train.get("log_interval")
        accumulation = train.get("accumulation_steps", 1)
        if not (isinstance(save, int) and isinstance(log, int) and isinstance(accumulation, int)):
            return
        if save <= 0 or log <= 0 or save % log or self.verbosity == "verbose":
            return
        path = _weights_path(e)
        if path is None:
            return
        self._save_schedule, self._weights_path = (save, max(accumulation, 1)), path

    def _start_progress(self, e: RunStarted) -> None:
        if self.use_progress:
            progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=Console(file=self.out), transient=True)
            self._task = progress.add_task("training", total=e.total_steps, completed=e.start_step)
            progress.start()
            self._progress = progress

    def on_step_logged(self, e: StepLogged) -> None:
        if self._save_schedule is not None:
            save, accumulation = self._save_schedule
            # the trainer's rule: a multiple of save_interval crossed by this optimizer step, or the epoch's end
            if e.step == e.iters or e.step // save > (e.step - accumulation) // save:
                self._expected_saves.add(e.global_step)
                if len(self._expected_saves) > EXPECTED_KEPT:  # a save that never came (skipped): forget it
                    self._expected_saves.discard(min(self._expected_saves))
        if self._normal:
            self._print(classic_log_line(e))
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=e.global_step,
                                  description=f"loss {e.loss:.4f}  {e.tokens_per_s:,.0f} tok/s")

    def on_eval_done(self, e: EvalDone) -> None:
        self._print(f"eval: step {e.global_step}, loss {e.eval_loss:.4f}, ppl {e.eval_ppl:.2f}")

    def on_checkpoint_saved(self, e: CheckpointSaved) -> None:
        if e.kind == "weights" and self._normal:
            if e.global_step in self._expected_saves and e.path == self._weights_path:
                self._expected_saves.discard(e.global_step)  # announced by the start line; a second one prints
                return
            self._print(f"saved weights: {e.path} (step {e.global_step})")
            if self._save_schedule is not None and e.path != self._weights_path:
                self._weights_path = e.path  # saved elsewhere than announced: said once, then the schedule holds
        elif e.kind == "best" and self.verbosity == "verbose":
            self._print(f"saved best weights: {e.path} (step {e.global_step})")
        elif e.kind == "resume" and self.verbosity == "verbose":
            self._print(f"saved resume state: {e.path} (step {e.global_step})")

    def on_state_changed(self, e: StateChanged) -> None:
        if self._normal:
            self._print(f"{e.state}" + (f": {e.reason}" if e.reason else ""))

    def on_alert(self, e: Alert) -> None:
        self._print(f"{e.level}: {e.message}", err=True)

    def on_run_ended(self, e: RunEnded) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        last_to_err = self._out_closed  # the way to resume must reach someone
        if e.status == RunState.FINISHED:
            self._print(f"finished {e.global_step}/{e.total_steps} steps; run record: {e.run_dir}", err=last_to_err)
        elif e.status == RunState.STOPPED:
            hint = f"; resume with: {resume_command(e.run_dir)}" if e.resumable else ""
            self._print(f"stopped at step {e.global_step}/{e.total_steps}{hint}", err=last_to_err)
        else:
            hint = f" (resume from the last save with: {resume_command(e.run_dir)})" if e.resumable else ""
            self._print(f"error: {e.error}{hint}", err=True)


def _silence(stream: TextIO) -> None:
    """Point a closed pipe's file descriptor at /dev/null, so that the interpreter's flush at exit
    does not fail on it too (what Python's docs advise for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's StringIO): nothing to flush
        pass


def _weights_path(e: RunStarted) -> Optional[str]:
    """Where the run saves its weights, from its config (a note tells when another live run made it
    save into its run directory instead)."""
    from .config import RunConfig
    from .errors import MiniMindError

    try:
        config = RunConfig.from_dict(e.config)
    except (MiniMindError, KeyError, TypeError, ValueError):
        return None
    path = Path(config.train.save_dir) / config.family.weights_name(config.train.save_weight, config.model)
    for note in e.notes:
        if str(path) in note and "saves its weights to " in note:
            return note.rsplit("saves its weights to ", 1)[1]
    return str(path)
