"""The seed's training loss, and the same loss computed on real targets only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over real (mask = 1) targets: sum(CE * mask) / (sum(mask) + 1e-8)."""
    raw = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    mask = loss_mask.reshape(-1)
    return (raw * mask).sum() / (mask.sum() + 1e-8)


@dataclass
class Batch:
    """A micro-batch as the model sees it. With `at` set, the model computes logits only at those
    flat positions of `inputs` and `targets` holds just their targets; otherwise `targets` and
    `loss_mask` are the full (B, T) tensors."""

    inputs: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    at: Optional[torch.Tensor] = None
    extra_inputs: int = 0  # trailing input columns that have no target (see with_last_token)

    def to(self, device: torch.device) -> "Batch":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return Batch(move(self.inputs), move(self.targets), move(self.loss_mask),
                     None if self.at is None else move(self.at), self.extra_inputs)

    def with_last_token(self, last: torch.Tensor) -> "Batch":
        """The same batch with each row's last token (the last target column) fed too, as a model that
        takes the whole row sees it. Causal attention keeps every logit the loss uses unchanged."""
        width = self.inputs.shape[1]
        at = None if self.at is None else self.at + self.at // width  # flat positions in the wider rows
        return Batch(torch.cat([self.inputs, last], dim=1), self.targets, self.loss_mask, at, self.extra_inputs + 1)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        if self.at is None:
            if self.extra_inputs:
                logits = logits[:, : logits.shape[1] - self.extra_inputs]
            return masked_lm_loss(logits, self.targets, self.loss_mask)
        # Positions with mask 0 add exactly 0 to the seed's sum: leaving them out is the same loss.
        return F.cross_entropy(logits, self.targets, reduction="none").sum() / (self.loss_mask.sum() + 1e-8)


SKIP_FROM = 8  # padding is skipped when at least 1/SKIP_FROM of the batch's positions are padding


def real_targets_only(X: torch.Tensor, Y: torch.Tensor, loss_mask: torch.Tensor, trim: bool) -> Batch:
    """The batch reduced to its real targets, on the host (no device sync), when padding is at least
    1/SKIP_FROM of it (otherwise the batch as it is). With `trim`, the columns
    after the last real target go too: in a causal model no earlier position sees them, so only MoE
    routing statistics and dropout's random draws would notice (the caller decides)."""
    mask = loss_mask.bool()
    if trim:
        columns = mask.any(dim=0).nonzero()
        keep = int(columns[-1]) + 1 if columns.numel() else 1
        if keep < X.shape[1]:
            X, Y, mask, loss_mask = X[:, :keep], Y[:, :keep], mask[:, :keep], loss_mask[:, :keep]
    flat = mask.reshape(-1)
    if (flat.numel() - int(flat.sum())) * SKIP_FROM < flat.numel():
        # Packed rows (nothing or only an epoch's short last row to skip): every position is computed and
        # the padding masked, as the seed does. Gathering a few positions saves nothing, and a compiled
        # model would compile again (20-60 s on a GPU) for the one batch a packed epoch has that differs.
        return Batch(X, Y, loss_mask)
    at = flat.nonzero().squeeze(1)
    return Batch(X, Y.reshape(-1)[at], loss_mask, at)
