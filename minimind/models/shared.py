"""What both model families share: the output type, attention masks, kv-head repetition, parameter
counting and sampling (streamed, batched with left padding and an attention mask, KV-cached).

Both families implement one forward contract, `model(input_ids, past_key_values=..., use_cache=...,
start_pos=..., attention_mask=...) -> ModelOutput`, so one sampler serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

KVCache = list[Optional[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, vocab_size)
    aux_loss: torch.Tensor  # scalar: MoE load-balancing loss summed over layers (0 when dense)
    past_key_values: Optional[KVCache]  # per layer (k, v), each (B, T_total, n_kv_heads, head_dim)


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True = may attend; queries are the LAST q_len positions."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    return torch.arange(k_len, device=device)[None, :] <= q_pos


def padding_mask(attention_mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """(B, 1, q_len, T_total) boolean key mask from a (B, T_total) one (True = real token); a padded
    query attends to itself so no softmax row is empty (that would make NaNs)."""
    keys = attention_mask.bool()[:, None, None, :]
    total = attention_mask.shape[1]
    positions = torch.arange(total, device=keys.device)
    own = positions[None, :] == positions[total - q_len:, None]
    return keys | own[None, None]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """torch.repeat_interleave(x, dim=2, repeats=n_rep) without a copy until needed."""
    if n_rep == 1:
        return x
    bs, slen, n_kv_heads, head_dim = x.shape
    return x[:, :, :, None, :].expand(bs, slen, n_kv_heads, n_rep, head_dim).reshape(bs, slen, n_kv_heads * n_rep, head_dim)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, tied weights counted once (MiniMind's 8.915M for the seed config)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class GenerationMixin:
    """generate_stream() and generate() for a model with the forward contract above."""

    @torch.inference_mode()
    def generate_stream(self, prompts: Sequence[Sequence[int]] | torch.Tensor, max_new_tokens: int = 256,
                        temperature: float = 0.75, top_p: float = 0.9, repetition_penalty: float = 1.0,
                        eos_token_id: Optional[int] = 2, pad_token_id: int = 0, use_cache: bool = True,
                        generator: Optional[torch.Generator] = None, top_k: int = 0) -> Iterator[torch.Tensor]:
        """Yield the next token of every prompt, (B,), until max_new_tokens or every row hit eos.

        Rows that finished yield pad_token_id. temperature 0 means greedy; top_k 0 means no top-k cut.
        """
        device = next(self.parameters()).device  # type: ignore[attr-defined]
        ids, real = _left_pad(prompts, pad_token_id, device)
        batch = ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        past, fed = None, 0  # fed: how many positions the cache already holds
        for _ in range(max_new_tokens):
            if use_cache and past is not None:
                out = self(ids[:, fed:], past_key_values=past, use_cache=True, start_pos=fed,  # type: ignore[operator]
                           attention_mask=real)
            else:
                out = self(ids, use_cache=use_cache, attention_mask=real)  # type: ignore[operator]
            past, fed = out.past_key_values, ids.shape[1]
            logits = out.logits[:, -1, :].float()
            if repetition_penalty != 1.0:
                logits = _penalize_repeats(logits, ids, real, repetition_penalty)
            next_tok = _sample(logits, temperature, top_p, generator, top_k)
            next_tok = torch.where(done, torch.full_like(next_tok, pad_token_id), next_tok)
            yield next_tok
            ids = torch.cat([ids, next_tok[:, None]], dim=1)
            real = torch.cat([real, ~done[:, None]], dim=1)
            if eos_token_id is not None:
                done = done | (next_tok == eos_token_id)
                if bool(done.all()):
                    return

    def generate(self, prompts: Sequence[Sequence[int]] | torch.Tensor, max_new_tokens: int = 256,
                 **kwargs) -> list[list[int]]:
        """New tokens per prompt (eos included when reached, no padding)."""
        eos = kwargs.get("eos_token_id", 2)
        steps = list(self.generate_stream(prompts, max_new_tokens=max_new_tokens, **kwargs))
        result = []
        for row in (torch.stack(steps, 1).tolist() if steps else [[] for _ in range(len(prompts))]):
            cut = row.index(eos) + 1 if eos is not None and eos in row else len(row)
            result.append(row[:cut])
        return result


def _left_pad(prompts, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        prompts = [list(map(int, row)) for row in (prompts if prompts.dim() == 2 else prompts[None])]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        real[i, width - len(p):] = True
    return ids.to(device), real.to(device)


def _penalize_repeats(logits: torch.Tensor, ids: torch.Tensor, real: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on every token already in the row: shrink positive logits, push negative ones down."""
    # Padding positions point at the row's last token so they add no token of their own.
    ids = torch.where(real, ids, ids[:, -1:])
    seen = logits.gather(1, ids)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, ids, seen)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator, top_k: int = 0) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:  # MiniMind-3's rule: the most likely token always stays (top_p 0: greedy)
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        logits = logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as plain tensors, in its family's key layout."""
    return {k: v.detach() for k, v in model.state_dict().items()}
