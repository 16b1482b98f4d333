"""GGUF export: one file that llama.cpp loads and runs, written with the `gguf` package's GGUFWriter
(the writer llama.cpp maintains and its own converter uses).

- classic (dense) -> llama.cpp's "llama". Classic RoPE rotates adjacent pairs (2j, 2j+1), which is what
  llama.cpp's llama computes (rope type NORM; its Hugging Face converter un-permutes rotate-half q/k rows
  back to this order), so classic wq/wk rows go in as they are.
- MiniMind-3 -> "qwen3" (dense) or "qwen3moe": the same arithmetic (q/k norms, rotate-half RoPE, softmax
  top-k routing renormalised over the chosen experts, no shared expert).
- classic MoE (softmax top-k plus an always-on shared expert) has no llama.cpp architecture shown to
  compute the same: refused.

The tokenizer goes in as llama.cpp's "gpt2" byte-level BPE with the "gpt-2" pre-tokenizer: our
tokenizer.json files are ByteLevel with GPT-2's split regex (llama.cpp's converter does not know their
hash, so it cannot pick this itself). Weight layout and metadata follow llama.cpp's convert_hf_to_gguf.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import gguf
import torch

from .errors import CheckpointError, MiniMindError
from .storage.atomic import atomic_write_path

OUTTYPES = ("f32", "f16")


@dataclass
class GgufSummary:
    path: Path
    arch: str  # llama.cpp's architecture name
    outtype: str
    n_tensors: int
    size: int  # bytes


def export_gguf(family: Any, config: Any, state: dict, tokenizer: Any, out_path: str | os.PathLike,
                outtype: str = "f32", tokenizer_dir: Optional[str | os.PathLike] = None) -> GgufSummary:
    """Write `state` (in `family`'s layout) and `tokenizer` as a GGUF file at `out_path`, atomically.
    outtype f32: every tensor in f32; f16: matrices in f16, norms and the MoE router in f32 (as llama.cpp's
    converter does). `tokenizer_dir`: the folder the tokenizer came from (merges, chat template)."""
    if outtype not in OUTTYPES:
        raise MiniMindError(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    arch, tensors, add_hparams = family.gguf_plan(config, state)
    vocab_size = tensors["token_embd.weight"].shape[0]
    tokens, token_types = _vocab(tokenizer, vocab_size)
    special = gguf.SpecialVocab(Path(tokenizer_dir or tokenizer.name_or_path), load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise CheckpointError(f"no BPE merges in {tokenizer_dir or tokenizer.name_or_path}/tokenizer.json: "
                              "give the tokenizer folder the model was trained with (--tokenizer)")
    # The loaded tokenizer is what `minimind generate` uses: its special ids and behaviour win.
    for kind in ("bos", "eos", "unk", "pad"):
        if (token_id := getattr(tokenizer, f"{kind}_token_id")) is not None:
            special.special_token_ids[kind] = token_id
    with_special, plain = tokenizer.encode("a"), tokenizer.encode("a", add_special_tokens=False)
    special.add_special_token["bos"] = with_special[:1] != plain[:1]  # ours: False (MiniMind adds no bos)
    special.add_special_token["eos"] = with_special[-1:] != plain[-1:]
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    f16 = outtype == "f16"

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        try:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(out.stem)
            add_hparams(writer)
            writer.add_vocab_size(vocab_size)
            writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre("gpt-2")
            writer.add_token_list(tokens)
            writer.add_token_types(token_types)
            special.add_to_gguf(writer, quiet=True)
            # The MoE router stays f32, as llama.cpp's converter keeps it.
            router = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.FFN_GATE_INP].split("{bid}")[-1] + ".weight"
            for name, tensor in tensors.items():
                data = tensor.detach().float().cpu().numpy()
                if f16 and data.ndim >= 2 and not name.endswith(("_norm.weight", router)):
                    writer.add_tensor(name, data.astype("float16"), raw_dtype=gguf.GGMLQuantizationType.F16)
                else:
                    writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.F32)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    atomic_write_path(out, write)
    return GgufSummary(out, gguf.MODEL_ARCH_NAMES[arch], outtype, len(tensors), out.stat().st_size)


# ---- per family: (architecture, tensors under llama.cpp's names, hyper-parameter writer) -------------

GgufPlan = tuple[Any, dict, Callable[[Any], None]]


def classic_plan(config: Any, state: dict) -> GgufPlan:
    if config.use_moe:
        raise CheckpointError("classic MoE models are not supported for GGUF (llama.cpp has no architecture with "
                              "softmax top-k routing plus an always-on shared expert): export a dense model, or keep "
                              "the MoE model in classic/MiniMind2 layout")
    arch = gguf.MODEL_ARCH.LLAMA

    def add_hparams(w: Any) -> None:
        w.add_context_length(config.max_seq_len)
        w.add_embedding_length(config.dim)
        w.add_block_count(config.n_layers)
        w.add_feed_forward_length(config.ffn_hidden_dim)
        w.add_head_count(config.n_heads)
        w.add_head_count_kv(config.n_kv_heads)
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
        w.add_rope_dimension_count(config.head_dim)
        w.add_rope_freq_base(config.rope_theta)
        w.add_layer_norm_rms_eps(config.norm_eps)

    return arch, _rename(arch, config.n_layers, state, "tok_embeddings.weight", "output.weight"), add_hparams


def minimind3_plan(config: Any, state: dict) -> GgufPlan:
    if config.inference_rope_scaling:
        raise CheckpointError("this MiniMind-3 model uses YaRN RoPE scaling (inference_rope_scaling), which the GGUF "
                              "export does not write: export its weights file (plain RoPE, as it was trained)")
    if config.use_moe and not config.norm_topk_prob:
        raise CheckpointError("MiniMind-3 MoE with norm_topk_prob off is not supported for GGUF (llama.cpp's qwen3moe "
                              "always renormalises the top-k weights): export a model trained with it on")
    arch = gguf.MODEL_ARCH.QWEN3MOE if config.use_moe else gguf.MODEL_ARCH.QWEN3
    state = dict(state)
    if config.use_moe:  # llama.cpp keeps each layer's experts in one 3-D tensor: (experts, rows, cols)
        for layer in range(config.num_hidden_layers):
            prefix = f"model.layers.{layer}.mlp.experts"
            for proj in ("gate_proj", "up_proj", "down_proj"):
                state[f"{prefix}.{proj}.weight"] = torch.stack(
                    [state.pop(f"{prefix}.{e}.{proj}.weight") for e in range(config.num_experts)])

    def add_hparams(w: Any) -> None:
        w.add_context_length(config.max_position_embeddings)
        w.add_embedding_length(config.hidden_size)
        w.add_block_count(config.num_hidden_layers)
        w.add_feed_forward_length(config.intermediate)
        w.add_head_count(config.num_attention_heads)
        w.add_head_count_kv(config.num_key_value_heads)
        w.add_key_length(config.head_dim)
        w.add_value_length(config.head_dim)
        w.add_rope_freq_base(config.rope_theta)
        w.add_layer_norm_rms_eps(config.rms_norm_eps)
        if config.use_moe:
            w.add_expert_count(config.num_experts)
            w.add_expert_used_count(config.num_experts_per_tok)
            w.add_expert_feed_forward_length(config.moe_intermediate)

    return arch, _rename(arch, config.num_hidden_layers, state, "model.embed_tokens.weight", "lm_head.weight"), add_hparams


def _rename(arch: Any, n_layers: int, state: dict, embedding: str, head: str) -> dict:
    """Our keys -> llama.cpp's tensor names (gguf's own map knows both layouts). A head tied to the
    embedding is left out: llama.cpp then reuses token_embd, as for Hugging Face's tied models."""
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    out = {}
    for key, tensor in state.items():
        if key == head and torch.equal(tensor, state[embedding]):
            continue
        name = name_map.get_name(key, try_suffixes=(".weight",))
        if name is None:
            raise CheckpointError(f"unexpected key {key} in the weights: llama.cpp's "
                                  f"{gguf.MODEL_ARCH_NAMES[arch]} has no such tensor")
        out[name] = tensor
    return out


def _vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order with llama.cpp's token types, as convert_hf_to_gguf.py's get_vocab_base: special
    added tokens are CONTROL, other added tokens (<think>, <tool_call> ...) USER_DEFINED, matched whole like
    Hugging Face matches them, rows the tokenizer does not fill UNUSED."""
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    pre, model = definition.get("pre_tokenizer") or {}, definition.get("model") or {}
    if (model.get("type") != "BPE" or model.get("byte_fallback") or definition.get("normalizer") is not None
            or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True) or pre.get("add_prefix_space")):
        raise CheckpointError(f"the tokenizer in {tokenizer.name_or_path} is not byte-level BPE with GPT-2's split "
                              "(the shipped tokenizers' kind), so llama.cpp would tokenize differently: export with "
                              "--format hf instead")
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise CheckpointError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} "
                              "embedding rows: give the tokenizer the model was trained with (--tokenizer)")
    reverse = {i: token for token, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []  # gguf.TokenType values
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types
