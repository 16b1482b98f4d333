"""The model-family registry: `FAMILIES[config.train.arch]` is everything that differs between MiniMind
generations (config, model, weights layout, data rows, chat labels, schedule). Adding a family is
one module beside these two (its config dataclass and its Family), a model module under
`minimind/models/`, its shipped tokenizer folder, and an entry here.
"""

from __future__ import annotations

from .base import Family, SftLabels
from .classic import CLASSIC, LMConfig
from .minimind3 import MINIMIND3, MiniMind3Config

FAMILIES: dict[str, Family] = {family.name: family for family in (CLASSIC, MINIMIND3)}

__all__ = ["FAMILIES", "Family", "LMConfig", "MiniMind3Config", "SftLabels"]
