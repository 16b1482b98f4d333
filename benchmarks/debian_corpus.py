"""Real corpora nobody here wrote, for the speed benchmarks, from Debian packages. How much faster
our loop is than MiniMind's depends on how much of MiniMind's padded 512-token rows is padding, so
there are three, with documents of different lengths (in tokens of the bundled classic tokenizer,
bos and eos included; `train_throughput.py` prints these figures for its corpus):

- `reference` (default): the Debian Reference (`debian-reference-en`, plain-text edition), one
  document per numbered section: 420 documents, median 564 tokens, 52% fill a 512-token row, real
  tokens fill 77% of MiniMind's padded rows.
- `faq`: the Debian FAQ (`debian-faq`, plain-text edition), one document per numbered question:
  142 documents, median 336 tokens, 27% fill a row, real tokens fill 66% of the padded rows.
- `fortunes`: the `fortunes` cookie files (English, not the offensive ones), every fifth cookie of at
  least 200 characters: 605 documents, median 145 tokens, 1% fill a row, real tokens fill 36%.

    python benchmarks/debian_corpus.py [--source reference|faq|fortunes] [--out FILE]

Downloads the package with `apt-get download` (Debian's mirrors) into a temporary folder, unpacks it
with `dpkg -x` and writes {"text": ...} lines to benchmarks/.data/debian-<source>.jsonl, whitespace
normalised, in the package's order.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import tempfile
from urllib.parse import unquote
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"
DEFAULT_OUT = DATA / "debian-reference.jsonl"
# Section headings ("1.2.8." then a no-break space in the body), not list items.
HEADING = re.compile(r"^\s*(\d+\.\d+(?:\.\d+)*\.|Chapter \d+\.|Appendix [A-Z]\.)\s\S")
MIN_CHARS = 200  # skip bare headings, table-of-contents fragments and one-line cookies
FORTUNE_STRIDE = 5  # every fifth long cookie: an epoch of MiniMind's loop in about 3 minutes here


def sections(text: str) -> list[str]:
    """The text cut at numbered headings; each part's lines re-flowed into paragraphs."""
    parts: list[list[str]] = [[]]
    for line in text.splitlines():
        if HEADING.match(line):
            parts.append([])
        parts[-1].append(line)
    documents = []
    for lines in parts:
        paragraphs = re.split(r"\n\s*\n", "\n".join(lines))
        flowed = [" ".join(p.split()) for p in paragraphs if p.strip()]
        if sum(len(p) for p in flowed) >= MIN_CHARS:
            documents.append("\n".join(flowed))
    return documents


def gzipped_sections(path: str) -> Callable[[Path], list[str]]:
    return lambda root: sections(gzip.decompress((root / path).read_bytes()).decode("utf-8"))


def fortunes(root: Path) -> list[str]:
    """Cookies are separated by lines holding only '%'; their line breaks are kept (verse, dialogue)."""
    cookies = []
    folder = root / "usr/share/games/fortunes"
    for file in sorted(folder.iterdir()):
        if file.suffix in (".dat", ".u8") or file.is_symlink() or not file.is_file():
            continue
        text = file.read_text("utf-8", errors="replace")
        cookies += [c.strip() for c in re.split(r"^%$", text, flags=re.MULTILINE) if len(c.strip()) >= MIN_CHARS]
    return cookies[::FORTUNE_STRIDE]


SOURCES: dict[str, tuple[str, Callable[[Path], list[str]]]] = {
    "reference": ("debian-reference-en", gzipped_sections("usr/share/debian-reference/debian-reference.en.txt.gz")),
    "faq": ("debian-faq", gzipped_sections("usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")),
    "fortunes": ("fortunes", fortunes),
}


def build(source: str, out: Path) -> Path:
    package, documents_of = SOURCES[source]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
        [deb] = Path(tmp).glob(f"{package}_*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        docs = documents_of(Path(tmp) / "x")
        version = unquote(deb.name.split("_")[1])  # an epoch is saved as 1%3a
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    print(f"{out}: {len(docs)} documents, {out.stat().st_size / 1e6:.2f} MB, from {package} {version}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=sorted(SOURCES), default="reference")
    parser.add_argument("--out", type=Path, help="default: benchmarks/.data/debian-<source>.jsonl")
    args = parser.parse_args()
    build(args.source, args.out or DATA / f"debian-{args.source}.jsonl")


if __name__ == "__main__":
    main()
