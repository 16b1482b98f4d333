"""The seed's training loss."""

import torch
import torch.nn.functional as F


def masked_lm_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over real (mask = 1) targets: sum(CE * mask) / (sum(mask) + 1e-8)."""
    raw = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    mask = loss_mask.reshape(-1)
    return (raw * mask).sum() / (mask.sum() + 1e-8)
