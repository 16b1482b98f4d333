"""What glibc's malloc defaults cost a training step, and what `minimind.engine.host_memory` keeps:
the same packed seed run (the toy corpus, one epoch, no saves) in fresh processes, in the main
thread and in a thread (as the app's `--launch thread` runs it), with glibc's defaults
(MINIMIND_DEFAULT_MALLOC=1) and with freed memory kept. Per variant: minor page faults per step and
training ms per step after the first WARMUP steps, and the process's peak RSS. Page faults and RSS
are counts, not timings: they do not depend on how busy this shared machine is. Interleaved rounds,
medians.

    python benchmarks/host_allocator.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import ROOT, RunConfig, machine

WARMUP = 10


def child(where: str) -> None:
    """One run in this fresh process; prints its numbers as JSON."""
    from minimind.engine.host_memory import keep_freed_memory
    from minimind.engine.trainer import Trainer
    from minimind.events import StepLogged

    marks: list[tuple[float, int]] = []

    def observe(e) -> None:
        if isinstance(e, StepLogged):
            marks.append((e.step_time, resource.getrusage(resource.RUSAGE_SELF).ru_minflt))

    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig().replace(epochs=1, packing=True, num_workers=0, save_interval=0, dtype="float32",
                                     save_dir=tmp)
        run = lambda: Trainer(config, observers=[observe]).run()  # noqa: E731
        if where == "thread":
            keep_freed_memory()  # as the app's ThreadSession does, before the thread exists
            worker = threading.Thread(target=run)
            worker.start()
            worker.join()
        else:
            run()
    steady = marks[WARMUP:]
    faults = (steady[-1][1] - steady[0][1]) / (len(steady) - 1)
    print(json.dumps({"faults": faults, "ms": 1000 * statistics.median(t for t, _ in steady[1:]),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(where: str, kept: bool) -> dict:
    env = {**os.environ, "MINIMIND_DEFAULT_MALLOC": "0" if kept else "1"}
    out = subprocess.run([sys.executable, __file__, "--child", where], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("main", "thread"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"machine: {machine()}")
    variants = [(where, kept) for where in ("main", "thread") for kept in (False, True)]
    results: dict = {v: [] for v in variants}
    for r in range(args.repeats):
        for where, kept in variants:
            results[(where, kept)].append(measure(where, kept))
            last = results[(where, kept)][-1]
            print(f"  round {r + 1}/{args.repeats} {where}, {'kept' if kept else 'glibc defaults'}: "
                  f"{last['faults']:,.0f} faults/step, {last['ms']:.0f} ms/step, peak RSS {last['rss_mb']:,.0f} MB",
                  flush=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {machine()}, seed model, toy corpus packed, one epoch, medians of {args.repeats}")
    print("| thread | malloc | page faults / step | ms / step | vs main, glibc defaults | peak RSS |")
    print("|---|---|---:|---:|---:|---:|")
    base = statistics.median(r["ms"] for r in results[("main", False)])
    for (where, kept), runs in results.items():
        ms = statistics.median(r["ms"] for r in runs)
        print(f"| {where} | {'freed memory kept' if kept else 'glibc defaults'} | "
              f"{statistics.median(r['faults'] for r in runs):,.0f} | {ms:.0f} | {base / ms:.3f}x | "
              f"{statistics.median(r['rss_mb'] for r in runs):,.0f} MB |")


if __name__ == "__main__":
    main()
