"""Does the fast path learn the same thing? Loss curves of the seed model on the toy corpus in
float32 and in bfloat16 autocast, padded and packed, next to float32 with another seed (the noise a
different initialisation alone makes). The fast path passes if its distance from float32 is no
larger than that noise.

    python benchmarks/loss_parity.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from common import RunConfig, machine

from minimind.engine.environment import cpu_has_fast_bf16
from minimind.engine.trainer import Trainer
from minimind.events import StepLogged


def curve(config: RunConfig) -> list[float]:
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(config.replace(save_dir=tmp, save_interval=0, log_interval=1, num_workers=0),
                observers=[lambda e: isinstance(e, StepLogged) and losses.append(e.loss)]).run()
    return losses


def smooth(values: list[float], window: int) -> list[float]:
    return [statistics.mean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    fast = "bfloat16" if torch.cuda.is_available() or cpu_has_fast_bf16() else None
    if fast is None:
        print("no fast bfloat16 on this machine: nothing to compare")
        return
    print(f"machine: {machine()}")
    base = RunConfig().replace(epochs=args.epochs)
    for packing in (False, True):
        cfg = base.replace(packing=packing)
        fp32 = curve(cfg.replace(dtype="float32"))
        bf16 = curve(cfg.replace(dtype=fast))
        seed = curve(cfg.replace(dtype="float32", seed=43))
        w = 10  # compare 10-step moving averages: single steps are noisy
        s32, s16, sseed = smooth(fp32, w), smooth(bf16, w), smooth(seed, w)
        print(f"\n{'packed' if packing else 'padded'} rows, {len(fp32)} steps ({w}-step moving averages):")
        print("| step | float32 | bfloat16 | float32, seed 43 |")
        print("|---:|---:|---:|---:|")
        for i in range(w - 1, len(fp32), max(len(fp32) // 8, 1)):
            print(f"| {i + 1} | {s32[i]:.4f} | {s16[i]:.4f} | {sseed[i]:.4f} |")
        d_fast = statistics.mean(abs(a - b) for a, b in zip(s32, s16))
        d_seed = statistics.mean(abs(a - b) for a, b in zip(s32, sseed))
        print(f"mean |bfloat16 - float32| = {d_fast:.4f}; mean |seed 43 - seed 42| = {d_seed:.4f}; "
              f"final raw losses {fp32[-1]:.4f} / {bf16[-1]:.4f} / {seed[-1]:.4f}")


if __name__ == "__main__":
    main()
