"""Following a run from another process: the run directory's records turned back into events."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..events import Alert, Event, RunEnded, RunStarted, RunState, event_from_record
from ..storage.run_store import RunStore


class _LineReader:
    """New complete lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.identity: tuple[int, int] | None = None  # (device, inode) of the file being read

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                # A resume rewrites the file (atomically: a new inode): read it again from the start.
                if (stat.st_dev, stat.st_ino) != self.identity or stat.st_size < self.offset:
                    self.identity, self.offset, self.partial = (stat.st_dev, stat.st_ino), 0, b""
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # an incomplete last line waits for its end
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class RunTail:
    """Poll a run directory for events, oldest first, ending with a RunEnded when the run does."""

    def __init__(self, store: RunStore):
        self.store = store
        self._metrics = _LineReader(store.metrics_path)
        self._events = _LineReader(store.events_path)
        self.ended: Optional[RunEnded] = None

    def poll(self) -> list[Event]:
        records = self._events.read() + self._metrics.read()
        events = [e for e in map(event_from_record, records) if e is not None]
        events.sort(key=lambda e: e.time)
        for e in events:
            if isinstance(e, RunEnded):
                self.ended = e
            elif isinstance(e, RunStarted):  # a resumed run continues after its earlier end
                self.ended = None
        if self.ended is None and self.store.state() == RunState.LOST:
            status = self.store.read_status()
            error = "the process training this run is gone (killed or crashed)"
            self.ended = RunEnded(status=RunState.FAILED, global_step=int(status.get("global_step", 0)),
                                  total_steps=int(status.get("total_steps", 0)), run_dir=str(self.store.path),
                                  error=error, resumable=self.store.resume_path.is_file())
            events += [Alert(error, level="error"), self.ended]
        return events

    @property
    def live(self) -> bool:
        return RunState.parse(self.store.read_status().get("state")).live
