"""Shared pieces for tests: the tiny corpus, the tiny run (as a config and as CLI flags), waiting."""

import json
import time
from pathlib import Path

from minimind.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
TOYDATA = REPO / "toydata" / "pretrain_data.jsonl"

# The tiny model every training test uses: a micro-step takes milliseconds on a CPU.
TINY_MODEL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=48)
# How the in-process tests train it (exact fp32 on the CPU, a log line and a metric per step).
TINY_TRAINING = dict(epochs=2, batch_size=2, num_workers=0, device="cpu", dtype="float32", log_interval=1,
                     save_interval=2)


def tiny_corpus(folder: Path, n: int = 12, name: str = "corpus.jsonl") -> Path:
    """The first n documents of the bundled toy corpus."""
    lines = TOYDATA.read_text(encoding="utf-8").splitlines()[:n]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(folder: Path, **overrides) -> RunConfig:
    """The tiny run as a config: model, training, a 12-document corpus and a save_dir in `folder`."""
    settings = {**TINY_MODEL, **TINY_TRAINING, "data_path": str(tiny_corpus(folder)), "save_dir": str(folder / "out")}
    settings.update(overrides)
    return RunConfig().replace(**settings)


def tiny_flags(folder: Path, *extra: str, corpus: Path | None = None, **settings) -> list[str]:
    """The tiny model as `minimind train` flags (the seed's training settings unless given), with the
    corpus and save_dir in `folder`; `settings` become more flags, `extra` is appended as is."""
    values = {**TINY_MODEL, "num_workers": 0, "data_path": str(corpus or tiny_corpus(folder)),
              "save_dir": str(folder / "out"), **settings}
    flags = []
    for name, value in values.items():
        flags += [f"--{name}", str(value)]
    return [*flags, *extra]


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def write_jsonl(path: Path, lines) -> Path:
    """Write raw lines (str or bytes) to a file, one per line."""
    data = b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines)
    path.write_bytes(data)
    return path


def wait_until(cond, timeout: float = 60.0, every: float = 0.1) -> bool:
    """Poll `cond` until it is true (True) or the time is up (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(every)
    return False
