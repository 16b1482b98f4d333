import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minimind.cli import app
from minimind.config import RunConfig
from minimind.storage.run_store import RunStore, list_runs
from tests.conftest import ASSETS, needs_assets
from tests.helpers import tiny_corpus, tiny_flags, wait_until

runner = CliRunner()
CLASSIC_LINE = re.compile(r"^Epoch:\[\d+/\d+\]\(\d+/\d+\), loss: \d+\.\d{4}, logits_loss: \d+\.\d{4}, "
                          r"aux_loss: \d+\.\d{4}, lr: \d\.\d{8}, epoch_time: \d+\.\dmin$")


def tiny_args(tmp_path, *extra):
    return ["train", *tiny_flags(tmp_path, "--epochs", "1", *extra)]


def test_train_prints_the_seed_lines_and_records_the_run(tmp_path):
    result = runner.invoke(app, tiny_args(tmp_path, "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(bool(CLASSIC_LINE.match(l)) for l in lines) == 3
    assert "Epoch:[1/1](3/3)" in result.output
    assert any(l.startswith("model    0.") and "parameters" in l for l in lines)
    assert any(l.startswith("device   cpu") for l in lines)
    assert any("12 docs, 3 steps/epoch x 1 epochs = 3 steps" in l for l in lines)
    assert (tmp_path / "out" / "minimind_pretrain_32.pth").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["minimind_pretrain_32.pth", "runs"]  # no lock left
    [store] = list_runs(tmp_path / "out")
    assert store.read_config()["train"]["batch_size"] == 4


@needs_assets
def test_seed_run_reproduces_minimind_fp32_cpu_losses(tmp_path):
    """The seed config on MiniMind's tokenizer and toy data: MiniMind's own fp32 CPU losses."""
    result = runner.invoke(app, ["train", "--tokenizer", str(ASSETS / "tokenizer"),
                                 "--data_path", str(ASSETS / "toydata" / "pretrain_data.jsonl"),
                                 "--save_dir", str(tmp_path), "--dtype", "float32", "--device", "cpu",
                                 "--num_workers", "0"])
    assert result.exit_code == 0, result.output
    assert "model    8.915M parameters" in result.output
    lines = [l for l in result.output.splitlines() if l.startswith("Epoch:")]
    assert lines == [
        "Epoch:[1/5](1/1), loss: 8.9662, logits_loss: 8.9662, aux_loss: 0.0000, lr: 0.00050225, epoch_time: 0.0min",
        "Epoch:[2/5](1/1), loss: 8.0970, logits_loss: 8.0970, aux_loss: 0.0000, lr: 0.00037725, epoch_time: 0.0min",
        "Epoch:[3/5](1/1), loss: 7.4885, logits_loss: 7.4885, aux_loss: 0.0000, lr: 0.00022275, epoch_time: 0.0min",
        "Epoch:[4/5](1/1), loss: 7.1506, logits_loss: 7.1506, aux_loss: 0.0000, lr: 0.00009775, epoch_time: 0.0min",
        "Epoch:[5/5](1/1), loss: 6.9875, logits_loss: 6.9875, aux_loss: 0.0000, lr: 0.00005000, epoch_time: 0.0min",
    ]
    assert (tmp_path / "minimind_pretrain_512.pth").is_file()


@pytest.mark.parametrize("args,words", [
    (["--dim", "30"], "dim: 30 is not divisible by n_heads=4"),
    (["--n_kv_heads", "3"], "n_kv_heads"),
    (["--batch_size", "0"], "batch_size: must be at least 1"),
    (["--learning_rate", "0"], "learning_rate: must be a positive number"),
    (["--save_interval", "-1"], "save_interval: must be >= 0"),
    (["--max_seq_len", "1"], "max_seq_len: must be at least 2"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--dtype", "float16"], "float16 needs CUDA"),
    (["--tokenizer", "/nonexistent"], "tokenizer folder /nonexistent does not exist"),
    (["--init-from", "/nonexistent.pth"], "does not exist"),
    (["--vocab_size", "100"], "the tokenizer has 6400 tokens but vocab_size is 100"),
    (["--resume", "auto"], "no unfinished run"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, words):
    result = runner.invoke(app, tiny_args(tmp_path, *args))
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: ")


def test_bad_data_is_refused_before_any_work(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    result = runner.invoke(app, tiny_args(tmp_path, "--data_path", str(bad)))
    assert result.exit_code == 2 and f"{bad}:2: malformed JSON" in result.output
    assert not (tmp_path / "out" / "runs").exists()


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": {"dim": 48, "n_heads": 4}, "train": {"epochs": 1, "batch_size": 6}}))
    result = runner.invoke(app, tiny_args(tmp_path, "--config", str(cfg), "--batch_size", "4"))
    assert result.exit_code == 0, result.output
    [store] = list_runs(tmp_path / "out")
    saved = store.read_config()
    assert saved["model"]["dim"] == 32 and saved["train"]["batch_size"] == 4  # flags beat the file
    cfg.write_text(json.dumps({"train": {"batchsize": 4}}))
    result = runner.invoke(app, tiny_args(tmp_path, "--config", str(cfg)))
    assert result.exit_code == 2 and "batchsize: unknown setting" in result.output


def test_runs_list_and_show(tmp_path):
    assert runner.invoke(app, tiny_args(tmp_path, "--run-name", "first")).exit_code == 0
    out = runner.invoke(app, ["runs", "list", "--save-dir", str(tmp_path / "out")]).output
    assert "first" in out and "finished" in out and "6/6" in out
    shown = runner.invoke(app, ["runs", "show", "first", "--save-dir", str(tmp_path / "out")])
    assert shown.exit_code == 0, shown.output
    assert "state      finished" in shown.output and "checkpoint weights:" in shown.output
    assert "loss" in shown.output and "step" in shown.output  # the plotext curve's title and axis label
    missing = runner.invoke(app, ["runs", "show", "nope", "--save-dir", str(tmp_path / "out")])
    assert missing.exit_code == 2 and "not a run directory" in missing.output
    again = runner.invoke(app, tiny_args(tmp_path, "--run-name", "first"))  # a taken name: a new folder, said
    assert again.exit_code == 0 and "a run named first already exists: this one is first-2" in again.output


def test_runs_show_says_what_a_run_ran_in_and_when_its_weights_were_saved_over(tmp_path):
    from minimind.engine.environment import resolve_precision

    for name in ("first", "second"):  # same model size: both save out/minimind_pretrain_32.pth
        assert runner.invoke(app, tiny_args(tmp_path, "--run-name", name)).exit_code == 0
    show = lambda run: runner.invoke(app, ["runs", "show", run, "--save-dir", str(tmp_path / "out")]).output  # noqa: E731
    ran = resolve_precision("cpu", "bfloat16").description  # the default dtype, as this CPU resolves it
    first, second = show("first"), show("second")
    assert f"), {ran}, data " in first and "training" in first
    weights = tmp_path / "out" / "minimind_pretrain_32.pth"
    assert f"checkpoint weights: {weights} (overwritten since by another run saving under the same name)" in first
    assert f"checkpoint weights: {weights}\n" in second
    # killed (kill -9) while a weights save was in flight: the file landed, its record did not
    status = tmp_path / "out" / "runs" / "second" / "status.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "running", "pid": int(dead.stdout),
                                  "host": socket.gethostname(), "heartbeat": time.time()}))
    newer = weights.with_name("newer.pth")
    newer.write_bytes(weights.read_bytes() + b"\0")
    os.replace(newer, weights)
    assert "state      lost" in show("second")
    assert f"checkpoint weights: {weights} (changed since its last record: a save still in flight" in show("second")
    weights.unlink()
    assert f"checkpoint weights: {weights} (no longer there)" in show("second")


def test_a_run_resumed_by_a_relative_path_records_absolute_paths(tmp_path, monkeypatch):
    """`runs show` from another folder must find the checkpoints of a run resumed as `out/runs/rel`."""
    from minimind.engine.control import RunControl
    from minimind.engine.trainer import Trainer
    from tests.helpers import tiny_config

    control = RunControl()
    control.stop("test")  # stops after its first step, resumable
    Trainer(tiny_config(tmp_path, run_name="rel"), control=control).run()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--resume", "out/runs/rel", "--save_dir", "out"])
    assert result.exit_code == 0, result.output
    store = RunStore(tmp_path / "out" / "runs" / "rel")
    paths = [saved["path"] for saved in store.read_status()["checkpoints"].values()]
    assert paths and all(Path(p).is_absolute() and Path(p).is_file() for p in paths), paths
    assert RunConfig.from_dict(store.read_config()).train.save_dir == str(tmp_path / "out")


def test_resuming_a_finished_run_does_nothing_and_keeps_its_record(tmp_path):
    assert runner.invoke(app, tiny_args(tmp_path, "--run-name", "done")).exit_code == 0
    store = RunStore(tmp_path / "out" / "runs" / "done")
    before = (store.read_status(), store.events_path.read_bytes(), store.metrics_path.read_bytes())
    result = runner.invoke(app, ["train", "--resume", str(store.path)])
    assert result.exit_code == 0, result.output  # a loop that resumes until done ends cleanly
    assert "has already finished" in result.output and "--init-from" in result.output
    assert (store.read_status(), store.events_path.read_bytes(), store.metrics_path.read_bytes()) == before


def test_control_commands_refuse_a_finished_run(tmp_path):
    runner.invoke(app, tiny_args(tmp_path, "--run-name", "done"))
    result = runner.invoke(app, ["pause", "done", "--save-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not running (state: finished)" in result.output


def test_generate_and_tokenizer_train(tmp_path):
    assert runner.invoke(app, tiny_args(tmp_path, "--run-name", "g")).exit_code == 0
    out = runner.invoke(app, ["generate", str(tmp_path / "out" / "runs" / "g"), "-p", "The", "--max-new-tokens", "5",
                              "--seed", "1"])
    assert out.exit_code == 0 and out.output.startswith("The")
    weights = tmp_path / "out" / "minimind_pretrain_32.pth"
    out2 = runner.invoke(app, ["generate", str(weights), "-p", "The", "--max-new-tokens", "5", "--n-heads", "4",
                               "--temperature", "0"])
    assert out2.exit_code == 0, out2.output
    tok = runner.invoke(app, ["tokenizer", "train", "--data", str(tiny_corpus(tmp_path)), "--vocab-size", "400",
                              "--out", str(tmp_path / "tok")])
    assert tok.exit_code == 0 and "400 entries" in tok.output
    from minimind.tokenizer import load_tokenizer
    t = load_tokenizer(tmp_path / "tok")
    assert len(t) == 400 and (t.pad_token_id, t.bos_token_id, t.eos_token_id) == (0, 1, 2)


def start_headless(tmp_path, *extra, log=None):
    """`minimind train` in its own process, as a user would start it in tmux or with nohup; its output
    to `log` when given (a pipe nobody reads while the test waits would fill and block the run)."""
    args = [sys.executable, "-m", "minimind", *tiny_args(tmp_path, "--epochs", "200", "--save_interval", "0",
                                                        "--log_interval", "1", *extra)]
    return subprocess.Popen(args, stdout=log.open("w") if log else subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})



@pytest.mark.slow
def test_control_from_another_process(tmp_path):
    log = tmp_path / "train.log"
    proc = start_headless(tmp_path, "--run-name", "live", log=log)
    try:
        out = tmp_path / "out"
        store = RunStore(out / "runs" / "live")
        assert wait_until(lambda: store.read_status().get("global_step", 0) >= 2)
        cli = lambda *a: subprocess.run([sys.executable, "-m", "minimind", *a, "live", "--save-dir", str(out)],
                                        capture_output=True, text=True, timeout=60)
        assert cli("pause").returncode == 0
        assert wait_until(lambda: store.read_status().get("state") == "paused", 30)
        step = store.read_status()["global_step"]
        time.sleep(1.0)
        assert store.read_status()["global_step"] == step
        assert cli("save").returncode == 0
        assert wait_until(lambda: store.resume_path.is_file(), 30)
        assert cli("resume").returncode == 0
        assert wait_until(lambda: store.read_status().get("global_step", 0) > step + 1, 30)
        assert cli("stop").returncode == 0
        proc.wait(timeout=120)
    finally:
        proc.kill()
    output = log.read_text(encoding="utf-8")
    assert proc.returncode == 0, output
    assert "stopped at step" in output and f"minimind train --resume {out / 'runs' / 'live'}" in output
    assert store.read_status()["state"] == "stopped"


@pytest.mark.slow
def test_sigint_saves_and_resume_continues(tmp_path):
    proc = start_headless(tmp_path, "--run-name", "sig", "--epochs", "40")
    store = RunStore(tmp_path / "out" / "runs" / "sig")
    try:
        for line in proc.stdout:  # interrupt as soon as training is under way
            if line.startswith("Epoch:[1/40](2/6)"):
                proc.send_signal(signal.SIGINT)
                break
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "resume with: minimind train --resume" in output
    stopped_at = store.read_status()["global_step"]
    assert store.read_status()["state"] == "stopped" and 2 <= stopped_at < 240
    result = runner.invoke(app, ["train", "--resume", "auto", "--save_dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"resumed at step {stopped_at}/240" in result.output
    assert store.read_status()["state"] == "finished" and store.read_status()["global_step"] == 240


@pytest.mark.slow
def test_sighup_stops_and_saves_unless_the_shell_ignores_it(tmp_path):
    """A closed terminal (SIGHUP) stops and saves like Ctrl-C; under nohup (SIGHUP ignored) the run goes on."""
    proc = start_headless(tmp_path, "--run-name", "hup")
    store = RunStore(tmp_path / "out" / "runs" / "hup")
    try:
        assert wait_until(lambda: store.read_status().get("global_step", 0) >= 2)
        proc.send_signal(signal.SIGHUP)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "SIGHUP: stopping after this step" in output and "resume with: minimind train --resume" in output
    assert store.read_status()["state"] == "stopped" and store.resume_path.is_file()

    args = [sys.executable, "-m", "minimind", *tiny_args(tmp_path, "--epochs", "200", "--save_interval", "0",
                                                        "--run-name", "nohup")]
    ignored = subprocess.Popen(["nohup", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RunStore(tmp_path / "out" / "runs" / "nohup")
    try:
        assert wait_until(lambda: store.read_status().get("global_step", 0) >= 2)
        ignored.send_signal(signal.SIGHUP)
        step = store.read_status()["global_step"]
        assert wait_until(lambda: store.read_status().get("global_step", 0) > step + 2)
        assert ignored.poll() is None and store.read_status()["state"] == "running"
    finally:
        ignored.kill()
        ignored.wait()


@pytest.mark.slow
def test_a_closed_stdout_stops_and_saves_like_ctrl_c(tmp_path):
    """`minimind train | head -3`: when the reader goes, the run stops at a step boundary with its resume
    state, exit 0, the way to resume on stderr; not an 'internal error' that fails the run."""
    args = [sys.executable, "-m", "minimind", *tiny_args(tmp_path, "--epochs", "200", "--save_interval", "0",
                                                        "--log_interval", "1", "--run-name", "piped")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # read like head -n, up to the first log line, then go away
            if line.startswith("Epoch:"):
                break
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    store = RunStore(tmp_path / "out" / "runs" / "piped")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "internal error" not in err and "Exception ignored" not in err, err
    assert "stdout closed" in err and f"resume with: minimind train --resume {store.path}" in err
    assert store.read_status()["state"] == "stopped" and store.resume_path.is_file()


def test_quiet_prints_only_evaluations_and_the_end_and_verbose_every_save(tmp_path):
    quiet = runner.invoke(app, tiny_args(tmp_path, "--quiet", "--eval_split", "0.25", "--epochs", "1",
                                         "--run-name", "q"))
    assert quiet.exit_code == 0, quiet.output
    lines = [l for l in quiet.output.splitlines() if l.strip()]
    assert lines and all(l.lstrip().startswith(("eval", "finished")) for l in lines), lines
    assert any(l.lstrip().startswith("eval") for l in lines) and "finished" in lines[-1]
    verbose = runner.invoke(app, tiny_args(tmp_path, "--verbose", "--epochs", "1", "--save_interval", "1",
                                           "--run-name", "v"))
    assert verbose.exit_code == 0, verbose.output
    steps = len([l for l in verbose.output.splitlines() if l.startswith("Epoch:")])
    saves = [l for l in verbose.output.splitlines() if "saved weights" in l]
    assert steps > 1 and len(saves) == steps
    assert any("resume state" in l for l in verbose.output.splitlines())
    both = runner.invoke(app, tiny_args(tmp_path, "--quiet", "--verbose"))
    assert both.exit_code == 2 and "do not mix" in both.output and "Traceback" not in both.output


def test_a_weights_file_gets_the_tokenizer_its_run_trained_with(tmp_path):
    """generate/chat/eval/export from a bare weights file: the tokenizer of the run that wrote it
    (found through its record), else the one beside an export, else the bundled one with a note."""
    import shutil

    from minimind.cli import _load
    from minimind.engine.trainer import Trainer
    from minimind.families import CLASSIC
    from tests.helpers import tiny_config

    own = shutil.copytree(CLASSIC.tokenizer_dir, tmp_path / "my-tokenizer")
    Trainer(tiny_config(tmp_path, epochs=1, save_interval=100, tokenizer=str(own))).run()
    weights = tmp_path / "out" / "minimind_pretrain_32.pth"
    loaded = _load(weights, 4, "cpu", None, None)
    assert loaded.tokenizer_folder == str(own) and loaded.note == ""

    elsewhere = tmp_path / "copied" / "w.pth"  # no record says who wrote it
    elsewhere.parent.mkdir()
    shutil.copy(weights, elsewhere)
    result = runner.invoke(app, ["generate", str(elsewhere), "-p", "a", "--max-new-tokens", "2", "--n-heads", "4"])
    assert result.exit_code == 0, result.output
    assert "tokenizer: the one bundled for classic" in result.stderr and "--tokenizer DIR" in result.stderr
    assert "tokenizer:" not in result.stdout
    for name in ("tokenizer.json", "tokenizer_config.json"):  # as an export folder has them
        shutil.copy(own / name, elsewhere.parent / name)
    assert _load(elsewhere, 4, "cpu", None, None).tokenizer_folder == str(elsewhere.parent)
