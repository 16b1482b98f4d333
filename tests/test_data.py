import json

import pytest
import torch

from minimind.data import JsonlTexts, PretrainDataset
from minimind.errors import DataError
from tests.conftest import ASSETS, needs_assets
from tests.helpers import write_jsonl


def test_known_text_gives_classic_x_y_mask(tmp_path, shipped_tokenizer):
    tok = shipped_tokenizer
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps({"text": "hello world"})])
    ds = PretrainDataset(path, tok, max_length=16)
    X, Y, mask = ds[0]
    ids = tok("<s>hello world</s>").input_ids
    n = len(ids)
    full = ids + [0] * (16 - n)
    assert X.tolist() == full[:-1] and Y.tolist() == full[1:]
    assert mask.tolist() == [1] * (n - 1) + [0] * (16 - n)
    assert X.dtype == Y.dtype == mask.dtype == torch.int64 and len(X) == 15
    assert X[0].item() == 1 and Y[n - 2].item() == 2  # bos first, eos is the last target


def test_too_long_text_is_truncated_and_loses_eos(tmp_path, shipped_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps({"text": "word " * 200})])
    X, Y, mask = PretrainDataset(path, shipped_tokenizer, max_length=32)[0]
    assert mask.sum().item() == 31 and 2 not in Y.tolist()


def test_matches_the_hf_call_on_every_kind_of_text(tmp_path, shipped_tokenizer):
    tok = shipped_tokenizer
    texts = ["", "短的中文。", "mixed 中文 and English, numbers 12345!", "x" * 3000, "天气很好。" * 900,
             "a </s> literal <s> special", "word " * 5000 + "tail"]
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts])
    ds = PretrainDataset(path, tok, max_length=40)
    for t in texts:
        expected = tok(f"<s>{t}</s>", max_length=40, padding="max_length", truncation=True).input_ids
        assert ds.encode(t) == expected, t[:20]


def test_very_long_lines_are_tokenised_from_a_prefix_exactly(tmp_path, shipped_tokenizer):
    tok = shipped_tokenizer
    unit = "The quick brown fox jumps over the lazy dog. 风吹过山谷。"
    text = (unit * 10_000)[:300_000]
    path = write_jsonl(tmp_path / "long.jsonl", [json.dumps({"text": text}, ensure_ascii=False)])
    ds = PretrainDataset(path, tok, max_length=512)
    full = f"<s>{text}</s>"
    assert ds._encode_prefix(full, 512) is not None  # the prefix path is taken...
    X, Y, mask = ds[0]  # ...and gives what tokenising all of it gives
    expected = tok(full, max_length=512, padding="max_length", truncation=True).input_ids
    assert X.tolist() == expected[:-1] and Y.tolist() == expected[1:]
    # a 10 MB single line works the same way (tokenising it whole would take many seconds)
    big = (unit * 200_000)[:10_000_000]
    path = write_jsonl(tmp_path / "big.jsonl", [json.dumps({"text": big}, ensure_ascii=False)])
    ds = PretrainDataset(path, tok, max_length=512)
    assert ds._encode_prefix(f"<s>{big}</s>", 512) is not None
    assert ds[0][0].tolist() == expected[:-1]


def test_one_long_word_falls_back_to_full_tokenisation(tmp_path, shipped_tokenizer):
    text = "风" * 40_000  # a single pre-tokenizer word: a prefix could merge differently at the cut
    path = write_jsonl(tmp_path / "w.jsonl", [json.dumps({"text": text}, ensure_ascii=False)])
    ds = PretrainDataset(path, shipped_tokenizer, max_length=64)
    assert ds._encode_prefix(f"<s>{text}</s>", ds.max_length) is None
    expected = shipped_tokenizer(f"<s>{text}</s>", max_length=64, truncation=True).input_ids
    assert ds[0][0].tolist() == expected[:-1]


def test_blank_lines_and_bom_are_skipped_line_numbers_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [b"\xef\xbb\xbf" + b'{"text": "a"}', b"", b"\r", b'{"text": "b"}', b"  "])
    texts = JsonlTexts(path)
    assert len(texts) == 2 and [texts.text(0), texts.text(1)] == ["a", "b"]
    assert texts.line_numbers.tolist() == [1, 4]


def test_last_line_without_newline(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}')
    assert [JsonlTexts(path).text(i) for i in range(2)] == ["a", "b"]


@pytest.mark.parametrize("lines,words", [
    ([b'{"text": "ok"}', b'{"text": "broken'], ":2: malformed JSON"),
    ([b'{"text": "ok"}', b'{"txt": "x"}'], ':2: no "text" field'),
    ([b'["text"]'], ':1: no "text" field'),
    ([b'{"text": 5}'], ':1: "text" is a int, not a string'),
    ([b'{"text": null}'], ':1: "text" is a NoneType, not a string'),
    ([b'{"text": "ok"}', b'', b'{"text": "\xff\xfe bad"}'], ":3: not valid UTF-8"),
])
def test_bad_lines_name_file_line_and_problem(tmp_path, lines, words):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    texts = JsonlTexts(path)
    with pytest.raises(DataError) as e:
        texts.validate()
    assert str(path) in str(e.value) and words in str(e.value)


def test_bad_files(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n  \n")
    with pytest.raises(DataError, match="is empty"):
        JsonlTexts(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="only blank lines"):
        JsonlTexts(tmp_path / "blank.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        JsonlTexts(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        JsonlTexts(tmp_path)


def test_index_does_not_hold_the_text(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps({"text": "x" * 1000})] * 500)
    texts = JsonlTexts(path)
    held = texts.starts.nbytes + texts.ends.nbytes + texts.line_numbers.nbytes
    assert held <= 24 * 500 < path.stat().st_size / 20


def test_works_in_dataloader_workers(tmp_path, shipped_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps({"text": f"doc {i}"}) for i in range(6)])
    ds = PretrainDataset(path, shipped_tokenizer, max_length=8)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (3, 7)
    assert torch.equal(batches[1][0][2], ds[5][0])


@needs_assets
def test_minimind_tokenizer_and_toy_data(minimind_tokenizer):
    ds = PretrainDataset(ASSETS / "toydata" / "pretrain_data.jsonl", minimind_tokenizer, max_length=512)
    assert len(ds) == 2
    (X0, Y0, m0), (X1, Y1, m1) = ds[0], ds[1]
    assert X0[:4].tolist() == [1, 46, 46, 47] and X1[:4].tolist() == [1, 5349, 1619, 2875]
    assert m0.sum().item() == 186 and m1.sum().item() == 281
    assert Y0[:3].tolist() == [46, 46, 47] and Y1[:3].tolist() == [5349, 1619, 2875]
