"""Loading a trained model to sample text from: a run directory or a bare weights file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Optional

import torch

from .config import LMConfig, RunConfig
from .errors import CheckpointError
from .interop import load_state, to_classic
from .models.classic import MiniMindLM
from .storage.checkpoint import apply_weights, load_resume_state, load_weights, weights_path
from .storage.run_store import RunStore


def infer_config(state: dict[str, torch.Tensor], n_heads: int = 8, **given) -> LMConfig:
    """The LMConfig a classic state_dict was built with; what shapes cannot tell comes from `given`."""
    try:
        vocab_size, dim = state["tok_embeddings.weight"].shape
        n_layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k)))
        kv_rows = state["layers.0.attention.wk.weight"].shape[0]
    except (KeyError, ValueError):
        raise CheckpointError("these weights are not a MiniMind classic state_dict "
                              "(no tok_embeddings.weight / layers.0.attention.wk.weight)") from None
    use_moe = any(".feed_forward.experts." in k for k in state)
    if use_moe:
        w1 = state["layers.0.feed_forward.experts.0.w1.weight"]
        experts = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.0\.feed_forward\.experts\.(\d+)\.", k)))
        moe = {"n_routed_experts": experts,
               "n_shared_experts": "layers.0.feed_forward.shared_experts.w1.weight" in state}
    else:
        w1 = state["layers.0.feed_forward.w1.weight"]
        moe = {}
    head_dim = dim // n_heads
    values: dict = dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=max(kv_rows // max(head_dim, 1), 1),
                  vocab_size=vocab_size, hidden_dim=w1.shape[0], use_moe=use_moe, **moe)
    values.update(given)
    return LMConfig(**values)


def load_run_weights(run_dir: str | os.PathLike) -> tuple[dict, RunConfig]:
    """A run's newest weights (fp32 from its resume state, else its fp16 weights file) and its config."""
    store = RunStore.open(run_dir)
    run_config = RunConfig.from_dict(store.read_config())
    if store.resume_path.is_file():
        return load_resume_state(store.resume_path)["model"], run_config
    train, model = run_config.train, run_config.model
    return load_weights(weights_path(train.save_dir, train.save_weight, model.dim, model.use_moe)), run_config


def load_model(source: str | os.PathLike, n_heads: int = 8, device: str = "cpu") -> tuple[MiniMindLM, RunConfig | None]:
    """A model in eval mode from a run directory (its own config) or a weights file (shape-inferred)."""
    path = Path(source)
    if path.is_dir():
        state, run_config = load_run_weights(path)
        config = run_config.model
    else:
        run_config = None
        state = to_classic(load_state(path), n_heads)  # classic or MiniMind2 layout
        config = infer_config(state, n_heads=n_heads)
    model = MiniMindLM(config)
    apply_weights(model, state, str(path))
    return model.to(device).eval(), run_config


def stream_text(model: MiniMindLM, tokenizer, prompt: str, max_new_tokens: int = 128, temperature: float = 0.75,
                top_p: float = 0.9, repetition_penalty: float = 1.0, seed: Optional[int] = None) -> Iterator[str]:
    """Text pieces as they are generated from `prompt` (bos prepended, as in pretraining)."""
    ids = tokenizer(f"{tokenizer.bos_token}{prompt}", add_special_tokens=False).input_ids
    generator = torch.Generator(device=model.output.weight.device).manual_seed(seed) if seed is not None else None
    produced: list[int] = []
    shown = ""
    for token in model.generate_stream([ids], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                       repetition_penalty=repetition_penalty, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id, generator=generator):
        tok = int(token[0])
        if tok == tokenizer.eos_token_id:
            break
        produced.append(tok)
        text = tokenizer.decode(produced, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(shown):]
            shown = text
