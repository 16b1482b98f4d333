"""Held-out evaluation: the mean cross-entropy over every real target token of held-out rows.

Token-weighted: the sum of the masked per-token losses divided by the number of mask=1 targets over
all rows (not a mean of per-batch means). In eval mode, under no_grad, in the run's precision. It
draws nothing from the training RNG (dropout is off in eval mode and the loader has its own
generator), so a run with evaluation trains exactly as one without. Under DDP each rank takes every
world-th row and the sums are all-reduced: the result equals one process's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, cast

import torch
import torch.nn.functional as F

from ..data import PackedDataset, Rows, TrainingSet
from . import distributed
from .distributed import World
from .environment import Precision


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean CE per real target token
    tokens: int  # real targets
    docs: int  # documents (or conversations) evaluated: every one of the set, unless --eval_max_batches cut it
    aux_loss: float  # the model's aux loss in eval mode (0: MoE balancing only trains), reported apart

    @property
    def ppl(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else float("inf")


class _Rows(torch.utils.data.Dataset):
    """This rank's rows: every world-th of the first `limit` rows, unpadded (rows are counted once)."""

    def __init__(self, rows: Rows, world: World, limit: Optional[int]):
        total = len(rows) if limit is None else min(limit, len(rows))
        self.rows, self.indices = rows, range(world.rank, total, world.size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.rows[self.indices[i]]


class Evaluator:
    def __init__(self, held_out: TrainingSet, batch_size: int, precision: Precision, world: World,
                 max_batches: int = 0):
        self.held_out, self.batch_size, self.precision, self.world = held_out, batch_size, precision, world
        rows = held_out.rows
        self.limit = max_batches * batch_size if max_batches > 0 and max_batches * batch_size < len(rows) else None
        self.loader = torch.utils.data.DataLoader(
            cast(torch.utils.data.Dataset, _Rows(rows, world, self.limit)), batch_size=batch_size, shuffle=False,
            num_workers=0, pin_memory=precision.device.type == "cuda",
            generator=torch.Generator())  # its own: creating an iterator draws a seed, never from the global RNG

    @torch.no_grad()
    def run(self, model: torch.nn.Module, forward: Optional[Callable[..., Any]] = None) -> EvalResult:
        """Evaluate `model` (called through `forward`, e.g. a compiled wrapper, when given)."""
        forward = forward or model
        was_training = model.training
        model.eval()
        device = self.precision.device
        totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, tokens, rows, aux sum
        batches = 0
        try:
            for X, Y, mask in self.loader:
                X, Y, mask = (t.to(device, non_blocking=True) for t in (X, Y, mask))
                with self.precision.autocast():
                    out = forward(X)
                ce = F.cross_entropy(out.logits.float().reshape(-1, out.logits.size(-1)), Y.reshape(-1),
                                     reduction="none")
                weights = mask.reshape(-1).to(ce.dtype)
                totals += torch.stack([(ce * weights).sum().double(), weights.sum().double(),
                                       torch.tensor(float(len(X)), dtype=torch.float64, device=device),
                                       out.aux_loss.detach().double()])
                batches += 1
        finally:
            model.train(was_training)
        if self.world.distributed:
            values = distributed.sum_values(totals.tolist() + [float(batches)], device)
            totals, batches = torch.tensor(values[:4], dtype=torch.float64), int(values[4])
        loss_sum, tokens, rows, aux_sum = totals.tolist()
        # A packed row holds parts of several documents: count documents, unless a limit cut the set.
        whole = isinstance(self.held_out.rows, PackedDataset) and self.limit is None
        return EvalResult(loss=loss_sum / tokens if tokens else float("nan"), tokens=int(tokens),
                          docs=self.held_out.n_docs if whole else int(rows), aux_loss=aux_sum / batches if batches else 0.0)
