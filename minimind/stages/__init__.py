"""The training-stage registry: `STAGES[config.train.stage]` supplies a run's rows, defaults and
weights name. Adding a stage is one module beside these (a Stage subclass) and an entry here."""

from __future__ import annotations

from .base import Stage
from .pretrain import PRETRAIN
from .sft import SFT

STAGES: dict[str, Stage] = {stage.name: stage for stage in (PRETRAIN, SFT)}

__all__ = ["STAGES", "Stage"]
