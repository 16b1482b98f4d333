"""How numbers and times read everywhere: console, `minimind runs`, the TUI."""

from __future__ import annotations

import time
from typing import Optional


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_loss(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_started(timestamp: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "-"


def resume_command(run_dir: str) -> str:
    return f"minimind train --resume {run_dir}"
