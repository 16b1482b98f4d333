"""MiniMind-3 (MiniMind's model since March 2026): the same modules, parameter names, init and arithmetic.

A MiniMind-3 `.pth` loads here with `strict=True` (its 91 dense / 171 MoE keys) and gives the same
logits; with `torch.manual_seed(s)` before construction the weights are MiniMind-3's (the same
module creation order, PyTorch's default inits consuming the RNG, then Hugging Face's post-init
walk drawing N(0, 0.02) for every Linear and Embedding, the tied tensor twice).

What differs from classic: q/k RMSNorm over the head before RoPE; rotate-half RoPE (dims j and
j + d/2 pair), optionally YaRN-scaled for inference; RMSNorm multiplies the fp32 normalised value
by its weight before casting; 4 KV heads; MLP width ceil(pi * hidden / 64) * 64; no MLP dropout;
MoE without a shared expert, top-1 by default, aux loss `E * coef * sum_e (count_e / N) * P_e`;
the residual after attention is added in place (it keeps the attention output's dtype under
autocast, as MiniMind-3 does).

Deliberate differences that do not change what a checkpoint computes: RoPE tables are built lazily
up to the length in use (MiniMind-3 keeps 32768 positions), and batched generation of prompts of
different lengths works (left padding with an attention mask).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..families.minimind3 import MiniMind3Config
from .shared import GenerationMixin, KVCache, ModelOutput, causal_mask, padding_mask, repeat_kv

YARN = {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 16.0, "original_max_position_embeddings": 2048,
        "attention_factor": 1.0}


class RMSNorm(nn.Module):
    """weight * normalised value in fp32, then cast to the input's dtype (MiniMind-3's order)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps))).type_as(x)


def inverse_frequencies(config: MiniMind3Config) -> tuple[torch.Tensor, float]:
    """RoPE's inverse frequencies (fp32) and the attention factor; YaRN-scaled when asked for."""
    d, theta = config.head_dim, config.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    original = YARN["original_max_position_embeddings"]
    if not (config.inference_rope_scaling and config.max_position_embeddings / original > 1):
        return inv_freq, 1.0

    def inv_dim(b: float) -> float:
        return d * math.log(original / (2 * math.pi * b)) / (2 * math.log(theta))

    low = max(math.floor(inv_dim(YARN["beta_fast"])), 0)
    high = min(math.ceil(inv_dim(YARN["beta_slow"])), d // 2 - 1)
    ramp = ((torch.arange(d // 2).float() - low) / max(high - low, 0.001)).clamp(0, 1)
    return inv_freq * ((1 - ramp) + ramp / YARN["factor"]), YARN["attention_factor"]


def rope_tables(config: MiniMind3Config, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (end, head_dim): the frequencies repeated for both halves."""
    inv_freq, attn_factor = inverse_frequencies(config)
    angles = torch.outer(torch.arange(end, dtype=torch.float32), inv_freq)
    return (torch.cat([angles.cos(), angles.cos()], dim=-1) * attn_factor,
            torch.cat([angles.sin(), angles.sin()], dim=-1) * attn_factor)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, d) with tables (T, d): computed in fp32 (the tables' dtype), cast back."""
    cos, sin = cos[:, None, :], sin[:, None, :]
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: MiniMind3Config):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                        config.head_dim)
        self.n_rep = self.n_heads // self.n_kv_heads
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.flash = config.flash_attn

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                past_key_value: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                use_cache: bool = False, attn_mask: Optional[torch.Tensor] = None):
        bsz, seq_len, _ = x.shape
        xq = self.q_norm(self.q_proj(x).view(bsz, seq_len, self.n_heads, self.head_dim))
        xk = self.k_norm(self.k_proj(x).view(bsz, seq_len, self.n_kv_heads, self.head_dim))
        xv = self.v_proj(x).view(bsz, seq_len, self.n_kv_heads, self.head_dim)
        xq, xk = apply_rope(xq, cos, sin), apply_rope(xk, cos, sin)
        if past_key_value is not None:
            xk = torch.cat([past_key_value[0], xk], dim=1)
            xv = torch.cat([past_key_value[1], xv], dim=1)
        past_kv = (xk, xv) if use_cache else None

        xq = xq.transpose(1, 2)
        xk = repeat_kv(xk, self.n_rep).transpose(1, 2)
        xv = repeat_kv(xv, self.n_rep).transpose(1, 2)
        total_len = xk.shape[2]
        plain_causal = attn_mask is None and total_len == seq_len  # training and a fresh prefill
        mask = None
        if not plain_causal and not (attn_mask is None and seq_len == 1):
            mask = causal_mask(seq_len, total_len, x.device)
            if attn_mask is not None:
                mask = mask & attn_mask
        if self.flash and (seq_len > 1 or mask is not None):
            output = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=mask,
                                                    dropout_p=self.dropout if self.training else 0.0,
                                                    is_causal=plain_causal and seq_len > 1)
        else:
            scores = (xq @ xk.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if plain_causal and seq_len > 1:
                mask = causal_mask(seq_len, total_len, x.device)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            output = self.attn_dropout(F.softmax(scores.float(), dim=-1).type_as(xq)) @ xv
        output = output.transpose(1, 2).reshape(bsz, seq_len, -1)
        return self.resid_dropout(self.o_proj(output)), past_kv


class MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEFeedForward(nn.Module):
    """Routed experts, no shared expert; each token goes to its top-k experts."""

    def __init__(self, config: MiniMind3Config):
        super().__init__()
        self.top_k, self.n_experts = config.num_experts_per_tok, config.num_experts
        self.norm_topk_prob, self.coef = config.norm_topk_prob, config.router_aux_loss_coef
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList([MLP(config.hidden_size, config.moe_intermediate) for _ in range(config.num_experts)])
        self.aux_loss = torch.zeros(())  # set by each forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        scores = F.softmax(self.gate(flat), dim=-1)
        weights, chosen = torch.topk(scores, self.top_k, dim=-1, sorted=False)
        if self.norm_topk_prob:  # also for k = 1, where every weight becomes exactly 1
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        y = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            tokens, slots = (chosen == e).nonzero(as_tuple=True)
            if tokens.numel():
                y.index_add_(0, tokens, (expert(flat[tokens]) * weights[tokens, slots, None]).to(y.dtype))
            elif self.training:  # an idle expert stays in the graph (DDP needs every parameter used)
                y[0, 0] += 0 * sum(p.sum() for p in expert.parameters())
        if self.training and self.coef > 0:
            load = F.one_hot(chosen, self.n_experts).float().mean(dim=0)  # (k, E): share of tokens per slot
            self.aux_loss = self.n_experts * self.coef * (load * scores.mean(dim=0)).sum()
        else:
            self.aux_loss = scores.new_zeros(())
        return y.view(shape)


class Block(nn.Module):
    def __init__(self, config: MiniMind3Config):
        super().__init__()
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp: MLP | MoEFeedForward = (MoEFeedForward(config) if config.use_moe
                                          else MLP(config.hidden_size, config.intermediate))

    def forward(self, x, cos, sin, past_key_value=None, use_cache=False, attn_mask=None):
        h, past_kv = self.self_attn(self.input_layernorm(x), cos, sin, past_key_value, use_cache, attn_mask)
        h += x  # in place, as MiniMind-3: the sum keeps the attention output's dtype under autocast
        return h + self.mlp(self.post_attention_layernorm(h)), past_kv


class MiniMind3Model(nn.Module):
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, config: MiniMind3Config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([Block(config) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        cos, sin = rope_tables(config, config.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def rope(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + length
        if end > self.rope_cos.shape[0]:  # longer than the training rows: extend (same values)
            cos, sin = rope_tables(self.config, max(end, 2 * self.rope_cos.shape[0]))
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)
        return self.rope_cos[start:end], self.rope_sin[start:end]


class MiniMind3ForCausalLM(GenerationMixin, nn.Module):
    def __init__(self, config: Optional[MiniMind3Config] = None):
        super().__init__()
        self.config = config = config or MiniMind3Config()
        # Creation order fixes the RNG draws: identical to MiniMind-3's, so a seed gives its weights.
        self.model = MiniMind3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.model.embed_tokens.weight = self.lm_head.weight  # tied
        self.apply(_init_weights)  # Hugging Face's post_init: post-order, the tied tensor drawn twice

    def forward(self, input_ids: torch.Tensor, past_key_values: Optional[KVCache] = None,
                use_cache: bool = False, start_pos: int = 0,
                attention_mask: Optional[torch.Tensor] = None, logits_at: Optional[torch.Tensor] = None) -> ModelOutput:
        """attention_mask: optional (B, T_total) bool/0-1, True for real tokens (keys), for padded batches.
        logits_at: optional flat positions (into B*T): logits (N, V) only there (training skips padding)."""
        past_key_values = past_key_values or [None for _ in self.model.layers]
        seq_len = input_ids.size(1)
        cos, sin = self.model.rope(start_pos, seq_len)
        attn_mask = padding_mask(attention_mask, seq_len) if attention_mask is not None else None
        h = self.model.dropout(self.model.embed_tokens(input_ids))
        presents = []
        for layer, past in zip(self.model.layers, past_key_values):
            h, present = layer(h, cos, sin, past, use_cache, attn_mask)
            presents.append(present)
        if logits_at is not None:  # norm and output are per position: the others need not be computed
            h = h.reshape(-1, h.shape[-1]).index_select(0, logits_at)
        logits = self.lm_head(self.model.norm(h))
        aux_loss = logits.new_zeros((), dtype=torch.float32)
        for layer in self.model.layers:
            if isinstance(layer.mlp, MoEFeedForward):
                aux_loss = aux_loss + layer.mlp.aux_loss
        return ModelOutput(logits=logits, aux_loss=aux_loss, past_key_values=presents if use_cache else None)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
