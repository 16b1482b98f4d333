import json

import pytest
from transformers import AutoTokenizer

from minimind.errors import MiniMindError
from minimind.families.classic import CLASSIC
from minimind.tokenizer import load_tokenizer, train_tokenizer
from tests.conftest import ASSETS, needs_assets
from tests.helpers import TOYDATA

SHIPPED_DIR = CLASSIC.tokenizer_dir


def test_shipped_tokenizer_layout():
    tok = AutoTokenizer.from_pretrained(str(SHIPPED_DIR))  # plain transformers, no help from us
    assert len(tok) == 6400
    assert (tok.unk_token, tok.bos_token, tok.eos_token, tok.pad_token) == ("<unk>", "<s>", "</s>", "<unk>")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    spec = json.loads((SHIPPED_DIR / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE" and spec["normalizer"] is None and spec["post_processor"] is None
    assert spec["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                     "use_regex": True}
    text = "Hello, 世界! Tokenizers are byte-level: 🙂"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text and ids[0] != 1  # specials are added as text, never automatically
    assert tok(f"<s>{text}</s>").input_ids == [1] + ids + [2]


def test_shipped_tokenizer_is_reproducible_from_the_toy_corpus(tmp_path):
    texts = [json.loads(line)["text"] for line in TOYDATA.read_text(encoding="utf-8").splitlines()]
    assert train_tokenizer(texts, tmp_path, 6400) == 6400
    assert (tmp_path / "tokenizer.json").read_bytes() == (SHIPPED_DIR / "tokenizer.json").read_bytes()


def test_default_and_broken_folders(tmp_path):
    assert len(load_tokenizer(SHIPPED_DIR)) == 6400
    with pytest.raises(MiniMindError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(MiniMindError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(MiniMindError, match="could not be loaded"):
        load_tokenizer(tmp_path)


@needs_assets
def test_minimind_tokenizer_loads(minimind_tokenizer):
    tok = minimind_tokenizer
    assert len(tok) == 6400 and (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert load_tokenizer(ASSETS / "tokenizer").decode(tok("你好 world").input_ids) == "你好 world"
