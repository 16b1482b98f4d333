"""The footer: the keys of the screen it is on that fit the width, most useful first, `?` always.

Generated from the screen's active bindings (the focused widget's chain, the screen, the app), as
Textual's Footer is, but never cut in the middle of a key: it shows the bindings marked show=True
in order until the next one does not fit, and `? Help` (listed first) leads to all of them. At 80
columns that is the keys of the current tab plus the run's steering keys; at 100 and more also the
config-file keys, refresh and the like (see MiniMindApp.BINDINGS for the order).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

KEY_STYLE = "bold"
SEPARATOR = "  "


def footer_bindings(screen) -> list[tuple[Binding, bool]]:
    """(binding, enabled) for each action with a shown binding, in the footer's order: help first,
    then the focused widget's, the screen's and the app's (the order they are declared in)."""
    seen: dict[str, tuple[Binding, bool]] = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        if binding.show and binding.action not in seen:
            seen[binding.action] = (binding, active.enabled)
    shown = list(seen.values())
    return sorted(shown, key=lambda item: 0 if item[0].action.endswith("help") else 1)


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
        text-wrap: nowrap;
        text-overflow: clip;
    }
    """

    def on_mount(self) -> None:
        # As Textual's Footer: redraw after the refresh that follows a change (a tab switch re-lays out first).
        self.screen.bindings_updated_signal.subscribe(self, lambda _screen: self.call_after_refresh(self.refresh))

    def items(self) -> list[tuple[str, str, bool]]:
        """(key as shown, description, enabled) for every binding the footer may show."""
        return [(self.app.get_key_display(b), b.description, enabled) for b, enabled in footer_bindings(self.screen)]

    def shown(self, width: int) -> list[tuple[str, str, bool]]:
        """The items that fit in width cells, whole, in order."""
        out: list[tuple[str, str, bool]] = []
        used = 1
        for item in self.items():
            size = cell_len(f"{item[0]} {item[1]}") + (len(SEPARATOR) if out else 0)
            if used + size > width:
                break
            out.append(item)
            used += size
        return out

    def render(self) -> Text:
        line = Text(" ")
        for i, (key, description, enabled) in enumerate(self.shown(self.size.width)):
            if i:
                line.append(SEPARATOR)
            line.append(key, style=KEY_STYLE if enabled else "dim")
            line.append(f" {description}", style="" if enabled else "dim")
        return line
