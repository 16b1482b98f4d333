"""Sample text from a run's weights (the same code path as `minimind generate`)."""

from __future__ import annotations

import dataclasses

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from minimind.config import SamplingConfig
from minimind.errors import MiniMindError

from ..messages import SampleText
from ..widgets.key_bar import KeyBar

DEFAULTS = SamplingConfig()


class SampleScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "Back")]
    HELP_TITLE = "sample text"

    def __init__(self, source: Path) -> None:
        super().__init__()
        self.source = source
        self.text = ""
        self.failed = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full", id="sample-dialog"):
            yield Static(f"sample from {self.source}", classes="dialog-title")
            with Horizontal(classes="field-row sample-row"):
                yield Label("prompt", classes="sample-label")
                yield Input("", placeholder="text to continue, then Enter", id="prompt", compact=True)
            with Horizontal(classes="field-row sample-row"):
                yield Label("max new tokens", classes="sample-label")
                yield Input(str(DEFAULTS.max_new_tokens), id="max-new-tokens", classes="short", compact=True)
                yield Label("temperature", classes="sample-label")
                yield Input(str(DEFAULTS.temperature), id="temperature", classes="short", compact=True)
                yield Label("top-p", classes="sample-label")
                yield Input(str(DEFAULTS.top_p), id="top-p", classes="short", compact=True)
            yield Static("", id="sample-output")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Back", id="back", compact=True)
                yield Button("Generate", id="generate", variant="primary", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.dismiss(None)
        else:
            self._start()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._start()

    def _start(self) -> None:
        output = self.query_one("#sample-output", Static)
        try:
            max_new = int(self.query_one("#max-new-tokens", Input).value)
            temperature = float(self.query_one("#temperature", Input).value)
            top_p = float(self.query_one("#top-p", Input).value)
            if max_new < 1 or temperature < 0 or not 0 < top_p <= 1:
                raise ValueError
        except ValueError:
            output.update("✗ max new tokens must be >= 1, temperature >= 0 and top-p in (0, 1]")
            return
        self.text, self.failed = self.query_one("#prompt", Input).value, False
        output.update(self.text + " …")
        self.query_one("#generate", Button).disabled = True
        self._generate(self.text, max_new, temperature, top_p)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _generate(self, prompt: str, max_new: int, temperature: float, top_p: float) -> None:
        # Loading a model needs torch; the app itself starts without it.
        from minimind.sampling import stream_text
        from minimind.tokenizer import load_tokenizer
        from minimind.weights import load_model, tokenizer_folder_for

        try:
            model, run_config, family = load_model(self.source)
            tok = load_tokenizer(tokenizer_folder_for(self.source, run_config, family)[0])
            sampling = dataclasses.replace(DEFAULTS, max_new_tokens=max_new, temperature=temperature, top_p=top_p)
            for piece in stream_text(model, tok, prompt, sampling):
                self.post_message(SampleText(piece))
        except MiniMindError as e:
            self.post_message(SampleText(error=str(e)))
        except Exception as e:  # a bug: one line, and the screen stays usable
            self.post_message(SampleText(error=f"internal error {type(e).__name__}: {e}"))
        finally:
            self.post_message(SampleText(done=True))

    def on_sample_text(self, message: SampleText) -> None:
        output = self.query_one("#sample-output", Static)
        if message.error:
            self.failed = True
            output.update(f"✗ {message.error}")
        elif not self.failed:  # the closing done message must not paint over the error
            self.text += message.text
            output.update(self.text + ("" if message.done else " …"))
        if message.done:
            self.query_one("#generate", Button).disabled = False
