"""The learning-rate schedule of the seed notebook."""

import math


def get_lr(step: int, total_steps: int, lr: float, warmup_steps: int = 0) -> float:
    """MiniMind's cosine schedule `lr/10 + lr/2 * (1 + cos(pi * step / total))`, steps from 1.

    With warmup_steps > 0 the first steps ramp linearly up to it (MiniMind declares warmup_iters
    but never uses it; 0 keeps its schedule exactly).
    """
    value = lr / 10 + 0.5 * lr * (1 + math.cos(math.pi * step / total_steps))
    if warmup_steps > 0 and step < warmup_steps:
        value *= step / warmup_steps
    return value
