"""Training throughput per epoch: MiniMind's own classic loop vs this engine, side by side, on a real
corpus, on this machine.

The baseline (`minimind_classic_loop.py`) is MiniMind classic rebuilt from the spec, sharing no
code with this project, run as the seed notebook runs it on a CPU: fp32, padded documents, a
DataLoader with one worker tokenizing per item, the for-loop AdamW, a log line and an fp16 weights
save every step. Each variant is timed from building its data and model to the end of the epoch
(`--max-steps N` ends every epoch after N steps, for quick looks), so data preparation, saves and
logging count. Real tokens are non-pad targets trained on. Variants run interleaved, `--repeats`
rounds; medians are reported.

- "ours, seed settings": `minimind train` with the seed's flags as a MiniMind user would pass them
  (fp32, padded, one worker, save and log every step) and `--skip_padding false`, so it does the
  same arithmetic as the baseline, padding included: the engine against MiniMind's loop, like for
  like. Must be >= 0.98x the baseline.
- "ours, defaults": `minimind train` with no flags but the corpus and model size: padding skipped
  (`--skip_padding`, the same loss and gradients) and bf16 autocast where it is fast.
- "ours, recommended": the defaults plus --packing (every token of the corpus in full 512-token rows,
  documents separated by eos) and bf16 autocast where it is fast (CUDA, CPUs with AMX/AVX512-BF16).

`--configs m3` does the same for MiniMind-3's default model against `minimind3_loop.py`, MiniMind-3's
`train_pretrain.py` rebuilt from the spec and run with its defaults on a CPU (fp32, seq 340, batch
32, accumulation 8, 8 DataLoader workers): "ours, MiniMind-3 settings" passes those flags and
`--skip_padding false`.

    python benchmarks/debian_corpus.py          # once: writes benchmarks/.data/debian-reference.jsonl
    python benchmarks/train_throughput.py [--data FILE] [--configs seed,26m,104m,m3] [--repeats 2] [--max-steps 0]
                                              [--like-for-like]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT, RunConfig, interleave, machine, median_of, peak_matmul_flops
from debian_corpus import DEFAULT_OUT
from minimind3_loop import train_epoch as minimind3_epoch
from minimind_classic_loop import train_epoch

from minimind.data import JsonlTexts, TokenCache
from minimind.engine.control import RunControl
from minimind.engine.environment import cpu_has_fast_bf16
from minimind.engine.trainer import Trainer
from minimind.events import StepLogged
from minimind.tokenizer import load_tokenizer

MODELS = {"seed": dict(dim=512, n_layers=2), "26m": dict(dim=512, n_layers=8), "104m": dict(dim=768, n_layers=16),
          "m3": dict(hidden_size=768, num_hidden_layers=8)}  # m3: MiniMind-3's default model and script settings
TOKENIZER = ROOT / "minimind" / "tokenizer" / "classic"
MINIMIND3_TOKENIZER = ROOT / "minimind" / "tokenizer" / "minimind3"
MINIMIND3_WORKERS = 8  # train_pretrain.py's --num_workers default


def corpus_shape(data: str, seq_len: int = 512) -> str:
    """What sets the ratio to MiniMind's padded loop: how much of its rows the documents fill. The
    lengths are the engine's own (bos + text + eos), from the packing token cache (built if needed)."""
    cache = TokenCache(JsonlTexts(data), load_tokenizer(TOKENIZER))
    cache.load()
    lengths = np.diff(cache.document_ends(), prepend=0)
    full = float(np.mean(lengths >= seq_len))
    used = float(np.minimum(lengths, seq_len).sum()) / (seq_len * len(lengths))
    return (f"{len(lengths)} documents, median {np.median(lengths):.0f} tokens (classic tokenizer), "
            f"{full:.0%} fill a {seq_len}-token row, real tokens fill {used:.0%} of the padded rows")


def ours(config: RunConfig, max_steps: int) -> dict:
    """One epoch of `minimind train` (in process), wall time from Trainer construction to its end."""
    control, tokens, steps, last = RunControl(), [0], [0], [0.0]

    def observe(e) -> None:
        if isinstance(e, StepLogged):
            tokens[0] += e.tokens
            steps[0] = e.global_step  # micro-batches, as MiniMind's loops count steps
            last[0] = e.loss
            if max_steps and steps[0] >= max_steps:
                control.stop("benchmark done")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        Trainer(config.replace(save_dir=tmp, epochs=1), control=control, observers=[observe]).run()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens[0], "tokens_per_s": tokens[0] / seconds, "steps": steps[0],
            "final_loss": last[0]}


def classic_variants(size: dict, data: str, max_steps: int) -> dict:
    """Classic, seq 512, batch 2: the seed notebook's loop and settings against ours."""
    seed = RunConfig().replace(**size, data_path=data, dtype="float32", packing=False, skip_padding=False,
                               num_workers=1, save_interval=1, log_interval=1)
    defaults = RunConfig().replace(**size, data_path=data)
    return {
        "MiniMind classic loop": lambda: train_epoch(data, str(TOKENIZER), **size, max_steps=max_steps),
        "ours, seed settings": lambda: ours(seed, max_steps),
        "ours, defaults": lambda: ours(defaults, max_steps),
        "ours, recommended": lambda: ours(defaults.replace(packing=True), max_steps),
    }


def minimind3_variants(size: dict, data: str, max_steps: int) -> dict:
    """MiniMind-3's train_pretrain.py defaults (seq 340, batch 32, accumulation 8, its 8 workers) on a
    CPU, against ours. A quick look (`--max-steps`) logs every step on both sides, so it can stop."""
    logs = {"log_interval": 1} if max_steps else {}
    script = RunConfig.from_flat(dict(arch="minimind3", **size, data_path=data, dtype="float32", skip_padding=False,
                                      num_workers=MINIMIND3_WORKERS, **logs))
    defaults = RunConfig.from_flat(dict(arch="minimind3", **size, data_path=data, **logs))
    return {
        "MiniMind-3 loop": lambda: minimind3_epoch(data, str(MINIMIND3_TOKENIZER), **size, max_steps=max_steps,
                                                   num_workers=MINIMIND3_WORKERS, **logs),
        "ours, MiniMind-3 settings": lambda: ours(script, max_steps),
        "ours, defaults": lambda: ours(defaults, max_steps),
        "ours, recommended": lambda: ours(defaults.replace(packing=True), max_steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_OUT), help="a JSONL corpus (default: the Debian Reference)")
    parser.add_argument("--configs", default="seed,26m", help=f"any of {', '.join(MODELS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=0, help="end each epoch after N steps (0 = whole epoch)")
    parser.add_argument("--like-for-like", action="store_true",
                        help="only MiniMind's loop and ours with its settings (the parity check, in half the time)")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"no corpus at {args.data}: run `python benchmarks/debian_corpus.py` first")

    fast_bf16 = torch.cuda.is_available() or cpu_has_fast_bf16()
    shape = corpus_shape(args.data)  # tokenises the corpus: once
    print(f"machine: {machine()}; corpus: {args.data}")
    print(f"corpus: {shape}")
    print(f"fp32 matmul peak {peak_matmul_flops(torch.float32) / 1e9:,.0f} GFLOP/s; bf16 autocast is "
          + ("fast here" if fast_bf16 else "slow on this CPU (no AMX/AVX512-BF16): the defaults compute in fp32"))
    rows = []
    for name in args.configs.split(","):
        variants = (minimind3_variants if name == "m3" else classic_variants)(MODELS[name], args.data, args.max_steps)
        if args.like_for_like:
            variants = dict(list(variants.items())[:2])
        print(f"\n{name}, {args.repeats} interleaved rounds:", flush=True)
        results = interleave(variants, args.repeats)
        baseline = median_of(next(iter(results.values())), "tokens_per_s")
        for variant, runs in results.items():
            tps = median_of(runs, "tokens_per_s")
            rows.append((name, variant, median_of(runs, "seconds"), int(median_of(runs, "tokens")), tps, tps / baseline))
    print(f"\n{time.strftime('%Y-%m-%d')}, {machine()}, {Path(args.data).name} ({shape})"
          + (f", first {args.max_steps} steps of the epoch" if args.max_steps else ", one epoch"))
    print("| model | run | epoch wall | real tokens | real tok/s | vs MiniMind's loop |")
    print("|---|---|---:|---:|---:|---:|")
    for name, variant, seconds, tokens, tps, ratio in rows:
        print(f"| {name} | {variant} | {seconds:.1f} s | {tokens:,} | {tps:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
