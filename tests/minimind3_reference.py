"""A deliberately naive second implementation of MiniMind-3 (upstream HEAD d65ef2c), written from
shared/spec/minimind3-and-sft.md part A, used only as a test oracle.

It follows the spec literally and independently of the product code: RMSNorm multiplying the fp32
normalised value by the weight and casting last (A2.1), rotate-half RoPE from explicit float32 tables
(optional YaRN, A2.2), attention with an explicit -inf causal mask and softmax (no SDPA), q_norm/k_norm
before RoPE, repeat_interleave for the kv heads (A2.3), SwiGLU MLP (A2.4), MoE computed one token at a
time in a python loop with the A2.5 aux loss, pre-norm blocks and a tied head (A2.6). Parameter names,
shapes and order are those of A3, so state dicts swap with MiniMind's own `MiniMindForCausalLM`.

Also here: the A4 bit-exact initialisation recipe (`init_like_minimind3`), the A8 pretraining row
(`pretrain_row`), the A9 learning-rate schedule (`minimind3_lr`) and a naive A9 pretraining loop
(`run_reference_pretraining`).

Imports only torch, math, json, random (no product code).
"""

import json
import math
import random

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# A1. config


class MiniMind3Config:
    """MiniMindConfig's fields with MiniMind-3's defaults (A1). Unknown kwargs are only stored."""

    model_type = "minimind"

    def __init__(self, hidden_size=768, num_hidden_layers=8, use_moe=False, **kwargs):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.use_moe = use_moe
        self.dropout = kwargs.pop("dropout", 0.0)
        self.vocab_size = kwargs.pop("vocab_size", 6400)
        self.bos_token_id = kwargs.pop("bos_token_id", 1)
        self.eos_token_id = kwargs.pop("eos_token_id", 2)
        self.flash_attn = kwargs.pop("flash_attn", True)  # stored only: the reference never uses SDPA
        self.num_attention_heads = kwargs.pop("num_attention_heads", 8)
        self.num_key_value_heads = kwargs.pop("num_key_value_heads", 4)
        self.head_dim = kwargs.pop("head_dim", self.hidden_size // self.num_attention_heads)
        self.hidden_act = kwargs.pop("hidden_act", "silu")
        self.intermediate_size = kwargs.pop("intermediate_size", math.ceil(hidden_size * math.pi / 64) * 64)
        self.max_position_embeddings = kwargs.pop("max_position_embeddings", 32768)
        self.rms_norm_eps = kwargs.pop("rms_norm_eps", 1e-6)
        self.rope_theta = kwargs.pop("rope_theta", 1e6)
        self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
        self.inference_rope_scaling = kwargs.pop("inference_rope_scaling", False)
        default_scaling = (
            {
                "beta_fast": 32,
                "beta_slow": 1,
                "factor": 16,
                "original_max_position_embeddings": 2048,
                "attention_factor": 1.0,
                "type": "yarn",
            }
            if self.inference_rope_scaling
            else None
        )
        self.rope_scaling = kwargs.pop("rope_scaling", default_scaling)
        self.num_experts = kwargs.pop("num_experts", 4)
        self.num_experts_per_tok = kwargs.pop("num_experts_per_tok", 1)
        self.moe_intermediate_size = kwargs.pop("moe_intermediate_size", self.intermediate_size)
        self.norm_topk_prob = kwargs.pop("norm_topk_prob", True)
        self.router_aux_loss_coef = kwargs.pop("router_aux_loss_coef", 5e-4)
        for k, v in kwargs.items():  # e.g. max_seq_len: stored, unused
            setattr(self, k, v)


# --------------------------------------------------------------------------------------------------
# A2. architecture


class RMSNorm3(nn.Module):
    """A2.1: weight times the fp32 normalised value, cast to x's dtype last."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * normed).type_as(x)


def rope_inv_freq(head_dim, theta, max_pos, rope_scaling=None):
    """A2.2: float32 inverse frequencies (YaRN-adjusted when rope_scaling is set and max_pos / orig > 1)
    and the attention factor that multiplies cos and sin."""
    d = head_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2)[: d // 2].float() / d))
    attn_factor = 1.0
    if rope_scaling is not None:
        orig_max = rope_scaling.get("original_max_position_embeddings", 2048)
        factor = rope_scaling.get("factor", 16)
        beta_fast = rope_scaling.get("beta_fast", 32)
        beta_slow = rope_scaling.get("beta_slow", 1)
        attn_factor = rope_scaling.get("attention_factor", 1.0)
        if max_pos / orig_max > 1:

            def inv_dim(b):
                return d * math.log(orig_max / (b * 2 * math.pi)) / (2 * math.log(theta))

            low = max(math.floor(inv_dim(beta_fast)), 0)
            high = min(math.ceil(inv_dim(beta_slow)), d // 2 - 1)
            ramp = torch.clamp((torch.arange(d // 2).float() - low) / max(high - low, 0.001), 0, 1)
            inv_freq = inv_freq * ((1 - ramp) + ramp / factor)
    return inv_freq, attn_factor


def rope_tables(head_dim, theta, max_pos, rope_scaling=None):
    """A2.2: float32 cos/sin tables of shape (max_pos, head_dim), rotate-half layout."""
    inv_freq, attn_factor = rope_inv_freq(head_dim, theta, max_pos, rope_scaling)
    angles = torch.outer(torch.arange(max_pos).float(), inv_freq)
    cos = torch.cat([torch.cos(angles), torch.cos(angles)], dim=-1) * attn_factor
    sin = torch.cat([torch.sin(angles), torch.sin(angles)], dim=-1) * attn_factor
    return cos, sin


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    """x: (B, T, heads, d); cos/sin: (T, d), broadcast over batch and heads."""
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    return (x * c + rotate_half(x) * s).to(x.dtype)


class Attention3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h = c.num_attention_heads
        self.kvh = c.num_key_value_heads
        self.hd = c.head_dim
        self.dropout = c.dropout
        self.q_proj = nn.Linear(c.hidden_size, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.kvh * self.hd, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, self.kvh * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, c.hidden_size, bias=False)
        self.q_norm = RMSNorm3(self.hd, c.rms_norm_eps)
        self.k_norm = RMSNorm3(self.hd, c.rms_norm_eps)

    def forward(self, x, cos, sin, attention_mask=None):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd)
        k = self.k_proj(x).view(b, t, self.kvh, self.hd)
        v = self.v_proj(x).view(b, t, self.kvh, self.hd)
        q = self.q_norm(q)
        k = self.k_norm(k)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        n_rep = self.h // self.kvh
        k = torch.repeat_interleave(k, n_rep, dim=2)
        v = torch.repeat_interleave(v, n_rep, dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hd)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.hd)
        mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        scores = scores + mask
        if attention_mask is not None:  # (B, T) with 1 = keep
            scores = scores + (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * -1e9
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        probs = F.dropout(probs, p=self.dropout, training=self.training)
        out = probs @ v
        out = out.transpose(1, 2).reshape(b, t, self.h * self.hd)
        return F.dropout(self.o_proj(out), p=self.dropout, training=self.training)


class MLP3(nn.Module):
    """A2.4 (also one MoE expert). Construction order gate, down, up (A3/A4)."""

    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE3(nn.Module):
    """A2.5, token by token."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.gate = nn.Linear(c.hidden_size, c.num_experts, bias=False)
        self.experts = nn.ModuleList([MLP3(c.hidden_size, c.moe_intermediate_size) for _ in range(c.num_experts)])
        self.aux_loss = torch.tensor(0.0)

    def forward(self, x):
        c = self.c
        b, t, h = x.shape
        flat = x.reshape(-1, h)
        n_tok = flat.shape[0]
        scores = F.softmax(self.gate(flat), dim=-1)  # (N, E)
        w, idx = torch.topk(scores, c.num_experts_per_tok, dim=-1, sorted=False)
        if c.norm_topk_prob:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        rows = []
        for n in range(n_tok):  # slow and obviously right
            acc = torch.zeros(h, dtype=x.dtype)
            for j in range(idx.shape[1]):
                e = int(idx[n, j])
                acc = acc + (self.experts[e](flat[n]) * w[n, j]).to(x.dtype)
            rows.append(acc)
        y = torch.stack(rows)
        if self.training:
            used = set(int(e) for e in idx.reshape(-1))
            for e in range(c.num_experts):
                if e not in used:  # keeps an idle expert in the graph: y[0, 0] += 0 * sum(params)
                    zero = 0 * sum(p.sum() for p in self.experts[e].parameters())
                    y = y + F.pad(zero.reshape(1, 1), (0, h - 1, 0, n_tok - 1))
        if self.training and c.router_aux_loss_coef > 0:
            counts = torch.zeros(c.num_experts)
            for n in range(n_tok):
                for j in range(idx.shape[1]):
                    counts[int(idx[n, j])] += 1
            p_mean = scores.mean(dim=0)
            self.aux_loss = c.num_experts * c.router_aux_loss_coef * (counts / n_tok * p_mean).sum()
        else:
            self.aux_loss = scores.new_zeros(())
        return y.view(b, t, h)


class Block3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = Attention3(c)
        self.input_layernorm = RMSNorm3(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm3(c.hidden_size, c.rms_norm_eps)
        self.mlp = MoE3(c) if c.use_moe else MLP3(c.hidden_size, c.intermediate_size)

    def forward(self, x, cos, sin, attention_mask=None):
        h = self.self_attn(self.input_layernorm(x), cos, sin, attention_mask)
        h = h + x
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block3(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm3(c.hidden_size, c.rms_norm_eps)
        cos, sin = rope_tables(c.head_dim, c.rope_theta, c.max_position_embeddings, c.rope_scaling)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)


class MiniMind3Reference(nn.Module):
    """State dict keys: model.embed_tokens.weight, model.layers.{i}..., model.norm.weight, lm_head.weight."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = Inner3(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.model.embed_tokens.weight = self.lm_head.weight

    def forward(self, input_ids, labels=None, attention_mask=None):
        c = self.config
        t = input_ids.shape[1]
        h = F.dropout(self.model.embed_tokens(input_ids), p=c.dropout, training=self.training)
        cos = self.model.freqs_cos[:t]
        sin = self.model.freqs_sin[:t]
        for layer in self.model.layers:
            h = layer(h, cos, sin, attention_mask)
        logits = self.lm_head(self.model.norm(h))
        aux = torch.tensor(0.0)
        for layer in self.model.layers:
            if isinstance(layer.mlp, MoE3):
                aux = aux + layer.mlp.aux_loss
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return logits, aux, loss


def count_params(model):
    """Unique parameters (the tied tensor once)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# A4. initialisation


def _layer_linears(model):
    """Every Linear of the layers in construction order (A4): q, k, v, o, then the MLP / MoE ones."""
    out = []
    for layer in model.model.layers:
        a = layer.self_attn
        out += [a.q_proj, a.k_proj, a.v_proj, a.o_proj]
        if isinstance(layer.mlp, MoE3):
            out.append(layer.mlp.gate)
            for e in layer.mlp.experts:
                out += [e.gate_proj, e.down_proj, e.up_proj]
        else:
            out += [layer.mlp.gate_proj, layer.mlp.down_proj, layer.mlp.up_proj]
    return out


@torch.no_grad()
def init_like_minimind3(model, seed):
    """A4 recipe: what `torch.manual_seed(seed); MiniMindForCausalLM(cfg)` leaves in the weights.

    Re-plays explicitly, whatever the model's construction consumed:
    1) the construction-time default draws (embedding N(0,1), kaiming_uniform(a=sqrt 5) per Linear in
       creation order, lm_head last), only to consume the generator;
    2) the post-order normal_(0, 0.02) walk: shared tensor (as embed_tokens), every layer Linear,
       shared tensor again (as lm_head); RMSNorm weights = 1.
    """
    torch.manual_seed(seed)
    embed = model.model.embed_tokens.weight
    lm = model.lm_head.weight
    # 1) construction draws
    scratch = torch.empty(embed.shape, dtype=embed.dtype)
    nn.init.normal_(scratch, 0.0, 1.0)
    for lin in _layer_linears(model):
        nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
    nn.init.kaiming_uniform_(lm, a=math.sqrt(5))
    # 2) post-order walk
    nn.init.normal_(embed, mean=0.0, std=0.02)
    for lin in _layer_linears(model):
        nn.init.normal_(lin.weight, mean=0.0, std=0.02)
    nn.init.normal_(lm, mean=0.0, std=0.02)  # the shared tensor again when tied: last draw wins
    for m in model.modules():
        if isinstance(m, RMSNorm3):
            m.weight.fill_(1.0)
    return model


def build_minimind3(config=None, seed=42, **overrides):
    """Fresh seed-`seed` MiniMind-3 model (A4), in train mode like a freshly built HF model."""
    config = config or MiniMind3Config(**overrides)
    model = MiniMind3Reference(config)
    return init_like_minimind3(model, seed)


# --------------------------------------------------------------------------------------------------
# A8. PretrainDataset row


def pretrain_row(tokenizer, text, max_length, bos_id=1, eos_id=2, pad_id=0):
    """A8: ([bos] + head(text tokens, L-2) + [eos] + pads, labels with pad ids -> -100); unshifted."""
    t = tokenizer(str(text), add_special_tokens=False, max_length=max_length - 2, truncation=True).input_ids
    ids = [bos_id] + list(t) + [eos_id] + [pad_id] * (max_length - len(t) - 2)
    labels = [(-100 if i == pad_id else i) for i in ids]
    return ids, labels


def read_jsonl_texts(path):
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


# --------------------------------------------------------------------------------------------------
# A9. schedule and loop


def minimind3_lr(c, T, lr0):
    """A9: lr0 * (0.1 + 0.45 * (1 + cos(pi * c / T)))."""
    return lr0 * (0.1 + 0.45 * (1 + math.cos(math.pi * c / T)))


def setup_seed(seed):
    """MiniMind's setup_seed without numpy / cuda (the reference draws from neither)."""
    random.seed(seed)
    torch.manual_seed(seed)


def run_reference_pretraining(
    rows,
    config=None,
    epochs=3,
    batch_size=32,
    lr=5e-4,
    accumulation_steps=8,
    grad_clip=1.0,
    seed=42,
    model=None,
    verbose=False,
    log=None,
):
    """A9's loop, single process, CPU fp32, no autocast, logging every step.

    rows: list of (input_ids, labels) lists (e.g. from pretrain_row). Returns the logged losses
    (`loss.item() * accumulation_steps` of each micro-batch). If `log` is a list, one dict per step
    (epoch, step, iters, loss, logits_loss, aux_loss, lr) is appended to it.
    """
    setup_seed(seed)
    if model is None:
        config = config or MiniMind3Config()
        model = init_like_minimind3(MiniMind3Reference(config), seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    n = len(rows)
    iters = (n + batch_size - 1) // batch_size
    losses = []
    for epoch in range(epochs):
        setup_seed(seed + epoch)
        order = torch.randperm(n).tolist()
        last_step = 0
        for step in range(1, iters + 1):
            batch = [rows[i] for i in order[(step - 1) * batch_size : step * batch_size]]
            input_ids = torch.tensor([r[0] for r in batch], dtype=torch.long)
            labels = torch.tensor([r[1] for r in batch], dtype=torch.long)
            cur_lr = minimind3_lr(epoch * iters + step, epochs * iters, lr)
            for g in optimizer.param_groups:
                g["lr"] = cur_lr
            _, aux, ce = model(input_ids, labels=labels)
            loss = (ce + aux) / accumulation_steps
            loss.backward()
            if step % accumulation_steps == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total = loss.item() * accumulation_steps
            losses.append(total)
            rec = dict(
                epoch=epoch + 1, step=step, iters=iters, loss=total, logits_loss=total - aux.item(),
                aux_loss=aux.item(), lr=cur_lr,
            )
            if log is not None:
                log.append(rec)
            if verbose:
                print(
                    f"Epoch:[{epoch + 1}/{epochs}]({step}/{iters}), loss: {total:.4f}, "
                    f"logits_loss: {total - aux.item():.4f}, aux_loss: {aux.item():.4f}, lr: {cur_lr:.8f}"
                )
            last_step = step
        if last_step > 0 and last_step % accumulation_steps != 0:  # end-of-epoch flush
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return losses
