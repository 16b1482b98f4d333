"""Tokenisation throughput on the toy corpus: MiniMind's per-document Hugging Face call (what its
PretrainDataset does for every item), this project's per-document path, and the batched encode
that builds the packing cache. Interleaved rounds, medians; MB/s of UTF-8 text and tokens/s.

    python benchmarks/tokenize_throughput.py [--repeats 5] [--copies 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from common import ROOT, machine

from minimind.data import PretrainDataset
from minimind.families.classic import CLASSIC
from minimind.tokenizer import load_tokenizer


def parallel(fn, docs):
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # as TokenCache does while building
    try:
        return fn(docs)
    finally:
        os.environ["TOKENIZERS_PARALLELISM"] = previous or "false"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--copies", type=int, default=20, help="times the toy corpus is repeated")
    args = parser.parse_args()
    tok = load_tokenizer(CLASSIC.tokenizer_dir)
    texts = [json.loads(l)["text"] for l in (ROOT / "toydata" / "pretrain_data.jsonl").read_text("utf-8").splitlines()]
    docs = [f"<s>{t}</s>" for t in texts] * args.copies
    mb = sum(len(d.encode()) for d in docs) / 1e6
    encoder = PretrainDataset.plain_encoder(tok)
    n_tokens = sum(len(e.ids) for e in encoder.encode_batch(docs[: len(texts)])) * args.copies

    variants = {
        "HF call per document, truncated to 512 (MiniMind's PretrainDataset)":
            lambda: [tok(d, max_length=512, padding="max_length", truncation=True).input_ids for d in docs],
        "Rust encode per document (our PretrainDataset)": lambda: [encoder.encode(d).ids for d in docs],
        "Rust encode_batch on all cores (our packing cache)": lambda: parallel(encoder.encode_batch, docs),
    }
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"machine: {machine()}; {len(docs)} documents, {mb:.1f} MB, {n_tokens:,} tokens\n")
    print("| path | MB/s | tokens/s | vs MiniMind |")
    print("|---|---:|---:|---:|")
    base = statistics.median(times[next(iter(variants))])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {mb / t:.2f} | {n_tokens / t:,.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
