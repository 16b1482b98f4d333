"""Unit tests of the storage layer: crash-safe writes, weights and resume files, the run directory."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minimind.errors import CheckpointError
from minimind.events import Alert, CheckpointSaved, RunEnded, RunStarted, RunState, StateChanged, StepLogged, event_from_record
from minimind.models.classic import MiniMindLM
from minimind.storage.atomic import atomic_write, atomic_write_json, read_jsonl, remove_stale_temp_files
from minimind.storage.checkpoint import (
    WeightsLock,
    apply_weights,
    atomic_torch_save,
    load_resume_state,
    load_weights,
    rng_state,
    safe_load,
    save_resume_state,
    set_rng_state,
)
from minimind.storage.locks import OwnerLock
from minimind.storage.run_store import RunStore, RunSummary, find_resumable, list_runs
from tests.helpers import TINY_MODEL, tiny_config


def started(**kw):
    values = dict(run_id="r", run_dir="d", config={}, n_params=1, model="classic: tiny", device="cpu",
                  precision="float32", data_path="x",
                  n_docs=1, iters_per_epoch=4, total_steps=8, start_step=0)
    return RunStarted(**{**values, **kw})


def step(i):
    return StepLogged(epoch=1, epochs=2, step=i, iters=4, global_step=i, total_steps=8, loss=9.0 - i, logits_loss=9.0 - i,
                      aux_loss=0.0, lr=1e-3, grad_norm=1.0, tokens=10, tokens_per_s=1.0, positions_per_s=1.0,
                      step_time=0.1, elapsed=float(i), epoch_eta=1.0, total_eta=1.0)


# ---- atomic ------------------------------------------------------------------------------------------

def test_a_failed_atomic_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"v": 1})

    def half_then_crash(f):
        f.write(b'{"v": 2')
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_then_crash)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_only_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".w.pth.{dead_pid}.abc.tmp").write_text("debris")
    (tmp_path / f".w.pth.{os.getpid()}.abc.tmp").write_text("a live write")
    (tmp_path / "w.pth").write_text("weights")
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [f".w.pth.{dead_pid}.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".w.pth.{os.getpid()}.abc.tmp", "w.pth"])


def test_read_jsonl_skips_a_torn_last_line_and_non_objects(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n{"b": 2}\n{"c": ')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


# ---- checkpoint ----------------------------------------------------------------------------------------

def test_safe_load_names_missing_directory_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        safe_load(tmp_path / "nope.pth", "weights file")
    with pytest.raises(CheckpointError, match="is a directory"):
        safe_load(tmp_path, "weights file")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        safe_load(tmp_path / "bad.pth", "weights file")


def test_weights_lose_wrapper_prefixes_and_must_be_tensors(tmp_path):
    torch.save({"module._orig_mod.w": torch.ones(2)}, tmp_path / "w.pth")
    assert list(load_weights(tmp_path / "w.pth")) == ["w"]
    torch.save({"w": [1, 2]}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a state_dict of tensors"):
        load_weights(tmp_path / "x.pth")


def test_apply_weights_explains_a_mismatch_in_model_terms():
    from minimind.config import LMConfig

    small = MiniMindLM(LMConfig(**{**TINY_MODEL, "vocab_size": 100}))
    moe = MiniMindLM(LMConfig(**{**TINY_MODEL, "vocab_size": 100, "use_moe": True}))
    with pytest.raises(CheckpointError, match="it has MoE layers"):
        apply_weights(small, moe.state_dict(), "x.pth")
    wider = MiniMindLM(LMConfig(**{**TINY_MODEL, "vocab_size": 200}))
    with pytest.raises(CheckpointError, match=r"tok_embeddings.weight is \(200, 32\) there, \(100, 32\) here"):
        apply_weights(small, wider.state_dict(), "x.pth")


def test_resume_state_round_trip_and_format_checks(tmp_path):
    torch.manual_seed(3)
    state = {"model": {"w": torch.randn(3)}, "rng": rng_state(), "global_step": 7}
    save_resume_state(tmp_path / "r.pt", state)
    expected = torch.rand(4)  # the next draw after the saved RNG state
    loaded = load_resume_state(tmp_path / "r.pt")
    assert loaded["global_step"] == 7 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected)
    atomic_torch_save({"kind": "minimind-tui/resume", "format": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer minimind-tui"):
        load_resume_state(tmp_path / "new.pt")


def test_weights_lock_is_exclusive_and_taken_over_from_a_dead_owner(tmp_path):
    weights = tmp_path / "w.pth"
    first, second = WeightsLock(weights), WeightsLock(weights)
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "w.pth.lock").write_text(f"{int(dead.stdout)} {socket.gethostname()}")
    assert WeightsLock(weights).acquire()


def test_weights_lock_file_goes_with_its_owner_and_a_waiter_locks_the_new_one(tmp_path):
    import threading

    weights = tmp_path / "w.pth"
    first, waiter, third = WeightsLock(weights), WeightsLock(weights), WeightsLock(weights)
    assert first.acquire()
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(wait_s=5.0)))
    thread.start()  # it opens the file the first owner holds and waits for it
    time.sleep(0.3)
    first.release()  # removes the file while the waiter holds a descriptor of it
    thread.join()
    assert got == [True]
    assert (tmp_path / "w.pth.lock").is_file() and not third.acquire(wait_s=0.1)  # the waiter's lock is the one there
    waiter.release()
    assert not (tmp_path / "w.pth.lock").exists()


def test_a_killed_owners_lock_is_free_though_its_forked_worker_lives_on(tmp_path):
    """A DataLoader worker is a fork of the training process: its copy of the lock's descriptor kept a
    kill -9'ed run looking live until the worker noticed. Forked children drop their copies."""
    import psutil

    script = (f"import os, sys, time\nsys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
              "from minimind.storage.locks import OwnerLock\n"
              f"lock = OwnerLock({str(tmp_path / 'owner.lock')!r})\nassert lock.acquire()\n"
              "if os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\n"
              "print('ready', flush=True)\ntime.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers: list = []
    try:
        assert owner.stdout.readline().strip() == "ready"
        workers = psutil.Process(owner.pid).children()
        probe = OwnerLock(tmp_path / "owner.lock")
        assert len(workers) == 1 and probe.held_elsewhere()
        owner.kill()
        owner.wait()
        assert workers[0].is_running() and not probe.held_elsewhere()
    finally:
        owner.kill()
        for worker in workers:
            worker.kill()


# ---- run store -----------------------------------------------------------------------------------------

def test_create_never_reuses_a_directory(tmp_path):
    a = RunStore.create(tmp_path, "same")
    b = RunStore.create(tmp_path, "same")
    assert (a.run_id, b.run_id) == ("same", "same-2")
    assert a.checkpoints_dir.is_dir() and a.control_dir.is_dir()
    with pytest.raises(CheckpointError, match="not a run directory"):
        RunStore.open(tmp_path)


def test_recording_splits_steps_from_events_and_keeps_status_current(tmp_path):
    store = RunStore.create(tmp_path, "r")
    store.write_config(tiny_config(tmp_path).to_dict())
    store(started())
    assert store.read_status()["state"] == "running" and store.state() == RunState.RUNNING
    for i in (1, 2):
        store(step(i))
    store(CheckpointSaved("weights", "w.pth", 2))
    store(StateChanged(RunState.PAUSED, "asked"))
    assert store.state() == RunState.PAUSED
    store(Alert("careful"))
    store(RunEnded(RunState.STOPPED, 2, 8, str(store.path), resumable=True))
    assert [m["global_step"] for m in store.read_metrics()] == [1, 2]
    names = [e["event"] for e in store.read_events()]
    assert names == ["RunStarted", "CheckpointSaved", "StateChanged", "Alert", "RunEnded"]
    status = store.read_status()
    assert status["state"] == "stopped" and status["checkpoints"]["weights"]["global_step"] == 2
    assert all(event_from_record(r) is not None for r in store.read_events() + store.read_metrics())


def test_truncate_after_drops_every_step_stamped_record_past_the_resume_point(tmp_path):
    store = RunStore.create(tmp_path, "r")
    store(started())
    for i in (1, 2, 3, 4):
        store(step(i))
        store(CheckpointSaved("weights", "w.pth", i))
    store(Alert("no step stamp: kept"))
    store.close()
    store.truncate_after(2)
    assert [m["global_step"] for m in store.read_metrics()] == [1, 2]
    kept = [(e["event"], e.get("global_step")) for e in store.read_events()]
    assert kept == [("RunStarted", None), ("CheckpointSaved", 1), ("CheckpointSaved", 2), ("Alert", None)]


def test_a_resume_keeps_the_history_before_its_save_whatever_the_step_units(tmp_path):
    """One process to step 8 (saved there), resumed with two (steps halve: 4), saved at 6, died at 7:
    the next resume keeps steps 1-8 of the first session, although they are numbered above 6."""
    store = RunStore.create(tmp_path, "r")
    store(started())
    for i in range(1, 9):
        store(step(i))
    store(CheckpointSaved("resume", "resume.pt", 8))
    first_save = store.record_counts()
    store(CheckpointSaved("weights", "w.pth", 8))  # a background save reported after the resume save: kept
    store(step(9))  # then the process died: never happened
    store.truncate_after(8, first_save)
    assert [m["global_step"] for m in store.read_metrics()] == list(range(1, 9))
    store(started(start_step=4))  # two processes from here: the same data position is step 4
    for i in (5, 6):
        store(step(i))
    second_save = store.record_counts()
    store(CheckpointSaved("resume", "resume.pt", 6))
    store(step(7))
    store.truncate_after(6, second_save)
    assert [m["global_step"] for m in store.read_metrics()] == [1, 2, 3, 4, 5, 6, 7, 8, 5, 6]
    events = [(e["event"], e.get("global_step")) for e in store.read_events()]
    assert events == [("RunStarted", None), ("CheckpointSaved", 8), ("CheckpointSaved", 8), ("RunStarted", None),
                      ("CheckpointSaved", 6)]
    # a later session that died before any save of its own leaves nothing, even in smaller step numbers
    store(started(start_step=3))
    store(step(4))
    store.truncate_after(6, second_save)
    assert [m["global_step"] for m in store.read_metrics()] == [1, 2, 3, 4, 5, 6, 7, 8, 5, 6]
    assert [e["event"] for e in store.read_events()].count("RunStarted") == 2
    assert store.record_counts() == {"metrics": 10, "events": 5}


def test_the_loss_curve_puts_sessions_of_other_process_counts_on_the_last_ones_step_axis(tmp_path):
    from dataclasses import replace

    from minimind.events import EvalDone
    from minimind.storage.run_store import loss_curve

    store = RunStore.create(tmp_path, "r")
    store(started(total_steps=8))  # one process: 8 steps
    for i in (1, 2, 3, 4):
        store(step(i))
    store(EvalDone(global_step=4, optimizer_step=4, eval_loss=5.0, eval_ppl=148.4, eval_tokens=10, eval_docs=1, best=True))
    store(started(total_steps=4, start_step=2))  # resumed with two: the same position is step 2 of 4
    for i in (3, 4):
        store(replace(step(i), total_steps=4))
    store(EvalDone(global_step=4, optimizer_step=4, eval_loss=4.0, eval_ppl=54.6, eval_tokens=10, eval_docs=1, best=True))
    curve = loss_curve(store)
    assert curve.steps == [0.5, 1.0, 1.5, 2.0, 3.0, 4.0] and curve.evals == [(2.0, 5.0), (4.0, 4.0)]
    assert curve.losses == [8.0, 7.0, 6.0, 5.0, 6.0, 5.0]
    one = RunStore.create(tmp_path, "one")
    one(started())
    for i in (1, 2):
        one(step(i))
    assert loss_curve(one).steps == [1.0, 2.0]  # one process count: as recorded


def test_a_resumed_runs_duration_adds_its_sessions_and_it_started_at_the_first(tmp_path):
    from dataclasses import replace

    store = RunStore.create(tmp_path, "r")
    store.write_config({})
    at = lambda event, t: replace(event, time=t)
    store(at(started(), 1000.0))
    store(at(step(1), 1010.0))
    store(at(RunEnded(RunState.STOPPED, 1, 8, str(store.path), resumable=True), 1030.0))
    store(at(started(start_step=1), 5000.0))  # resumed an hour later
    store(at(step(2), 5050.0))
    store(at(RunEnded(RunState.FINISHED, 2, 8, str(store.path)), 5060.0))
    summary = RunSummary.of(store)
    assert summary.started == 1000.0 and summary.duration == 90.0  # 30 s + 60 s, not the hour between


def test_a_live_state_whose_process_is_gone_is_lost(tmp_path):
    store = RunStore.create(tmp_path, "r")
    store.write_config({})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    atomic_write_json(store.status_path, {"state": "running", "pid": int(dead.stdout), "host": socket.gethostname(),
                                          "heartbeat": time.time()})
    assert store.state() == RunState.LOST
    atomic_write_json(store.status_path, {"state": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                          "heartbeat": time.time()})
    assert store.state() == RunState.RUNNING
    atomic_write_json(store.status_path, {"state": "sideways"})
    assert store.state() == RunState.UNKNOWN


def test_control_requests_are_consumed_oldest_first(tmp_path):
    store = RunStore.create(tmp_path, "r")
    for command in ("pause", "save", "resume"):
        store.send(command)
    (store.control_dir / "00000000000000000000-1-format").write_text("x")  # not a command word
    assert store.take_requests() == ["pause", "save", "resume"]
    assert store.take_requests() == [] and not any(store.control_dir.iterdir())


def test_summaries_and_the_resumable_run(tmp_path):
    finished, stopped = RunStore.create(tmp_path, "a"), RunStore.create(tmp_path, "b")
    for store, end in ((finished, RunState.FINISHED), (stopped, RunState.STOPPED)):
        store.write_config({})
        store(started(run_id=store.run_id))
        for i in (1, 2, 3):
            store(step(i))
        store(RunEnded(end, 3, 8, str(store.path)))
        store.resume_path.write_bytes(b"state")
    assert [s.run_id for s in list_runs(tmp_path)] == ["a", "b"]
    summary = RunSummary.of(stopped)
    assert (summary.state, summary.global_step, summary.last_loss, summary.best_loss) == (RunState.STOPPED, 3, 6.0, 6.0)
    assert find_resumable(tmp_path).path == stopped.path


def test_background_writer_writes_one_at_a_time_and_hands_failures_to_the_caller(tmp_path):
    import threading

    from minimind.storage.background import BackgroundWriter

    writer = BackgroundWriter()
    release = threading.Event()
    order = []

    def slow():
        release.wait(5)
        order.append("first")

    assert writer.submit(slow, "a") == []
    assert writer.busy and writer.finished() == []  # not done yet: nothing reported
    release.set()
    assert writer.submit(lambda: order.append("second"), "b") == ["a"]  # waits for the first
    assert writer.finished(wait=True) == ["b"] and order == ["first", "second"]

    def fail():
        raise OSError(28, "No space left on device")

    writer.submit(fail, "c")
    with pytest.raises(OSError, match="No space"):
        writer.finished(wait=True)
    assert writer.finished(wait=True) == []  # reported once


def test_a_replaced_file_is_told_apart_even_with_the_same_size_and_time(tmp_path):
    """Coarse timestamps (some network and overlay filesystems) cannot hide an overwrite: an atomic
    replace makes a new inode."""
    import os

    from minimind.storage.run_store import file_identity, is_same_file

    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 10)
    saved = file_identity(path.stat())
    assert is_same_file(saved, path.stat())
    other = tmp_path / "other"
    other.write_bytes(b"b" * 10)
    os.utime(other, ns=(saved["mtime_ns"], saved["mtime_ns"]))
    os.replace(other, path)
    assert path.stat().st_mtime_ns == saved["mtime_ns"] and path.stat().st_size == saved["size"]
    assert not is_same_file(saved, path.stat())
    assert is_same_file({"size": 10, "mtime_ns": saved["mtime_ns"]}, path.stat())  # an older record: size and time
