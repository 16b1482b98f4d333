"""A scripted session: the test decides which engine events the app sees, and records commands."""

import queue

from minimind.events import RunEnded
from minimind_tui.sessions import Session, SessionKind


class ScriptedSession(Session):
    kind = SessionKind.THREAD

    def __init__(self, fail_with: Exception | None = None):
        self.events: queue.Queue = queue.Queue()
        self.commands: list[str] = []
        self.fail_with = fail_with

    def push(self, *events) -> None:
        for event in events:
            self.events.put(event)

    def run(self, emit) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        while True:
            event = self.events.get(timeout=60)
            if event is None:
                return
            emit(event)
            if isinstance(event, RunEnded):
                return

    def pause(self):
        self.commands.append("pause")

    def resume(self):
        self.commands.append("resume")

    def stop(self):
        self.commands.append("stop")

    def save(self):
        self.commands.append("save")

    def detach(self):
        self.commands.append("detach")
        self.events.put(None)


class Factory:
    """A session factory that hands out prepared sessions and remembers how it was called."""

    def __init__(self, *sessions):
        self.sessions = list(sessions)
        self.calls = []

    def __call__(self, kind, config=None, run_dir=None):
        self.calls.append((kind, config, run_dir))
        return self.sessions.pop(0)
