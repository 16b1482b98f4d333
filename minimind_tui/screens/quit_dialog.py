"""Asked on quit while a run is active."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitScreen(ModalScreen[str]):
    """Dismisses with "stop", "keep" or "cancel"."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Cancel")]

    def __init__(self, attached: bool) -> None:
        super().__init__()
        self.attached = attached

    def compose(self) -> ComposeResult:
        if self.attached:
            text = "This run belongs to another process. Leave it running, or stop it (it saves its resume state)?"
            keep = "Leave it running"
        else:
            text = ("A run is active in this app. Stop it (the resume state is saved), or keep it running "
                    "in a background process you can re-open later?")
            keep = "Keep running"
        with Vertical(classes="dialog"):
            yield Static(text, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop and save", id="stop", variant="error")
                yield Button(keep, id="keep", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)
