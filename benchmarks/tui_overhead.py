"""What watching costs: the same training run headless (the console printer) and driven by the TUI,
with the app's two launch modes: a background process (the default) and a thread of the app.

Both runs train the seed model on the toy corpus for EPOCHS epochs with the recommended settings and
record metrics.jsonl; steady-state throughput is read back from it (the first WARMUP_STEPS steps,
during which the app is still starting and building its screens, are excluded from both). The app runs in
Textual's headless test driver: layout, table updates and plot rebuilds all happen, only the bytes
to a terminal are skipped. A plain thread without any UI is measured too, so thread mode's cost can be
split into "a thread" and "the UI". Each run in a fresh process, interleaved rounds, medians.

    python benchmarks/tui_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tempfile
import threading
from typing import Callable

import torch
from common import RunConfig, interleave, machine, median_of

from minimind.console import ConsolePrinter
from minimind.engine.environment import cpu_has_fast_bf16
from minimind.engine.trainer import Trainer
from minimind.events import END_STATES, RunState
from minimind.storage.run_store import list_runs

WARMUP_STEPS = 20
EPOCHS = 3  # about 170 steps: long enough that a second of UI start-up is not what is measured


def config(save_dir: str) -> RunConfig:
    dtype = "bfloat16" if torch.cuda.is_available() or cpu_has_fast_bf16() else "float32"
    return RunConfig().replace(epochs=EPOCHS, packing=True, num_workers=0, dtype=dtype, save_interval=0, save_dir=save_dir)


def throughput(save_dir: str) -> dict:
    [store] = list_runs(save_dir)
    steps = store.read_metrics()[WARMUP_STEPS:]
    seconds = sum(m["step_time"] for m in steps)
    return {"tokens_per_s": sum(m["tokens"] for m in steps) / seconds,
            "step_time": seconds / len(steps)}


def headless() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(config(tmp), observers=[ConsolePrinter(out=io.StringIO(), err=io.StringIO())]).run()
        return throughput(tmp)


def headless_thread() -> dict:
    """The same headless run in a plain thread of this process, with the switch interval a thread-mode
    run sets: what a thread costs by itself, so the UI's own share of thread mode can be read apart."""
    from minimind_tui.sessions import TRAINING_SWITCH_INTERVAL_S

    result: dict = {}
    sys.setswitchinterval(TRAINING_SWITCH_INTERVAL_S)
    worker = threading.Thread(target=lambda: result.update(headless()))
    worker.start()
    worker.join()
    return result


def tui(launch: str) -> dict:
    from minimind_tui.app import make_app

    async def drive(save_dir: str) -> None:
        app = make_app(config(save_dir), start=True, launch=launch)
        async with app.run_test(size=(100, 30)):
            while app.state not in END_STATES:
                await asyncio.sleep(0.5)  # not pilot.pause(): it makes every widget settle, extra work
            assert app.state == RunState.FINISHED

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(drive(tmp))
        return throughput(tmp)


MODES = {"headless": headless, "headless, plain thread": headless_thread,
         "tui, process": lambda: tui("process"), "tui, thread": lambda: tui("thread")}


def in_fresh_process(mode: str) -> Callable[[], dict]:
    """Each run in a process of its own: a thread that runs torch after the main thread has (as a
    long-lived benchmark process would) gets a second OpenMP team, and libgomp then wakes its
    workers slowly (thread_vs_main.py measures it); a user's app is a fresh process too."""
    def run() -> dict:
        out = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(MODES[args.child]()))
        return
    print(f"machine: {machine()}")
    results = interleave({name: in_fresh_process(name) for name in MODES}, args.repeats)
    h = median_of(results["headless"], "tokens_per_s")
    print(f"\n| run | real tok/s (median of {args.repeats}) | vs headless | overhead |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        t = median_of(runs, "tokens_per_s")
        print(f"| {name} | {t:,.0f} | {t / h:.3f} | {1 - t / h:.1%} |")
    # Paired by round: the UI's own cost in thread mode, against a plain thread of the same round.
    pairs = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results["tui, thread"],
                                                                   results["headless, plain thread"])]
    print(f"\ntui, thread vs headless, plain thread, per round: {', '.join(f'{1 - r:+.1%}' for r in pairs)} "
          f"(median {1 - sorted(pairs)[len(pairs) // 2]:+.1%} overhead)")


if __name__ == "__main__":
    main()
