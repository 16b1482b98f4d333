"""Data-parallel training with torchrun on CPU (gloo): 2 processes against 1 on the same global batch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minimind.data import EpochSampler
from minimind.families.classic import CLASSIC
from minimind.storage.checkpoint import load_resume_state
from minimind.storage.run_store import RunStore, loss_curve
from tests.helpers import tiny_corpus, tiny_flags

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def test_sampler_splits_the_same_order_over_ranks_and_pads_to_equal_counts():
    single = EpochSampler(10, shuffle=True, seed=3).order()
    ranks = [EpochSampler(10, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    orders = [s.order() for s in ranks]
    assert [len(o) for o in orders] == [4, 4, 4] and all(len(s) == 4 for s in ranks)
    merged = [orders[r][i] for i in range(4) for r in range(3)]
    assert merged[:10] == single and merged[10:] == single[:2]  # padding wraps around, as DistributedSampler
    for s in ranks:
        s.set_epoch(0, start=6)  # 6 samples consumed (by however many ranks): the rest is split anew
    assert sorted(i for s in ranks for i in s.order()) == sorted(single[6:] + single[:2])


def even_corpus(tmp_path: Path, global_batch: int = 4, length: int = 48) -> Path:
    """Toy documents plus one filler document sized so the corpus packs into full rows, a multiple of
    `global_batch` of them: every rank's rows then hold equally many real targets, and the mean of the
    per-rank losses (what DDP averages) equals the global mean (what one process computes)."""
    from minimind.tokenizer import load_tokenizer

    tok = load_tokenizer(CLASSIC.tokenizer_dir)
    count = lambda text: len(tok(f"<s>{text}</s>").input_ids)
    lines = tiny_corpus(tmp_path, 12).read_text(encoding="utf-8").splitlines()
    total = sum(count(json.loads(line)["text"]) for line in lines)
    block = (length - 1) * global_batch
    need = block - (total - 1) % block
    words = max(need - 2, 1)
    while count(" ".join(["a"] * words)) < need:
        words += 1
    while count(" ".join(["a"] * words)) > need:
        words -= 1
    filler = " ".join(["a"] * words)
    assert count(filler) == need, "the filler could not hit the exact length"
    path = tmp_path / "even.jsonl"
    path.write_text("\n".join(lines + [json.dumps({"text": filler})]) + "\n", encoding="utf-8")
    return path


def train_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", *tiny_flags(tmp_path, "--packing", *extra, corpus=even_corpus(tmp_path), dtype="float32",
                                 device="cpu", save_interval=0, log_interval=1)]


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "minimind", *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def communicate_or_kill(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """Wait for a launcher; on timeout kill it and everything under it (torchrun and its workers run in
    sessions of their own), so that no stray rank outlives the test blocked on a pipe nobody reads."""
    import psutil

    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.communicate()
        raise


def start_ddp(tmp_path: Path, name: str, epochs: int) -> subprocess.Popen:
    """`minimind train --nproc 2` in its own process, its output in one pipe."""
    return subprocess.Popen([sys.executable, "-m", "minimind", *train_args(
        tmp_path, "--epochs", str(epochs), "--batch_size", "2", "--nproc", "2", "--run-name", name)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True, cwd=tmp_path)


def read_until(proc: subprocess.Popen, prefix: str) -> None:
    """Read rank 0's lines up to the first that starts with `prefix`."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return


def stopped_ddp_run(tmp_path: Path, name: str, epochs: int, at_step: int) -> RunStore:
    """A 2-process run asked to stop (through its run directory) once rank 0 prints step `at_step`."""
    proc = start_ddp(tmp_path, name, epochs)
    store = RunStore(tmp_path / "out" / "runs" / name)
    for line in proc.stdout:
        if line.startswith(f"Epoch:[1/{epochs}]({at_step}/"):
            store.send("stop")
            break
    communicate_or_kill(proc)
    assert proc.returncode == 0 and store.read_status()["state"] == "stopped"
    return store


def metrics(tmp_path: Path, name: str) -> list[dict]:
    return RunStore(tmp_path / "out" / "runs" / name).read_metrics()


def final_weights(tmp_path: Path, name: str) -> dict:
    return load_resume_state(RunStore(tmp_path / "out" / "runs" / name).resume_path)["model"]


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch_and_resume(tmp_path):
    # one process, batch 4  vs  two processes (torchrun, gloo), batch 2 each; both evaluate 11 held-out
    # documents (uneven over 2 ranks) every 3 optimizer steps
    held = ["--eval_data", str(tiny_corpus(tmp_path, 11, "held.jsonl")), "--eval_interval", "3"]
    run(train_args(tmp_path, "--epochs", "2", "--batch_size", "4", "--run-name", "single", *held))
    out = run(train_args(tmp_path, "--epochs", "2", "--batch_size", "2", "--nproc", "2", "--run-name", "ddp", *held))
    assert out.stdout.count("Epoch:[1/2](1/") == 1  # rank 0 alone prints
    assert "world size 2" in out.stdout
    single, ddp = metrics(tmp_path, "single"), metrics(tmp_path, "ddp")
    assert len(single) == len(ddp) > 10
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(single, ddp)) < 1e-4
    assert [a["tokens"] for a in single] == [b["tokens"] for b in ddp]
    w1, w2 = final_weights(tmp_path, "single"), final_weights(tmp_path, "ddp")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    assert json.loads((tmp_path / "out" / "runs" / "ddp" / "config.json").read_text())["run"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in w2)  # the DDP wrapper is stripped
    evals = {name: [(r["global_step"], r["eval_loss"], r["eval_tokens"]) for r in RunStore(
        tmp_path / "out" / "runs" / name).read_events() if r["event"] == "EvalDone"] for name in ("single", "ddp")}
    assert len(evals["single"]) == len(evals["ddp"]) >= 3
    for (s1, l1, t1), (s2, l2, t2) in zip(evals["single"], evals["ddp"]):  # the rows split over ranks, summed
        assert s1 == s2 and t1 == t2 and abs(l1 - l2) < 1e-5

    # interrupted (stop request mid-run) and resumed with 2 processes: same result as uninterrupted
    store = stopped_ddp_run(tmp_path, "ddp-stopped", epochs=2, at_step=4)
    stopped_at = store.read_status()["global_step"]
    run(["train", "--resume", str(store.path), "--nproc", "2"])
    resumed = store.read_metrics()
    assert [m["global_step"] for m in resumed] == [m["global_step"] for m in ddp]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(resumed, ddp)) < 1e-6
    assert stopped_at < len(ddp)


@pytest.mark.slow
def test_resume_with_another_world_size_keeps_the_data_position_in_samples(tmp_path):
    store = stopped_ddp_run(tmp_path, "w2", epochs=1, at_step=3)
    state = load_resume_state(store.resume_path)
    assert state["world_size"] == 2 and state["samples"] == state["global_step"] * 2 * 2
    done_tokens = sum(m["tokens"] for m in store.read_metrics())
    assert json.loads((store.path / "config.json").read_text())["train"]["nproc"] == 2  # as it ran
    store.send("stop")  # waiting when the next session starts: it stops and saves after one step
    out = run(["train", "--resume", str(store.path), "--nproc", "1"])  # one process now
    assert "saved with 2 processes, continuing with 1" in out.stdout
    one_process_step = store.read_metrics()[-1]["global_step"]
    store.send("stop")
    out = run(["train", "--resume", str(store.path), "--nproc", "2"])  # two again, for one step
    assert "saved with 1 process, continuing with 2" in out.stdout
    out = run(["train", "--resume", str(store.path)])  # to the end, with the process count it last ran with
    assert "world size 2" in out.stdout and "finished" in out.stdout
    steps = [m["global_step"] for m in store.read_metrics()]
    # the one-process step is numbered above where the two-process session resumed, and still kept
    assert one_process_step in steps and steps[steps.index(one_process_step) + 1] < one_process_step
    curve = loss_curve(store).steps  # drawn on one axis: the last session's steps
    assert curve == sorted(curve) and curve[-1] == steps[-1]
    total_tokens = sum(m["tokens"] for m in store.read_metrics())
    rows = json.loads((store.path / "config.json").read_text())
    # every packed row of the epoch was trained on exactly once across the two phases
    from minimind.data import JsonlTexts, PackedDataset, TokenCache
    from minimind.tokenizer import load_tokenizer
    texts = JsonlTexts(rows["train"]["data_path"])
    dataset = PackedDataset(TokenCache(texts, load_tokenizer(CLASSIC.tokenizer_dir)).load(), 48, 0)
    assert total_tokens == dataset.n_targets and done_tokens < total_tokens


@pytest.mark.slow
def test_sigint_to_one_rank_stops_every_rank_without_hanging(tmp_path):
    import psutil

    proc = start_ddp(tmp_path, "sig", 500)
    store = RunStore(tmp_path / "out" / "runs" / "sig")
    read_until(proc, "Epoch:[1/500](3/")
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "minimind" in " ".join(p.cmdline())
               and "minimind.engine.launcher" not in " ".join(p.cmdline())]
    assert len(workers) == 2
    non_main = [w for w in workers if "RANK=1" in " ".join(f"{k}={v}" for k, v in w.environ().items() if k == "RANK")]
    (non_main or workers)[-1].send_signal(signal.SIGINT)  # one rank only
    output, _ = communicate_or_kill(proc)
    assert proc.returncode == 0, output[-2000:]
    assert store.read_status()["state"] == "stopped" and store.resume_path.is_file()
    assert "Traceback" not in output


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_launcher_stops_and_saves_every_rank(tmp_path, signum):
    """Ctrl-C in the terminal or `kill PID` of `minimind train --nproc 2` reaches the workers (torchrun
    puts them in sessions of their own): they stop after the step and save, the command exits 0 with one
    notice, and no rank is left training without a parent."""
    import psutil

    proc = start_ddp(tmp_path, "sig", 500)
    store = RunStore(tmp_path / "out" / "runs" / "sig")
    read_until(proc, "Epoch:[1/500](3/")
    everyone = psutil.Process(proc.pid).children(recursive=True)
    assert any("minimind.engine.launcher" in " ".join(p.cmdline()) for p in everyone)
    proc.send_signal(signum)  # to the launcher alone, as `kill PID` does (Ctrl-C reaches its group only)
    output, _ = communicate_or_kill(proc)
    assert proc.returncode == 0, output[-2000:]
    assert output.count("stopping after this step and saving") == 1, output[-2000:]
    assert store.read_status()["state"] == "stopped" and store.resume_path.is_file()
    assert "Traceback" not in output
    _, alive = psutil.wait_procs(everyone, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


@pytest.mark.slow
def test_quiet_multi_process_run_prints_one_line_and_shares_the_cores(tmp_path):
    """Without OMP_NUM_THREADS set, torchrun would print a banner and give each process one thread; the
    launcher shares the cores out instead (a value the user set is kept, as the other tests show)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    args = train_args(tmp_path, "--batch_size", "2", "--nproc", "2", "--run-name", "q", "--quiet")
    result = subprocess.run([sys.executable, "-m", "minimind", *args], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.splitlines()[-1].startswith("finished ") and len(result.stdout.splitlines()) == 1
    assert "OMP_NUM_THREADS" not in result.stderr, result.stderr


@pytest.mark.slow
def test_a_failed_multi_process_run_ends_with_one_line_and_its_own_exit_code(tmp_path):
    """Bad input: the single-process line once (not once per rank) and exit 2. A rank killed outright: one
    line saying so, exit 1. Never torchrun's traceback."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "minimind", *train_args(tmp_path, "--nproc", "2", "--data_path",
                                                                         str(tmp_path / "none.jsonl"))],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and bad.stderr.splitlines() == [bad.stderr.strip()], bad.stderr[-3000:]
    assert bad.stderr.startswith("error: data file") and "does not exist" in bad.stderr

    proc = start_ddp(tmp_path, "killed", 500)
    read_until(proc, "Epoch:[1/500](3/")
    store = RunStore(tmp_path / "out" / "runs" / "killed")
    psutil.Process(store.read_status()["pid"]).kill()  # rank 0, as `kill -9` does
    output, _ = communicate_or_kill(proc)
    assert proc.returncode == 1, output[-3000:]
    assert "error: training process rank 0 was killed (SIGKILL)" in output
    assert "Traceback" not in output and "ChildFailedError" not in output, output[-3000:]
    assert not (tmp_path / "traceback.txt").exists()  # the surviving rank's error is no file in the working directory


@pytest.mark.slow
def test_the_app_launches_a_multi_process_run_and_steers_it(tmp_path):
    """nproc 2 in the form: a background torchrun job, watched and paused / resumed / stopped."""
    import asyncio

    from minimind.config import RunConfig
    from minimind_tui.app import make_app

    config = RunConfig().replace(dim=32, n_layers=2, n_heads=4, max_seq_len=48, num_workers=0, packing=True,
                                 data_path=str(even_corpus(tmp_path)), save_dir=str(tmp_path / "out"), epochs=300,
                                 batch_size=2, nproc=2, save_interval=0, dtype="float32", run_name="tui-ddp")

    async def scenario():
        app = make_app(config, launch="process")
        async with app.run_test(size=(100, 30)) as pilot:
            async def until(state, timeout=120):
                for _ in range(int(timeout / 0.1)):
                    if app.state == state:
                        return True
                    await pilot.pause(0.1)
                return False
            await pilot.press("s")
            assert await until("running"), app.state
            await pilot.press("p")
            assert await until("paused")
            await pilot.press("p")
            assert await until("running")
            await pilot.press("x")
            assert await until("stopped")

    store = RunStore(tmp_path / "out" / "runs" / "tui-ddp")
    try:
        asyncio.run(scenario())
    finally:  # never leave a torchrun job behind, even when the test fails
        if store.state() in ("running", "paused"):
            store.send("resume")
            store.send("stop")
        for _ in range(600):
            if store.state() not in ("running", "paused", "stopping"):
                break
            time.sleep(0.1)
    assert store.read_status()["state"] == "stopped"
    assert json.loads(store.config_path.read_text())["run"]["world_size"] == 2
