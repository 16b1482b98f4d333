"""Shared pieces of the benchmarks: interleaved repetitions, medians, peak matmul FLOP/s."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minimind.config import RunConfig  # noqa: E402,F401  (the benchmarks' one import of the config)


def machine() -> str:
    cpu = platform.processor()
    if hasattr(torch.cpu, "get_capabilities"):
        cpu = torch.cpu.get_capabilities().get("cpu_name", cpu)
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def peak_matmul_flops(dtype: torch.dtype, device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Best observed FLOP/s of an n x n matmul: the ceiling MFU is measured against."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def interleave(variants: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run every variant once per round, `repeats` rounds: slow drifts of a shared machine hit all alike."""
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            results[name].append(fn())
            print(f"  round {r + 1}/{repeats} {name}: {fmt(results[name][-1])}", flush=True)
    return results


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def fmt(run: dict) -> str:
    parts = [f"{run['tokens_per_s']:,.0f} real tok/s"]
    if "positions_per_s" in run:
        parts.append(f"{run['positions_per_s']:,.0f} pos/s")
    if "step_time" in run:
        parts.append(f"{run['step_time'] * 1000:.0f} ms/step")
    if "seconds" in run:
        parts.append(f"{run['seconds']:.1f} s, {run['steps']} steps, loss {run['final_loss']:.4f}")
    return ", ".join(parts)
