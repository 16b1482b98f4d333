"""Weights in and out: MiniMind classic <-> MiniMind2 layout, and a Hugging Face Llama export.

MiniMind2 (2025-04 on) renames the keys Hugging Face style and uses rotate-half RoPE, which pairs
dimension j with j + head_dim/2 instead of classic's adjacent (2j, 2j+1). Permuting the rows of
wq and wk inside each head to [even dims, odd dims] maps one convention onto the other exactly:
the same pairs rotate by the same frequencies, and q.k is unchanged because q and k are permuted
alike. A Llama checkpoint is the MiniMind2 layout with a Llama config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .families import LMConfig, MiniMind3Config
from .errors import CheckpointError
from .storage.atomic import atomic_write, atomic_write_bytes, atomic_write_json
from .storage.checkpoint import atomic_torch_save, load_weights

# classic suffix -> MiniMind2 / Llama suffix, inside layers.{i}.
_LAYER_KEYS = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_FFN_KEYS = {"w1.weight": "gate_proj.weight", "w2.weight": "down_proj.weight", "w3.weight": "up_proj.weight"}
_TOP_KEYS = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}


def detect_layout(state: dict) -> str:
    if "tok_embeddings.weight" in state:
        return "classic"
    if "model.embed_tokens.weight" in state:
        if any(".q_norm." in k or ".k_norm." in k for k in state):
            raise CheckpointError("these are MiniMind-3 weights (q_norm/k_norm layers): use --arch minimind3 "
                                  "(the architectures differ; MiniMind-3 weights cannot become classic ones)")
        return "minimind2"
    raise CheckpointError("unknown weights layout: expected MiniMind classic keys (tok_embeddings.weight, "
                          "layers.0.attention.wq.weight ...) or MiniMind2 keys (model.embed_tokens.weight ...)")


def _head_permute(weight: torch.Tensor, head_dim: int, to_half: bool) -> torch.Tensor:
    """Rows of each head: adjacent pairs -> [evens, odds] (to_half) or back."""
    rows, cols = weight.shape
    if rows % head_dim or head_dim % 2:
        raise CheckpointError(f"a projection with {rows} rows does not split into heads of {head_dim}: "
                              "pass the model's --n-heads")
    heads = rows // head_dim
    if to_half:
        return weight.reshape(heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()
    return weight.reshape(heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()


def classic_to_minimind2(state: dict, head_dim: int) -> dict:
    out = {}
    for key, value in state.items():
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
        else:
            m = re.fullmatch(r"layers\.(\d+)\.(.+)", key)
            if not m:
                raise CheckpointError(f"unexpected key {key} in classic weights")
            layer, rest = m.groups()
            out[f"model.layers.{layer}.{_to_v2_suffix(rest)}"] = (
                _head_permute(value, head_dim, True) if rest in ("attention.wq.weight", "attention.wk.weight") else value)
    return out


def minimind2_to_classic(state: dict, head_dim: int) -> dict:
    inverse_layer = {v: k for k, v in _LAYER_KEYS.items()}
    inverse_ffn = {v: k for k, v in _FFN_KEYS.items()}
    inverse_top = {v: k for k, v in _TOP_KEYS.items()}
    out = {}
    for key, value in state.items():
        if key in inverse_top:
            out[inverse_top[key]] = value
        else:
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
            if not m:
                raise CheckpointError(f"unexpected key {key} in MiniMind2 weights")
            layer, rest = m.groups()
            if rest in inverse_layer:
                classic = inverse_layer[rest]
                if rest in ("self_attn.q_proj.weight", "self_attn.k_proj.weight"):
                    value = _head_permute(value, head_dim, False)
            else:
                classic = _mlp_to_classic(rest, inverse_ffn)
            out[f"layers.{layer}.{classic}"] = value
    out.setdefault("output.weight", out["tok_embeddings.weight"])  # tied: a file may hold only one of them
    out.setdefault("tok_embeddings.weight", out["output.weight"])
    return out


def _to_v2_suffix(rest: str) -> str:
    if rest in _LAYER_KEYS:
        return _LAYER_KEYS[rest]
    m = re.fullmatch(r"feed_forward\.(?:(experts|shared_experts)\.(?:(\d+)\.)?)?(w[123]\.weight|gate\.weight)", rest)
    if not m:
        raise CheckpointError(f"unexpected layer key {rest} in classic weights")
    group, index, leaf = m.groups()
    if leaf == "gate.weight":
        return "mlp.gate.weight"
    leaf = _FFN_KEYS[leaf]
    if group == "experts":
        return f"mlp.experts.{index}.{leaf}"
    if group == "shared_experts":  # classic has one shared expert; MiniMind2 keeps a list of them
        return f"mlp.shared_experts.0.{leaf}"
    return f"mlp.{leaf}"


def _mlp_to_classic(rest: str, inverse_ffn: dict) -> str:
    m = re.fullmatch(r"mlp\.(?:(experts|shared_experts)\.(\d+)\.)?(\w+_proj\.weight|gate\.weight)", rest)
    if not m:
        raise CheckpointError(f"unexpected layer key {rest} in MiniMind2 weights")
    group, index, leaf = m.groups()
    if leaf == "gate.weight":
        return "feed_forward.gate.weight"
    leaf = inverse_ffn[leaf]
    if group == "experts":
        return f"feed_forward.experts.{index}.{leaf}"
    if group == "shared_experts":
        if index != "0":
            raise CheckpointError("these MiniMind2 weights have more than one shared expert: classic has one")
        return f"feed_forward.shared_experts.{leaf}"
    return f"feed_forward.{leaf}"


def to_classic(state: dict, n_heads: int) -> dict:
    """Weights in either layout as classic weights (MiniMind2 detected from its keys)."""
    if detect_layout(state) == "classic":
        return state
    dim = state["model.embed_tokens.weight"].shape[1]
    return minimind2_to_classic(state, dim // n_heads)


def save_state(state: dict, path: str | os.PathLike) -> None:
    """.safetensors or .pth (torch.save) by extension, written atomically."""
    path = Path(path)
    if path.suffix == ".safetensors":
        # safetensors refuses tensors that share memory (tied embeddings): store separate copies.
        # format=pt: what transformers expects of a PyTorch safetensors file.
        tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}
        atomic_write(path, lambda f: f.write(save(tensors, metadata={"format": "pt"})))
    else:
        atomic_torch_save({k: v.detach().contiguous() for k, v in state.items()}, path)


def load_state(path: str | os.PathLike) -> dict:
    """A weights file, .safetensors or .pth (the latter only with torch.load(weights_only=True))."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"weights file {path} is not valid safetensors ({e}): re-export it") from None
    return load_weights(path)


# ---- Hugging Face export ---------------------------------------------------------------------------

def llama_checkpoint(config: LMConfig, classic_state: dict, tokenizer) -> tuple[dict, dict]:
    """A classic model as Hugging Face Llama: (config.json, tensors). Llama has no experts."""
    if config.use_moe:
        raise CheckpointError("classic MoE models are not supported for the Hugging Face Llama format (Llama has no "
                              "experts): export a dense model, or keep the MoE model in classic/MiniMind2 layout")
    state = classic_to_minimind2(classic_state, config.head_dim)
    state.pop("lm_head.weight")  # tied to model.embed_tokens.weight (tie_word_embeddings)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        **_common_hf(tokenizer),
    }, state


def qwen3_checkpoint(config: MiniMind3Config, state: dict, tokenizer) -> tuple[dict, dict]:
    """A MiniMind-3 model as Hugging Face Qwen3 (dense) or Qwen3-MoE: the same keys and arithmetic
    (MiniMind-3 says so and it is tested here); transformers >= 5 stores each layer's experts fused."""
    import transformers

    state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied to model.embed_tokens.weight
    hf = {
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": _yarn_scaling(config),
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        **_common_hf(tokenizer),
    }
    if not config.use_moe:
        return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "use_sliding_window": False,
                "sliding_window": None, **hf}, state
    hf.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", num_experts=config.num_experts,
              num_experts_per_tok=config.num_experts_per_tok, moe_intermediate_size=config.moe_intermediate,
              norm_topk_prob=config.norm_topk_prob, router_aux_loss_coef=config.router_aux_loss_coef,
              decoder_sparse_step=1, mlp_only_layers=[], output_router_logits=False)
    if int(transformers.__version__.split(".")[0]) >= 5:
        state = _fuse_experts(state, config)
    return hf, state


def _yarn_scaling(config: MiniMind3Config) -> Optional[dict]:
    """MiniMind-3's YaRN, when its model uses it, in Hugging Face's terms (the same ramp and factors;
    MiniMind's own converter writes null and so loses it)."""
    from .models.minimind3 import YARN

    if not (config.inference_rope_scaling and config.max_position_embeddings / YARN["original_max_position_embeddings"] > 1):
        return None
    return {"rope_type": "yarn", **YARN}


def _fuse_experts(state: dict, config: MiniMind3Config) -> dict:
    """transformers 5's Qwen3-MoE layout: per layer `mlp.experts.gate_up_proj` [E, 2I, H] and
    `mlp.experts.down_proj` [E, H, I]."""
    out = {k: v for k, v in state.items() if ".mlp.experts." not in k}
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}.mlp.experts"
        stacked = {name: torch.stack([state[f"{prefix}.{e}.{name}.weight"] for e in range(config.num_experts)])
                   for name in ("gate_proj", "up_proj", "down_proj")}
        out[f"{prefix}.gate_up_proj"] = torch.cat([stacked["gate_proj"], stacked["up_proj"]], dim=1)
        out[f"{prefix}.down_proj"] = stacked["down_proj"]
    return out


def unfuse_experts(state: dict) -> dict:
    """MiniMind-3's per-expert keys from transformers 5's fused Qwen3-MoE layout (the inverse of
    _fuse_experts), so a Hugging Face MoE export loads back; other states pass through."""
    fused = [k for k in state if k.endswith(".mlp.experts.gate_up_proj")]
    if not fused:
        return state
    out = {k: v for k, v in state.items() if not k.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj"))}
    for key in fused:
        prefix = key[: -len(".gate_up_proj")]
        gate, up = state[key].chunk(2, dim=1)
        down = state.get(f"{prefix}.down_proj")
        if down is None or down.shape[0] != gate.shape[0]:
            raise CheckpointError(f"{prefix}: gate_up_proj without a matching down_proj: the file is incomplete")
        for e in range(gate.shape[0]):
            out[f"{prefix}.{e}.gate_proj.weight"] = gate[e].contiguous()
            out[f"{prefix}.{e}.up_proj.weight"] = up[e].contiguous()
            out[f"{prefix}.{e}.down_proj.weight"] = down[e].contiguous()
    return out


def _common_hf(tokenizer) -> dict:
    return {"tie_word_embeddings": True, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "use_cache": True,
            "torch_dtype": "float32"}


def write_hf(hf_config: dict, tensors: dict, tokenizer, out_dir: str | os.PathLike,
             tokenizer_dir: Optional[str | os.PathLike] = None) -> Path:
    """A Hugging Face checkpoint folder any tool that knows the architecture loads without remote code:
    config.json, generation_config.json, model.safetensors (fp32) and the tokenizer files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_state({k: v.float() for k, v in tensors.items()}, out / "model.safetensors")
    atomic_write_json(out / "config.json", hf_config)
    atomic_write_json(out / "generation_config.json", {
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id})
    source = Path(tokenizer_dir) if tokenizer_dir else Path(tokenizer.name_or_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            atomic_write_bytes(out / name, (source / name).read_bytes())
    return out


def export_hf(family, config, state: dict, tokenizer, out_dir: str | os.PathLike,
              tokenizer_dir: Optional[str | os.PathLike] = None) -> Path:
    """Write `state` (in `family`'s layout) as that family's Hugging Face checkpoint."""
    hf_config, tensors = family.hf_checkpoint(config, state, tokenizer)
    return write_hf(hf_config, tensors, tokenizer, out_dir, tokenizer_dir)
