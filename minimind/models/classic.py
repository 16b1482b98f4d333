"""MiniMind classic (`MiniMindLM`): the same modules, parameter names, init order and arithmetic.

A classic `.pth` loads here with `strict=True` and gives the same logits. Differences are
deliberate and do not change what a classic checkpoint computes:
- RoPE tables are built lazily and linearly in sequence length (MiniMind also keeps a
  max_seq_len x max_seq_len mask buffer per layer: 8192^2 floats = 256 MB each at the default).
- Under torch.compile RoPE uses the real-valued form of the same complex product (inductor has no
  complex numbers); eager mode multiplies complex numbers as MiniMind does, one kernel, same bits.
- MoE experts keep the activation dtype (MiniMind's training path rounds expert outputs to fp16).
- Chunked prefill with a KV cache gets a correct causal mask, and `generate()` handles batches of
  prompts of different lengths (left padding with an attention mask).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..families.classic import LMConfig
from .shared import GenerationMixin, KVCache, ModelOutput, causal_mask, padding_mask, repeat_kv


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x.float() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def rope_tables(head_dim: int, end: int, theta: float) -> torch.Tensor:
    """MiniMind's `pos_cis` = polar(1, outer(t, freqs)) as real pairs (cos, sin): (end, head_dim // 2, 2)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(end, dtype=torch.float32), freqs)
    return torch.view_as_real(torch.polar(torch.ones_like(angles), angles)).contiguous()


def apply_rotary_emb(x: torch.Tensor, pos_cis: torch.Tensor) -> torch.Tensor:
    """Rotate ADJACENT pairs (x0,x1),(x2,x3)... of x (B, T, H, hd) in fp32 by pos_cis (T, hd // 2, 2)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    rot = pos_cis[None, :, None]
    if torch.compiler.is_compiling():  # the same product in real numbers (inductor has no complex)
        x0, x1, cos, sin = pairs[..., 0], pairs[..., 1], rot[..., 0], rot[..., 1]
        rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(rot))
    return rotated.flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.n_rep = self.n_heads // self.n_kv_heads
        self.head_dim = config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.flash = config.flash_attn

    def forward(self, x: torch.Tensor, pos_cis: torch.Tensor,
                past_key_value: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                use_cache: bool = False, attn_mask: Optional[torch.Tensor] = None):
        bsz, seq_len, _ = x.shape
        xq = self.wq(x).view(bsz, seq_len, self.n_heads, self.head_dim)
        xk = self.wk(x).view(bsz, seq_len, self.n_kv_heads, self.head_dim)
        xv = self.wv(x).view(bsz, seq_len, self.n_kv_heads, self.head_dim)
        xq, xk = apply_rotary_emb(xq, pos_cis), apply_rotary_emb(xk, pos_cis)
        if past_key_value is not None:
            xk = torch.cat([past_key_value[0], xk], dim=1)
            xv = torch.cat([past_key_value[1], xv], dim=1)
        past_kv = (xk, xv) if use_cache else None

        xq = xq.transpose(1, 2)
        xk = repeat_kv(xk, self.n_rep).transpose(1, 2)
        xv = repeat_kv(xv, self.n_rep).transpose(1, 2)
        dropout_p = self.dropout if self.training else 0.0
        total_len = xk.shape[2]
        # Plain causal training/prefill (MiniMind's path) vs decoding or masked (padded) batches.
        plain_causal = attn_mask is None and total_len == seq_len
        if attn_mask is None and seq_len == 1:
            mask = None  # one new query sees every cached key
        elif plain_causal:
            mask = None
        else:
            mask = causal_mask(seq_len, total_len, x.device)
            if attn_mask is not None:
                mask = mask & attn_mask
        if self.flash:
            output = F.scaled_dot_product_attention(
                xq, xk, xv, attn_mask=mask, dropout_p=dropout_p, is_causal=plain_causal and seq_len > 1)
        else:
            scores = (xq @ xk.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if plain_causal and seq_len > 1:
                mask = causal_mask(seq_len, total_len, x.device)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            scores = self.attn_dropout(F.softmax(scores.float(), dim=-1).type_as(xq))
            output = scores @ xv
        output = output.transpose(1, 2).reshape(bsz, seq_len, -1)
        return self.resid_dropout(self.wo(output)), past_kv


class FeedForward(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        hidden = config.ffn_hidden_dim
        self.w1 = nn.Linear(config.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, config.dim, bias=False)
        self.w3 = nn.Linear(config.dim, hidden, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class MoEGate(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_routed_experts = config.n_routed_experts
        self.alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty((self.n_routed_experts, config.dim)))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, hidden_states: torch.Tensor):
        bsz, seq_len, h = hidden_states.shape
        scores = F.linear(hidden_states.view(-1, h), self.weight).softmax(dim=-1)
        topk_weight, topk_idx = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)
        if self.top_k > 1 and self.norm_topk_prob:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        if self.training and self.alpha > 0.0:
            aux_loss = self.aux_loss(scores, topk_idx, bsz, seq_len)
        else:
            aux_loss = scores.new_zeros(())
        return topk_idx, topk_weight, aux_loss

    def aux_loss(self, scores: torch.Tensor, topk_idx: torch.Tensor, bsz: int, seq_len: int) -> torch.Tensor:
        n_exp, k = self.n_routed_experts, self.top_k
        idx = topk_idx.view(bsz, -1)
        if self.seq_aux:
            # ce[b, e]: how often expert e was picked in sequence b, relative to a uniform share
            ce = torch.zeros(bsz, n_exp, device=scores.device)
            ce.scatter_add_(1, idx, torch.ones(bsz, seq_len * k, device=scores.device))
            ce = ce.div_(seq_len * k / n_exp)
            return (ce * scores.view(bsz, seq_len, -1).mean(dim=1)).sum(dim=1).mean() * self.alpha
        fi = F.one_hot(idx.view(-1), num_classes=n_exp).float().mean(0) * n_exp
        return (scores.mean(0) * fi).sum() * self.alpha


class MOEFeedForward(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.experts = nn.ModuleList([FeedForward(config) for _ in range(config.n_routed_experts)])
        self.gate = MoEGate(config)
        self.shared_experts = FeedForward(config) if config.n_shared_experts else None
        self.aux_loss = torch.zeros(())  # set by each forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig_shape = x.shape
        topk_idx, topk_weight, self.aux_loss = self.gate(x)
        flat_x = x.view(-1, x.shape[-1])
        flat_idx = topk_idx.view(-1)
        token_of = torch.arange(flat_x.shape[0], device=x.device).repeat_interleave(topk_idx.shape[1])
        weights = topk_weight.view(-1, 1)
        y = torch.zeros_like(flat_x)
        # Each expert sees only its tokens; outputs are weighted and summed back per token.
        for i, expert in enumerate(self.experts):
            chosen = (flat_idx == i).nonzero(as_tuple=True)[0]
            if chosen.numel() == 0:
                continue
            tokens = token_of[chosen]
            out = expert(flat_x[tokens]) * weights[chosen].to(flat_x.dtype)
            y.index_add_(0, tokens, out.to(y.dtype))
        y = y.view(orig_shape)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y


class MiniMindBlock(nn.Module):
    def __init__(self, layer_id: int, config: LMConfig):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(config)
        self.attention_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.feed_forward = MOEFeedForward(config) if config.use_moe else FeedForward(config)

    def forward(self, x, pos_cis, past_key_value=None, use_cache=False, attn_mask=None):
        h_attn, past_kv = self.attention(self.attention_norm(x), pos_cis, past_key_value, use_cache, attn_mask)
        h = x + h_attn
        return h + self.feed_forward(self.ffn_norm(h)), past_kv


class MiniMindLM(GenerationMixin, nn.Module):
    pos_cis: torch.Tensor

    def __init__(self, config: Optional[LMConfig] = None):
        super().__init__()
        self.config = config = config or LMConfig()
        # Module creation order fixes the RNG draw order: identical to MiniMind, so a seed gives
        # MiniMind's initial weights.
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([MiniMindBlock(i, config) for i in range(config.n_layers)])
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.tok_embeddings.weight = self.output.weight  # tied: output init wins, as in MiniMind
        self.register_buffer("pos_cis", rope_tables(config.head_dim, config.max_seq_len, config.rope_theta),
                             persistent=False)

    def _rope(self, start: int, length: int) -> torch.Tensor:
        end = start + length
        if end > self.pos_cis.shape[0]:  # generation past max_seq_len: extend, as RoPE allows
            table = rope_tables(self.config.head_dim, max(end, 2 * self.pos_cis.shape[0]), self.config.rope_theta)
            self.pos_cis = table.to(self.pos_cis.device)
        return self.pos_cis[start:end]

    def forward(self, input_ids: torch.Tensor, past_key_values: Optional[KVCache] = None,
                use_cache: bool = False, start_pos: int = 0,
                attention_mask: Optional[torch.Tensor] = None, logits_at: Optional[torch.Tensor] = None) -> ModelOutput:
        """attention_mask: optional (B, T_total) bool/0-1, True for real tokens (keys), for padded batches.
        logits_at: optional flat positions (into B*T): logits (N, V) only there (training skips padding)."""
        past_key_values = past_key_values or [None for _ in self.layers]
        seq_len = input_ids.size(1)
        pos_cis = self._rope(start_pos, seq_len)
        attn_mask = padding_mask(attention_mask, seq_len) if attention_mask is not None else None
        h = self.dropout(self.tok_embeddings(input_ids))
        presents = []
        for layer, past in zip(self.layers, past_key_values):
            h, present = layer(h, pos_cis, past, use_cache, attn_mask)
            presents.append(present)
        if logits_at is not None:  # norm and output are per position: the others need not be computed
            h = h.reshape(-1, h.shape[-1]).index_select(0, logits_at)
        logits = self.output(self.norm(h))
        aux_loss = logits.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            if isinstance(layer.feed_forward, MOEFeedForward):
                aux_loss = aux_loss + layer.feed_forward.aux_loss
        return ModelOutput(logits=logits, aux_loss=aux_loss, past_key_values=presents if use_cache else None)
