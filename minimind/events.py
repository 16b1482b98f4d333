"""What a run reports: typed events and the run states they move through.

The Trainer emits events; every viewer (console printer, run recorder, trackers, the TUI in a
thread or attached to another process) receives the same objects. `to_record()` is the run
directory's JSON form and `event_from_record()` turns a record back into the event, so a viewer in
another process sees exactly what a viewer in the training process sees.

A new event type is one dataclass here (or anywhere): subclassing `Event` registers it, so it is
recorded, read back and dispatched without touching any other module. Observers handle an event
by defining `on_<snake_case_name>` (e.g. `on_step_logged`), the same convention Textual uses for
messages; `EventHandler` does that dispatch.

No torch here: the TUI and `minimind runs` import this without loading it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, Optional


class RunState(str, Enum):
    """A run's state as recorded in status.json (the string values are the on-disk form)."""

    IDLE = "idle"  # no run yet (how the app starts)
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"  # recorded as live, but its process is gone (killed, crashed, machine rebooted)
    DAMAGED = "damaged"  # its record cannot be read (see RunSummary.problem)
    UNKNOWN = "unknown"  # no readable status

    def __str__(self) -> str:
        return self.value

    @property
    def live(self) -> bool:
        return self in LIVE_STATES

    @classmethod
    def parse(cls, value: Any) -> "RunState":
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


# States in which a process is (or should be) training the run: it may be steered.
LIVE_STATES = frozenset({RunState.STARTING, RunState.RUNNING, RunState.PAUSED, RunState.STOPPING})
# How a run ends.
END_STATES = frozenset({RunState.FINISHED, RunState.STOPPED, RunState.FAILED})


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Event:
    """Base of every event. Subclasses register themselves by name (see module docstring)."""

    registry: ClassVar[dict[str, type["Event"]]] = {}
    handler_name: ClassVar[str] = "on_event"
    time: float = field(default_factory=time.time, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Event.registry[cls.__name__] = cls
        cls.handler_name = f"on_{_snake(cls.__name__)}"

    @property
    def event_name(self) -> str:
        return type(self).__name__

    def to_record(self) -> dict:
        return {"event": self.event_name, **dataclasses.asdict(self)}


def event_from_record(record: dict) -> Optional[Event]:
    """The event a run-directory record describes (None for unknown kinds or a record that does
    not fit its type); keys the type does not know are ignored."""
    cls = Event.registry.get(str(record.get("event", "")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in record.items() if k in names}
    if isinstance(values.get("notes"), list):
        values["notes"] = tuple(values["notes"])
    try:
        return cls(**values)
    except TypeError:  # a record from another version missing a field
        return None


Observer = Callable[[Event], None]


def dispatch(handler: object, event: Event) -> None:
    """Run `handler.on_<event name>(event)`, if the handler has that method."""
    method = getattr(handler, event.handler_name, None)
    if method is not None:
        method(event)


class EventHandler:
    """An observer: calling it with an event runs its `on_<name>` method, if it has one."""

    def __call__(self, event: Event) -> None:
        dispatch(self, event)


@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str
    run_dir: str
    config: dict
    n_params: int
    model: str  # family and shape in one line: "classic: dim 512, 2 layers, dense, seq 512"
    device: str  # "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
    precision: str  # what actually runs, e.g. "float32" or "bfloat16 autocast"
    data_path: str  # the corpus actually read
    n_docs: int
    iters_per_epoch: int  # micro-batches per epoch
    total_steps: int  # micro-batches in the whole run
    start_step: int  # micro-batches already done (0 for a fresh run)
    world_size: int = 1
    notes: tuple[str, ...] = ()  # one-line facts worth telling once (fallbacks, resumed from ...)


@dataclass(frozen=True)
class StepLogged(Event):
    """One logged optimizer step (every log_interval micro-batches and at each epoch's end).

    The field names are MiniMind's: its `step` counts micro-batches within an epoch."""

    epoch: int  # 1-based
    epochs: int
    step: int  # micro-batch within the epoch, 1-based (MiniMind's `step`)
    iters: int  # micro-batches per epoch
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
    kind: str  # "weights" (the seed's fp16 .pth) or "resume" (exact-resume state)
    path: str
    global_step: int


@dataclass(frozen=True)
class StateChanged(Event):
    state: RunState
    reason: str = ""

    def __post_init__(self) -> None:  # records carry the plain string
        object.__setattr__(self, "state", RunState.parse(self.state))


@dataclass(frozen=True)
class Alert(Event):
    message: str
    level: str = "warning"  # "warning" or "error"


@dataclass(frozen=True)
class RunEnded(Event):
    status: RunState  # FINISHED, STOPPED or FAILED
    global_step: int
    total_steps: int
    run_dir: str
    error: Optional[str] = None
    resumable: bool = False  # an exact-resume state exists to continue from

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunState.parse(self.status))


@dataclass(frozen=True)
class EvalDone(Event):
    """One evaluation on the held-out rows: the token-weighted mean cross-entropy over every real target."""

    global_step: int  # micro-steps done when it ran (the axis of the step records and the curve)
    optimizer_step: int
    eval_loss: float
    eval_ppl: float  # exp(eval_loss)
    eval_tokens: int  # real targets evaluated
    eval_docs: int  # rows (documents or conversations) evaluated
    best: bool  # the lowest eval loss of the run so far
