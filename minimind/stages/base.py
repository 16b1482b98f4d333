"""What a training stage is: the data it trains on, its defaults and its weights name.

The Trainer asks the run's stage (`STAGES[config.train.stage]`) for its rows and never tests which
stage it is. A stage module is torch-free at import (the form and `--help` read its defaults);
building rows imports the data pipeline when called.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from ..families import Family


class Stage(abc.ABC):
    name: ClassVar[str]
    title: ClassVar[str]

    @abc.abstractmethod
    def defaults(self, family: Family) -> dict[str, Any]:
        """Settings (flat: training and model fields) a new run of this stage starts from, over the
        TrainConfig and model-config defaults: MiniMind's script defaults for the family."""

    def check(self, config: Any) -> None:  # noqa: B027 (most stages accept every setting)
        """Refuse settings that make no sense for this stage (a ConfigError naming the field)."""

    @abc.abstractmethod
    def build_set(self, family: Family, path: Any, tokenizer: Any, max_seq_len: int, train: Any) -> Any:
        """The corpus at `path` as a TrainingSet of (X, Y, loss_mask) rows; DataError before any work."""
