"""Check the CUDA path in one run and print one table; exit 1 if any check fails.

    python scripts/gpu_check.py                  # on a GPU machine: every check, then throughput
    python scripts/gpu_check.py --device cpu     # the same script as a smoke test (CI runs it)

For classic and MiniMind-3, dense and MoE: bf16 autocast, fp16 with gradient scaling, --compile,
flash SDPA actually used, exact resume. Once: pause / save / resume / stop through the control
folder of a `minimind train` process, torchrun (NCCL on CUDA, gloo on CPU) with one process and
with two when there are two GPUs, the TUI in tmux showing the device and its memory, `minimind
generate` and `eval`, host synchronisations inside training steps. Then throughput, MFU and peak
memory for the seed config, 26M (512x8), 104M (768x16) and MiniMind-3's default, each followed by a
profile of 10 more steps (`--logs DIR`: profile-<size>.txt). On CPU the models are tiny, CUDA-only
checks are skipped and throughput covers the seed config only.

On CUDA the check groups run side by side, one process each (`--parallel`, the default there; one
GPU holds them all), while one process per size compiles its model and so fills torch.compile's
cache; the throughput runs come after, alone. `--timeout` bounds the side-by-side part: a group
still running then is killed with everything it started and shows as FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
import functools
from functools import partial
from typing import Callable, Optional

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from minimind.config import RunConfig  # noqa: E402
from minimind.engine.control import RunControl  # noqa: E402
from minimind.engine.trainer import Trainer  # noqa: E402
from minimind.events import RunEnded, RunStarted, StepLogged  # noqa: E402
from minimind.families import FAMILIES  # noqa: E402
from minimind.storage.checkpoint import load_resume_state  # noqa: E402
from minimind.storage.run_store import RunStore  # noqa: E402

TOYDATA = ROOT / "toydata" / "pretrain_data.jsonl"
TMUX_SOCKET = "minimind-gpu-check"  # a server of our own: killed whole if a check is cut short
# Published dense bf16 peaks (no sparsity), FLOP/s: NVIDIA's H100/H200 SXM datasheets (989.4 TFLOPS).
BF16_PEAKS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}

TINY = {"classic": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64),
        "minimind3": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_seq_len=64)}
SEED = {"classic": dict(dim=512, n_layers=2, max_seq_len=512), "minimind3": dict(hidden_size=512, num_hidden_layers=2)}
SIZES = {"seed 512x2": ("classic", dict(dim=512, n_layers=2, max_seq_len=512), 64),
         "26M 512x8": ("classic", dict(dim=512, n_layers=8, max_seq_len=512), 64),
         "104M 768x16": ("classic", dict(dim=768, n_layers=16, max_seq_len=512), 64),
         "MiniMind-3 768x8": ("minimind3", dict(hidden_size=768, num_hidden_layers=8), 64)}


class Skip(Exception):
    """A check that does not apply here (the reason is shown)."""


class Table:
    def __init__(self, sink: Optional[Path] = None) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.sink = sink  # rewritten after each check: a parent that times out still gets the rows so far

    def check(self, name: str, where: str, fn: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            detail, status = fn(), "PASS"
        except Skip as e:
            detail, status = str(e), "SKIP"
        except Exception as e:  # one line per failure; the traceback goes to stderr
            traceback.print_exc(file=sys.stderr)
            detail, status = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", "FAIL"
        self.rows.append((name, where, status, f"{detail} ({time.perf_counter() - start:.0f} s)"))
        if self.sink:
            self.sink.write_text(json.dumps(self.rows))
        print(f"  {status} {name} [{where}] {detail}", flush=True)

    def print(self) -> None:
        widths = [max(len(r[i]) for r in self.rows + [("check", "where", "result", "detail")]) for i in range(4)]
        line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
        print(line(("check", "where", "result", "detail")))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print(line(row))

    @property
    def failed(self) -> int:
        return sum(r[2] == "FAIL" for r in self.rows)


class Check:
    def __init__(self, device: str, work: Path, logs: Optional[Path] = None) -> None:
        self.device, self.work, self.logs = device, work, logs or work
        self.cuda = device.startswith("cuda")
        self.corpus = self._corpus("corpus", 8 if self.cuda else 1)
        self.small_corpus = TOYDATA  # runs that go to an epoch's end (36 steps of batch 4)

    @functools.cached_property
    def big_corpus(self) -> Path:
        """85k tokens a copy: 32 copies pack 5,300 rows of 512, 60 steps of batch 64 in one epoch (an
        epoch's smaller last batch would make torch.compile compile again, for dynamic shapes).
        Written only by the processes that time throughput."""
        return self._corpus("big", 32) if self.cuda else self.corpus

    def _corpus(self, name: str, copies: int) -> Path:
        """The toy corpus (144 documents), repeated on a GPU."""
        path = self.work / f"{name}.jsonl"
        path.write_text(TOYDATA.read_text(encoding="utf-8") * copies, encoding="utf-8")
        return path

    def config(self, arch: str, moe: bool = False, **changes) -> RunConfig:
        model = (SEED if self.cuda else TINY)[arch]
        settings = dict(arch=arch, **model, use_moe=moe, data_path=str(self.corpus), device=self.device,
                        save_dir=str(self.work / "out"), num_workers=0, epochs=1, batch_size=4, log_interval=1,
                        accumulation_steps=1,
                        save_interval=0, dtype="bfloat16")
        settings.update(changes)
        return RunConfig().replace(**settings)

    # ---- in-process training -------------------------------------------------------------------
    def train(self, config: Optional[RunConfig], steps: int, resume: Optional[Path] = None,
              observers: tuple = ()) -> tuple[list, RunEnded]:
        """Train until `steps` micro-steps were logged (or the run ends); the events and how it ended."""
        control, events = RunControl(), []

        def observe(e) -> None:
            events.append(e)
            if isinstance(e, StepLogged) and e.global_step >= steps:
                control.stop("enough steps")

        trainer = Trainer(config, control=control, observers=[observe, *observers], resume=resume)
        ended = trainer.run()
        if ended.status == "failed":
            raise RuntimeError(ended.error)
        return events, ended

    @staticmethod
    def losses(events: list) -> list[float]:
        return [e.loss for e in events if isinstance(e, StepLogged)]

    def fp32_first_loss(self, arch: str, moe: bool) -> float:
        return self.losses(self.train(self.config(arch, moe, dtype="float32"), 1)[0])[0]

    def precision(self, arch: str, moe: bool, dtype: str) -> str:
        if dtype == "float16" and not self.cuda:
            raise Skip("float16 autocast needs CUDA")
        # 10 steps: fp16's gradient scaler may skip the first few while it finds its scale.
        events, _ = self.train(self.config(arch, moe, dtype=dtype, run_name=f"{dtype}-{arch}-{moe}"), 10)
        losses = self.losses(events)
        started = next(e for e in events if isinstance(e, RunStarted))
        if not all(map(torch.isfinite, torch.tensor(losses))):
            raise AssertionError(f"non-finite loss: {losses}")
        reference = self.fp32_first_loss(arch, moe)
        drift = abs(losses[0] - reference) / reference
        if drift > 2e-2:
            raise AssertionError(f"first loss {losses[0]:.4f} vs fp32 {reference:.4f}")
        if losses[-1] >= losses[0]:
            raise AssertionError(f"loss did not fall in 10 steps: {losses}")
        return f"{started.precision}; loss {losses[0]:.4f} -> {losses[-1]:.4f}, step 1 vs fp32 {drift:.1e}"

    def compiled(self, arch: str, moe: bool) -> str:
        if not self.cuda and (arch, moe) != ("classic", False):
            raise Skip("CPU smoke test compiles classic dense only (about 40 s each)")
        dtype = "bfloat16" if self.cuda else "float32"
        eager = self.losses(self.train(self.config(arch, moe, dtype=dtype, run_name=f"eager-{arch}-{moe}"), 4)[0])
        start = time.perf_counter()
        comp = self.losses(self.train(self.config(arch, moe, dtype=dtype, compile=True, run_name=f"compiled-{arch}-{moe}"), 4)[0])
        diff = max(abs(a - b) / abs(a) for a, b in zip(eager, comp))
        if diff > (2e-2 if self.cuda else 1e-4):
            raise AssertionError(f"compiled losses {comp} vs eager {eager}")
        return f"{dtype}: 4 losses within {diff:.1e} of eager; compile + 4 steps {time.perf_counter() - start:.0f} s"

    def flash_sdpa(self, arch: str) -> str:
        from torch.profiler import ProfilerActivity, profile

        config = self.config(arch)
        model = FAMILIES[arch].build_model(config.model).to(self.device)
        ids = torch.randint(0, 6400, (2, 64), device=self.device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        with profile(activities=activities) as prof:
            with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.cuda):
                model(ids).logits.float().sum().backward()
        names = sorted({e.key for e in prof.key_averages() if "attention" in e.key.lower()})
        # PyTorch picks the fused kernel: FlashAttention-2, or cuDNN's flash-style attention (its
        # first choice on Hopper). Either never builds the T x T matrix; the math fallback does.
        fused = [n for n in names if "flash" in n.lower() or "cudnn" in n.lower()]
        if not fused:
            raise AssertionError(f"no flash attention kernel ran; attention ops: {names}")
        return ", ".join(fused[:2])

    def exact_resume(self, arch: str, moe: bool) -> str:
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            dtype = "bfloat16" if self.cuda else "float32"
            base = self.config(arch, moe, dtype=dtype, epochs=2 if self.cuda else 1, save_interval=20,
                               data_path=str(self.small_corpus))
            _, whole = self.train(base.replace(run_name=f"whole-{arch}-{moe}"), 10**9)
            _, first = self.train(base.replace(run_name=f"split-{arch}-{moe}"), 5)
            _, rest = self.train(None, 10**9, resume=Path(first.run_dir))
        finally:
            torch.use_deterministic_algorithms(False)
        a = load_resume_state(RunStore(whole.run_dir).resume_path)
        b = load_resume_state(RunStore(rest.run_dir).resume_path)
        if a["global_step"] != b["global_step"]:
            raise AssertionError(f"ended at steps {a['global_step']} and {b['global_step']}")
        diffs = {k: (a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"]}
        worst = max(diffs, key=lambda k: diffs[k])
        if diffs[worst] != 0.0:
            raise AssertionError(f"not bitwise: largest weight difference {diffs[worst]:.2e} in {worst} "
                                 f"after {a['global_step']} steps (stopped at 5, resumed)")
        return f"{dtype}, deterministic algorithms: weights bitwise equal after {a['global_step']} steps (stop at 5, resume)"

    # ---- processes -----------------------------------------------------------------------------
    def flags(self, **changes) -> list[str]:
        model = (SEED if self.cuda else TINY)["classic"]
        values = dict(**model, data_path=str(self.corpus), device=self.device, save_dir=str(self.work / "cli"),
                      num_workers=0, batch_size=4, dtype="bfloat16" if self.cuda else "float32")
        values.update(changes)
        return [f"--{k}={v}" for k, v in values.items()]

    @staticmethod
    def minimind(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "minimind", *args], capture_output=True, text=True,
                                timeout=timeout, cwd=ROOT)
        if result.returncode != 0:
            raise AssertionError(f"`minimind {' '.join(args[:2])}` exit {result.returncode}: "
                                 f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        return result

    def control_folder(self) -> str:
        run_name = "controlled"
        proc = subprocess.Popen([sys.executable, "-m", "minimind", "train", *self.flags(epochs=1000, run_name=run_name,
                                 save_interval=50, log_interval=10)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        store = RunStore(self.work / "cli" / "runs" / run_name)
        run = str(store.path)
        try:
            status = lambda: store.read_status() if store.status_path.is_file() else {}
            steps = lambda: status().get("global_step", 0)
            wait(lambda: status().get("state") == "running" and steps() > 2, "the run to start")
            self.minimind("pause", run)
            wait(lambda: status().get("state") == "paused", "paused")
            # A save-now always writes the weights and reports them after the resume state is on disk;
            # counting those reports (not file times) cannot mistake a periodic save from just before
            # the pause for the one requested.
            weight_saves = lambda: sum(1 for r in store.read_events()
                                       if r.get("event") == "CheckpointSaved" and r.get("kind") == "weights")
            before = weight_saves()
            self.minimind("save", run)
            wait(lambda: weight_saves() > before, "the save-now checkpoint")
            paused_at = load_resume_state(store.resume_path)["global_step"]
            time.sleep(1.0)
            before = weight_saves()
            self.minimind("save", run)
            wait(lambda: weight_saves() > before, "the second save-now checkpoint")
            if load_resume_state(store.resume_path)["global_step"] != paused_at:
                raise AssertionError("steps advanced while paused")
            self.minimind("resume", run)
            wait(lambda: steps() > paused_at, "steps after resume")
            self.minimind("stop", run)
            proc.wait(120)
            if proc.returncode != 0 or status().get("state") != "stopped":
                raise AssertionError(f"exit {proc.returncode}, state {status().get('state')}")
            return f"paused at step {paused_at}, saved, resumed, stopped at {steps()} (state stopped, exit 0)"
        finally:
            if proc.poll() is None:
                proc.kill()

    def torchrun(self) -> str:
        gpus = torch.cuda.device_count() if self.cuda else 0
        done = []
        for nproc in ([1, 2] if gpus >= 2 else [1]):
            name = f"torchrun-{nproc}"
            args = ["train", *self.flags(run_name=name, epochs=1, log_interval=5, device="cuda" if self.cuda else "cpu",
                                         data_path=str(self.small_corpus))]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "minimind", *args]
            # Loopback only: a machine without DNS or a route out must not stall the rendezvous or NCCL's bootstrap.
            env = dict(os.environ, NCCL_DEBUG="WARN", NCCL_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
            proc = subprocess.Popen(cmd[:3] + ["--local-addr=127.0.0.1"] + cmd[3:], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True)
            try:
                out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
                out, err = proc.communicate()
                print(f"torchrun timed out; its last output:\n{out[-2000:]}\n{err[-4000:]}", file=sys.stderr)
                raise AssertionError(f"{nproc} process(es): no end in 180 s: {err.strip().splitlines()[-1:]}") from None
            result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            if result.returncode != 0:
                raise AssertionError(f"{nproc} process(es): exit {result.returncode}: "
                                     f"{result.stderr.strip().splitlines()[-1:]}")
            record = json.loads((self.work / "cli" / "runs" / name / "config.json").read_text())
            if record["run"]["world_size"] != nproc:
                raise AssertionError(f"world size {record['run']['world_size']}, expected {nproc}")
            done.append(str(nproc))
        backend = "NCCL" if self.cuda else "gloo"
        return f"{backend}, {' and '.join(done)} process(es) trained an epoch" + ("" if gpus >= 2 else " (one GPU)")

    def tui(self) -> str:
        if shutil.which("tmux") is None:
            raise Skip("tmux is not installed")
        session = f"gpucheck{os.getpid()}"
        command = " ".join([sys.executable, "-m", "minimind_tui", "--start", "--launch", "thread",
                            *self.flags(epochs=1000, run_name="tui", save_dir=str(self.work / "tui"))])
        tmux = ["tmux", "-L", TMUX_SOCKET]
        subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command], check=True, cwd=ROOT)
        try:
            device = "cuda" if self.cuda else "cpu"
            want = [device] + (["GiB"] if self.cuda else [])
            pane = ""

            def shows() -> bool:
                nonlocal pane
                pane = subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
                return all(w in pane for w in want) and "running" in pane.lower()

            wait(shows, f"the TUI to show {want} and a running run", timeout=120)
            line = next((ln.strip() for ln in pane.splitlines() if device in ln), "")
            return f"shows: {line[:70]}"
        finally:
            subprocess.run([*tmux, "kill-session", "-t", session], capture_output=True)

    def generate_and_eval(self) -> str:
        _, ended = self.train(self.config("classic", run_name="for-generate", save_interval=4), 8)
        out = self.minimind("generate", ended.run_dir, "--prompt", "Hello", "--max-new-tokens", "8", "--seed", "1",
                            "--device", self.device)
        ev = self.minimind("eval", ended.run_dir, "--data", str(TOYDATA), "--device", self.device)
        last = ev.stdout.strip().splitlines()[-1] if ev.stdout.strip() else ""
        return f"generate {len(out.stdout.strip())} chars; eval: {last[:60]}"

    def host_syncs(self) -> str:
        if not self.cuda:
            raise Skip("CUDA only (torch.cuda.set_sync_debug_mode)")
        config = self.config("classic", log_interval=10, run_name="syncs", packing=True)
        logs = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                events, _ = self.train(config, 40, observers=(lambda e: logs.append(e) if isinstance(e, StepLogged) else None,))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        per_log = len(syncs) / max(len(logs), 1)
        if per_log > 3:
            where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs})[:4]
            raise AssertionError(f"{len(syncs)} host syncs over {len(logs)} log steps of 40 steps: {where}")
        return f"{len(syncs)} host syncs in 40 steps, all on the {len(logs)} log steps (loss and aux .item())"

    # ---- throughput ----------------------------------------------------------------------------
    def throughput(self, label: str, arch: str, model: dict, batch: int, warm_only: bool = False) -> str:
        """Packed batches, bf16 + compile on CUDA; tokens/s from the 2nd log step to step 60 (one host
        sync per log step, as in a real run), so compilation and warm-up are not counted. On CUDA the
        10 steps after that are profiled: the top kernels go to <logs>/profile-<size>.txt."""
        if not self.cuda and label != "seed 512x2":
            raise Skip("GPU sizes")
        model = model if self.cuda else TINY[arch]
        measured, every = (60, 10) if self.cuda else (6, 2)
        steps = 12 if warm_only else measured + (10 if self.cuda else 0)
        config = self.config(arch, **model, batch_size=batch if self.cuda else 2, packing=True, compile=self.cuda,
                             data_path=str(self.big_corpus),
                             dtype="bfloat16" if self.cuda else "float32", log_interval=every,
                             run_name=f"speed-{arch}-{len(label)}-{warm_only}")
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        profiler = self._profiler(label) if self.cuda and not warm_only else None
        start = time.perf_counter()
        events, _ = self.train(config, steps, observers=(profiler,) if profiler else ())
        logged = [e for e in events if isinstance(e, StepLogged)]
        if warm_only:
            return f"{len(logged)} log steps; first at {logged[0].elapsed:.0f} s of training (compile included)"
        logged = [e for e in logged if e.global_step <= measured]
        if len(logged) < 3:
            raise AssertionError(f"only {len(logged)} log steps in {steps} steps")
        seconds = logged[-1].elapsed - logged[1].elapsed
        ms_per_step = seconds / (logged[-1].global_step - logged[1].global_step) * 1e3
        tokens = sum(e.tokens for e in logged[2:])
        flops = FAMILIES[arch].flops_per_token(config.model, config.model.max_seq_len) * tokens / seconds
        peak, against = self.peak()
        memory = f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if self.cuda else ""
        return (f"{tokens / seconds:,.0f} tok/s, MFU {flops / peak:.1%} of {against}{memory} "
                f"(batch {config.train.batch_size}x{config.model.max_seq_len}, packed, "
                f"{'bf16 + compile' if self.cuda else 'fp32'}; {ms_per_step:.1f} ms/step; "
                f"run {time.perf_counter() - start:.0f} s)")

    def _profiler(self, label: str) -> Callable:
        """An observer that profiles steps 61-70 and writes the kernels' table."""
        from torch.profiler import ProfilerActivity, profile

        prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        path = self.logs / f"profile-{label.split()[0]}.txt"

        def observe(e) -> None:
            if isinstance(e, StepLogged) and e.global_step == 60:
                prof.start()
            elif isinstance(e, StepLogged) and e.global_step == 70:
                prof.stop()
                table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90)
                path.write_text(f"{label}: steps 61-70\n{table}")
        return observe

    def peak(self) -> tuple[float, str]:
        if self.cuda:
            name = torch.cuda.get_device_name()
            for gpu, value in BF16_PEAKS.items():
                if gpu in name:
                    return value, f"{gpu} bf16 dense {value / 1e12:,.0f} TFLOP/s"
            return 989.4e12, f"unknown GPU {name}: H100's {989.4:,.0f} TFLOP/s"
        a = torch.randn(1024, 1024)
        start = time.perf_counter()
        for _ in range(5):
            a @ a
        return 5 * 2 * 1024**3 / (time.perf_counter() - start), "this CPU's fp32 matmul"


def wait(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


GROUPS = ("classic", "minimind3", "compile-classic", "compile-minimind3", "processes", "throughput")


def run_group(check: Check, table: Table, group: str, warm_only: bool = False, size: Optional[str] = None) -> None:
    """The checks of one group, in the table's order."""
    if group in ("classic", "minimind3"):
        table.check("flash SDPA used", group, partial(check.flash_sdpa, group))
        for moe in (False, True):
            where = f"{group} {'MoE' if moe else 'dense'}"
            table.check("bf16 autocast", where, partial(check.precision, group, moe, "bfloat16"))
            table.check("fp16 + grad scaling", where, partial(check.precision, group, moe, "float16"))
            table.check("exact resume", where, partial(check.exact_resume, group, moe))
    elif group.startswith("compile-"):
        arch = group.removeprefix("compile-")
        for moe in (False, True):
            table.check("--compile", f"{arch} {'MoE' if moe else 'dense'}", partial(check.compiled, arch, moe))
    elif group == "processes":
        table.check("host syncs", "training steps", check.host_syncs)  # first: it explains the throughput
        table.check("pause/save/resume/stop", "minimind train", check.control_folder)
        table.check("torchrun", "minimind train", check.torchrun)
        table.check("TUI in tmux", "minimind-tui", check.tui)
        table.check("generate + eval", "minimind", check.generate_and_eval)
    elif group == "throughput":
        for label, (arch, model, batch) in SIZES.items():
            if size is not None and label != size:
                continue
            table.check("compile warm-up" if warm_only else "throughput", label,
                        partial(check.throughput, label, arch, model, batch, warm_only))
    else:
        raise ValueError(group)


def run_in_parallel(args: argparse.Namespace, groups: list[str], logs: Path) -> dict[str, Table]:
    """Each group in its own process (one GPU holds them all); the throughput group only compiles
    here, filling the compile cache, so that its timed runs afterwards, alone, do not pay for it."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS=os.environ.get("TORCHINDUCTOR_COMPILE_THREADS", "4"))
    children = {}
    jobs = [(g, None) for g in groups if g != "throughput"]
    jobs += [("throughput", label) for label in SIZES] if "throughput" in groups else []  # a compile each
    for group, size in jobs:
        name = group if size is None else f"warm-{size.split()[0]}"
        rows = logs / f"{name}.rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--only", group,
               "--rows-json", str(rows)] + (["--warm-only", "--size", size] if size else [])
        log = open(logs / f"{name}.log", "w")
        children[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                           start_new_session=True), rows, log)
    tables: dict[str, Table] = {}
    deadline = time.time() + args.timeout
    for group, (proc, rows, log) in children.items():
        table = Table()
        try:
            proc.wait(max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            pass
        try:  # the child and all it started (torchrun's workers, compile workers, the TUI): none may
            os.killpg(proc.pid, signal.SIGKILL)  # run on beside the timed throughput runs
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
        if rows.is_file():
            table.rows = [tuple(r) for r in json.loads(rows.read_text())]
        if proc.returncode != 0 and table.failed == 0:  # killed, timed out or crashed outside a check
            tail = (logs / f"{group}.log").read_text(errors="replace").strip().splitlines()[-1:]
            table.rows.append((group, "process", "FAIL", f"exit {proc.returncode} after {len(table.rows)} checks: {tail}"))
        tables[group] = table
        print(f"  {group}: done ({sum(r[2] == 'FAIL' for r in table.rows)} failed)", flush=True)
    return tables


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    parser.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=None,
                        help="run the check groups side by side in processes (default on CUDA)")
    parser.add_argument("--logs", type=Path, default=None, help="folder for the groups' logs (parallel mode)")
    parser.add_argument("--timeout", type=float, default=420, help="seconds the parallel groups may take")
    parser.add_argument("--rows-json", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}): run with --device cpu for the smoke test", file=sys.stderr)
        return 2
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown group {unknown[0]!r}: --only takes {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"{time.strftime('%Y-%m-%d')}: {where}, torch {torch.__version__}", flush=True)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    parallel = args.parallel if args.parallel is not None else args.device.startswith("cuda") and args.rows_json is None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minimind-gpu-check-") as tmp:
        check = Check(args.device, Path(tmp), args.logs)
        if parallel and len(groups) > 1:
            tables = run_in_parallel(args, groups, args.logs or Path(tmp) / "logs")
            if shutil.which("tmux"):
                subprocess.run(["tmux", "-L", TMUX_SOCKET, "kill-server"], capture_output=True)
            if "throughput" in groups:  # timed alone, after everything else has finished
                if check.cuda:
                    print(f"GPU processes before the timed runs:\n{torch.cuda.list_gpu_processes()}", flush=True)
                tables["throughput"] = Table()
                run_group(check, tables["throughput"], "throughput")
        else:
            tables = {"all": Table(sink=args.rows_json)}
            for group in groups:
                run_group(check, tables["all"], group, warm_only=args.warm_only, size=args.size)
    table = Table()
    table.rows = [r for t in tables.values() for r in t.rows]
    print()
    table.print()
    print(f"\n{table.failed} failed" if table.failed else "\nall checks passed", f"({time.perf_counter() - started:.0f} s)")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
