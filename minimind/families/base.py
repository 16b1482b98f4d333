"""What a model family is: everything that differs between MiniMind generations, in one object.

The Trainer, the data pipeline, inference and export ask the run's family (`FAMILIES[arch]`) and
never test which family it is. A family module is torch-free at import (the CLI's `--help` and the
TUI's form read it); building a model or converting weights imports torch when called.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

TOKENIZERS = Path(__file__).resolve().parent.parent / "tokenizer"


@dataclass(frozen=True)
class SftLabels:
    """Which positions of a chat an SFT row trains on, by MiniMind's scan: after each
    `assistant_marker`, ids from `first` tokens past it up to `last` tokens past the end of the
    next `end_marker` (or the end of the row when a turn is cut off)."""

    assistant_marker: str
    end_marker: str
    first: int
    last: int


class Family(abc.ABC):
    name: ClassVar[str]
    title: ClassVar[str]  # one line for the form and `--help`
    config_class: ClassVar[type]
    model_defaults: ClassVar[dict[str, Any]] = {}  # a new run's model, over the config class's defaults
    aliases: ClassVar[dict[str, str]] = {}  # other families' spellings -> this family's field
    size_field: ClassVar[str]  # the width in weights file names: {save_weight}_{size}[_moe].pth
    tokenizer_dir: ClassVar[Path]  # the tokenizer shipped for this family
    # Pretraining rows: "whole" = tokenizer(bos + text + eos) cut to the row length (the eos is lost
    # when a text is too long); "wrapped" = bos + tokens(text)[:length - 2] + eos.
    document_rows: ClassVar[str]
    sft_labels: ClassVar[SftLabels]
    chat_roles: ClassVar[tuple[str, ...]] = ("system", "user", "assistant")  # what its chat template renders
    sft_system_prompts: ClassVar[tuple[str, ...]] = ()  # drawn into SFT rows with add_system_ratio
    empty_think: ClassVar[str] = ""  # an empty reasoning block its template writes (kept with empty_think_ratio)
    # An epoch's short last accumulation window divides its losses by "own_length" (the mean: our
    # fix for classic, where MiniMind never applies that window) or by "accumulation_steps" (MiniMind-3).
    short_window_divisor: ClassVar[str]
    # Whether its training forward reads the whole row (ids of length L, the shift inside the model:
    # MiniMind-3) or the inputs X = ids[:-1] (classic). Logits agree either way; MoE routing, and so
    # the aux loss, also counts the row's last token in the first.
    forward_reads_whole_row: ClassVar[bool] = False

    def model_fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config_class)}

    def new_config(self, **values: Any) -> Any:
        return self.config_class(**{**self.model_defaults, **values})

    def size(self, config: Any) -> int:
        return getattr(config, self.size_field)

    def weights_name(self, save_weight: str, config: Any) -> str:
        """MiniMind's file name for a model's weights: {save_weight}_{size}[_moe].pth"""
        return f"{save_weight}_{self.size(config)}{'_moe' if config.use_moe else ''}.pth"

    # ---- what each family defines ----------------------------------------------------------------
    @abc.abstractmethod
    def lr(self, step: int, total_steps: int, lr: float) -> float:
        """The family's cosine schedule at micro-step `step` (counted from 1) of `total_steps`."""

    @abc.abstractmethod
    def describe(self, config: Any) -> str:
        """One line: width, depth, dense or MoE, row length."""

    @abc.abstractmethod
    def build_model(self, config: Any) -> Any:
        """A fresh model (call torch.manual_seed first for MiniMind's initial weights)."""

    @abc.abstractmethod
    def own_layout(self, state: dict, config: Any = None, n_heads: int = 8) -> dict:
        """Weights in any layout this family reads, as this family's keys (a CheckpointError if foreign).
        What the shapes cannot tell comes from `config`, else `n_heads` (classic's MiniMind2 layout
        needs the head count to undo its RoPE permutation)."""

    @abc.abstractmethod
    def infer_config(self, state: dict, n_heads: int = 8) -> Any:
        """The config a state dict in this family's layout was built with; the head count comes from
        `n_heads` where the shapes cannot tell it, the rest not in the shapes from the defaults."""

    def settings_from_hf(self, hf_config: dict) -> dict[str, Any]:
        """What a Hugging Face config.json beside a weights file says that the shapes cannot (e.g. an
        MoE model's top-k), as this family's config fields; {} when it is not this family's export."""
        return {}

    @abc.abstractmethod
    def hf_checkpoint(self, config: Any, state: dict, tokenizer: Any) -> tuple[dict, dict]:
        """(config.json, tensors) of the Hugging Face class that computes what this model computes;
        a CheckpointError (one line) where transformers has none."""

    @abc.abstractmethod
    def gguf_plan(self, config: Any, state: dict) -> tuple[Any, dict, Any]:
        """(llama.cpp architecture, tensors under llama.cpp's names, a function writing the
        hyper-parameters to a GGUFWriter); a CheckpointError (one line) where llama.cpp has none."""

    @abc.abstractmethod
    def flops_per_token(self, config: Any, seq_len: int, training: bool = True) -> float:
        """Matmul FLOPs per token (PaLM appendix B), 3x forward when training."""
