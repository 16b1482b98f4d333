"""MiniMind-3: MiniMind's model since March 2026 (Hugging Face style keys, q/k norms, rotate-half RoPE,
a Qwen-style tokenizer), exactly. Names and defaults are MiniMind-3's `MiniMindConfig` and
`train_pretrain.py`; see shared/spec/minimind3-and-sft.md.
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
class MiniMind3Config:
    """MiniMind-3 model hyper-parameters (names and defaults as its MiniMindConfig)."""

    hidden_size: int = setting(768, "hidden size", "model")
    num_hidden_layers: int = setting(8, "number of transformer blocks", "model")
    num_attention_heads: int = setting(8, "attention heads; head_dim = hidden_size / num_attention_heads", "model")
    num_key_value_heads: int = setting(4, "key/value heads (grouped-query attention); divides the heads", "model")
    vocab_size: int = setting(6400, "embedding rows; must cover every token id", "model")
    intermediate_size: Optional[int] = setting(None, "MLP width; empty = ceil(pi * hidden_size / 64) * 64", "model")
    max_seq_len: int = setting(340, "training row length (MiniMind-3's --max_seq_len)", "model")
    max_position_embeddings: int = setting(32768, "RoPE positions (the YaRN scaling factor is relative to it)", "model")
    rms_norm_eps: float = setting(1e-6, "RMSNorm epsilon", "model")
    rope_theta: float = setting(1e6, "RoPE base", "model")
    dropout: float = setting(0.0, "dropout on embeddings, attention and after o_proj", "model")
    flash_attn: bool = setting(True, "use torch scaled_dot_product_attention", "model")
    inference_rope_scaling: bool = setting(False, "YaRN-scaled RoPE (x16) for contexts longer than 2048 "
                                           "(generation only; MiniMind-3 trains without it)", "model")
    use_moe: bool = setting(False, "mixture-of-experts MLP layers", "moe")
    num_experts: int = setting(4, "experts per MoE layer (no shared expert)", "moe")
    num_experts_per_tok: int = setting(1, "experts each token is routed to (top-k)", "moe")
    moe_intermediate_size: Optional[int] = setting(None, "expert MLP width; empty = the MLP width", "moe")
    norm_topk_prob: bool = setting(True, "renormalise the top-k gate weights", "moe")
    router_aux_loss_coef: float = setting(5e-4, "load-balancing loss weight (0 = off)", "moe")

    def __post_init__(self) -> None:
        coerce_fields(self)
        require_positive(self, "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                         "vocab_size", "max_seq_len", "max_position_embeddings")
        for name in ("intermediate_size", "moe_intermediate_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive or empty, got {getattr(self, name)}")
        heads = self.num_attention_heads
        if self.hidden_size % heads:
            raise ConfigError("hidden_size", f"{self.hidden_size} is not divisible by num_attention_heads={heads}: "
                              f"pick a multiple of {heads} (e.g. {round_up(self.hidden_size, heads)}) or change the heads")
        if self.head_dim % 2:
            raise ConfigError("hidden_size", f"head size hidden_size/num_attention_heads = {self.head_dim} is odd; "
                              "RoPE needs an even head size: change hidden_size or num_attention_heads")
        if heads % self.num_key_value_heads:
            raise ConfigError("num_key_value_heads", f"num_attention_heads={heads} is not divisible by "
                              f"num_key_value_heads={self.num_key_value_heads}: use a divisor of it")
        for name in ("rms_norm_eps", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.use_moe:
            require_positive(self, "num_experts", "num_experts_per_tok")
            if self.num_experts_per_tok > self.num_experts:
                raise ConfigError("num_experts_per_tok", f"top-k {self.num_experts_per_tok} is above the number of "
                                  f"experts num_experts={self.num_experts}: lower it or add experts")
            if self.router_aux_loss_coef < 0:
                raise ConfigError("router_aux_loss_coef", f"must be >= 0, got {self.router_aux_loss_coef}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def intermediate(self) -> int:
        """MLP width: MiniMind-3's ceil(pi * hidden / 64) * 64 (768 -> 2432, 512 -> 1664)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return math.ceil(self.hidden_size * math.pi / 64) * 64

    @property
    def moe_intermediate(self) -> int:
        return self.moe_intermediate_size if self.moe_intermediate_size is not None else self.intermediate


class MiniMind3Family(Family):
    name = "minimind3"
    title = "MiniMind-3 (MiniMind since 2026-03: q/k norms, rotate-half RoPE, 4 KV heads, Qwen-style tokenizer)"
    config_class = MiniMind3Config
    aliases = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
               "n_kv_heads": "num_key_value_heads", "hidden_dim": "intermediate_size", "norm_eps": "rms_norm_eps",
               "n_routed_experts": "num_experts", "aux_loss_alpha": "router_aux_loss_coef"}
    size_field = "hidden_size"
    tokenizer_dir = TOKENIZERS / "minimind3"
    document_rows = "wrapped"
    sft_labels = SftLabels(assistant_marker="<|im_start|>assistant\n", end_marker="<|im_end|>\n", first=0, last=0)
    short_window_divisor = "accumulation_steps"
    forward_reads_whole_row = True
    chat_roles = ("system", "user", "assistant", "tool")
    # MiniMind-3's SFTDataset draws one of these, in this order, into 20% of conversations without one.
    sft_system_prompts = (
        "你是一个知识丰富的AI，尽力为用户提供准确的信息。", "你是minimind，一个小巧但有用的语言模型。",
        "你是一个专业的AI助手，请提供有价值的回答。", "你是minimind，请尽力帮助用户解决问题。",
        "你是一个可靠的AI，请给出准确的回答。", "You are a helpful AI assistant.",
        "You are minimind, a lightweight intelligent assistant.",
        "You are a friendly chatbot. Please answer the user's questions carefully.",
        "You are a knowledgeable AI. Try your best to provide accurate information.",
        "You are minimind, a small but useful language model.",
    )
    empty_think = "<think>\n\n</think>\n\n"

    def lr(self, step: int, total_steps: int, lr: float) -> float:
        return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / total_steps)))

    def describe(self, config: MiniMind3Config) -> str:
        kind = (f"MoE {config.num_experts} experts top-{config.num_experts_per_tok}" if config.use_moe
                else "dense")
        return f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, {kind}, seq {config.max_seq_len}"

    def build_model(self, config: MiniMind3Config) -> Any:
        from ..models.minimind3 import MiniMind3ForCausalLM  # torch, only when a model is built

        return MiniMind3ForCausalLM(config)

    def own_layout(self, state: dict, config: Any = None, n_heads: int = 8) -> dict:
        if "tok_embeddings.weight" in state:
            raise CheckpointError("these are MiniMind classic weights: train or load them with --arch classic "
                                  "(the two architectures differ; the weights cannot be converted)")
        if not any(".self_attn.q_norm." in k for k in state):
            raise CheckpointError("these weights have no q_norm/k_norm layers: they are not MiniMind-3 weights "
                                  "(MiniMind2 weights load with --arch classic)")
        from ..interop import unfuse_experts  # torch

        state = unfuse_experts(dict(state))  # a transformers 5 Qwen3-MoE export stores experts fused
        # A file may hold only one of the tied tensors (Hugging Face drops lm_head when tied).
        state.setdefault("lm_head.weight", state.get("model.embed_tokens.weight"))
        state.setdefault("model.embed_tokens.weight", state["lm_head.weight"])
        return state

    def infer_config(self, state: dict, n_heads: int = 8) -> MiniMind3Config:
        try:
            vocab_size, hidden = state["model.embed_tokens.weight"].shape
            layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"model\.layers\.(\d+)\.", k)))
            head_dim = state["model.layers.0.self_attn.q_norm.weight"].shape[0]
            heads = state["model.layers.0.self_attn.q_proj.weight"].shape[0] // head_dim
            kv_heads = state["model.layers.0.self_attn.k_proj.weight"].shape[0] // head_dim
        except (KeyError, ValueError):
            raise CheckpointError("these weights are not a MiniMind-3 state_dict (no model.embed_tokens.weight / "
                                  "model.layers.0.self_attn.q_norm.weight)") from None
        if hidden // heads != head_dim:
            raise CheckpointError(f"head size {head_dim} is not hidden_size/heads = {hidden}/{heads}: "
                                  "this layout is not supported")
        values: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                      num_key_value_heads=kv_heads, vocab_size=vocab_size)
        experts = {int(m.group(1)) for k in state if (m := re.match(r"model\.layers\.0\.mlp\.experts\.(\d+)\.", k))}
        try:
            if experts:
                values.update(use_moe=True, num_experts=max(experts) + 1,
                              moe_intermediate_size=state["model.layers.0.mlp.experts.0.gate_proj.weight"].shape[0])
            else:
                values["intermediate_size"] = state["model.layers.0.mlp.gate_proj.weight"].shape[0]
        except KeyError as e:
            raise CheckpointError(f"these MiniMind-3 weights have no {e.args[0]}: the file is incomplete") from None
        return MiniMind3Config(**values)

    def settings_from_hf(self, hf_config: dict) -> dict[str, Any]:
        if hf_config.get("model_type") not in ("qwen3", "qwen3_moe"):
            return {}
        names = ["rope_theta", "rms_norm_eps", "max_position_embeddings", "num_experts_per_tok", "norm_topk_prob",
                 "router_aux_loss_coef"]
        # transformers 5's save_pretrained nests RoPE under rope_parameters; our export writes the flat keys
        nested = hf_config.get("rope_parameters")
        rope: dict = nested if isinstance(nested, dict) else {}
        flat = {**hf_config, **({"rope_theta": rope["rope_theta"]} if "rope_theta" in rope else {})}
        values = {name: flat[name] for name in names if name in flat}
        scaling = hf_config.get("rope_scaling") or rope
        values["inference_rope_scaling"] = isinstance(scaling, dict) and scaling.get("rope_type") == "yarn"
        return values

    def hf_checkpoint(self, config: MiniMind3Config, state: dict, tokenizer: Any) -> tuple[dict, dict]:
        from ..interop import qwen3_checkpoint  # torch, transformers

        return qwen3_checkpoint(config, state, tokenizer)

    def gguf_plan(self, config: MiniMind3Config, state: dict) -> tuple[Any, dict, Any]:
        from ..gguf_export import minimind3_plan  # torch, gguf

        return minimind3_plan(config, state)

    def flops_per_token(self, config: MiniMind3Config, seq_len: int, training: bool = True) -> float:
        """N counts the weights a token passes through (the tied head included, norms and the embedding
        lookup excluded; for MoE the top-k experts and the gate). Causal masking is not discounted."""
        h, hd, layers = config.hidden_size, config.head_dim, config.num_hidden_layers
        attn = h * config.num_attention_heads * hd * 2 + h * config.num_key_value_heads * hd * 2
        mlp = 3 * h * config.intermediate
        if config.use_moe:
            mlp = 3 * h * config.moe_intermediate * config.num_experts_per_tok + h * config.num_experts
        active = layers * (attn + mlp) + h * config.vocab_size
        forward = 2 * active + 2 * 2 * layers * config.num_attention_heads * hd * seq_len
        return forward * (3 if training else 1)


MINIMIND3 = MiniMind3Family()
