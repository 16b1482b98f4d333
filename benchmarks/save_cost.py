"""What saving the weights costs a run: the same packed run with no weight saves, a save every 10
steps and a save every step (the seed notebook's `save_interval = 1`, this tool's default), side by
side, interleaved rounds, medians.

A weights save is an fp16 copy of the weights (on the training thread), a finiteness check of that
copy, then serialisation, fsync and an atomic replace on a background thread while the next step
trains. On a 2-core CPU the background write shares the cores the step computes on, so it is not
free even though training never waits for it. The exact-resume state is written at most once per
`--resume_every_s` (60 s) in all three variants.

    python benchmarks/debian_corpus.py            # once
    python benchmarks/save_cost.py [--docs 100] [--repeats 3] [--configs seed]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import RunConfig, interleave, machine, median_of
from debian_corpus import DEFAULT_OUT
from train_throughput import MODELS, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_OUT), help="a JSONL corpus (default: the Debian Reference)")
    parser.add_argument("--docs", type=int, default=100, help="use the first N documents (0 = all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="seed", help=f"any of {', '.join(MODELS)}")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"no corpus at {args.data}: run `python benchmarks/debian_corpus.py` first")

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.docs:
            data = str(Path(tmp) / "corpus.jsonl")
            with open(args.data, encoding="utf-8") as src, open(data, "w", encoding="utf-8") as dst:
                dst.writelines(line for _, line in zip(range(args.docs), src))
        print(f"machine: {machine()}; corpus: {args.data}" + (f", first {args.docs} documents" if args.docs else ""))
        rows = []
        for name in args.configs.split(","):
            arch = {"arch": "minimind3"} if name == "m3" else {}
            base = RunConfig.from_flat(dict(**arch, **MODELS[name], data_path=data, packing=True))
            variants = {f"save every {n} steps" if n > 1 else ("no weight saves" if n == 0 else "save every step"):
                        (lambda n=n, base=base: ours(base.replace(save_interval=n), 0)) for n in (0, 10, 1)}
            print(f"\n{name}, packed, defaults otherwise, {args.repeats} interleaved rounds:", flush=True)
            results = interleave(variants, args.repeats)
            baseline = median_of(next(iter(results.values())), "seconds")
            for variant, runs in results.items():
                seconds = median_of(runs, "seconds")
                rows.append((name, variant, seconds, [r["seconds"] for r in runs], seconds / baseline - 1))
    print(f"\n{time.strftime('%Y-%m-%d')}, {machine()}")
    print("| model | run | wall (median) | rounds | cost vs no saves |")
    print("|---|---|---:|---|---:|")
    for name, variant, seconds, each, cost in rows:
        print(f"| {name} | {variant} | {seconds:.1f} s | {' / '.join(f'{s:.1f}' for s in each)} | {cost:+.1%} |")


if __name__ == "__main__":
    main()
