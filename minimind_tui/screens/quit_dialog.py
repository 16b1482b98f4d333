"""Asked on quit while a run is active, in the words of where the run trains.

Three cases, each with its own wording and buttons:
- "thread": the run trains inside this app; quitting ends it unless it is handed to a background process.
- "launched": a background process this app started; it keeps training after the app is gone.
- "attached": a run started elsewhere that this app only watches; quitting just stops watching.

The focused (default) button is always Cancel, so Enter never stops a run by accident; stopping
takes its own button or key (s).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

WHERE = ("thread", "launched", "attached")

TEXTS = {
    "thread": ("This run trains inside this app: quitting ends it.",
               "Stop and save: it stops after the current step and saves its resume state (Resume it from the "
               "Runs tab later). Keep running: it stops at a step boundary and continues, exactly, in a "
               "background process you can re-open with minimind-tui --attach.",
               "Keep running (k)"),
    "launched": ("This run trains in a background process this app started.",
                 "Leave it running: it keeps training after the app closes (re-open it with minimind-tui "
                 "--attach or from the Runs tab). Stop and save: it stops after the current step and saves its "
                 "resume state.",
                 "Leave it running (l)"),
    "attached": ("You are watching a run that was started elsewhere.",
                 "Leave it running: quitting only stops watching; the run goes on. Stop and save: ask it to stop "
                 "after the current step and save its resume state.",
                 "Leave it running (l)"),
}


class QuitScreen(ModalScreen[str]):
    """Dismisses with "stop", "keep" or "cancel"."""

    BINDINGS = [Binding("escape", "choose('cancel')", "Cancel"),
                Binding("s", "choose('stop')", "Stop and save"),
                Binding("l,k", "choose('keep')", "Leave it running / keep running")]

    def __init__(self, where: str) -> None:
        super().__init__()
        if where not in WHERE:
            raise ValueError(f"where: one of {WHERE}, not {where!r}")
        self.where = where

    def compose(self) -> ComposeResult:
        title, text, keep = TEXTS[self.where]
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Static(title, classes="dialog-title")
            yield Static(text, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="primary", compact=True)
                yield Button(keep, id="keep", compact=True)
                yield Button("Stop and save (s)", id="stop", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()  # Enter = the safe choice

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
