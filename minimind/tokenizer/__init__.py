"""The tokenizer: MiniMind's byte-level BPE layout (6400 entries, <unk>=0=pad, <s>=1, </s>=2).

The project ships its own, trained with `train_tokenizer` on the project's toy corpus; any local
Hugging Face tokenizer folder (MiniMind's own included) loads through `load_tokenizer(path)`.
Everything loads from local files: no hub access, no remote code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional

from ..errors import MiniMindError

SHIPPED_DIR = Path(__file__).parent
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2: unk doubles as pad

# What AutoTokenizer needs to rebuild MiniMind's tokenizer from tokenizer.json alone.
TOKENIZER_CONFIG = {
    "add_bos_token": False,
    "add_eos_token": False,
    "add_prefix_space": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<unk>",
    "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 32768,
    "tokenizer_class": "PreTrainedTokenizerFast",
}


def load_tokenizer(path: Optional[str | os.PathLike] = None):
    """A `PreTrainedTokenizerFast` from a local folder; None means the shipped tokenizer."""
    folder = Path(path) if path else SHIPPED_DIR
    if not folder.is_dir():
        raise MiniMindError(f"tokenizer folder {folder} does not exist: give a folder with tokenizer.json "
                            "(or leave --tokenizer empty for the shipped one)")
    if not (folder / "tokenizer.json").is_file():
        raise MiniMindError(f"tokenizer folder {folder} has no tokenizer.json: give a Hugging Face tokenizer "
                            "folder, or train one with `minimind tokenizer train`")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # safe with DataLoader worker processes
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a broken folder
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MiniMindError(f"tokenizer folder {folder} could not be loaded ({first_line}): "
                            "check tokenizer.json / tokenizer_config.json") from None
    if tok.pad_token_id is None:
        raise MiniMindError(f"tokenizer in {folder} has no pad token: set pad_token in tokenizer_config.json")
    if tok.bos_token is None or tok.eos_token is None:
        raise MiniMindError(f"tokenizer in {folder} needs bos_token and eos_token in tokenizer_config.json")
    return tok


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 6400) -> int:
    """Train MiniMind's byte-level BPE on `texts`, save it to `out_dir`, return the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise MiniMindError(f"vocab size {vocab_size} is too small: byte-level BPE needs at least "
                            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + 3 special tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.decoder = decoders.ByteLevel()
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == i, "special tokens must take ids 0, 1, 2"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n", encoding="utf-8")
    return tokenizer.get_vocab_size()
