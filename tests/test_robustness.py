"""Nothing lost, nothing trusted: bad input, crashes and hostile files as one matrix.

Each bad input must give, in the CLI, one line that names the problem and the fix, a non-zero exit
and no traceback; in the TUI, an inline message with the app still running.
"""

import asyncio
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.storage.checkpoint import load_resume_state, load_weights
from minimind.storage.run_store import RunStore
from tests.helpers import tiny_config, tiny_corpus, tiny_flags, wait_until

runner = CliRunner()


def make_case(tmp: Path, case: str) -> tuple[list[str], str]:
    """(extra CLI args, words the error must contain) for one bad input."""
    if case == "missing data file":
        return ["--data_path", str(tmp / "nope.jsonl")], "does not exist"
    if case == "directory instead of a file":
        return ["--data_path", str(tmp)], "is a directory"
    if case == "empty file":
        (tmp / "e.jsonl").write_bytes(b"")
        return ["--data_path", str(tmp / "e.jsonl")], "is empty"
    if case == "bad UTF-8":
        (tmp / "u.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
        return ["--data_path", str(tmp / "u.jsonl")], "u.jsonl:2: not valid UTF-8"
    if case == "malformed JSON":
        (tmp / "m.jsonl").write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": \n')
        return ["--data_path", str(tmp / "m.jsonl")], "m.jsonl:3: malformed JSON"
    if case == "missing text":
        (tmp / "t.jsonl").write_text('{"content": "x"}\n')
        return ["--data_path", str(tmp / "t.jsonl")], 't.jsonl:1: no "text" field'
    if case == "non-string text":
        (tmp / "n.jsonl").write_text('{"text": ["a", "b"]}\n')
        return ["--data_path", str(tmp / "n.jsonl")], '"text" is a list, not a string'
    if case == "missing tokenizer folder":
        return ["--tokenizer", str(tmp / "tok")], "does not exist"
    if case == "broken tokenizer folder":
        (tmp / "tok").mkdir()
        (tmp / "tok" / "tokenizer.json").write_text("{ not json")
        return ["--tokenizer", str(tmp / "tok")], "could not be loaded"
    if case == "tokenizer ids beyond vocab_size":
        return ["--vocab_size", "1000"], "the tokenizer has 6400 tokens but vocab_size is 1000"
    if case == "dim vs n_heads":
        return ["--dim", "30"], "dim: 30 is not divisible by n_heads=4"
    if case == "n_heads vs n_kv_heads":
        return ["--n_kv_heads", "3"], "n_kv_heads: n_heads=4 is not divisible by n_kv_heads=3"
    if case == "batch 0":
        return ["--batch_size", "0"], "batch_size: must be at least 1"
    if case == "lr <= 0":
        return ["--learning_rate", "-0.1"], "learning_rate: must be a positive number"
    if case == "negative interval":
        return ["--log_interval", "-2"], "log_interval: must be at least 1"
    if case == "max_seq_len < 2":
        return ["--max_seq_len", "1"], "max_seq_len: must be at least 2"
    if case == "cuda without CUDA":
        return ["--device", "cuda"], "CUDA is not available"
    if case == "float16 on CPU":
        return ["--dtype", "float16"], "float16 needs CUDA"
    if case == "unwritable save_dir":
        (tmp / "a-file").write_text("x")
        return ["--save_dir", str(tmp / "a-file" / "out")], "choose a writable --save_dir"
    if case == "config file with unknown keys":
        (tmp / "c.json").write_text(json.dumps({"train": {"epochz": 3}}))
        return ["--config", str(tmp / "c.json")], "epochz: unknown setting"
    raise ValueError(case)


CASES = ["missing data file", "directory instead of a file", "empty file", "bad UTF-8", "malformed JSON",
         "missing text", "non-string text", "missing tokenizer folder", "broken tokenizer folder",
         "tokenizer ids beyond vocab_size", "dim vs n_heads", "n_heads vs n_kv_heads", "batch 0", "lr <= 0",
         "negative interval", "max_seq_len < 2", "cuda without CUDA", "float16 on CPU", "unwritable save_dir",
         "config file with unknown keys"]


@pytest.mark.parametrize("case", CASES)
def test_cli_bad_input(tmp_path, case):
    extra, words = make_case(tmp_path, case)
    args = ["train", *tiny_flags(tmp_path, "--epochs", "1", *extra)]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert words in lines[0]


TUI_CASES = ["missing data file", "bad UTF-8", "malformed JSON", "broken tokenizer folder",
             "tokenizer ids beyond vocab_size", "float16 on CPU", "cuda without CUDA", "unwritable save_dir"]


@pytest.mark.parametrize("case", TUI_CASES)
def test_tui_bad_input_is_inline_and_the_app_keeps_running(tmp_path, case):
    """A real in-app run (thread launch) started with the bad setting."""
    from minimind_tui.app import make_app

    extra, words = make_case(tmp_path, case)
    overrides = {name.lstrip("-"): value for name, value in zip(extra[::2], extra[1::2])}
    if "vocab_size" in overrides:
        overrides["vocab_size"] = int(overrides["vocab_size"])
    config = tiny_config(tmp_path).replace(**overrides)

    async def scenario():
        app = make_app(config, launch="thread")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("s")
            for _ in range(600):
                if app.state == "failed":
                    break
                await pilot.pause(0.05)
            assert app.state == "failed"
            assert words in str(app.query_one("#run-error").render())
            assert app.query_one("#tabs").active == "config"
            await pilot.press("3")  # still responsive
            assert app.query_one("#tabs").active == "runs"

    asyncio.run(scenario())


def test_tui_form_refuses_invalid_combinations_inline(tmp_path):
    from minimind_tui.app import make_app

    async def scenario():
        app = make_app(tiny_config(tmp_path), launch="thread")
        async with app.run_test(size=(100, 30)) as pilot:
            for field, value, words in [("n_kv_heads", "3", "n_kv_heads: n_heads=4 is not divisible"),
                                        ("learning_rate", "0", "learning_rate: must be a positive number"),
                                        ("max_seq_len", "1", "max_seq_len: must be at least 2"),
                                        ("save_interval", "-1", "save_interval: must be >= 0")]:
                original = app.query_one(f"#field-{field}").value
                app.query_one(f"#field-{field}").value = value
                for _ in range(100):
                    if words in str(app.query_one("#form-error").render()) and app.check_action("start", ()) is None:
                        break
                    await pilot.pause(0.05)
                assert words in str(app.query_one("#form-error").render())
                assert app.check_action("start", ()) is None
                app.query_one(f"#field-{field}").value = original
                for _ in range(100):
                    if app.check_action("start", ()):
                        break
                    await pilot.pause(0.05)

    asyncio.run(scenario())


def test_ten_megabyte_line_trains(tmp_path):
    text = ("Long lines are fine. 长句子也可以。" * 400_000)[:10_000_000]
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n" + tiny_corpus(tmp_path).read_text())
    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "1", corpus=big)])
    assert result.exit_code == 0, result.output
    assert "13 docs" in result.output


def test_disk_full_during_a_save_fails_cleanly_and_keeps_the_previous_file(tmp_path, monkeypatch):
    from minimind.engine.trainer import Trainer

    config = tiny_config(tmp_path, epochs=1, save_interval=1)
    trainer = Trainer(config)
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th file written: the disk fills up mid-write
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    ended = trainer.run()
    assert ended.status == "failed"
    assert "No space left on device" in ended.error and "free disk space" in ended.error
    weights = Path(config.train.save_dir) / "minimind_pretrain_32.pth"
    assert set(load_weights(weights)) and not list(weights.parent.glob(".*.tmp"))  # old file intact, no debris
    monkeypatch.setattr(torch, "save", real_save)
    assert load_resume_state(RunStore(ended.run_dir).resume_path)["global_step"] >= 1


@pytest.mark.parametrize("problem,words", [("foreign", "not a minimind-tui resume state"),
                                           ("corrupt", "corrupt"), ("newer", "newer minimind-tui")])
def test_resume_refuses_foreign_corrupt_and_newer_checkpoints(tmp_path, problem, words):
    from minimind.storage.checkpoint import RESUME_FORMAT, RESUME_KIND

    store = RunStore.create(tmp_path / "out", "r")
    store.write_config(tiny_config(tmp_path).to_dict())
    if problem == "foreign":
        torch.save({"model": {}}, store.resume_path)
    elif problem == "corrupt":
        store.resume_path.write_bytes(b"PK\x03\x04 truncated zip")
    else:
        torch.save({"kind": RESUME_KIND, "format": RESUME_FORMAT + 1}, store.resume_path)
    result = runner.invoke(app, ["train", "--resume", str(store.path)])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


class Planted:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_a_planted_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"tok_embeddings.weight": Planted(str(marker))}, evil)
    store = RunStore.create(tmp_path / "out", "r")
    store.write_config(tiny_config(tmp_path).to_dict())
    torch.save({"kind": "minimind-tui/resume", "format": 1, "model": Planted(str(marker))}, store.resume_path)
    for args in (["train", *tiny_flags(tmp_path, "--epochs", "1", "--init-from", str(evil))],
                 ["generate", str(evil), "-p", "x"], ["train", "--resume", str(store.path)],
                 ["convert", str(evil), str(tmp_path / "o.pth"), "--to", "minimind2"],
                 ["generate", str(store.path), "-p", "x"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "refused" in result.output and "could run code" in result.output
    assert not marker.exists()


def test_control_requests_cannot_write_outside_the_run(tmp_path):
    store = RunStore.create(tmp_path / "out", "r")
    outside = tmp_path / "outside"
    for name in ("0-1-../../outside", "0-1-stop; rm -rf /", "0-1-save/../../x", "not-a-request"):
        try:
            (store.control_dir / name).write_text("../../outside")
        except OSError:
            pass
    (store.control_dir / "00000000000000000001-1-pause").write_text("ignored content")
    assert store.take_requests() == ["pause"]
    assert not outside.exists()
    with pytest.raises(Exception, match="unknown command"):
        store.send("../../etc/passwd")


def start_training(tmp_path, *extra):
    args = [sys.executable, "-m", "minimind", "train",
            *tiny_flags(tmp_path, "--resume_every_s", "0", "--save_interval", "1", *extra, corpus=tiny_corpus(tmp_path, 40),
                        dim=64, max_seq_len=64)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_loadable_checkpoints_and_resume_auto_continues(tmp_path):
    rng = random.Random(1234)
    out = tmp_path / "out"
    proc = start_training(tmp_path, "--epochs", "6")
    first = proc  # before its first save a run has nothing to resume from: wait for one
    assert wait_until(lambda: list(out.glob("runs/*/checkpoints/resume.pt")) or first.poll() is not None, 300,
                      every=0.05) and first.poll() is None, "the run never saved"
    for round_ in range(3):
        time.sleep(rng.uniform(0.0, 2.0) if round_ == 0 else rng.uniform(2.5, 5.0))  # it saves every step
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        [run] = list((out / "runs").iterdir())
        store = RunStore(run)
        assert store.read_config()["model"]["dim"] == 64
        assert isinstance(store.read_status(), dict) and store.read_metrics() is not None
        if store.resume_path.exists():
            load_resume_state(store.resume_path)  # whole, never half written
        weights = out / "minimind_pretrain_64.pth"
        if weights.exists():
            load_weights(weights)
        assert store.state() in ("lost", "finished")
        if store.state() == "finished":  # it outran the killer
            break
        proc = subprocess.Popen([sys.executable, "-m", "minimind", "train", "--resume", "auto", "--save_dir", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:  # generous: a loaded 2-core machine trains these ~120 steps (a fsync'd save each) slowly
        output, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode in (0, -signal.SIGKILL), output
    [run] = list((out / "runs").iterdir())
    status = RunStore(run).read_status()
    assert status["state"] == "finished" and status["global_step"] == status["total_steps"]
    assert not list(out.glob(".*.tmp")) and not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_sigterm_stops_gracefully(tmp_path):
    proc = start_training(tmp_path, "--epochs", "100", "--save_interval", "0", "--run-name", "t")
    store = RunStore(tmp_path / "out" / "runs" / "t")
    assert wait_until(lambda: store.read_status().get("global_step", 0) >= 1, 120)  # its SIGTERM handler is set
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert store.read_status()["state"] == "stopped" and store.resume_path.is_file()


@pytest.mark.slow
def test_two_runs_on_one_save_dir_keep_their_own_files(tmp_path):
    first = start_training(tmp_path, "--epochs", "200", "--run-name", "first")
    try:
        first_store = RunStore(tmp_path / "out" / "runs" / "first")
        assert wait_until(lambda: first_store.read_status().get("global_step", 0) >= 2, 120)
        assert first_store.read_status()["state"] == "running"
        result = runner.invoke(app, ["train", "--dim", "64", "--n_layers", "2", "--n-heads", "4", "--max_seq_len", "64",
                                     "--num_workers", "0", "--epochs", "1",
                                     "--data_path", str(tiny_corpus(tmp_path, 8, "other.jsonl")),
                                     "--save_dir", str(tmp_path / "out"), "--run-name", "second"])
        assert result.exit_code == 0, result.output
        second = tmp_path / "out" / "runs" / "second"
        assert f"this run saves its weights to {second / 'minimind_pretrain_64.pth'}" in result.output
        assert load_weights(second / "minimind_pretrain_64.pth")
        assert first_store.read_status()["state"] == "running"  # untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    assert RunStore(tmp_path / "out" / "runs" / "first").read_status()["state"] == "stopped"
