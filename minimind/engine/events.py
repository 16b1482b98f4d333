"""Typed events the Trainer reports. Observers (console printer, run recorder, TUI, trackers) get
them in the training thread and must return quickly. `to_record()` is the run directory's JSON form."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Event:
    time: float = field(default_factory=time.time, kw_only=True)

    @property
    def event_name(self) -> str:
        return type(self).__name__

    def to_record(self) -> dict:
        return {"event": self.event_name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str
    run_dir: str
    config: dict
    n_params: int
    device: str  # "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
    precision: str  # what actually runs, e.g. "float32" or "bfloat16 autocast"
    data_path: str  # the corpus actually read
    n_docs: int
    iters_per_epoch: int  # micro-batches per epoch
    total_steps: int  # micro-batches in the whole run
    start_step: int  # global micro-batch index already done (0 for a fresh run)
    world_size: int = 1
    notes: tuple[str, ...] = ()  # one-line facts worth telling once (fallbacks, resumed from ...)


@dataclass(frozen=True)
class StepLogged(Event):
    """One logged optimizer step (every log_interval micro-batches and at each epoch's end)."""

    epoch: int  # 1-based
    epochs: int
    step: int  # micro-batch index within the epoch, 1-based (MiniMind's `step`)
    iters: int
    global_step: int  # micro-batches done in the run
    total_steps: int
    loss: float  # mean over the optimizer step's micro-batches
    logits_loss: float
    aux_loss: float
    lr: float
    grad_norm: float  # before clipping
    tokens: int  # real (non-pad) target tokens since the previous log
    tokens_per_s: float
    positions_per_s: float  # padded positions: what the hardware processed
    step_time: float  # seconds per micro-batch since the previous log
    elapsed: float  # training seconds in this process (pauses excluded)
    epoch_eta: float  # seconds left in this epoch
    total_eta: float  # seconds left in the run


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: str  # "weights" (classic fp16 .pth) or "resume" (exact-resume state)
    path: str
    global_step: int


@dataclass(frozen=True)
class StateChanged(Event):
    state: str  # "running", "paused", "stopping"
    reason: str = ""


@dataclass(frozen=True)
class Alert(Event):
    message: str
    level: str = "warning"  # "warning" or "error"


@dataclass(frozen=True)
class RunEnded(Event):
    status: str  # "finished", "stopped" or "failed"
    global_step: int
    total_steps: int
    run_dir: str
    error: Optional[str] = None
    resumable: bool = False  # an exact-resume state exists to continue from


EVENT_TYPES = {cls.__name__: cls for cls in (RunStarted, StepLogged, CheckpointSaved, StateChanged, Alert, RunEnded)}


def event_from_record(record: dict) -> Optional[Event]:
    """The event a run-directory record describes (None for unknown kinds); extra keys are ignored."""
    cls = EVENT_TYPES.get(record.get("event", ""))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in record.items() if k in names}
    if "notes" in values:
        values["notes"] = tuple(values["notes"])
    try:
        return cls(**values)
    except TypeError:  # a record from another version missing a field
        return None
