"""MiniMind-3 as MiniMind's own `trainer/train_pretrain.py` runs it on a CPU, rebuilt from
../shared/spec/minimind3-and-sft.md (A1-A4, A8, A9), importing nothing from this project: the baseline
the speed benchmarks compare our `--arch minimind3` against. Dense model only. It keeps what a
MiniMind-3 user runs: SDPA with is_causal, a tokenizer call per item in DataLoader workers, the
for-loop AdamW, loss / accumulation_steps with a clipped optimizer step every accumulation_steps
micro-batches, `loss.item()` on logged steps, and the fp16 weights plus the resume file saved every
`save_interval` steps and at the end of the epoch.

    from minimind3_loop import train_epoch
    stats = train_epoch("corpus.jsonl", "minimind/tokenizer/minimind3", hidden_size=768, num_hidden_layers=8)
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass
class Config:
    hidden_size: int = 768
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    vocab_size: int = 6400
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        return math.ceil(self.hidden_size * math.pi / 64) * 64


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps))).type_as(x)


def rope_tables(head_dim: int, end: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(end).float(), inv_freq)
    return torch.cat([angles.cos(), angles.cos()], -1), torch.cat([angles.sin(), angles.sin()], -1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, c.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.head_dim, c.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, c.rms_norm_eps)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(b, t, self.kv_heads, self.head_dim))
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim)
        cos, sin = cos[:t].unsqueeze(1), sin[:t].unsqueeze(1)
        q = (q * cos + rotate_half(q) * sin).to(q.dtype)
        k = (k * cos + rotate_half(k) * sin).to(k.dtype)
        rep = self.heads // self.kv_heads
        k = k[:, :, :, None, :].expand(b, t, self.kv_heads, rep, self.head_dim).reshape(b, t, self.heads, -1)
        v = v[:, :, :, None, :].expand(b, t, self.kv_heads, rep, self.head_dim).reshape(b, t, self.heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.self_attn = Attention(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        h = self.self_attn(self.input_layernorm(x), cos, sin)
        h += x
        return h + self.mlp(self.post_attention_layernorm(h))


class Model(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        cos, sin = rope_tables(c.head_dim, c.max_position_embeddings, c.rope_theta)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    def forward(self, ids):
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, self.freqs_cos, self.freqs_sin)
        return self.norm(h)


class MiniMindForCausalLM(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.model = Model(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.model.embed_tokens.weight = self.lm_head.weight
        self.apply(_hf_init)  # Hugging Face's post_init: a post-order walk, the tied tensor drawn twice

    def forward(self, ids, labels=None):
        logits = self.lm_head(self.model(ids))
        if labels is None:
            return logits, None
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
        return logits, loss


def _hf_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(0.0, 0.02)


class PretrainDataset(Dataset):
    """MiniMind-3's rows: bos, the text's first max_length-2 tokens, eos, pad; labels -100 on pad."""

    def __init__(self, path: str, tokenizer, max_length: int):
        with open(path, encoding="utf-8") as f:
            self.samples = [json.loads(line) for line in f if line.strip()]
        self.tokenizer, self.max_length = tokenizer, max_length

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        t = self.tokenizer(str(self.samples[i]["text"]), add_special_tokens=False, max_length=self.max_length - 2,
                           truncation=True).input_ids
        ids = [1] + t + [2] + [0] * (self.max_length - len(t) - 2)
        input_ids = torch.tensor(ids, dtype=torch.long)
        labels = input_ids.clone()
        labels[input_ids == 0] = -100
        return input_ids, labels


def get_lr(step: int, total: int, lr: float) -> float:
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / total)))


def setup_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _save(model: nn.Module, optimizer, save_dir: str, name: str, epoch: int, step: int) -> None:
    """MiniMind-3's save: the fp16 weights, then the same weights and the resume file via tmp + rename."""
    state = {k: v.half().cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(save_dir, f"{name}.pth"))
    resume = {"model": state, "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "world_size": 1,
              "wandb_id": None, "scaler": {}}
    for path, obj in ((f"checkpoint_{name}.pth", state), (f"checkpoint_{name}_resume.pth", resume)):
        full = os.path.join(save_dir, path)
        torch.save(obj, full + ".tmp")
        os.replace(full + ".tmp", full)


def train_epoch(data_path: str, tokenizer_dir: str, *, hidden_size: int = 768, num_hidden_layers: int = 8,
                max_seq_len: int = 340, batch_size: int = 32, learning_rate: float = 5e-4,
                accumulation_steps: int = 8, grad_clip: float = 1.0, num_workers: int = 8, log_interval: int = 100,
                save_interval: int = 1000, max_steps: int = 0) -> dict:
    """The first epoch of MiniMind-3's pretraining loop on a CPU (fp32, no autocast). Returns wall
    seconds from building the data and model to the end of the epoch, and the real targets (labels
    other than -100 after the shift). `max_steps` > 0 ends the epoch after that many micro-batches
    (same lr schedule), with the end-of-epoch save and flush."""
    from transformers import AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    setup_seed(42)
    model = MiniMindForCausalLM(Config(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers))
    dataset = PretrainDataset(data_path, tokenizer, max_seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    setup_seed(42)  # epoch 0's order: setup_seed(42 + epoch), then randperm
    order = torch.randperm(len(dataset)).tolist()
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                        pin_memory=torch.cuda.is_available())
    iters, epochs, tokens, losses, step = len(batches), 1, 0, [], 0
    save_dir = tempfile.mkdtemp(prefix="minimind3-")
    model.train()
    for step, (input_ids, labels) in enumerate(loader, start=1):
        lr = get_lr(step, epochs * iters, learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = model(input_ids, labels=labels)
        (loss / accumulation_steps).backward()
        if step % accumulation_steps == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        tokens += int((labels[:, 1:] != -100).sum())
        last = step == iters or (max_steps and step >= max_steps)
        if step % log_interval == 0 or last:
            losses.append(loss.item())
        if (save_interval and step % save_interval == 0) or last:
            model.eval()
            _save(model, optimizer, save_dir, f"pretrain_{hidden_size}", 0, step)
            model.train()
        if last:
            break
    if step and step % accumulation_steps != 0:  # the end-of-epoch flush
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "steps": step,
            "final_loss": losses[-1], "losses": losses}
