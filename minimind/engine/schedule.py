"""The learning rate at a micro-step: the family's cosine curve, with an optional linear warm-up."""

from typing import Callable

Curve = Callable[[int, int, float], float]  # (step from 1, total steps, peak lr) -> lr


def learning_rate(curve: Curve, step: int, total_steps: int, lr: float, warmup_steps: int = 0) -> float:
    """`curve(step, total_steps, lr)`; with warmup_steps > 0 the first steps ramp linearly up to it
    (MiniMind declares warmup_iters but never uses it; 0 keeps its schedule exactly)."""
    value = curve(step, total_steps, lr)
    if warmup_steps > 0 and step < warmup_steps:
        value *= step / warmup_steps
    return value
