"""Pretraining: next-token prediction on plain text, `{"text": ...}` per JSONL line."""

from __future__ import annotations

from typing import Any

from ..families import Family
from .base import Stage


# MiniMind's pretraining-script defaults per family, over TrainConfig's (which are the seed notebook's,
# so classic needs nothing); data stays our toy corpus.
DEFAULTS: dict[str, dict[str, Any]] = {
    "classic": {},
    "minimind3": {"epochs": 2, "batch_size": 32, "learning_rate": 5e-4, "accumulation_steps": 8, "grad_clip": 1.0,
                  "log_interval": 100, "save_interval": 1000, "save_weight": "pretrain", "shuffle": True,
                  "wandb_project": "MiniMind-Pretrain"},  # trainer/train_pretrain.py
}


class PretrainStage(Stage):
    name = "pretrain"
    title = "pretraining on plain text ({\"text\": ...} lines)"

    def defaults(self, family: Family) -> dict[str, Any]:
        return DEFAULTS.get(family.name, {})

    def build_set(self, family: Family, path: Any, tokenizer: Any, max_seq_len: int, train: Any) -> Any:
        from ..data import build_training_set  # torch, only when a run builds its data

        return build_training_set(path, tokenizer, max_seq_len, train.packing, family.document_rows)


PRETRAIN = PretrainStage()
