"""The run directory: the one contract between the Trainer and every viewer.

{save_dir}/runs/{run_id}/
  config.json    resolved RunConfig + versions, world size, start time
  metrics.jsonl  one StepLogged record per logged step
  events.jsonl   every other event (started, paused, checkpoint saved, ended ...)
  status.json    state, pid, host, heartbeat: lets another process tell a live run from a dead one
  checkpoints/   resume.pt: the exact-resume state
  control/       one small file per request from another process (pause, resume, stop, save)

Only the training process writes here (control/ excepted); JSON files are replaced atomically and
JSONL files are appended line by line, so a reader never sees half a record that it cannot skip.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Optional

from ..errors import CheckpointError
from ..events import CheckpointSaved, Event, EventHandler, RunEnded, RunStarted, RunState, StateChanged, StepLogged
from .atomic import atomic_write_json, atomic_write_text, read_jsonl

RUNS_DIR = "runs"
# What another process may ask of a run: command words only, never paths or code.
CONTROL_COMMANDS = ("pause", "resume", "stop", "save")
HEARTBEAT_S = 2.0  # how often a live run refreshes status.json at most
STALE_S = 60.0  # a live state older than this, from a process we cannot see, is considered lost


class RunStore(EventHandler):
    """One run directory. As an event handler it records a run (the training process); its read
    methods serve every other process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._files: dict[Path, IO[str]] = {}
        self._status: dict = {}
        self._last_heartbeat = 0.0

    # ---- layout --------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def resume_path(self) -> Path:
        return self.checkpoints_dir / "resume.pt"

    @property
    def control_dir(self) -> Path:
        return self.path / "control"

    @classmethod
    def create(cls, save_dir: str | os.PathLike, run_name: Optional[str] = None) -> "RunStore":
        """A new, empty run directory; never reuses an existing one (two runs never share files)."""
        runs = Path(save_dir) / RUNS_DIR
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create {runs} ({e.strerror}): choose a writable --save_dir") from None
        if not os.access(runs, os.W_OK):
            raise CheckpointError(f"{runs} is not writable: choose a writable --save_dir")
        base = run_name or time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            path = runs / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            store = cls(path)
            store.checkpoints_dir.mkdir()
            store.control_dir.mkdir()
            return store
        raise CheckpointError(f"too many runs named {base} in {runs}: pick another --run-name")

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunStore":
        p = Path(path)
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p} is not a run directory (no config.json): give a folder under "
                                  f"{{save_dir}}/{RUNS_DIR}/, see `minimind runs list`")
        return cls(p)

    # ---- writing (the training process) ----------------------------------------------------
    def write_config(self, record: dict) -> None:
        atomic_write_json(self.config_path, record)

    def on_event(self, event: Event) -> None:
        """Any event without a handler of its own: appended to events.jsonl."""
        self._append(self.events_path, event.to_record())

    def __call__(self, event: Event) -> None:
        handler = getattr(self, event.handler_name, None)
        (handler or self.on_event)(event)

    def on_step_logged(self, event: StepLogged) -> None:
        self._append(self.metrics_path, event.to_record())
        self._status.update(global_step=event.global_step, total_steps=event.total_steps)
        self.heartbeat()

    def on_run_started(self, event: RunStarted) -> None:
        self.on_event(event)
        self._status = {"run_id": self.run_id, "state": RunState.RUNNING, "pid": os.getpid(),
                        "host": socket.gethostname(), "started": event.time,
                        "global_step": event.start_step, "total_steps": event.total_steps}
        self.heartbeat(force=True)

    def on_state_changed(self, event: StateChanged) -> None:
        self.on_event(event)
        self._status.update(state=event.state, reason=event.reason)
        self.heartbeat(force=True)

    def on_checkpoint_saved(self, event: CheckpointSaved) -> None:
        self.on_event(event)
        self._status.setdefault("checkpoints", {})[event.kind] = {"path": event.path, "global_step": event.global_step}
        self.heartbeat(force=True)

    def on_run_ended(self, event: RunEnded) -> None:
        self.on_event(event)
        self._status.update(state=event.status, global_step=event.global_step, error=event.error,
                            resumable=event.resumable, ended=event.time)
        self.heartbeat(force=True)
        self.close()

    def heartbeat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            atomic_write_json(self.status_path, {**self._status, "heartbeat": now})

    def truncate_after(self, global_step: int) -> None:
        """Drop every step-stamped record past a resume point: what a process that died before
        saving its resume state logged (steps, checkpoints, evaluations) never happened."""
        self.close()  # later records go to the rewritten files, not the replaced ones
        for path in (self.metrics_path, self.events_path):
            if not path.is_file():
                continue
            kept = [r for r in read_jsonl(path) if not _step_of(r) > global_step]
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))

    def _append(self, path: Path, record: dict) -> None:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "a", encoding="utf-8")
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            os.fsync(f.fileno())
            f.close()
        self._files.clear()

    # ---- control requests -----------------------------------------------------------------
    def send(self, command: str) -> None:
        """Ask the process training this run to pause, resume, stop or save (from any process)."""
        if command not in CONTROL_COMMANDS:
            raise CheckpointError(f"unknown command {command!r}: use one of {', '.join(CONTROL_COMMANDS)}")
        self.control_dir.mkdir(exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{command}"
        tmp = self.control_dir / f".{name}.tmp"
        tmp.write_text(command)
        os.replace(tmp, self.control_dir / name)

    def take_requests(self) -> list[str]:
        """Command words waiting in control/, oldest first; each is consumed."""
        try:
            names = sorted(e.name for e in os.scandir(self.control_dir) if not e.name.startswith("."))
        except FileNotFoundError:
            return []
        commands = []
        for name in names:
            match = re.fullmatch(r"\d+-\d+-(\w+)", name)
            try:
                os.unlink(self.control_dir / name)
            except FileNotFoundError:
                continue
            if match and match.group(1) in CONTROL_COMMANDS:
                commands.append(match.group(1))
        return commands

    # ---- reading (any process) -----------------------------------------------------------
    def read_config(self) -> dict:
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{self.config_path} cannot be read ({e}): the run record is damaged") from None

    def read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def read_events(self) -> list[dict]:
        return read_jsonl(self.events_path)

    def state(self) -> RunState:
        """The run's state as another process sees it: a live state whose process is gone is LOST."""
        status = self.read_status()
        state = RunState.parse(status.get("state"))
        if state.live and not _looks_alive(status):
            return RunState.LOST
        return state


def _step_of(record: dict) -> int:
    step = record.get("global_step")
    return step if isinstance(step, int) else -1


def _looks_alive(status: dict) -> bool:
    if status.get("host") == socket.gethostname() and isinstance(status.get("pid"), int):
        try:
            os.kill(status["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return time.time() - status.get("heartbeat", 0) < STALE_S * 10  # alive pid: allow long steps
    return time.time() - status.get("heartbeat", 0) < STALE_S


@dataclass
class RunSummary:
    """What `minimind runs list` and the Runs view show for one run."""

    run_id: str
    path: Path
    arch: str  # the model family
    stage: str
    state: RunState
    global_step: int
    total_steps: int
    last_loss: Optional[float]
    best_loss: Optional[float]
    best_eval: Optional[float]  # the lowest held-out loss, if the run evaluates
    evals: list[tuple[int, float]]  # (global step, eval loss) of every evaluation
    started: Optional[float]
    duration: Optional[float]  # seconds from start to end (or to the last heartbeat)
    checkpoints: dict  # kind -> path
    resumable: bool

    @classmethod
    def of(cls, store: RunStore) -> "RunSummary":
        status = store.read_status()
        metrics = store.read_metrics()
        try:
            train = store.read_config().get("train", {})
        except CheckpointError:
            train = {}
        losses = [m["loss"] for m in metrics if isinstance(m.get("loss"), (int, float))]
        finite = [x for x in losses if x == x and abs(x) != float("inf")]
        evals = [(r["global_step"], r["eval_loss"]) for r in store.read_events()
                 if r.get("event") == "EvalDone" and isinstance(r.get("global_step"), int)
                 and isinstance(r.get("eval_loss"), (int, float))]
        finite_evals = [loss for _, loss in evals if math.isfinite(loss)]
        started = status.get("started")
        end = status.get("ended") or status.get("heartbeat")
        return cls(
            run_id=store.run_id, path=store.path, arch=str(train.get("arch", "classic")),
            stage=str(train.get("stage", "pretrain")), state=store.state(),
            global_step=int(status.get("global_step", metrics[-1]["global_step"] if metrics else 0)),
            total_steps=int(status.get("total_steps", 0)),
            last_loss=losses[-1] if losses else None, best_loss=min(finite) if finite else None,
            best_eval=min(finite_evals) if finite_evals else None, evals=evals,
            started=started, duration=(end - started) if started and end else None,
            checkpoints={k: v["path"] for k, v in status.get("checkpoints", {}).items()},
            resumable=store.resume_path.is_file(),
        )


def list_runs(save_dir: str | os.PathLike) -> list[RunStore]:
    """Run directories under save_dir, oldest first."""
    runs = Path(save_dir) / RUNS_DIR
    if not runs.is_dir():
        return []
    stores = [RunStore(p) for p in runs.iterdir() if (p / "config.json").is_file()]
    return sorted(stores, key=lambda s: (s.read_status().get("started") or s.config_path.stat().st_mtime, s.run_id))


def find_resumable(save_dir: str | os.PathLike,
                   matching: Callable[[dict], bool] = lambda config: True) -> Optional[RunStore]:
    """The newest run under save_dir that did not finish, is not live, has an exact-resume state and
    whose recorded config is `matching`."""
    for store in reversed(list_runs(save_dir)):
        state = store.state()
        if state != RunState.FINISHED and not state.live and store.resume_path.is_file():
            try:
                config = store.read_config()
            except CheckpointError:
                continue
            if matching(config):
                return store
    return None
