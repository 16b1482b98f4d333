"""MiniMind "classic": the seed notebook's model family (MiniMind's Feb-2025 `MiniMindLM` with its
Oct-2025 training loop), exactly. Names and defaults are MiniMind's; see shared/spec/minimind-classic.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import CheckpointError, ConfigError
from ..fields import coerce_fields, require_positive, round_up, setting
from .base import TOKENIZERS, Family, SftLabels


@dataclass
class LMConfig:
    """MiniMind classic model hyper-parameters (names and defaults as MiniMind's LMConfig)."""

    dim: int = setting(512, "hidden size", "model")
    n_layers: int = setting(8, "number of transformer blocks", "model")
    n_heads: int = setting(8, "attention heads; head_dim = dim / n_heads", "model")
    n_kv_heads: int = setting(2, "key/value heads (grouped-query attention); divides n_heads", "model")
    vocab_size: int = setting(6400, "embedding rows; must cover every token id", "model")
    hidden_dim: Optional[int] = setting(None, "FFN size; empty = 8/3*dim rounded up to multiple_of", "model")
    multiple_of: int = setting(64, "FFN size rounding", "model")
    norm_eps: float = setting(1e-5, "RMSNorm epsilon", "model")
    max_seq_len: int = setting(8192, "longest sequence (training rows are this long)", "model")
    rope_theta: float = setting(1e6, "RoPE base", "model")
    dropout: float = setting(0.0, "dropout on embeddings, attention, residual and FFN output", "model")
    flash_attn: bool = setting(True, "use torch scaled_dot_product_attention", "model")
    use_moe: bool = setting(False, "mixture-of-experts feed-forward layers", "moe")
    num_experts_per_tok: int = setting(2, "experts each token is routed to (top-k)", "moe")
    n_routed_experts: int = setting(4, "routed experts per MoE layer", "moe")
    n_shared_experts: bool = setting(True, "add one always-on shared expert", "moe")
    scoring_func: str = setting("softmax", "gate scoring function", "moe", choices=("softmax",), flag=False)
    aux_loss_alpha: float = setting(0.1, "load-balancing loss weight (0 = off)", "moe")
    seq_aux: bool = setting(True, "sequence-level load-balancing loss", "moe")
    norm_topk_prob: bool = setting(True, "renormalise the top-k gate weights", "moe")

    def __post_init__(self) -> None:
        coerce_fields(self)
        require_positive(self, "dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len")
        if self.hidden_dim is not None and self.hidden_dim <= 0:
            raise ConfigError("hidden_dim", f"must be positive or empty, got {self.hidden_dim}")
        if self.dim % self.n_heads:
            raise ConfigError(
                "dim", f"{self.dim} is not divisible by n_heads={self.n_heads}: pick a dim that is a "
                f"multiple of {self.n_heads} (e.g. {round_up(self.dim, self.n_heads)}) or change n_heads")
        if (self.dim // self.n_heads) % 2:
            raise ConfigError(
                "dim", f"head size dim/n_heads = {self.dim // self.n_heads} is odd; RoPE needs an even "
                "head size: change dim or n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                "n_kv_heads", f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: "
                "use a divisor of n_heads")
        for name in ("norm_eps", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.use_moe:
            require_positive(self, "n_routed_experts", "num_experts_per_tok")
            if self.num_experts_per_tok > self.n_routed_experts:
                raise ConfigError(
                    "num_experts_per_tok", f"top-k {self.num_experts_per_tok} is above the number of "
                    f"experts n_routed_experts={self.n_routed_experts}: lower it or add experts")
            if self.aux_loss_alpha < 0:
                raise ConfigError("aux_loss_alpha", f"must be >= 0, got {self.aux_loss_alpha}")
        if self.scoring_func != "softmax":
            raise ConfigError("scoring_func", f"only 'softmax' is supported, got {self.scoring_func!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """FFN width: MiniMind's 4*dim -> 2/3 -> round up to multiple_of (512 -> 1408)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)



class ClassicFamily(Family):
    name = "classic"
    title = "MiniMind classic (the seed notebook: adjacent-pair RoPE, Llama-style keys, 2 KV heads)"
    config_class = LMConfig
    # The seed notebook trains a smaller model than LMConfig's defaults describe.
    model_defaults = {"dim": 512, "n_layers": 2, "max_seq_len": 512, "use_moe": False}
    aliases = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
               "num_key_value_heads": "n_kv_heads", "intermediate_size": "hidden_dim", "rms_norm_eps": "norm_eps",
               "num_experts": "n_routed_experts", "router_aux_loss_coef": "aux_loss_alpha"}
    size_field = "dim"
    tokenizer_dir = TOKENIZERS / "classic"
    document_rows = "whole"
    # MiniMind's 2025-04-01 fix of its classic SFT mask: the reply, </s> and the newline after it.
    sft_labels = SftLabels(assistant_marker="<s>assistant", end_marker="</s>", first=1, last=1)
    short_window_divisor = "own_length"

    def lr(self, step: int, total_steps: int, lr: float) -> float:
        return lr / 10 + 0.5 * lr * (1 + math.cos(math.pi * step / total_steps))

    def describe(self, config: LMConfig) -> str:
        kind = (f"MoE {config.n_routed_experts} experts top-{config.num_experts_per_tok}" if config.use_moe
                else "dense")
        return f"dim {config.dim}, {config.n_layers} layers, {kind}, seq {config.max_seq_len}"

    def build_model(self, config: LMConfig) -> Any:
        from ..models.classic import MiniMindLM  # torch, only when a model is built

        return MiniMindLM(config)

    def own_layout(self, state: dict, config: Any = None, n_heads: int = 8) -> dict:
        from ..interop import to_classic  # torch tensor permutations

        return to_classic(state, config.n_heads if config is not None else n_heads)

    def infer_config(self, state: dict, n_heads: int = 8) -> LMConfig:
        try:
            vocab_size, dim = state["tok_embeddings.weight"].shape
            n_layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k)))
            kv_rows = state["layers.0.attention.wk.weight"].shape[0]
        except (KeyError, ValueError):
            raise CheckpointError("these weights are not a MiniMind classic state_dict "
                                  "(no tok_embeddings.weight / layers.0.attention.wk.weight)") from None
        use_moe = any(".feed_forward.experts." in k for k in state)
        moe: dict[str, Any] = {}
        if use_moe:
            w1 = state["layers.0.feed_forward.experts.0.w1.weight"]
            experts = 1 + max(int(m.group(1)) for k in state
                              if (m := re.match(r"layers\.0\.feed_forward\.experts\.(\d+)\.", k)))
            moe = {"n_routed_experts": experts,
                   "n_shared_experts": "layers.0.feed_forward.shared_experts.w1.weight" in state}
        else:
            w1 = state["layers.0.feed_forward.w1.weight"]
        head_dim = dim // n_heads
        values: dict[str, Any] = dict(dim=dim, n_layers=n_layers, n_heads=n_heads,
                                      n_kv_heads=max(kv_rows // max(head_dim, 1), 1), vocab_size=vocab_size,
                                      hidden_dim=w1.shape[0], use_moe=use_moe, **moe)
        return LMConfig(**values)

    def settings_from_hf(self, hf_config: dict) -> dict[str, Any]:
        if hf_config.get("model_type") != "llama":  # classic exports as Llama
            return {}
        names = {"rms_norm_eps": "norm_eps", "rope_theta": "rope_theta", "max_position_embeddings": "max_seq_len"}
        return {ours: hf_config[theirs] for theirs, ours in names.items() if theirs in hf_config}

    def hf_checkpoint(self, config: LMConfig, state: dict, tokenizer: Any) -> tuple[dict, dict]:
        from ..interop import llama_checkpoint  # torch tensor permutations

        return llama_checkpoint(config, state, tokenizer)

    def gguf_plan(self, config: LMConfig, state: dict) -> tuple[Any, dict, Any]:
        from ..gguf_export import classic_plan  # torch, gguf

        return classic_plan(config, state)

    def flops_per_token(self, config: LMConfig, seq_len: int, training: bool = True) -> float:
        """N counts the weights a token passes through (the tied output head included, norms and the
        embedding lookup excluded; for MoE the top-k routed experts, the shared one and the gate).
        Causal masking is not discounted, as in PaLM."""
        dim, hd, layers = config.dim, config.head_dim, config.n_layers
        attn = dim * config.n_heads * hd * 2 + dim * config.n_kv_heads * hd * 2
        ffn = 3 * dim * config.ffn_hidden_dim
        if config.use_moe:
            ffn = ffn * (config.num_experts_per_tok + (1 if config.n_shared_experts else 0)) + dim * config.n_routed_experts
        active = layers * (attn + ffn) + dim * config.vocab_size
        forward = 2 * active + 2 * 2 * layers * config.n_heads * hd * seq_len
        return forward * (3 if training else 1)


CLASSIC = ClassicFamily()
