"""Following a run from another process: RunTail and the attached session, and RunControl."""

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time

from minimind.engine.control import RunControl
from minimind.engine.watch import RunTail
from minimind.events import Event, EventHandler, RunEnded, RunState, event_from_record
from minimind.storage.atomic import atomic_write_json
from minimind.storage.run_store import RunStore
from minimind_tui.sessions import AttachedSession
from tests.test_storage import started, step


@dataclasses.dataclass(frozen=True)
class TestNote(Event):
    """An event type the engine has never heard of: defining it is all it takes."""

    __test__ = False  # not a pytest test class
    text: str
    global_step: int


def test_a_new_event_type_registers_and_dispatches_itself():
    note = TestNote("hi", 3)
    record = note.to_record()
    assert record["event"] == "TestNote" and event_from_record(record) == note

    class Viewer(EventHandler):
        seen: list = []

        def on_test_note(self, event):
            self.seen.append(event.text)

    Viewer()(TestNote("dispatched", 1))
    assert Viewer.seen == ["dispatched"]


def test_a_new_event_type_reaches_an_attached_viewer(tmp_path):
    store = RunStore.create(tmp_path, "r")
    store.write_config({})
    store(started())
    seen = []
    session = AttachedSession(store.path, wait_s=5)
    follower = threading.Thread(target=session.run, args=(seen.append,))
    follower.start()
    store(step(1))
    store(TestNote("from the training process", 1))
    store(RunEnded(RunState.FINISHED, 1, 8, str(store.path)))
    follower.join(10)
    assert not follower.is_alive()
    notes = [e for e in seen if isinstance(e, TestNote)]
    assert [n.text for n in notes] == ["from the training process"]
    assert isinstance(seen[-1], RunEnded)


def test_tail_waits_for_a_line_to_end_and_starts_over_after_a_rewrite(tmp_path):
    store = RunStore.create(tmp_path, "r")
    store.write_config({})
    store(started())
    tail = RunTail(store)
    assert [type(e).__name__ for e in tail.poll()] == ["RunStarted"]
    line = step(1).to_record()
    with open(store.metrics_path, "a") as f:
        text = json.dumps(line) + "\n"
        f.write(text[:20])  # a half-written record is not read yet
        f.flush()
        assert tail.poll() == []
        f.write(text[20:])
    assert [e.global_step for e in tail.poll()] == [1]
    store.truncate_after(0)  # a resume rewrites the records: the reader starts over, even at the same size
    store(step(1))
    assert [type(e).__name__ for e in tail.poll()] == ["RunStarted", "StepLogged"]


def test_a_run_whose_process_died_ends_as_failed_for_its_viewers(tmp_path):
    store = RunStore.create(tmp_path, "r")
    store.write_config({})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    atomic_write_json(store.status_path, {"state": "running", "pid": int(dead.stdout),
                                          "host": socket.gethostname(), "heartbeat": time.time(),
                                          "global_step": 5, "total_steps": 9})
    events = RunTail(store).poll()
    assert [type(e).__name__ for e in events] == ["Alert", "RunEnded"]
    assert events[-1].status == RunState.FAILED and events[-1].global_step == 5


def test_run_control_flags_inbox_and_wakeups():
    control = RunControl()
    inbox = ["pause", "nonsense", "save"]
    control.connect_inbox(lambda: [inbox.pop(0)] if inbox else [])
    for _ in range(3):
        control.poll()
    assert control.paused and control.take_save_request() and not control.take_save_request()
    woke = threading.Event()

    def sleeper():
        control.wait(30)  # paused: sleeps until resumed
        woke.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.2)
    assert not woke.is_set()
    control.apply("resume")
    assert woke.wait(5) and not control.paused
    control.stop("first reason")
    control.stop("second reason")
    assert control.stop_reason == "first reason"
