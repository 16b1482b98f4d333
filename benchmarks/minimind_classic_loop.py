"""MiniMind classic as MiniMind itself runs it, rebuilt from ../shared/spec/minimind-classic.md and
the seed notebook, importing nothing from this project: the baseline the speed benchmarks compare
against. It keeps MiniMind's choices that cost time, because they are what a MiniMind user runs:
complex-number RoPE, SDPA with is_causal, a tokenizer call per item inside a DataLoader worker, the
for-loop AdamW, `loss.item()` on every logged step and a plain `torch.save` of an fp16 state_dict
every `save_interval` steps.

    from minimind_classic_loop import train_epoch
    stats = train_epoch("corpus.jsonl", "minimind/tokenizer/classic", dim=512, n_layers=2)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass
class Config:
    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 2
    vocab_size: int = 6400
    multiple_of: int = 64
    norm_eps: float = 1e-5
    max_seq_len: int = 512
    rope_theta: float = 1e6


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x.float() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def precompute_pos_cis(head_dim: int, end: int, theta: float) -> torch.Tensor:
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    return torch.polar(torch.ones(end, head_dim // 2), torch.outer(torch.arange(end).float(), freqs))


def rotate(x: torch.Tensor, pos_cis: torch.Tensor) -> torch.Tensor:
    x_ = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(x_ * pos_cis[None, :, None, :]).flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.dim // c.n_heads
        self.wq = nn.Linear(c.dim, c.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(c.dim, c.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(c.dim, c.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(c.n_heads * self.head_dim, c.dim, bias=False)

    def forward(self, x, pos_cis):
        b, t, _ = x.shape
        q = rotate(self.wq(x).view(b, t, self.n_heads, self.head_dim), pos_cis)
        k = rotate(self.wk(x).view(b, t, self.n_kv_heads, self.head_dim), pos_cis)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        rep = self.n_heads // self.n_kv_heads
        k = k[:, :, :, None, :].expand(b, t, self.n_kv_heads, rep, self.head_dim).reshape(b, t, self.n_heads, -1)
        v = v[:, :, :, None, :].expand(b, t, self.n_kv_heads, rep, self.head_dim).reshape(b, t, self.n_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        hidden = int(2 * (4 * c.dim) / 3)
        hidden = c.multiple_of * ((hidden + c.multiple_of - 1) // c.multiple_of)
        self.w1 = nn.Linear(c.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attention = Attention(c)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.feed_forward = FeedForward(c)

    def forward(self, x, pos_cis):
        h = x + self.attention(self.attention_norm(x), pos_cis)
        return h + self.feed_forward(self.ffn_norm(h))


class MiniMindLM(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.tok_embeddings.weight = self.output.weight
        self.register_buffer("pos_cis", precompute_pos_cis(c.dim // c.n_heads, 32768, c.rope_theta), persistent=False)

    def forward(self, ids):
        h = self.tok_embeddings(ids)
        pos_cis = self.pos_cis[: ids.shape[1]]
        for layer in self.layers:
            h = layer(h, pos_cis)
        return self.output(self.norm(h))


class PretrainDataset(Dataset):
    """One tokenizer call per item, padded to max_length (MiniMind's dataset)."""

    def __init__(self, path: str, tokenizer, max_length: int):
        with open(path, encoding="utf-8") as f:
            self.samples = [json.loads(line) for line in f if line.strip()]
        self.tokenizer, self.max_length = tokenizer, max_length

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        text = f"{self.tokenizer.bos_token}{self.samples[i]['text']}{self.tokenizer.eos_token}"
        enc = self.tokenizer(text, max_length=self.max_length, padding="max_length", truncation=True,
                             return_tensors="pt")
        ids = enc.input_ids.squeeze()
        mask = ids != self.tokenizer.pad_token_id
        return ids[:-1].clone(), ids[1:].clone(), mask[1:].long()


def get_lr(step: int, total: int, lr: float) -> float:
    return lr / 10 + 0.5 * lr * (1 + math.cos(math.pi * step / total))


def train_epoch(data_path: str, tokenizer_dir: str, *, dim: int = 512, n_layers: int = 2, max_seq_len: int = 512,
                batch_size: int = 2, learning_rate: float = 5e-4, grad_clip: float = 1.0, num_workers: int = 1,
                save_interval: int = 1, log_interval: int = 1, max_steps: int = 0, seed: int = 42) -> dict:
    """One epoch of the seed notebook's loop on a CPU (fp32, no autocast, accumulation 1). Returns
    wall seconds from building the data and model to the end of the epoch, and the real (non-pad)
    target tokens trained on. `max_steps` > 0 ends the epoch early (same lr schedule)."""
    from transformers import AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = Config(dim=dim, n_layers=n_layers, max_seq_len=max_seq_len)
    model = MiniMindLM(config)
    loader = DataLoader(PretrainDataset(data_path, tokenizer, max_seq_len), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    iters, tokens, losses = len(loader), 0, []
    save_dir = tempfile.mkdtemp(prefix="minimind-classic-")
    model.train()
    for step, (X, Y, loss_mask) in enumerate(loader, start=1):
        lr = get_lr(step, iters, learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(X)
        raw = F.cross_entropy(logits.reshape(-1, logits.size(-1)), Y.reshape(-1), reduction="none")
        mask = loss_mask.reshape(-1)
        loss = (raw * mask).sum() / (mask.sum() + 1e-8)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(loss_mask.sum())
        if step % log_interval == 0 or step == iters:
            losses.append(loss.item())
        if save_interval and step % save_interval == 0:
            state = {k: v.half().cpu() for k, v in model.state_dict().items()}
            torch.save(state, os.path.join(save_dir, f"pretrain_{dim}.pth"))
        if max_steps and step >= max_steps:
            break
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "steps": step,
            "final_loss": losses[-1], "losses": losses}
