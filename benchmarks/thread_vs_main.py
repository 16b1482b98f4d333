"""Does training in a thread cost anything by itself? The same headless run (seed model, toy corpus
packed, 2 epochs) in the main thread and in a plain Python thread, each in a fresh process,
alternating, so no run inherits another's heap. No UI anywhere: this is the control for
tui_overhead.py's thread mode. A third mode sets the 1 ms GIL switch interval the app's thread mode
sets, to see whether that setting costs anything on its own.

    python benchmarks/thread_vs_main.py [--repeats 4]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading

from common import machine
from tui_overhead import config, throughput

EPOCHS = 2
MODES = ["main", "thread", "thread, 1 ms switch interval", "thread after torch work in the main thread"]


def one_run() -> dict:
    from minimind.console import ConsolePrinter
    from minimind.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        Trainer(config(tmp).replace(epochs=EPOCHS),
                observers=[ConsolePrinter(out=io.StringIO(), err=io.StringIO())]).run()
        return throughput(tmp)


def child(mode: str) -> None:
    result: dict = {}
    if mode == "thread, 1 ms switch interval":  # what the app's thread mode sets (sessions.py)
        from minimind_tui.sessions import TRAINING_SWITCH_INTERVAL_S

        sys.setswitchinterval(TRAINING_SWITCH_INTERVAL_S)
    if mode == "thread after torch work in the main thread":  # as a long-lived benchmark process did
        import torch

        a = torch.randn(1024, 1024)
        for _ in range(20):  # parallel regions run by the main thread first
            a = torch.tanh(a @ a)
    if mode == "main":
        result.update(one_run())
    else:
        worker = threading.Thread(target=lambda: result.update(one_run()))
        worker.start()
        worker.join()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {'; '.join(MODES)}")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"machine: {machine()}")
    results: dict[str, list[float]] = {mode: [] for mode in args.modes.split(",")}
    for r in range(args.repeats):
        for mode in results:
            out = subprocess.run([sys.executable, __file__, "--child", mode], capture_output=True, text=True,
                                 check=True)
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])
            print(f"  round {r + 1}/{args.repeats} {mode}: {results[mode][-1]:,.0f} real tok/s", flush=True)
    m = statistics.median(next(iter(results.values())))  # the first mode is the reference
    print("\nmedian real tok/s: " + ", ".join(f"{mode} {statistics.median(v):,.0f} ({statistics.median(v) / m:.3f}x)"
                                              for mode, v in results.items()))


if __name__ == "__main__":
    main()
