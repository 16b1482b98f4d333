"""The training-stage registry: `STAGES[config.train.stage]` supplies a run's rows, defaults and
weights name. Adding a stage is one module beside these (a Stage subclass) and an entry here."""

from __future__ import annotations

from .base import Stage
from .pretrain import PRETRAIN

STAGES: dict[str, Stage] = {stage.name: stage for stage in (PRETRAIN,)}

__all__ = ["STAGES", "Stage"]
