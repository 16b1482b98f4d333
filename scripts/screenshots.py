"""Text screenshots of the real app (not part of CI): every tab and screen at 80x24 and 100x30.

Drives `minimind-tui` in tmux as a person would: trains a tiny model that evaluates (a held-out
quarter of a 12-document corpus), and captures the screen at each stop as plain text:

    train-running   the Train tab during the run        train-finished  the Train tab after it
    quit-dialog     q while the run trains               help-train      ? on the Train tab
    config          the Config tab                       runs            the Runs tab
    run-detail      Enter on the run                     help-run-detail ? on the run's detail screen
    chat            the Chat tab after a short exchange with the trained model

    python scripts/screenshots.py [--out docs/screenshots] [--sizes 80x24,100x30]

writes OUT/{name}-{width}x{height}.txt. Needs tmux; takes about a minute per size on two cores.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOYDATA = ROOT / "toydata" / "pretrain_data.jsonl"
TINY = ["--dim", "32", "--n_layers", "2", "--n_heads", "4", "--n_kv_heads", "2", "--max_seq_len", "48",
        "--num_workers", "0", "--dtype", "float32", "--device", "cpu"]
EVAL_MARKER = "●"


class Terminal:
    def __init__(self, command: str, cwd: Path, width: int, height: int) -> None:
        self.socket = f"minimind-shots-{uuid.uuid4().hex[:8]}"
        # COLUMNS/LINES (readline sets them in a process's C environment) would pin the app at their size.
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "-c", str(cwd),
                  f"unset COLUMNS LINES; {command}; echo EXITED rc=$?; sleep 30")

    def tmux(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30,
                              env=env).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str, pause: float = 0.6) -> None:
        self.tmux("send-keys", "-t", "t", *keys)
        time.sleep(pause)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)
        time.sleep(0.3)

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise SystemExit(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-server")


def shoot(out: Path, width: int, height: int) -> list[Path]:
    saved = []
    with tempfile.TemporaryDirectory(prefix="minimind-shots-") as tmp:
        folder = Path(tmp)
        corpus = folder / "corpus.jsonl"
        corpus.write_text("\n".join(TOYDATA.read_text(encoding="utf-8").splitlines()[:12]) + "\n", encoding="utf-8")
        args = [*TINY, "--data_path", str(corpus), "--save_dir", "out", "--run-name", "demo", "--epochs", "60",
                "--eval_split", "0.25", "--eval_interval", "20", "--save_interval", "50", "--start", "--launch", "thread"]
        term = Terminal(shlex.join([sys.executable, "-m", "minimind_tui", *args]), folder, width, height)

        def save(name: str, shown: str = "") -> None:
            """Capture once `shown` is on screen and the app had a moment to finish drawing (footer included)."""
            if shown:
                term.wait_for(shown)
            time.sleep(1.0)
            path = out / f"{name}-{width}x{height}.txt"
            path.write_text(term.screen().rstrip("\n") + "\n", encoding="utf-8")
            saved.append(path)

        try:
            term.wait_for("RUNNING")
            term.wait_for("best ")  # a first evaluation is on the eval line
            term.wait_for(EVAL_MARKER, 10)  # and on the curve
            save("train-running")
            term.keys("q")
            save("quit-dialog", "Stop and save")
            term.keys("Escape")
            term.wait_for("FINISHED", 300)
            time.sleep(1.0)  # the last table flush and curve redraw
            save("train-finished")
            term.keys("?")
            save("help-train", "Keys: Train tab")
            term.keys("Escape")
            term.keys("1")
            save("config", "Model family")
            term.keys("3")
            save("runs", "run(s)")
            term.keys("Enter")
            term.wait_for("overlay")
            save("run-detail", "┤")  # the curve is drawn
            term.keys("?")
            save("help-run-detail", "Keys: run detail")
            term.keys("Escape")
            term.keys("Escape")
            term.keys("4")
            term.type(str(folder / "out" / "runs" / "demo"))
            term.keys("Enter")
            term.wait_for("ready:", 60)
            term.type("hello")
            term.keys("Enter", pause=4.0)
            if "replying" in term.screen():
                term.keys("Escape", pause=1.0)  # a tiny model rambles: stop it, as a person would
            save("chat")
            term.keys("Escape")
            term.keys("q")
            term.wait_for("EXITED rc=0", 30)
        finally:
            term.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--sizes", default="80x24,100x30", help="comma-separated WIDTHxHEIGHT")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    for size in opts.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        for path in shoot(opts.out, width, height):
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
