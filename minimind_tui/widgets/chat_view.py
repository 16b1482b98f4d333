"""The Chat tab: talk to a model, as `minimind chat` does (the same minimind.chat.Chat).

Keyboard only: type a model's source and Enter loads it (off the UI thread); then Enter sends a
message, Escape stops a reply, /reset and /system TEXT work as in the REPL. Replies stream into the
transcript; the app stays responsive while a run trains in the background.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Static

from minimind.config import SamplingConfig
from minimind.errors import MiniMindError

from ..messages import ChatLoaded, SampleText

ROLE_STYLES = {"you": "bold cyan", "ai": "bold green", "note": "dim"}


class ChatView(Vertical):
    BINDINGS = [Binding("escape", "stop_reply", "Stop reply / leave the field")]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chat: Optional[Any] = None  # a minimind.chat.Chat once a model is loaded
        self.turns: list[tuple[str, str]] = []  # (who, text) as shown
        self.replying = False
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        # Coming back to a field (or typing while none had the focus) goes on where the text ends:
        # selecting it all on focus would let the next key replace it.
        with Horizontal(id="chat-source-row"):
            yield Label("model", classes="field-name")
            yield Input("", placeholder="a run directory or a weights file, then Enter", id="chat-source", compact=True,
                        select_on_focus=False)
        yield Static("no model loaded", id="chat-status")
        with VerticalScroll(id="chat-scroll"):
            yield Static("", id="chat-transcript")
        yield Input("", placeholder="message (Enter sends; /reset, /system TEXT; Escape stops a reply)",
                    id="chat-input", disabled=True, compact=True, select_on_focus=False)

    # ---- what the app asks of it ---------------------------------------------------------------
    def open(self, source: Path) -> None:
        """Load `source` (from a run's detail screen) and focus the message line when ready."""
        self.query_one("#chat-source", Input).value = str(source)
        self._load(str(source))

    def focus_input(self) -> None:
        self._text_field().focus()

    def type_in(self, character: str) -> None:
        """A key typed while no text field had the focus: focus the field it was meant for and type it."""
        field = self._text_field()
        field.focus()
        field.insert_text_at_cursor(character)

    def _text_field(self) -> Input:
        """The message line once a model is loaded (and not loading another), else the model line."""
        message = self.query_one("#chat-input", Input)
        return message if self.chat is not None and not message.disabled else self.query_one("#chat-source", Input)

    # ---- loading ---------------------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "chat-source":
            self._load(event.value.strip())
        elif event.input.id == "chat-input":
            self._command_or_message(event.value.strip())

    def _load(self, source: str) -> None:
        if not source:
            self._status("give a run directory or a weights file", error=True)
            return
        if self.replying:
            self._status("a reply is streaming: Escape stops it first", error=True)
            return
        self._status(f"loading {source} …")
        self.query_one("#chat-input", Input).disabled = True
        self._load_model(source)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-load")
    def _load_model(self, source: str) -> None:
        # torch and the model load here, off the UI thread; the app itself starts without them.
        from minimind.chat import Chat
        from minimind.tokenizer import load_tokenizer
        from minimind.weights import load_model, tokenizer_folder_for

        try:
            model, run_config, family = load_model(source)
            tok = load_tokenizer(tokenizer_folder_for(source, run_config, family)[0])
            self.post_message(ChatLoaded(Chat(model, tok, SamplingConfig()), f"{family.name} model from {source}"))
        except MiniMindError as e:
            self.post_message(ChatLoaded(None, str(e)))
        except Exception as e:  # a bug: one line, the tab stays usable
            self.post_message(ChatLoaded(None, f"internal error {type(e).__name__}: {e}"))

    def on_chat_loaded(self, message: ChatLoaded) -> None:
        if message.chat is None:
            self._status(f"✗ {message.description}", error=True)
            return
        self.chat = message.chat
        self.turns = [("note", f"talking to the {message.description}")]
        self._redraw()
        self._status(f"ready: {message.description}")
        field = self.query_one("#chat-input", Input)
        field.disabled = False
        field.focus()

    # ---- talking ---------------------------------------------------------------------------------
    def _command_or_message(self, line: str) -> None:
        from minimind.chat import parse_line  # minimind.chat imports torch: not at app start

        field = self.query_one("#chat-input", Input)
        if not line or self.chat is None or self.replying:
            return
        field.value = ""
        kind, text = parse_line(line)
        if kind == "reset":
            self.chat.reset()
            self.turns = [("note", "conversation cleared")]
        elif kind == "system":
            self.chat.reset(system=text)
            self.turns = [("note", f"system prompt {'set' if self.chat.system else 'cleared'}; conversation cleared")]
        elif kind == "exit":
            self.turns.append(("note", "(in the app: Escape leaves the message line, then 1-4 change tabs; F1 lists the keys)"))
        elif kind == "note":  # a mistyped command: never sent to the model
            self.turns.append(("note", f"({text})"))
        else:
            self.turns += [("you", text), ("ai", "")]
            self.replying = True
            self._stop.clear()
            self._status("replying … (Escape stops)")
            self._reply(text)
        self._redraw()

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-reply")
    def _reply(self, text: str) -> None:
        try:
            assert self.chat is not None
            for piece in self.chat.reply(text, stop=self._stop.is_set):
                self.post_message(SampleText(piece))
        except MiniMindError as e:
            self.post_message(SampleText(error=str(e)))
        except Exception as e:  # a bug: one line, the tab stays usable
            self.post_message(SampleText(error=f"internal error {type(e).__name__}: {e}"))
        finally:
            self.post_message(SampleText(done=True))

    def on_sample_text(self, message: SampleText) -> None:
        message.stop()
        if message.error:
            self.turns.append(("note", f"✗ {message.error}"))
        elif message.text:
            who, said = self.turns[-1]
            self.turns[-1] = (who, said + message.text)
        if message.done:
            self.replying = False
            stopped = self._stop.is_set()
            self._status("stopped" if stopped else "ready")
            if stopped:
                self.turns.append(("note", "(reply stopped)"))
        self._redraw()

    def action_stop_reply(self) -> None:
        """Escape: stops a streaming reply; otherwise leaves the field, so the app's keys (1-4, ?) work."""
        if self.replying:
            self._stop.set()
        else:
            self.screen.set_focus(None)

    # ---- drawing ---------------------------------------------------------------------------------
    def _status(self, text: str, error: bool = False) -> None:
        self.query_one("#chat-status", Static).update(Text(text, style="bold red" if error else "dim"))

    def _redraw(self) -> None:
        transcript = Text()
        for who, said in self.turns:
            if transcript:
                transcript.append("\n")
            if who == "note":
                transcript.append(said, style=ROLE_STYLES["note"])
            else:
                transcript.append(f"{who}> ", style=ROLE_STYLES[who])
                transcript.append(said)
        self.query_one("#chat-transcript", Static).update(transcript)
        self.query_one("#chat-scroll", VerticalScroll).scroll_end(animate=False)
