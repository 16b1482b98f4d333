"""Sessions: the one way the app drives a run, wherever the run lives.

- ThreadSession: a Trainer in a thread of this process (the app's worker).
- AttachedSession: a run in another process (`minimind train` in tmux or nohup, a run this app
  launched detached, a torchrun job), followed through its run directory and steered through its
  control/ folder.

Both expose run(emit) (blocking: call it from a worker thread; it calls emit(event) for every
engine event) and pause / resume / stop / save. No Textual here.
"""

from __future__ import annotations

import abc
import os
import subprocess
import sys
import tempfile
import threading
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import psutil

from minimind.config import RunConfig
from minimind.engine.control import RunControl
from minimind.engine.host_memory import keep_freed_memory
from minimind.engine.watch import RunTail
from minimind.errors import MiniMindError
from minimind.events import Event
from minimind.storage.atomic import atomic_write_json
from minimind.storage.run_store import RUNS_DIR, RunStore

if TYPE_CHECKING:
    import torch

Emit = Callable[[Event], None]
POLL_S = 0.5  # how often a followed run directory is read
REAP_S = 60.0  # how long a finished launched process may take to exit (a loaded machine is slow to tear down)

# Where a run the app starts trains: the one declaration behind `minimind-tui --launch` and the form.
LAUNCH_MODES = {
    "process": "background process: survives closing the app or an SSH drop",
    "thread": "in this app (a thread): ends with the app",
}


class SessionKind(str, Enum):
    THREAD = "thread"  # a Trainer in this process
    ATTACHED = "attached"  # a run in another process, followed through its run directory


class Session(abc.ABC):
    """What the app needs from a run, wherever it trains."""

    kind: SessionKind
    run_dir: Optional[Path] = None

    @abc.abstractmethod
    def run(self, emit: Emit) -> None:
        """Follow the run to its end (or until detached), calling emit(event) for every event."""

    @abc.abstractmethod
    def pause(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def save(self) -> None: ...

    @abc.abstractmethod
    def detach(self) -> None:
        """Stop following the run without affecting it (a thread session cannot be detached)."""


TRAINING_SWITCH_INTERVAL_S = 0.001


class ThreadSession(Session):
    """A new run, or the exact resume of one, trained in this process."""

    kind = SessionKind.THREAD

    def __init__(self, config: Optional[RunConfig] = None, resume: Optional[str | os.PathLike] = None,
                 overrides: Optional[dict] = None):
        self.control = RunControl()
        self.config, self.resume_from, self.overrides = config, resume, overrides
        self.device: Optional[torch.device] = None  # once the run is built
        self.finished = threading.Event()  # set once run() returns, whatever happened
        keep_freed_memory()  # here, before the training thread exists: a thread's malloc arena is chosen once

    def run(self, emit: Emit) -> None:
        from minimind.engine.trainer import Trainer  # torch loads only when a run starts

        # The training thread needs the GIL between torch ops; while the UI thread draws, it would wait
        # up to the switch interval (5 ms by default) each time. 1 ms hands it back sooner.
        sys.setswitchinterval(min(sys.getswitchinterval(), TRAINING_SWITCH_INTERVAL_S))
        try:
            # Building checks the input: a MiniMindError here is bad input, reported before any work.
            trainer = Trainer(self.config, control=self.control, observers=[emit], resume=self.resume_from,
                              overrides=self.overrides)
            self.device = trainer.precision.device
            self.run_dir = trainer.store.path if trainer.store else None
            trainer.run()
        finally:
            self.finished.set()

    def detach(self) -> None:
        raise MiniMindError("a run inside the app cannot be detached: stop it, or quit with 'keep running'")

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def stop(self) -> None:
        self.control.stop("stop requested in the app")

    def save(self) -> None:
        self.control.save_now()


class AttachedSession(Session):
    """A run in another process, followed through its run directory."""

    kind = SessionKind.ATTACHED

    def __init__(self, run_dir: str | os.PathLike, process: Optional[subprocess.Popen] = None,
                 log_path: Optional[Path] = None, wait_s: float = 120.0):
        self.path = Path(run_dir)
        self.run_dir = self.path
        self.process = process  # set when this app launched it
        self.log_path = log_path
        self.wait_s = wait_s
        self._detached = False
        self._store: Optional[RunStore] = None

    def run(self, emit: Emit) -> None:
        store = self._wait_for_run()
        if store is None:
            return
        tail = RunTail(store)
        while not self._detached:
            for event in tail.poll():
                emit(event)
            if tail.ended is not None:
                self._reap()
                return
            time.sleep(POLL_S)

    def _reap(self) -> None:
        """Collect the exit status of a process this app launched, so it does not linger as a zombie."""
        if self.process is not None:
            try:
                self.process.wait(timeout=REAP_S)
            except subprocess.TimeoutExpired:
                pass  # still saving or tearing down: subprocess reaps it at a later Popen

    def _wait_for_run(self) -> Optional[RunStore]:
        """The run's store once its directory exists; a launched process that dies first is an error."""
        deadline = time.time() + self.wait_s
        while not self._started():
            if self._detached:
                return None
            if self.process is not None and self.process.poll() is not None:
                raise MiniMindError(self._launch_error())
            if time.time() > deadline:
                raise MiniMindError(f"{self.path} did not appear within {self.wait_s:.0f} s: "
                                    f"see {self.log_path or 'the training process output'}")
            time.sleep(POLL_S)
        self._store = RunStore.open(self.path)
        return self._store

    def _started(self) -> bool:
        if not (self.path / "config.json").is_file():
            return False
        if self.process is None:
            return True
        # A launched resume reuses an existing directory: wait until our process (or, under torchrun,
        # its rank 0 child) has taken it over.
        pid = RunStore(self.path).read_status().get("pid")
        if not isinstance(pid, int):
            return False
        if pid == self.process.pid:
            return True
        try:
            return any(parent.pid == self.process.pid for parent in psutil.Process(pid).parents())
        except psutil.Error:
            return False

    def _launch_error(self) -> str:
        lines = []
        if self.log_path and self.log_path.is_file():
            lines = [l for l in self.log_path.read_text(errors="replace").splitlines() if l.strip()]
        errors = [l.removeprefix("error: ") for l in lines if l.startswith("error:")]
        return errors[-1] if errors else (lines[-1] if lines else "the training process exited before starting")

    def _send(self, command: str) -> None:
        store = self._store or RunStore.open(self.path)
        store.send(command)

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def save(self) -> None:
        self._send("save")

    def detach(self) -> None:
        self._detached = True


def unique_run_name(save_dir: str | os.PathLike, base: Optional[str] = None) -> str:
    base = base or time.strftime("%Y%m%d-%H%M%S")
    runs = Path(save_dir) / RUNS_DIR
    name, n = base, 1
    while (runs / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def launch_detached(args: list[str], save_dir: str | os.PathLike, run_name: str) -> AttachedSession:
    """Start `python -m minimind <args>` in its own session (it survives this app and SSH drops)."""
    logs = Path(save_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{run_name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "minimind", *args], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return AttachedSession(Path(save_dir) / RUNS_DIR / run_name, process=process, log_path=log_path)


def launch_new_run(config: RunConfig) -> AttachedSession:
    """A new run of `config` in a detached `minimind train` process."""
    save_dir = config.train.save_dir
    name = unique_run_name(save_dir, config.train.run_name)
    fd, path = tempfile.mkstemp(prefix="minimind-config-", suffix=".json")
    os.close(fd)
    atomic_write_json(path, config.replace(run_name=name).to_dict())
    return launch_detached(["train", "--config", path], save_dir, name)


def launch_resume(run_dir: str | os.PathLike) -> AttachedSession:
    """Continue a stopped run exactly, in a detached process."""
    run_dir = Path(run_dir)
    save_dir = run_dir.parent.parent
    return launch_detached(["train", "--resume", str(run_dir)], save_dir, run_dir.name)
