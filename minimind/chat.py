"""A conversation with a model: the history, the tokenizer's chat template, replies streamed.

The same object drives `minimind chat` and the TUI's Chat tab. No terminal code here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterator, Optional

import torch

from .config import SamplingConfig
from .errors import MiniMindError
from .sampling import stream_ids

COMMANDS = {"/reset": "forget the conversation", "/system TEXT": "set the system prompt (and reset)",
            "/exit": "leave"}
# A command is a first word of "/" and letters only: so "/rest" is a mistyped command (not a message to
# the model), while "/ hi", "/3 apples", "/usr/bin/env" or "//" are messages that start with a slash.
COMMAND_LINE = re.compile(r"(/[A-Za-z]+)(?:\s+(.*))?", re.DOTALL)


def parse_line(text: str) -> tuple[str, str]:
    """What a chat line asks for: ("message", text), ("reset", ""), ("system", prompt), ("exit", ""),
    or ("note", a one-line answer) for a command that is unknown or misused; never sent to the model."""
    text = text.strip()
    command = COMMAND_LINE.fullmatch(text)
    if command is None:
        return "message", text
    word, rest = command[1], (command[2] or "").strip()
    if word == "/system":
        return "system", rest
    if word in ("/reset", "/exit"):
        return (word[1:], "") if not rest else ("note", f"{word} takes no text: send {word} alone")
    return "note", f"unknown command {word}: try " + ", ".join(COMMANDS)


class Chat:
    def __init__(self, model: Any, tokenizer: Any, sampling: SamplingConfig = SamplingConfig(),
                 seed: Optional[int] = None, system: Optional[str] = None):
        if not getattr(tokenizer, "chat_template", None):
            raise MiniMindError("this tokenizer has no chat template: give --tokenizer a folder that has one "
                                "(the shipped tokenizers do)")
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.system = system
        self.messages: list[dict] = []
        device = next(model.parameters()).device
        # One generator for the session: a --seed makes the whole conversation repeatable.
        self.generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    def reset(self, system: Optional[str] = None) -> None:
        self.messages = []
        if system is not None:
            self.system = system or None

    def prompt_ids(self) -> list[int]:
        history = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        text = self.tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def reply(self, text: str, stop: Optional[Callable[[], bool]] = None) -> Iterator[str]:
        """Add the user's turn and stream the reply; the reply joins the history when it ends, also
        when `stop()` cut it short (what was said was said)."""
        self.messages.append({"role": "user", "content": text})
        said = ""
        try:
            for piece in stream_ids(self.model, self.tokenizer, self.prompt_ids(), self.sampling,
                                    generator=self.generator, stop=stop):
                said += piece
                yield piece
        finally:
            self.messages.append({"role": "assistant", "content": said})

    def with_sampling(self, **changes: Any) -> None:
        self.sampling = dataclasses.replace(self.sampling, **changes)
