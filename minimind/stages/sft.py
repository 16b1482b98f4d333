"""Supervised fine-tuning: chat conversations, the loss on the assistant's replies only (MiniMind's
`train_full_sft.py` for the family), usually starting from pretrained weights."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..families import Family
from .base import Stage

# MiniMind's SFT-script defaults per family; data is our toy chat corpus; the initial weights are the
# pretraining stage's file in save_dir (`--from_weight`), as MiniMind's scripts load them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "classic": {  # train_full_sft.py at 58e3af0 (2025-02, with the 2025-02-11 epochs and batch)
        "epochs": 1, "batch_size": 32, "learning_rate": 5e-5, "accumulation_steps": 1, "grad_clip": 1.0,
        "log_interval": 100, "save_interval": 100, "max_seq_len": 512, "save_weight": "full_sft",
        "from_weight": "minimind_pretrain", "data_path": "./toydata/sft_data.jsonl",
        "wandb_project": "MiniMind-Full-SFT"},
    "minimind3": {  # trainer/train_full_sft.py at MiniMind-3
        "epochs": 2, "batch_size": 16, "learning_rate": 1e-5, "accumulation_steps": 1, "grad_clip": 1.0,
        "log_interval": 100, "save_interval": 1000, "max_seq_len": 768, "save_weight": "full_sft",
        "from_weight": "pretrain", "data_path": "./toydata/sft_data.jsonl", "shuffle": True,
        "add_system_ratio": 0.2, "empty_think_ratio": 0.2, "wandb_project": "MiniMind-Full-SFT"},
}


class SftStage(Stage):
    name = "sft"
    title = "supervised fine-tuning on chats ({\"conversations\": [...]} lines)"

    def defaults(self, family: Family) -> dict[str, Any]:
        return DEFAULTS.get(family.name, {})

    def check(self, config: Any) -> None:
        if config.train.packing:
            raise ConfigError("packing", "does not apply to --stage sft: each conversation is its own row "
                              "(packing would let replies attend across conversations); drop --packing")

    def build_set(self, family: Family, path: Any, tokenizer: Any, max_seq_len: int, train: Any) -> Any:
        from ..sft_data import build_sft_set  # torch, only when a run builds its data

        return build_sft_set(path, tokenizer, max_seq_len, family, train)


SFT = SftStage()
