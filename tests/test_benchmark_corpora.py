"""The speed benchmarks' real corpora are cut from Debian packages by benchmarks/debian_corpus.py;
train_throughput.py prints how much of MiniMind's padded rows a corpus fills, the figure that sets
our ratio to MiniMind's loop. Both are checked here on small hand-made inputs."""

import json
import sys

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import debian_corpus
        import train_throughput
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return debian_corpus, train_throughput


def test_sections_are_cut_at_numbered_headings_and_short_fragments_dropped(benchmarks):
    corpus, _ = benchmarks
    body = "words " * 50
    text = f"Table of contents\n1.1. Intro\n\n1.1.\u00a0Intro\n{body}\n\n{body}\n2.3.\u00a0Short\ntiny\n" \
           f"Chapter 3.\u00a0Three\n{body}\n"
    docs = corpus.sections(text)
    assert len(docs) == 2  # the contents line and "2.3. Short" are under 200 characters
    assert docs[0].startswith("1.1. Intro words words") and docs[0].count("\n") == 1  # lines re-flowed, paragraphs apart
    assert docs[1].startswith("Chapter 3.")


def test_fortunes_split_at_percent_lines_keep_long_cookies_and_take_every_fifth(benchmarks, tmp_path):
    corpus, _ = benchmarks
    folder = tmp_path / "usr/share/games/fortunes"
    folder.mkdir(parents=True)
    cookies = [f"cookie {i}\n" + "a line of verse. " * (15 if i % 2 else 1) for i in range(20)]
    (folder / "wisdom").write_text("\n%\n".join(cookies) + "\n%\n")
    (folder / "wisdom.u8").write_text("not a cookie file " * 50)
    (folder / "wisdom.dat").write_bytes(b"\0" * 300)
    docs = corpus.fortunes(tmp_path)
    long_ones = [c.strip() for c in cookies if len(c.strip()) >= corpus.MIN_CHARS]
    assert len(long_ones) == 10 and docs == long_ones[:: corpus.FORTUNE_STRIDE]
    assert docs[0].startswith("cookie 1\n")  # line breaks inside a cookie are kept


def test_corpus_shape_counts_rows_filled_with_bos_and_eos(benchmarks, tmp_path):
    _, throughput = benchmarks
    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps({"text": "hi"}) + "\n" + json.dumps({"text": "word " * 2000}) + "\n")
    shape = throughput.corpus_shape(str(data), seq_len=512)
    assert shape.startswith("2 documents, median ")
    short = throughput_tokens(throughput, "hi") + 2
    assert f"50% fill a 512-token row, real tokens fill {(short + 512) / 1024:.0%} of the padded rows" in shape


def throughput_tokens(throughput, text: str) -> int:
    from tokenizers import Tokenizer

    return len(Tokenizer.from_file(str(throughput.TOKENIZER / "tokenizer.json")).encode(text).ids)
