"""Training throughput: MiniMind's classic loop vs this engine, side by side, on this machine.

The baseline is the seed notebook's loop as it runs on a CPU, rebuilt here from this project's
model and dataset (numerically MiniMind classic): fp32, no autocast, padded documents, the default
(for-loop) AdamW, a DataLoader with one worker. "ours (seed settings)" is the Trainer with those same
settings; "ours (recommended)" adds bf16 autocast (CPUs with fast bf16, or CUDA) and --packing.
Variants run interleaved, `--repeats` rounds; medians are reported. Real tokens are non-pad targets.

    python benchmarks/train_throughput.py [--steps 12] [--repeats 3] [--configs seed,26m]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import RunConfig, interleave, machine, measure_trainer, median_of, peak_matmul_flops

from minimind.data import PretrainDataset, resolve_data_path
from minimind.engine.environment import cpu_has_fast_bf16
from minimind.engine.loss import masked_lm_loss
from minimind.families.classic import CLASSIC
from minimind.models.classic import MiniMindLM
from minimind.tokenizer import load_tokenizer

MODELS = {"seed": dict(dim=512, n_layers=2, max_seq_len=512), "26m": dict(dim=512, n_layers=8, max_seq_len=512)}


def classic_loop(config: RunConfig, steps: int, warmup: int = 2) -> dict:
    """The seed notebook's train_epoch on a CPU (saving disabled, as in every variant here)."""
    train, lm = config.train, config.model
    torch.manual_seed(train.seed)
    model = MiniMindLM(lm)
    tokenizer = load_tokenizer(train.tokenizer or CLASSIC.tokenizer_dir)
    ds = PretrainDataset(resolve_data_path(train.data_path), tokenizer, lm.max_seq_len)
    loader = torch.utils.data.DataLoader(ds, batch_size=train.batch_size, shuffle=False, num_workers=1,
                                         pin_memory=False, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate)
    iters = len(loader)
    times, tokens, positions = [], 0, 0
    tick = time.perf_counter()
    for step, (X, Y, loss_mask) in enumerate(loader, start=1):
        for group in optimizer.param_groups:
            group["lr"] = CLASSIC.lr(step, train.epochs * iters, train.learning_rate)
        res = model(X)
        loss = (masked_lm_loss(res.logits, Y, loss_mask) + res.aux_loss) / train.accumulation_steps
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the notebook logs every step
        now = time.perf_counter()
        if step > warmup:
            times.append(now - tick)
            tokens += int(loss_mask.sum())
            positions += loss_mask.numel()
        tick = now
        if step >= warmup + steps:
            break
    seconds = sum(times)
    return {"tokens_per_s": tokens / seconds, "positions_per_s": positions / seconds,
            "step_time": seconds / len(times), "steps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="seed,26m")
    args = parser.parse_args()

    fast_bf16 = torch.cuda.is_available() or cpu_has_fast_bf16()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peaks = {"float32": peak_matmul_flops(torch.float32, device)}
    if fast_bf16:
        peaks["bfloat16"] = peak_matmul_flops(torch.bfloat16, device)
    print(f"machine: {machine()}")
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items()))
    rows = []
    for name in args.configs.split(","):
        base = RunConfig().replace(**MODELS[name], num_workers=1)
        variants = {
            "MiniMind classic loop": lambda b=base: classic_loop(b.replace(dtype="float32"), args.steps),
            "ours (seed settings)": lambda b=base: measure_trainer(b.replace(dtype="float32"), args.steps),
            "ours (recommended)": lambda b=base: measure_trainer(
                b.replace(dtype="bfloat16" if fast_bf16 else "float32", packing=True, num_workers=0), args.steps),
        }
        print(f"\n{name} config ({base.model.dim} dim, {base.model.n_layers} layers, seq {base.model.max_seq_len}), "
              f"{args.repeats} interleaved rounds of {args.steps} steps:")
        results = interleave(variants, args.repeats)
        baseline = median_of(results["MiniMind classic loop"], "tokens_per_s")
        flops = CLASSIC.flops_per_token(base.model, base.model.max_seq_len - 1)
        for variant, runs in results.items():
            dtype = "bfloat16" if "recommended" in variant and fast_bf16 else "float32"
            tps, pps = median_of(runs, "tokens_per_s"), median_of(runs, "positions_per_s")
            mfu = flops * pps / peaks[dtype]
            rows.append((name, variant, dtype, tps, pps, median_of(runs, "step_time"), tps / baseline, mfu))
    print("\n| model | run | dtype | real tok/s | pos/s | step | vs classic | MFU |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, variant, dtype, tps, pps, st, ratio, mfu in rows:
        print(f"| {name} | {variant} | {dtype} | {tps:,.0f} | {pps:,.0f} | {st * 1000:.0f} ms | {ratio:.2f}x | {mfu:.1%} |")


if __name__ == "__main__":
    main()
