"""The run's progress as one line, a bar and its percentage, redrawn only when what it shows changes.

Textual's ProgressBar redraws every second (for an ETA we do not show) and animates at 15 frames a
second while its total is unknown, i.e. whenever the app waits for a run: CPU taken from training on
a small machine, and from an idle SSH session.
"""

from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.widget import Widget

FILLED, EMPTY = "━", "─"


class StepBar(Widget):
    DEFAULT_CSS = "StepBar { height: 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.total: Optional[int] = None
        self.progress = 0
        self._drawn: Optional[tuple[int, int]] = None  # (filled cells, percent) last drawn

    def update(self, total: Optional[int], progress: int) -> None:
        self.total, self.progress = total, progress
        if self._shape(self.size.width) != self._drawn:
            self.refresh()

    def on_resize(self) -> None:
        self.refresh()

    def _shape(self, width: int) -> Optional[tuple[int, int]]:
        if not self.total:
            return None
        fraction = min(max(self.progress / self.total, 0.0), 1.0)
        return round(fraction * max(width - 5, 1)), int(fraction * 100)

    def render(self) -> Text:
        width = self.size.width
        self._drawn = shape = self._shape(width)
        if shape is None:
            return Text("")  # no run yet
        filled, percent = shape
        bar_width = max(width - 5, 1)
        return Text.assemble((FILLED * filled, "green"), (EMPTY * (bar_width - filled), "grey50"),
                             f"{percent:>4}%"[-5:])
