"""One file write at a time on a background thread, so a weights save (serialise, fsync, replace)
overlaps the next training step instead of stalling it. Failures surface on the caller's thread."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class BackgroundWriter:
    def __init__(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._finished: list[Any] = []
        self._lock = threading.Lock()

    def submit(self, write: Callable[[], None], tag: Any) -> list[Any]:
        """Start `write` once the previous write is done; returns the tags of writes finished since
        the last call (raising the error of a write that failed)."""
        finished = self.finished(wait=True)
        thread = threading.Thread(target=self._run, args=(write, tag), name="minimind-save", daemon=True)
        self._thread = thread
        thread.start()
        return finished

    def finished(self, wait: bool = False) -> list[Any]:
        """Tags of the writes completed since the last call; with `wait`, the write in flight too."""
        if wait and self._thread is not None:
            self._thread.join()
        with self._lock:
            done, self._finished = self._finished, []
            error, self._error = self._error, None
        if error is not None:
            raise error
        return done

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, write: Callable[[], None], tag: Any) -> None:
        try:
            write()
        except BaseException as e:  # handed to the training thread, which reports it
            with self._lock:
                self._error = e
            return
        with self._lock:
            self._finished.append(tag)
