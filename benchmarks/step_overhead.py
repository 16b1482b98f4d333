"""What the engine's loop costs a step beyond the model's own work: on a GPU a small model's step is
bound by the host (the H200 profile in the README: the GPU idles 45% of a 26M step), so every
microsecond of Python between steps is lost there. A model so small that its arithmetic is nearly
free makes that cost visible on any machine.

Two loops over the same Trainer's loader, model and optimizer, in one process, interleaved rounds:
- bare: forward, the seed's masked loss, backward, clip, AdamW step, zero_grad; nothing else;
- engine: `Trainer.run` (log every 100 steps, no saves): learning-rate schedule, padding handling,
  token counting, windows, control polling, status.
Prints microseconds per step (medians) and the engine's extra per step.

    python benchmarks/step_overhead.py [--repeats 5] [--steps 400]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from common import ROOT, RunConfig, machine

TINY = dict(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=16)


def config(save_dir: str, steps: int) -> RunConfig:
    return RunConfig().replace(
        **TINY, data_path=str(ROOT / "toydata" / "pretrain_data.jsonl"), save_dir=save_dir, device="cpu",
        dtype="float32", batch_size=2, epochs=max(1, -(-steps * 2 // 144)), log_interval=100, save_interval=0,
        num_workers=0, packing=True)


def engine(save_dir: str, steps: int) -> float:
    from minimind.engine.control import RunControl
    from minimind.engine.trainer import Trainer
    from minimind.events import StepLogged

    control = RunControl()
    marks: list[tuple[int, float]] = []

    def observe(e) -> None:
        if isinstance(e, StepLogged):
            marks.append((e.global_step, e.elapsed))
            if e.global_step >= steps:
                control.stop("enough")

    Trainer(config(save_dir, steps), control=control, observers=[observe]).run()
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return (t1 - t0) / (s1 - s0) * 1e6


def bare(save_dir: str, steps: int) -> float:
    from minimind.engine.loss import masked_lm_loss
    from minimind.engine.trainer import Trainer

    trainer = Trainer(config(save_dir, steps))
    model, optimizer = trainer.model, trainer.optimizer
    model.train()
    done, start, first = 0, 0.0, 100
    while done < steps:
        for X, Y, mask in trainer.loader:
            loss = masked_lm_loss(model(X).logits, Y, mask)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == first:  # the engine's clock starts at its first log step (100) too
                start = time.perf_counter()
            if done >= steps:
                break
    elapsed = time.perf_counter() - start
    trainer._release()  # its run directory's lock and weights file, as run() would at the end
    return elapsed / (steps - first) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    print(f"{machine()}; model {TINY}, batch 2, packed toy corpus; {args.steps} steps, timed from step 100")
    results: dict[str, list[float]] = {"bare": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, fn in (("bare", bare), ("engine", engine)):
                results[name].append(fn(f"{tmp}/{name}{r}", args.steps))
                print(f"  round {r + 1}/{args.repeats} {name}: {results[name][-1]:,.0f} us/step", flush=True)
    b, e = statistics.median(results["bare"]), statistics.median(results["engine"])
    print(f"\nbare loop {b:,.0f} us/step, engine {e:,.0f} us/step: the engine adds {e - b:,.0f} us a step "
          f"({e / b:.2f}x)")


if __name__ == "__main__":
    main()
