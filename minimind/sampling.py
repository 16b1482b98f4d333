"""Text out of a model: a prompt continued (as in pretraining, bos first), streamed piece by piece."""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch

from .config import SamplingConfig


def stream_ids(model: Any, tokenizer: Any, ids: Sequence[int], sampling: SamplingConfig,
               generator: Optional[torch.Generator] = None, stop: Optional[Any] = None) -> Iterator[str]:
    """Decoded text pieces as tokens are sampled after `ids`, until eos or max_new_tokens; `stop()`
    returning True ends it early (a Ctrl-C in a chat). A piece is yielded once its bytes form whole
    characters."""
    produced: list[int] = []
    shown = ""
    for token in model.generate_stream([list(ids)], max_new_tokens=sampling.max_new_tokens,
                                       temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                       repetition_penalty=sampling.repetition_penalty,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                       generator=generator):
        tok = int(token[0])
        if tok == tokenizer.eos_token_id or (stop is not None and stop()):
            break
        produced.append(tok)
        text = tokenizer.decode(produced, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            yield text[len(shown):]
            shown = text


def stream_text(model: Any, tokenizer: Any, prompt: str, sampling: SamplingConfig = SamplingConfig(),
                seed: Optional[int] = None) -> Iterator[str]:
    """Text pieces continuing `prompt` (bos prepended, as the pretraining rows begin)."""
    ids = tokenizer(f"{tokenizer.bos_token}{prompt}", add_special_tokens=False).input_ids
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    return stream_ids(model, tokenizer, ids, sampling, generator)
