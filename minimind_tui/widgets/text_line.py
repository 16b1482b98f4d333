"""A line of text that redraws itself only: Static.update() also re-lays out the whole screen,
which for once-a-second updates during training is wasted CPU and GIL time.

set(text, *shorter) also takes shorter wordings of the same line: the longest that fits the widget's
width is drawn, so a line reads fully at 100 columns and still fits, unwrapped, at 80.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widget import Widget


class TextLine(Widget):
    DEFAULT_CSS = "TextLine { height: 1; }"

    def __init__(self, text: str | Text = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._texts: tuple[str | Text, ...] = (text,)

    @property
    def text(self) -> str:
        """The full wording (whatever the width)."""
        return str(self._texts[0])

    def set(self, text: str | Text, *shorter: str | Text) -> None:
        texts = (text, *shorter)
        if texts != self._texts:
            self._texts = texts
            self.refresh()

    def render(self) -> str | Text:
        return fitting(self._texts, self.size.width)


def fitting(texts: tuple[str | Text, ...], width: int) -> str | Text:
    """The first of `texts` whose first line fits `width` cells (the last one when none does)."""
    for text in texts:
        if cell_len(str(text).split("\n", 1)[0]) <= width:
            return text
    return texts[-1]
