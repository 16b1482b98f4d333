"""Textual messages the app's workers post (post_message is thread-safe; call_from_thread can deadlock)."""

from __future__ import annotations

from textual.message import Message

from minimind.events import Event


class EngineEvent(Message):
    """An engine event from the training thread or a followed run directory."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class SessionFailed(Message):
    """A session could not start or run: one line for the user."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message


class SessionDone(Message):
    """A session's worker returned (the run ended, or the app stopped following it)."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session


class SampleText(Message):
    """A piece of generated text (done=True: generation finished; error: it failed)."""

    def __init__(self, text: str = "", done: bool = False, error: str | None = None) -> None:
        super().__init__()
        self.text, self.done, self.error = text, done, error


class ChatLoaded(Message):
    """A model for the Chat tab finished loading (chat is None when it failed; description says why)."""

    def __init__(self, chat, description: str) -> None:
        super().__init__()
        self.chat, self.description = chat, description
