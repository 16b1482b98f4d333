"""A deliberately naive second implementation of MiniMind classic, written from
shared/spec/minimind-classic.md, used only as a test oracle for minimind.models.classic.

It follows the spec's formulation literally (complex RoPE over a 32768-position table, an explicit
-inf causal mask, repeat_interleave for kv heads, a per-token loop for MoE) so that agreement with
the optimised model is evidence, not a tautology. Same parameter names, so state_dicts swap.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Norm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x.float() * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def pos_cis_table(head_dim, theta, end=32768):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    return torch.polar(torch.ones(end, head_dim // 2), torch.outer(torch.arange(end).float(), freqs))


def rotate(x, pos_cis):  # x: (B, T, H, hd)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * pos_cis[None, :, None, :]).flatten(3).type_as(x)


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kvh, self.hd = c.n_heads, c.n_kv_heads, c.dim // c.n_heads
        self.wq = nn.Linear(c.dim, c.n_heads * self.hd, bias=False)
        self.wk = nn.Linear(c.dim, c.n_kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(c.dim, c.n_kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(c.n_heads * self.hd, c.dim, bias=False)

    def forward(self, x, pos_cis):
        b, t, _ = x.shape
        q = rotate(self.wq(x).view(b, t, self.h, self.hd), pos_cis)
        k = rotate(self.wk(x).view(b, t, self.kvh, self.hd), pos_cis)
        v = self.wv(x).view(b, t, self.kvh, self.hd)
        k = torch.repeat_interleave(k, self.h // self.kvh, dim=2)
        v = torch.repeat_interleave(v, self.h // self.kvh, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.hd)
        scores = scores + torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        out = F.softmax(scores.float(), dim=-1).type_as(q) @ v
        return self.wo(out.transpose(1, 2).reshape(b, t, -1))


class FFN(nn.Module):
    def __init__(self, c):
        super().__init__()
        hidden = c.hidden_dim or 64 * math.ceil(int(2 * 4 * c.dim / 3) / 64)
        self.w1 = nn.Linear(c.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Gate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.experts = nn.ModuleList([FFN(c) for _ in range(c.n_routed_experts)])
        self.gate = Gate(c)
        self.shared_experts = FFN(c)

    def forward(self, x):
        c = self.c
        b, t, d = x.shape
        scores = F.softmax(x.reshape(-1, d) @ self.gate.weight.t(), dim=-1)  # (b*t, E)
        w, idx = torch.topk(scores, c.num_experts_per_tok, dim=-1)
        if c.num_experts_per_tok > 1 and c.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        flat = x.reshape(-1, d)
        rows = []
        for n in range(flat.shape[0]):  # one token at a time: slow and obviously right
            rows.append(sum(w[n, j] * self.experts[int(idx[n, j])](flat[n]) for j in range(idx.shape[1])))
        y = torch.stack(rows).view(b, t, d) + self.shared_experts(x)
        self.aux = torch.tensor(0.0)
        if self.training and c.aux_loss_alpha > 0:
            k, e = c.num_experts_per_tok, c.n_routed_experts
            if c.seq_aux:
                per_seq = idx.view(b, t * k)
                total = 0.0
                for bi in range(b):
                    counts = torch.bincount(per_seq[bi], minlength=e).float() / (t * k / e)
                    total = total + (counts * scores.view(b, t, e)[bi].mean(0)).sum()
                self.aux = total / b * c.aux_loss_alpha
            else:
                fi = torch.bincount(idx.reshape(-1), minlength=e).float() / idx.numel() * e
                self.aux = (scores.mean(0) * fi).sum() * c.aux_loss_alpha
        return y


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = Attn(c)
        self.attention_norm = Norm(c.dim, c.norm_eps)
        self.ffn_norm = Norm(c.dim, c.norm_eps)
        self.feed_forward = MoE(c) if c.use_moe else FFN(c)

    def forward(self, x, pos_cis):
        h = x + self.attention(self.attention_norm(x), pos_cis)
        return h + self.feed_forward(self.ffn_norm(h))


class ClassicReference(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.norm = Norm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.tok_embeddings.weight = self.output.weight
        self.register_buffer("pos_cis", pos_cis_table(c.dim // c.n_heads, c.rope_theta), persistent=False)

    def forward(self, ids):
        h = self.tok_embeddings(ids)
        for layer in self.layers:
            h = layer(h, self.pos_cis[: ids.shape[1]])
        aux = sum((l.feed_forward.aux for l in self.layers if isinstance(l.feed_forward, MoE)), torch.tensor(0.0))
        return self.output(self.norm(h)), aux
