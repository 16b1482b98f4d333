"""The run directory: the one contract between the Trainer and every viewer.

{save_dir}/runs/{run_id}/
  config.json    resolved RunConfig + versions, world size, start time
  metrics.jsonl  one StepLogged record per logged step
  events.jsonl   every other event (started, paused, checkpoint saved, evaluated, ended ...)
  status.json    state, pid, host, heartbeat: lets another process tell a live run from a dead one
  owner.lock     flocked by the one process training the run (released by the kernel when it dies)
  checkpoints/   resume.pt: the exact-resume state
  control/       one small file per request from another process (pause, resume, stop, save)

Only the training process writes here (control/ excepted); JSON files are replaced atomically and
JSONL files are appended line by line, so a reader never sees half a record that it cannot skip.
Everything read back is checked: a damaged record is skipped or reported, never a crash.
"""

from __future__ import annotations

import bisect
import errno
import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

from ..errors import CheckpointError, MiniMindError
from ..events import (CheckpointSaved, Event, EventHandler, RunEnded, RunStarted, RunState, StateChanged,
                      StepLogged)
from .atomic import atomic_write_json, atomic_write_text, pid_alive, read_jsonl
from .locks import OwnerLock

RUNS_DIR = "runs"
# What another process may ask of a run: command words only, never paths or code.
CONTROL_COMMANDS = ("pause", "resume", "stop", "save")
HEARTBEAT_S = 2.0  # how often a live run refreshes status.json at most
STALE_S = 60.0  # a live state from another machine, not refreshed for this long, is considered lost
RESERVE_BYTES = 256 << 10  # kept free in each run: enough to record how a run ended on a full disk
# status.json fields and the types a reader accepts (anything else marks the run damaged).
STATUS_FIELDS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "state": (str,), "pid": (int,), "host": (str,), "started": (int, float),
    "heartbeat": (int, float), "global_step": (int,), "total_steps": (int,), "checkpoints": (dict,),
    "error": (str, type(None)), "resumable": (bool,), "ended": (int, float), "reason": (str,),
}


class StorageError(MiniMindError):
    """The run directory cannot be written (a full disk, a read-only mount): one line for the user."""


class RunStore(EventHandler):
    """One run directory. As an event handler it records a run (the training process); its read
    methods serve every other process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._files: dict[Path, IO[str]] = {}
        self._counts: dict[Path, int] = {}  # records in each JSONL file, as this writer left it
        self._status: dict = {}
        self._last_heartbeat = 0.0
        self.lock = OwnerLock(self.path / "owner.lock")

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

    @property
    def reserve_path(self) -> Path:
        return self.path / ".space-reserve"

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
            except OSError as e:
                raise CheckpointError(f"cannot create {path} ({e.strerror}): choose a writable --save_dir") from None
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

    # ---- owning (the training process) -------------------------------------------------------
    def claim(self) -> None:
        """Become the one process training this run, or a CheckpointError naming the one that is."""
        try:
            owned = self.lock.acquire()
        except OSError as e:
            raise CheckpointError(f"cannot claim {self.path} ({e.strerror}): is it on a read-only mount? "
                                  "Copy the run somewhere writable") from None
        if not owned:
            raise CheckpointError(f"run {self.run_id} is being trained by {self.lock.owner()}: steer it with "
                                  f"`minimind pause/resume/stop {self.path}`, or wait for it to end")
        self.checkpoints_dir.mkdir(exist_ok=True)
        self.control_dir.mkdir(exist_ok=True)
        if not self.reserve_path.exists():
            self._guarded(self.reserve_path, lambda: self.reserve_path.write_bytes(b"\0" * RESERVE_BYTES))

    def release(self) -> None:
        self.close()
        self.lock.release()

    # ---- writing (the training process) ----------------------------------------------------
    def write_config(self, record: dict) -> None:
        self._guarded(self.config_path, lambda: atomic_write_json(self.config_path, record))

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
        saved: dict[str, Any] = {"path": event.path, "global_step": event.global_step}
        try:  # what the file was, so a later reader can tell whether another run has overwritten it since
            stat = os.stat(event.path)
            saved.update(file_identity(stat))
        except OSError:
            pass
        self._status.setdefault("checkpoints", {})[event.kind] = saved
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
            self._guarded(self.status_path, lambda: atomic_write_json(self.status_path, {**self._status,
                                                                                           "heartbeat": now}))

    def record_counts(self) -> dict[str, int]:
        """How many records metrics.jsonl and events.jsonl hold now: saved with the resume state,
        so a resume keeps exactly the history written before it, whatever its step numbers."""
        return {"metrics": self._count(self.metrics_path), "events": self._count(self.events_path)}

    def truncate_after(self, global_step: int, counts: Optional[dict] = None) -> None:
        """Drop what was recorded after a resume point: what a process that died before saving its
        next resume state logged (steps, checkpoints, evaluations) never happened.

        With `counts` (record_counts() at the save) the first records are kept by position, so a
        history in other step units (a resume with another process count) stays whole; after them,
        only the saving session's late reports of steps up to the save (a background weights save)
        stay. Without (a resume state of an older version), every record past the step goes."""
        self.close()  # later records go to the rewritten files, not the replaced ones
        for name, path in (("metrics", self.metrics_path), ("events", self.events_path)):
            records = read_jsonl(path)
            n = counts.get(name) if isinstance(counts, dict) else None
            if isinstance(n, int) and 0 <= n <= len(records):
                kept = records[:n]
                if name == "events":
                    for r in records[n:]:
                        if r.get("event") == RunStarted.__name__:  # a later session, resumed from this save
                            break
                        if _step_of(r) <= global_step:
                            kept.append(r)
            else:
                kept = [r for r in records if not _step_of(r) > global_step]
            if path.is_file():
                self._rewrite(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            self._counts[path] = len(kept)

    def _count(self, path: Path) -> int:
        if path not in self._counts:
            self._counts[path] = len(read_jsonl(path))
        return self._counts[path]

    def _rewrite(self, path: Path, text: str) -> None:
        self._guarded(path, lambda: atomic_write_text(path, text))

    def _append(self, path: Path, record: dict) -> None:
        def write() -> None:
            before = self._count(path)
            f = self._files.get(path)
            if f is None:
                f = open(path, "a", encoding="utf-8")
                if f.tell() and not _ends_with_newline(path):  # a crash tore the last line: do not extend it
                    f.write("\n")
                self._files[path] = f
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            self._counts[path] = before + 1

        self._guarded(path, write)

    def _guarded(self, path: Path, write: Callable[[], Any]) -> None:
        """Run a write; on a full disk, give up the run's reserve and try once more (so how the run
        ended can still be recorded), then fail with one line."""
        try:
            write()
            return
        except OSError as e:
            if e.errno == errno.ENOSPC and self.reserve_path.exists():
                self._drop_files()
                self.reserve_path.unlink(missing_ok=True)
                try:
                    write()
                except OSError:
                    pass
            raise StorageError(f"cannot write {path} ({e.strerror or e}): free disk space or choose another "
                               "--save_dir; the previous checkpoint is intact") from None

    def _drop_files(self) -> None:
        """Forget open appenders after a failed write (their buffers may hold half a record)."""
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
        self._files.clear()

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.flush()
                os.fsync(f.fileno())
                f.close()
            except OSError:
                pass
        self._files.clear()

    # ---- control requests -----------------------------------------------------------------
    def send(self, command: str) -> None:
        """Ask the process training this run to pause, resume, stop or save (from any process)."""
        if command not in CONTROL_COMMANDS:
            raise CheckpointError(f"unknown command {command!r}: use one of {', '.join(CONTROL_COMMANDS)}")
        name = f"{time.time_ns():020d}-{os.getpid()}-{command}"
        try:
            self.control_dir.mkdir(exist_ok=True)
            tmp = self.control_dir / f".{name}.tmp"
            tmp.write_text(command)
            os.replace(tmp, self.control_dir / name)
        except OSError as e:
            raise CheckpointError(f"cannot write to {self.control_dir} ({e.strerror}): check its permissions") from None

    def take_requests(self) -> list[str]:
        """Command words waiting in control/, oldest first; each request file is consumed (an unknown
        word too). Anything else there (a folder, an odd file) is left alone."""
        try:
            entries = sorted((e for e in os.scandir(self.control_dir) if not e.name.startswith(".")),
                             key=lambda e: e.name)
        except OSError:
            return []
        commands = []
        for entry in entries:
            match = re.fullmatch(r"\d+-\d+-(\w+)", entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            if match.group(1) in CONTROL_COMMANDS:
                commands.append(match.group(1))
        return commands

    # ---- reading (any process) -----------------------------------------------------------
    def read_config(self) -> dict:
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{self.config_path} cannot be read ({e}): the run record is damaged") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.config_path} is not a JSON object: the run record is damaged")
        return data

    def status_problem(self) -> Optional[str]:
        """Why status.json cannot be trusted, or None."""
        try:
            data = json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return f"status.json is not readable JSON ({str(e)[:80]})"
        if not isinstance(data, dict):
            return f"status.json is a JSON {type(data).__name__}, not an object"
        for name, kinds in STATUS_FIELDS.items():
            value = data.get(name)
            if name in data and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
                return f"status.json field {name} is {value!r}"
        return None

    def read_status(self) -> dict:
        """status.json if it is whole and well-formed, else {} (see status_problem)."""
        if self.status_problem() is not None:
            return {}
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def read_metrics(self) -> list[dict]:
        """The step records, those of the wrong shape skipped."""
        return [m for m in read_jsonl(self.metrics_path)
                if isinstance(m.get("global_step"), int) and _number(m.get("loss")) is not None]

    def first_started(self) -> Optional[float]:
        """When the run first started (a resume does not move it): the first record of events.jsonl,
        read alone, or status.json's start of the latest session."""
        try:
            with open(self.events_path, "rb") as f:
                first = json.loads(f.readline())
            if isinstance(first, dict) and first.get("event") == RunStarted.__name__:
                return _number(first.get("time"))
        except (OSError, ValueError):
            pass
        return _number(self.read_status().get("started"))

    def read_events(self) -> list[dict]:
        return [e for e in read_jsonl(self.events_path) if isinstance(e.get("event"), str)]

    def state(self) -> RunState:
        """The run's state as another process sees it: DAMAGED if its status cannot be read, LOST if it
        says live but nobody holds the run (its process died)."""
        if self.status_problem() is not None:
            return RunState.DAMAGED
        status = self.read_status()
        state = RunState.parse(status.get("state"))
        if state.live and not self._owned_by_a_live_process(status):
            return RunState.LOST
        return state

    def _owned_by_a_live_process(self, status: dict) -> bool:
        if self.lock.owned:
            return True
        age = time.time() - (_number(status.get("heartbeat")) or 0)
        if status.get("host") != socket.gethostname():
            return age < STALE_S  # another machine: only the heartbeat tells
        if self.lock.path.exists():
            return self.lock.held_elsewhere()  # a stopped (SIGSTOP, Ctrl-Z) owner still holds it
        pid = status.get("pid")  # a run recorded before ownership locks: its process id
        return isinstance(pid, int) and pid_alive(pid) and age < STALE_S * 10


def _step_of(record: dict) -> int:
    step = record.get("global_step")
    return step if isinstance(step, int) else -1


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


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
    problem: Optional[str] = None  # why the run is DAMAGED
    # kind -> why that file is no longer what this run saved (weights files are shared by name across runs)
    checkpoint_problems: dict = field(default_factory=dict)
    ran_on: Optional[str] = None  # device and precision the last start resolved ("cpu (2 threads), float32")

    @classmethod
    def of(cls, store: RunStore) -> "RunSummary":
        status = store.read_status()
        metrics = store.read_metrics()
        problem = store.status_problem()
        try:
            train = store.read_config().get("train", {})
            train = train if isinstance(train, dict) else {}
        except CheckpointError as e:
            train, problem = {}, problem or str(e)
        losses = [float(m["loss"]) for m in metrics]
        finite = [x for x in losses if math.isfinite(x)]
        events = store.read_events()
        starts = [r for r in events if r.get("event") == "RunStarted"]
        # what the run computed in, not what was asked (bfloat16 falls back to float32 on most CPUs)
        ran_on = f"{starts[-1].get('device')}, {starts[-1].get('precision')}" if starts else None
        evals = [(r["global_step"], float(r["eval_loss"])) for r in events if _is_eval(r)]
        finite_evals = [loss for _, loss in evals if math.isfinite(loss)]
        last_start, end = _number(status.get("started")), _number(status.get("ended")) or _number(status.get("heartbeat"))
        started = (_number(starts[0].get("time")) if starts else None) or last_start
        saves = {k: v for k, v in status.get("checkpoints", {}).items()
                 if isinstance(v, dict) and isinstance(v.get("path"), str)}
        checkpoints = {k: v["path"] for k, v in saves.items()}
        state = RunState.DAMAGED if problem else store.state()
        checkpoint_problems = {k: CHANGE_NOTES[change] for k, v in saves.items()
                               if (change := checkpoint_change(v, killed=state == RunState.LOST))}
        return cls(
            run_id=store.run_id, path=store.path, arch=str(train.get("arch", "classic")),
            stage=str(train.get("stage", "pretrain")), state=state,
            global_step=status.get("global_step", metrics[-1]["global_step"] if metrics else 0),
            total_steps=status.get("total_steps", 0),
            last_loss=losses[-1] if losses else None, best_loss=min(finite) if finite else None,
            best_eval=min(finite_evals) if finite_evals else None, evals=evals,
            started=started, duration=_sessions_seconds(starts, events + metrics, end) if starts else
            (end - last_start) if last_start and end else None,
            checkpoints=checkpoints, resumable=store.resume_path.is_file(), problem=problem,
            checkpoint_problems=checkpoint_problems, ran_on=ran_on,
        )


@dataclass
class LossCurvePoints:
    steps: list[float]  # x of every logged step, in the step units of the run's last session
    losses: list[float]
    evals: list[tuple[float, float]]  # (x, eval loss)


def loss_curve(store: RunStore) -> LossCurvePoints:
    """A run's loss and evaluations on one step axis. A resume with another process count renumbers the
    steps (the same data position is a step number M/N times as large), so each session's steps are
    scaled to the last session's units by the ratio of the sessions' total steps; drawn raw, the curve
    would jump back and forth at every such resume. A run of one process count is drawn as recorded."""
    metrics, events = store.read_metrics(), store.read_events()
    last_total = _positive(metrics[-1].get("total_steps")) if metrics else None
    starts = [_positive(r.get("total_steps")) for r in events if r.get("event") == RunStarted.__name__]
    last_total = last_total or next((t for t in reversed(starts) if t), None)

    def scaled(step: int, total: Optional[float]) -> float:
        return step * last_total / total if last_total and total and total != last_total else float(step)

    steps = [scaled(m["global_step"], _positive(m.get("total_steps"))) for m in metrics]
    evals, total = [], None
    for r in events:
        if r.get("event") == RunStarted.__name__:
            total = _positive(r.get("total_steps"))
        elif _is_eval(r):
            evals.append((scaled(r["global_step"], total), float(r["eval_loss"])))
    return LossCurvePoints(steps, [float(m["loss"]) for m in metrics], evals)


def _is_eval(record: dict) -> bool:
    """An EvalDone record with the step and loss a curve needs."""
    return (record.get("event") == "EvalDone" and isinstance(record.get("global_step"), int)
            and _number(record.get("eval_loss")) is not None)


def _positive(value: Any) -> Optional[float]:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _sessions_seconds(starts: list[dict], records: list[dict], end: Optional[float]) -> Optional[float]:
    """Wall time of every session of a run (a resume starts one), not of the last alone: each from its
    RunStarted to its last record, the last one to its end (or its last heartbeat)."""
    times = sorted(t for r in records if (t := _number(r.get("time"))) is not None)
    begins = [t for r in starts if (t := _number(r.get("time"))) is not None]
    total = 0.0
    for begin, next_begin in zip(begins, begins[1:] + [math.inf]):
        before_next = bisect.bisect_left(times, next_begin)  # the session's last record is the one before
        last = end if next_begin == math.inf and end is not None else \
            max(times[before_next - 1] if before_next else begin, begin)
        total += max(last - begin, 0.0)
    return total if begins else None


CHANGE_NOTES = {"gone": "no longer there", "overwritten": "overwritten since by another run saving under the same name",
                "changed": "changed since its last record: a save still in flight when the run was killed, or "
                           "another run saving under the same name"}


def checkpoint_change(saved: dict, killed: bool = False) -> Optional[str]:
    """How a recorded checkpoint file ({"path", size, time, inode}) differs from the one the run wrote:
    None (it is that file), "gone", or "overwritten" (another run with the same weights name,
    `{save_weight}_{width}.pth`, saved over it). For a `killed` run (LOST), "changed": its own save
    in flight may have landed after its last record (weights are written in the background)."""
    try:
        stat = os.stat(saved["path"])
    except OSError:
        return "gone"
    return None if is_same_file(saved, stat) else "changed" if killed else "overwritten"


def file_identity(stat: os.stat_result) -> dict[str, int]:
    """What tells a saved file from a later one at the same path: an atomic replace makes a new inode,
    so this holds even where timestamps are coarse (some network and overlay filesystems)."""
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}


def is_same_file(saved: dict, stat: os.stat_result) -> bool:
    """Whether a checkpoint record still describes the file now at its path (records from before the
    inode was kept compare size and time only)."""
    now = file_identity(stat)
    return all(saved.get(key) == now[key] for key in now if key in saved or key != "ino")


def list_runs(save_dir: str | os.PathLike) -> list[RunStore]:
    """Run directories under save_dir, oldest first."""
    runs = Path(save_dir) / RUNS_DIR
    if not runs.is_dir():
        return []
    stores = [RunStore(p) for p in runs.iterdir() if (p / "config.json").is_file()]

    return sorted(stores, key=lambda s: (s.first_started() or s.config_path.stat().st_mtime, s.run_id))


def find_resumable(save_dir: str | os.PathLike,
                   matching: Callable[[dict], bool] = lambda config: True) -> Optional[RunStore]:
    """The newest run under save_dir that did not finish, is not live, has an exact-resume state and
    whose recorded config is `matching`."""
    for store in reversed(list_runs(save_dir)):
        state = store.state()
        if state in (RunState.FINISHED, RunState.DAMAGED) or state.live or not store.resume_path.is_file():
            continue
        try:
            config = store.read_config()
        except CheckpointError:
            continue
        if matching(config):
            return store
    return None
