"""A 1 GB corpus: time to the first training step and peak host memory, against the toy corpus.

Generates a JSONL file of the requested size (toy documents, each line made unique), then runs
`minimind train` on it and on the bundled toy corpus in subprocesses, sampling their resident
memory every 50 ms until the 5th step. Memory growth is the 1 GB run's peak minus the toy run's
(same model, optimizer and batch): what the corpus itself costs. For comparison it also loads the
file the way MiniMind's PretrainDataset does (every line json-parsed into a list).

    python benchmarks/large_corpus.py [--size-gb 1.0] [--dir /tmp] [--packing]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import ROOT, machine

CLASSIC_LOAD = """
import json, resource, sys, time
start = time.perf_counter()
samples = [json.loads(line.strip()) for line in open(sys.argv[1], encoding='utf-8')]
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, len(samples))
"""


def generate(path: Path, size: int) -> int:
    docs = [json.loads(l)["text"] for l in (ROOT / "toydata" / "pretrain_data.jsonl").read_text("utf-8").splitlines()]
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < size:
            for doc in docs:
                f.write(json.dumps({"text": f"[{n}] {doc}"}, ensure_ascii=False) + "\n")
                n += 1
    return n


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_until_step(data: Path, save_dir: Path, extra: list[str], steps: int = 5) -> dict:
    args = [sys.executable, "-m", "minimind", "train", "--data_path", str(data), "--save_dir", str(save_dir),
            "--epochs", "1", "--save_interval", "0", "--log_interval", "1", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ps = psutil.Process(proc.pid)
    step_times: list[float] = []

    def read() -> None:
        for line in proc.stdout:
            if line.startswith("Epoch:"):
                step_times.append(time.perf_counter() - start)

    threading.Thread(target=read, daemon=True).start()
    peak = 0
    while proc.poll() is None and len(step_times) < steps:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.05)
    first_step = step_times[0] if step_times else float("nan")
    proc.terminate()
    proc.wait(timeout=120)
    return {"first_step_s": first_step, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--packing", action="store_true", help="also time building the packing token cache")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        big = tmp / "big.jsonl"
        start = time.perf_counter()
        n = generate(big, int(args.size_gb * 1e9))
        print(f"generated {big.stat().st_size / 1e9:.2f} GB, {n:,} documents in {time.perf_counter() - start:.0f} s")
        common = ["--num_workers", "0", "--dtype", "float32"]
        toy = run_until_step(ROOT / "toydata" / "pretrain_data.jsonl", tmp / "out-toy", common)
        large = run_until_step(big, tmp / "out-big", common)
        classic = subprocess.run([sys.executable, "-c", CLASSIC_LOAD, str(big)], capture_output=True, text=True)
        load_s, load_rss, _ = classic.stdout.split()
        rows = [("toy corpus (0.3 MB)", toy), (f"{args.size_gb:g} GB corpus", large)]
        if args.packing:
            env_cache = tmp / "cache"
            os.environ["MINIMIND_CACHE"] = str(env_cache)
            rows.append((f"{args.size_gb:g} GB, --packing, cache built",
                         run_until_step(big, tmp / "out-pack", common + ["--packing"])))
            rows.append((f"{args.size_gb:g} GB, --packing, cache reused",
                         run_until_step(big, tmp / "out-pack2", common + ["--packing"])))
        print("\n| corpus | time to first step | peak RSS | growth over toy |")
        print("|---|---:|---:|---:|")
        for name, r in rows:
            print(f"| {name} | {r['first_step_s']:.1f} s | {r['peak_rss'] / 2**20:,.0f} MiB | "
                  f"{(r['peak_rss'] - toy['peak_rss']) / 2**20:+,.0f} MiB |")
        print(f"| MiniMind's loader (json.loads of every line into a list) | {float(load_s):.1f} s just to load | "
              f"{int(load_rss) / 2**20:,.0f} MiB | |")


if __name__ == "__main__":
    main()
