"""Nothing lost, nothing trusted, round 2: one owner per run, a real full disk, a NaN guard that looks
at the weights, every record read from disk checked, paths and data that moved, and one-line errors
from every command."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.engine.trainer import Trainer
from minimind.errors import CheckpointError
from minimind.events import Alert, RunState
from minimind.storage.atomic import atomic_write_json
from minimind.storage.checkpoint import all_finite, load_resume_state, load_weights
from minimind.storage.run_store import RunStore, RunSummary, find_resumable
from tests.helpers import tiny_config, tiny_corpus, tiny_flags, wait_until

runner = CliRunner()


def one_line_error(result, *words):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], result.output


def headless(tmp_path, *extra, save_dir=None, dim=64):
    """`minimind train` in its own process (a long tiny run that saves every step)."""
    args = [sys.executable, "-m", "minimind", "train",
            *tiny_flags(tmp_path, "--resume_every_s", "0", "--save_interval", "1", *extra,
                        corpus=tiny_corpus(tmp_path, 40), dim=dim, max_seq_len=64)]
    if save_dir:
        args += ["--save_dir", str(save_dir)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- 1. one trainer per run -------------------------------------------------------------------------

@pytest.mark.slow
def test_one_trainer_per_run_even_when_its_process_is_stopped(tmp_path):
    proc = headless(tmp_path, "--epochs", "500", "--run-name", "owned")
    store = RunStore(tmp_path / "out" / "runs" / "owned")
    try:
        assert wait_until(lambda: store.resume_path.is_file() and store.read_status().get("global_step", 0) >= 2, 60)
        second = runner.invoke(app, ["train", "--resume", str(store.path)])
        one_line_error(second, "run owned is being trained by pid", str(proc.pid))
        proc.send_signal(signal.SIGSTOP)  # Ctrl-Z, a suspended laptop: alive, silent
        time.sleep(0.5)
        status = store.read_status()
        atomic_write_json(store.status_path, {**status, "heartbeat": time.time() - 3600})  # an hour of silence
        assert store.state() == RunState.RUNNING  # it still holds the run: never called lost
        assert find_resumable(tmp_path / "out") is None
        auto = runner.invoke(app, ["train", "--resume", "auto", "--save_dir", str(tmp_path / "out")])
        one_line_error(auto, "no unfinished run")
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGKILL)  # now it dies: the kernel releases the run
        proc.wait()
        assert wait_until(lambda: store.state() == RunState.LOST, 10)
        assert find_resumable(tmp_path / "out").path == store.path
    finally:
        stop(proc)


# ---- 2. a real full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MiB filesystem (tmpfs), or a skip where this machine cannot mount one."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_the_disk(path: Path) -> None:
    """Write zeros until the filesystem is full. Unbuffered: a buffered file would retry its last
    partial chunk on close and raise ENOSPC there, depending on where the free space ran out."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_full_disk_inside_torch_save_ends_the_run_with_one_line_and_keeps_the_last_checkpoint(tmp_path, small_disk):
    # the tiny model's weights (0.9 MB) and one resume state (3.6 MB) fit in 6 MiB; a second one beside it does not
    proc = headless(tmp_path, "--epochs", "50", "--run-name", "full", save_dir=small_disk / "out", dim=32)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "free disk space" in errors[0], output
    store = RunStore(small_disk / "out" / "runs" / "full")
    assert store.read_status()["state"] == "failed" and store.state() == RunState.FAILED
    assert load_resume_state(store.resume_path)["global_step"] >= 1  # the last good resume state, whole
    load_weights(small_disk / "out" / "minimind_pretrain_32.pth")
    assert not list((small_disk / "out").rglob(".*.tmp"))


@pytest.mark.slow
def test_a_full_disk_while_appending_records_ends_the_run_with_one_line(tmp_path, small_disk):
    proc = headless(tmp_path, "--epochs", "500", "--save_interval", "0", "--run-name", "appending",
                    save_dir=small_disk / "out")
    store = RunStore(small_disk / "out" / "runs" / "appending")
    try:
        assert wait_until(lambda: store.read_status().get("global_step", 0) >= 3, 120)
        # Someone else fills the disk, all of it, while the run is held still: a filler still writing
        # when the run gives up its reserve would take that space too.
        proc.send_signal(signal.SIGSTOP)
        try:
            fill_the_disk(small_disk / "filler")
        finally:
            proc.send_signal(signal.SIGCONT)
        output, _ = proc.communicate(timeout=300)
    finally:
        stop(proc)
    assert proc.returncode == 1 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], output
    assert store.read_status()["state"] == "failed"  # recorded with the run's reserved space


# ---- 3. the NaN guard looks at the weights -----------------------------------------------------------

def test_an_overflowing_update_never_writes_non_finite_weights(tmp_path):
    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "2", "--learning_rate", "1e308",
                                                      "--save_interval", "1", "--on_nan", "stop",
                                                      "--run-name", "boom")])
    assert result.exit_code == 1, result.output  # --on_nan stop: a diverged run is a failure a script sees
    assert "the weights are no longer finite after step 1" in result.output
    assert "error: non-finite numbers (the weights are no longer finite after step 1" in result.output
    assert result.output.rstrip().endswith("stopped (--on_nan stop)")
    weights = tmp_path / "out" / "minimind_pretrain_32.pth"
    assert not weights.exists() or all(torch.isfinite(v.float()).all() for v in load_weights(weights).values())
    store = RunStore(tmp_path / "out" / "runs" / "boom")
    if store.resume_path.exists():  # a resume state named good is good
        assert all(torch.isfinite(v).all() for v in load_resume_state(store.resume_path)["model"].values())
    assert store.read_status()["state"] == "failed"


# ---- 4. every record read from disk is checked -------------------------------------------------------

def finished_run(tmp_path, name, **overrides):
    ended = Trainer(tiny_config(tmp_path, epochs=1, run_name=name, **overrides)).run()
    return RunStore(ended.run_dir)


@pytest.mark.parametrize("damage", [[1, 2], {"state": 5}, {"global_step": "ten"}, "{not json"])
def test_a_damaged_status_is_listed_as_damaged_and_the_others_still_show(tmp_path, damage):
    good, bad = finished_run(tmp_path, "good"), finished_run(tmp_path, "bad")
    bad.status_path.write_text(damage if isinstance(damage, str) else json.dumps(damage))
    listed = runner.invoke(app, ["runs", "list", "--save-dir", str(tmp_path / "out")])
    assert listed.exit_code == 0, listed.output
    assert "good" in listed.output and "finished" in listed.output and "damaged" in listed.output
    summary = RunSummary.of(bad)
    assert summary.state == RunState.DAMAGED and "status.json" in summary.problem
    shown = runner.invoke(app, ["runs", "show", "bad", "--save-dir", str(tmp_path / "out")])
    assert shown.exit_code == 0 and "damaged" in shown.output, shown.output
    auto = runner.invoke(app, ["train", "--resume", "auto", "--save_dir", str(tmp_path / "out")])
    one_line_error(auto, "no unfinished run")
    assert good.state() == RunState.FINISHED


def test_step_records_of_the_wrong_shape_are_skipped(tmp_path):
    control_run = finished_run(tmp_path, "r")
    with open(control_run.metrics_path, "a") as f:
        f.write('{"global_step": "x", "loss": 1}\n{"global_step": 99, "loss": "nan?"}\n[1, 2]\n')
    summary = RunSummary.of(control_run)
    assert summary.global_step == 6 and summary.last_loss is not None
    shown = runner.invoke(app, ["runs", "show", "r", "--save-dir", str(tmp_path / "out")])
    assert shown.exit_code == 0, shown.output


def test_a_torn_last_line_does_not_swallow_the_next_sessions_record(tmp_path):
    store = RunStore.create(tmp_path, "torn")
    store.events_path.write_text('{"event": "Alert", "message": "ok"}\n{"event": "Ale')
    from minimind.events import Alert

    store(Alert("after the crash"))
    store.close()
    assert [e["message"] for e in store.read_events()] == ["ok", "after the crash"]


def test_odd_things_in_control_never_stop_training(tmp_path):
    from minimind.engine.control import RunControl
    from minimind.events import StepLogged

    control = RunControl()
    config = tiny_config(tmp_path, epochs=2)
    trainer = Trainer(config, control=control)

    def plant(e):
        if isinstance(e, StepLogged) and e.global_step == 2:
            (trainer.store.control_dir / "a-folder").mkdir()
            (trainer.store.control_dir / "00000000000000000001-1-pause.d").mkdir()
            (trainer.store.control_dir / "notes.txt").write_text("hello")
        if isinstance(e, StepLogged) and e.global_step == 4:
            control.stop("test")

    trainer.observers.append(plant)
    ended = trainer.run()
    assert ended.status == RunState.STOPPED
    assert Trainer(resume=ended.run_dir).run().status == RunState.FINISHED


def test_a_resume_state_from_another_run_or_with_flipped_bytes_is_refused(tmp_path):
    from minimind.engine.control import RunControl
    from minimind.events import StepLogged

    runs = []
    for name in ("a", "b"):
        control = RunControl()
        ended = Trainer(tiny_config(tmp_path, epochs=2, run_name=name), control=control,
                        observers=[lambda e, c=control: c.stop("t") if isinstance(e, StepLogged)
                                   and e.global_step == 3 else None]).run()
        runs.append(RunStore(ended.run_dir))
    a, b = runs
    shutil.copy(b.resume_path, a.resume_path)
    config_before = a.config_path.read_text()
    with pytest.raises(CheckpointError, match="belongs to run b, not a"):
        Trainer(resume=a.path)
    assert a.config_path.read_text() == config_before  # nothing was overwritten
    data = bytearray(b.resume_path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF  # one flipped byte inside a tensor
    b.resume_path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged|corrupt"):
        Trainer(resume=b.path)


# ---- 5. paths and data that moved ----------------------------------------------------------------------

@pytest.mark.slow
def test_resuming_from_another_folder_keeps_the_runs_own_paths(tmp_path):
    first_cwd, second_cwd = tmp_path / "here", tmp_path / "elsewhere"
    first_cwd.mkdir()
    second_cwd.mkdir()
    corpus = tiny_corpus(first_cwd, 12)
    args = ["--dim", "32", "--n_layers", "2", "--n_heads", "4", "--max_seq_len", "48", "--num_workers", "0",
            "--epochs", "2", "--data_path", corpus.name, "--run-name", "moved"]  # relative paths, default ./output
    proc = subprocess.Popen([sys.executable, "-m", "minimind", "train", *args], cwd=first_cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = RunStore(first_cwd / "output" / "runs" / "moved")
    assert wait_until(lambda: store.resume_path.is_file(), 60)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    resumed = subprocess.run([sys.executable, "-m", "minimind", "train", "--resume", str(store.path)],
                             cwd=second_cwd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (first_cwd / "output" / "minimind_pretrain_32.pth").is_file()
    assert not (second_cwd / "output").exists()


def test_resume_with_a_new_save_dir_and_a_changed_corpus(tmp_path):
    from minimind.engine.control import RunControl
    from minimind.events import StepLogged

    control = RunControl()
    config = tiny_config(tmp_path, epochs=3)
    ended = Trainer(config, control=control, observers=[
        lambda e: control.stop("t") if isinstance(e, StepLogged) and e.global_step == 3 else None]).run()
    result = runner.invoke(app, ["train", "--resume", ended.run_dir, "--save_dir", str(tmp_path / "new" / "place"),
                                 "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "place" / "minimind_pretrain_32.pth").is_file()

    control = RunControl()
    ended = Trainer(tiny_config(tmp_path, epochs=3, run_name="grown"), control=control, observers=[
        lambda e: control.stop("t") if isinstance(e, StepLogged) and e.global_step == 3 else None]).run()
    with open(config.train.data_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more document " * 20}) + "\n")
    refused = runner.invoke(app, ["train", "--resume", ended.run_dir])
    one_line_error(refused, "changed since this run was saved", "--allow-changed-data")
    allowed = runner.invoke(app, ["train", "--resume", ended.run_dir, "--allow-changed-data"])
    assert allowed.exit_code == 0 and "the corpus changed since the save" in allowed.output, allowed.output


def test_a_read_only_place_for_the_weights_is_one_line(tmp_path):
    from minimind.engine.control import RunControl
    from minimind.events import StepLogged

    control = RunControl()
    ended = Trainer(tiny_config(tmp_path, epochs=3), control=control, observers=[
        lambda e: control.stop("t") if isinstance(e, StepLogged) and e.global_step == 3 else None]).run()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = runner.invoke(app, ["train", "--resume", ended.run_dir, "--save_dir", str(blocker / "below")])
    one_line_error(result, "cannot create --save_dir")


# ---- 6. input that reaches the tokenizer --------------------------------------------------------------

def test_a_lone_surrogate_is_refused_up_front_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken \\ud800 here"}\n')
    one_line_error(runner.invoke(app, ["train", *tiny_flags(tmp_path, corpus=bad)]), "bad.jsonl:2", "surrogate")
    one_line_error(runner.invoke(app, ["tokenizer", "train", "--data", str(bad), "--out", str(tmp_path / "tok")]),
                   "bad.jsonl:2", "surrogate")


# ---- 7. every command keeps the one-line promise --------------------------------------------------------

def test_other_commands_keep_the_one_line_promise(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    for args in (["generate", str(text)], ["export", str(text), str(tmp_path / "x")],
                 ["convert", str(text), str(tmp_path / "y.pth"), "--to", "minimind2"],
                 ["chat", str(text)], ["eval", str(text), "--data", str(tiny_corpus(tmp_path))]):
        one_line_error(runner.invoke(app, args), "notes.pth")
    finished = finished_run(tmp_path, "done", save_interval=100)
    weights = tmp_path / "out" / "minimind_pretrain_32.pth"
    if not torch.cuda.is_available():
        one_line_error(runner.invoke(app, ["generate", str(weights), "--device", "cuda", "--n-heads", "4"]),
                       "CUDA is not available")
    one_line_error(runner.invoke(app, ["generate", str(weights), "--device", "bogus", "--n-heads", "4"]), "bogus")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    one_line_error(runner.invoke(app, ["export", str(finished.path), str(tmp_path / "taken")]), "already exists",
                   "--force")
    one_line_error(runner.invoke(app, ["convert", str(weights), str(weights), "--to", "classic", "--n-heads", "4"]),
                   "already exists")
    (tmp_path / "readonly").write_text("a file where a folder should be")
    one_line_error(runner.invoke(app, ["export", str(finished.path), str(tmp_path / "readonly" / "hf")]),
                   "readonly is a file, not a folder")
    one_line_error(runner.invoke(app, ["tokenizer", "train", "--data", str(tiny_corpus(tmp_path)), "--vocab-size",
                                       "100000000", "--out", str(tmp_path / "tok")]), "vocab-size")
    one_line_error(runner.invoke(app, ["train", *tiny_flags(tmp_path, "--run-name", "x" * 300)]), "run_name")
    one_line_error(runner.invoke(app, ["train", *tiny_flags(tmp_path, "--seed", "12345678901234567890")]), "seed")
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(runner.invoke(app, ["train", "--config", str(nested)]), "nested.json")
    huge = tmp_path / "huge.json"
    huge.write_text('{"train": {"epochs": ' + "9" * 5000 + "}}")
    one_line_error(runner.invoke(app, ["train", "--config", str(huge)]), "huge.json")
    one_line_error(runner.invoke(app, ["train", *tiny_flags(tmp_path, dim=65536, n_layers=400, n_heads=64,
                                                            n_kv_heads=8, max_seq_len=48)]), "GiB")
    warm = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "1", "--warmup_iters", "1000")])
    assert warm.exit_code == 0 and "never reaches --learning_rate" in warm.output, warm.output


def test_generate_never_loads_another_runs_weights(tmp_path):
    a = finished_run(tmp_path, "a", save_interval=1)
    a.resume_path.unlink()  # its resume state is gone: only the shared weights file is left
    b = finished_run(tmp_path, "b", save_interval=1, learning_rate=1e-3)  # writes the same file, later
    one_line_error(runner.invoke(app, ["generate", str(a.path), "-p", "x", "--max-new-tokens", "2"]),
                   "written by another run since run a saved it")
    assert runner.invoke(app, ["generate", str(b.path), "-p", "x", "--max-new-tokens", "2"]).exit_code == 0


def test_all_finite_is_exact_on_half_precision_snapshots():
    big = torch.full((1000,), 65504.0, dtype=torch.float16)  # the largest fp16: the fp32 sum stays finite
    assert all_finite({"a": big, "b": -big, "i": torch.arange(3)})
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = big.clone()
        broken[7] = bad
        assert not all_finite({"a": big, "b": broken})
    both = torch.tensor([float("inf"), float("-inf")], dtype=torch.float16)  # inf - inf = nan: still caught
    assert not all_finite({"a": both})


def test_weights_beyond_fp16_range_are_not_saved_and_the_run_goes_on(tmp_path):
    alerts = []
    trainer = Trainer(tiny_config(tmp_path, epochs=1, run_name="wide"),
                      observers=[lambda e: alerts.append(e.message) if isinstance(e, Alert) else None])
    with torch.no_grad():  # finite in fp32, inf once saved in fp16
        next(trainer.model.parameters())[0, 0] = 1e6
    ended = trainer.run()
    assert ended.status == "finished", ended
    assert any("exceed fp16's range" in m for m in alerts), alerts
    assert not (tmp_path / "out" / "minimind_pretrain_32.pth").exists()  # never a file holding inf
    store = RunStore(tmp_path / "out" / "runs" / "wide")
    assert store.resume_path.exists()  # fp32 is fine: exact resume states are still written
