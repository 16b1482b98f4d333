"""A real corpus nobody here wrote, for the speed benchmarks: the Debian Reference (Debian package
`debian-reference-en`, plain-text edition), one JSONL document per numbered section.

    python benchmarks/debian_corpus.py [--out benchmarks/.data/debian-reference.jsonl]

Downloads the package with `apt-get download` (Debian's mirrors) into a temporary folder, unpacks it
with `dpkg -x` and writes {"text": ...} lines: each section's heading and paragraphs, whitespace
normalised, in the document's order (about 880 kB of English, sections of a few lines to a few
thousand tokens).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / ".data" / "debian-reference.jsonl"
PACKAGE = "debian-reference-en"
TEXT = "usr/share/debian-reference/debian-reference.en.txt.gz"
# Section headings ("1.2.8." then a no-break space in the body), not list items.
HEADING = re.compile(r"^\s*(\d+\.\d+(?:\.\d+)*\.|Chapter \d+\.|Appendix [A-Z]\.)\s\S")


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
        if sum(len(p) for p in flowed) >= 200:  # skip bare headings and table-of-contents fragments
            documents.append("\n".join(flowed))
    return documents


def build(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True, capture_output=True)
        [deb] = Path(tmp).glob(f"{PACKAGE}_*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        text = gzip.decompress((Path(tmp) / "x" / TEXT).read_bytes()).decode("utf-8")
        version = deb.name.split("_")[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    docs = sections(text)
    out.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    print(f"{out}: {len(docs)} documents, {out.stat().st_size / 1e6:.2f} MB, from {PACKAGE} {version}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
