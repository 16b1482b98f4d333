"""RunControl: how a UI, a signal handler or another process steers a running Trainer.

Requests are flags checked by the Trainer between optimizer steps, so each takes effect within one
step. Another process asks through files in the run directory's `control/` folder (see run_store);
a request is only a command word, never a path or code.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from ..storage.run_store import CONTROL_COMMANDS


class RunControl:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._paused = False
        self._pause_reason = "pause requested"
        self._stop_reason: Optional[str] = None
        self._save_requested = False
        self._inbox: Optional[Callable[[], list[str]]] = None

    # ---- requests (any thread) -------------------------------------------------------------
    def pause(self, reason: str = "pause requested") -> None:
        with self._lock:
            self._paused, self._pause_reason = True, reason

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._wake.notify_all()

    def stop(self, reason: str = "stop requested") -> None:
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            self._wake.notify_all()

    def save_now(self) -> None:
        with self._lock:
            self._save_requested = True

    def apply(self, command: str) -> None:
        """Apply one command word (CONTROL_COMMANDS); unknown words are ignored."""
        action = {"pause": self.pause, "resume": self.resume, "stop": lambda: self.stop("stop requested"),
                  "save": self.save_now}.get(command) if command in CONTROL_COMMANDS else None
        if action:
            action()

    # ---- the Trainer's side ----------------------------------------------------------------
    def connect_inbox(self, read_requests: Callable[[], list[str]]) -> None:
        """Also take command words from another source (the run directory), read at each poll."""
        self._inbox = read_requests

    def poll(self) -> None:
        if self._inbox is not None:
            for command in self._inbox():
                self.apply(command)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def pause_reason(self) -> str:
        return self._pause_reason

    @property
    def stop_reason(self) -> Optional[str]:
        return self._stop_reason

    def take_save_request(self) -> bool:
        with self._lock:
            requested, self._save_requested = self._save_requested, False
            return requested

    def wait(self, timeout: float) -> None:
        """Sleep while paused, waking early for resume or stop."""
        with self._lock:
            if self._paused and self._stop_reason is None:
                self._wake.wait(timeout)
