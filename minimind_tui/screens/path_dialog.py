"""Ask for a file path (save / load a config).

Saving over a file that exists takes a second Enter (the dialog says so first), so Enter never
replaces a file by accident; Escape or Cancel leaves without doing anything.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class PathScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, default: str, action_label: str, confirm_overwrite: bool = False) -> None:
        super().__init__()
        self.title_text, self.default, self.action_label = title, default, action_label
        self.confirm_overwrite = confirm_overwrite
        self._confirmed: str | None = None  # the existing path the user already agreed to replace

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Input(self.default, id="path-input")
            yield Static("", id="path-note", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.action_label, id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#path-input", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._confirmed = None
        self.query_one("#path-note", Static).update("")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._choose(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._choose(self.query_one("#path-input", Input).value.strip())
        else:
            self.dismiss(None)

    def _choose(self, path: str) -> None:
        if not path:
            self.dismiss(None)
            return
        if self.confirm_overwrite and Path(path).exists() and self._confirmed != path:
            self._confirmed = path
            self.query_one("#path-note", Static).update(f"{path} exists: {self.action_label} again to replace it, "
                                                         "or change the name")
            return
        self.dismiss(path)
