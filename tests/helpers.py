"""Small shared pieces for tests: a tiny corpus and a tiny run config."""

import json
from pathlib import Path

from minimind.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
TOYDATA = REPO / "toydata" / "pretrain_data.jsonl"


def tiny_corpus(folder: Path, n: int = 12, name: str = "corpus.jsonl") -> Path:
    """The first n documents of the bundled toy corpus."""
    lines = TOYDATA.read_text(encoding="utf-8").splitlines()[:n]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(folder: Path, **overrides) -> RunConfig:
    """A model and run small enough for a step to take milliseconds on a CPU."""
    settings = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=48, epochs=2, batch_size=2,
                    data_path=str(tiny_corpus(folder)), save_dir=str(folder / "out"), num_workers=0,
                    device="cpu", dtype="float32", log_interval=1, save_interval=2)
    settings.update(overrides)
    return RunConfig().replace(**settings)


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
