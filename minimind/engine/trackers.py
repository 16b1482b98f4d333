"""Experiment trackers as optional observers: TensorBoard, Weights & Biases, SwanLab.

None is a dependency: each is imported only when asked for, and a missing one is a one-line error
with its install command. They log the seed's five scalars (loss, logits_loss, aux_loss,
learning_rate, epoch_time) plus tokens/s and grad norm at every logged step, and the run config.
A resumed run continues the same tracker run (its id is kept in the run directory).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from ..config import TRACKERS
from ..errors import MiniMindError
from ..events import EvalDone, EventHandler, RunEnded, RunStarted, StepLogged, event_from_record
from ..storage.atomic import atomic_write_json

INSTALL = {name: f'pip install "minimind-tui[{name}]"' for name in TRACKERS[1:]}
IDS_FILE = "tracker.json"  # {"wandb": "<run id>", "swanlab": "<run id>"}


def scalars(e: StepLogged) -> dict[str, float]:
    """What the seed logs (epoch_time: whole minutes left in the epoch, as its log line) and more."""
    return {"loss": e.loss, "logits_loss": e.logits_loss, "aux_loss": e.aux_loss, "learning_rate": e.lr,
            "epoch_time": e.epoch_eta // 60, "tokens_per_s": e.tokens_per_s, "grad_norm": e.grad_norm}


def eval_scalars(e: EvalDone) -> dict[str, float]:
    return {"eval/loss": e.eval_loss, "eval/ppl": e.eval_ppl}


def default_run_name(config: dict) -> str:
    """MiniMind's own run name for its trackers."""
    t = config["train"]
    return t.get("run_name") or (f"MiniMind-Pretrain-Epoch-{t['epochs']}-BatchSize-{t['batch_size']}"
                                 f"-LearningRate-{t['learning_rate']}")


def _import(module: str):
    """The tracker's package (named as the tracker), or a one-line error with its install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MiniMindError(f"--tracker {module} needs the {module} package, which is not installed: "
                            f"{INSTALL[module]}") from None


class TensorBoardTracker(EventHandler):
    """Event files under {run_dir}/tensorboard (or `log_dir`)."""

    def __init__(self, log_dir: Path, purge_step: Optional[int] = None):
        _import("tensorboard")
        from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

        # purge_step: a resumed run drops the events a crashed process logged after its resume point
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def on_run_started(self, event: RunStarted) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(event.config, indent=2) + "\n```", event.start_step)

    def on_step_logged(self, event: StepLogged) -> None:
        for key, value in scalars(event).items():
            self.writer.add_scalar(f"train/{key}", value, event.global_step, walltime=event.time)

    def on_eval_done(self, event: EvalDone) -> None:
        for key, value in eval_scalars(event).items():
            self.writer.add_scalar(key, value, event.global_step, walltime=event.time)

    def on_run_ended(self, event: RunEnded) -> None:
        self.close()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class _HostedTracker(EventHandler):
    """W&B and SwanLab share an API shape: init(project, name, config, id, resume), log(dict, step), finish()."""

    module = ""

    def __init__(self, run_dir: Path, project: str):
        self.lib = _import(self.module)
        self.run_dir, self.project = run_dir, project
        self.run: Any = None

    def _ids(self) -> dict:
        try:
            return json.loads((self.run_dir / IDS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _remember(self, run_id: str) -> None:
        atomic_write_json(self.run_dir / IDS_FILE, {**self._ids(), self.module: run_id})

    def _init(self, name: str, config: dict, run_id: Optional[str]) -> Any:
        raise NotImplementedError

    def on_run_started(self, event: RunStarted) -> None:
        self.run = self._init(default_run_name(event.config), event.config, self._ids().get(self.module))
        self._remember(str(self.run.id))

    def on_step_logged(self, event: StepLogged) -> None:
        if self.run is not None:
            self.lib.log(scalars(event), step=event.global_step)

    def on_eval_done(self, event: EvalDone) -> None:
        if self.run is not None:
            self.lib.log(eval_scalars(event), step=event.global_step)

    def on_run_ended(self, event: RunEnded) -> None:
        if self.run is not None:
            self.lib.finish()


class WandbTracker(_HostedTracker):
    """Weights & Biases; WANDB_MODE=offline keeps everything local (under the run directory)."""

    module = "wandb"

    def _init(self, name: str, config: dict, run_id: Optional[str]):
        return self.lib.init(project=self.project, name=name, config=config, id=run_id, resume="allow",
                             dir=str(self.run_dir))


class SwanLabTracker(_HostedTracker):
    """SwanLab, MiniMind's other tracker; SWANLAB_MODE=offline (or local) keeps it off the network."""

    module = "swanlab"

    def _init(self, name: str, config: dict, run_id: Optional[str]):
        return self.lib.init(project=self.project, experiment_name=name, config=config, id=run_id,
                             resume="allow", logdir=str(self.run_dir / "swanlog"),
                             mode=os.environ.get("SWANLAB_MODE") or None)


def check_tracker(name: str) -> None:
    """The one-line error of make_tracker, before the run directory exists (a refused run leaves none)."""
    if name != "none":
        _import(name)


def make_tracker(name: str, run_dir: Path, project: str, purge_step: Optional[int] = None):
    """The observer for --tracker `name` (None for "none"); raises MiniMindError before any work."""
    if name == "none":
        return None
    if name == "tensorboard":
        return TensorBoardTracker(run_dir / "tensorboard", purge_step)
    if name == "wandb":
        return WandbTracker(run_dir, project)
    if name == "swanlab":
        return SwanLabTracker(run_dir, project)
    raise MiniMindError(f"--tracker {name!r} is not one of {', '.join(TRACKERS)}")


def export_tensorboard(store, out_dir: Optional[Path] = None) -> Path:
    """Write a recorded run's metrics as TensorBoard event files (for runs trained without a tracker)."""
    log_dir = Path(out_dir) if out_dir else store.path / "tensorboard"
    tracker = TensorBoardTracker(log_dir)
    for record in store.read_events() + store.read_metrics():
        event = event_from_record(record)
        if isinstance(event, (RunStarted, StepLogged, EvalDone)):  # not RunEnded: the writer stays open until here
            tracker(event)
    tracker.close()
    return log_dir
