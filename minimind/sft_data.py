"""Supervised fine-tuning data: MiniMind's chat JSONL, one conversation per line, as training rows.

A line is `{"conversations": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}` (MiniMind-3
also reads `tool` turns, `tool_calls`, `reasoning_content`, and `tools` on the system turn). A row is
the tokenizer's chat template of the conversation, cut to max_length and right-padded; the loss
covers exactly the positions MiniMind's SFT dataset of the family's era labels (the family's
`SftLabels`): each assistant reply and its end marker with the newline after it, nothing else.

MiniMind-3's augmentations (a random system prompt with probability `add_system_ratio`; every empty
think block kept with probability `empty_think_ratio`, else all removed) draw from a generator
seeded by (seed, epoch, line), so a row is the same in any DataLoader worker and after a resume.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Optional

import torch

from .data import JsonlFile, PretrainDataset, TrainingSet, resolve_data_path, validation_limit
from .errors import DataError
from .families import Family


class JsonlConversations(JsonlFile):
    """Chat data: `{"conversations": [...]}` per line, each turn checked (roles, order, strings)."""

    example = '{"conversations": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
    key = "conversations"

    def __init__(self, path: str | os.PathLike, roles: tuple[str, ...]):
        super().__init__(path)
        self.roles = roles

    def conversation(self, index: int) -> tuple[list[dict], Optional[list], bool]:
        """(messages for the chat template, the system turn's tools or None, whether any turn lists tools)."""
        where = self.where(index)
        turns = self.record(index)["conversations"]
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{where}: \"conversations\" is not a list of turns: each line must be an object like "
                            f"{self.example}")
        messages: list[dict] = []
        tools, has_tools = None, False
        for n, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict):
                raise DataError(f"{where}: turn {n} is a {type(turn).__name__}, not an object with role and content")
            role = turn.get("role")
            if role not in self.roles:
                raise DataError(f"{where}: turn {n} has role {role!r}: use one of {', '.join(self.roles)}")
            if role == "system" and n > 1:
                raise DataError(f"{where}: turn {n} is a system turn: only the first turn may be one")
            if role not in ("system", "user") and all(m["role"] == "system" for m in messages):
                raise DataError(f"{where}: turn {n} is {role!r}: a conversation starts with a user turn "
                                "(after an optional system turn)")
            previous = messages[-1]["role"] if messages else ""
            if role == "assistant" and previous not in ("user", "tool"):
                raise DataError(f"{where}: turn {n} is an assistant reply to {previous!r}: a reply follows a user turn")
            content = turn.get("content")
            if content is None and turn.get("tool_calls"):
                content = ""
            message: dict[str, Any] = {"role": role, "content": self.string(index, content, f"turn {n} content")}
            if turn.get("reasoning_content") is not None:
                message["reasoning_content"] = self.string(index, turn["reasoning_content"], f"turn {n} reasoning_content")
            if turn.get("tool_calls"):
                message["tool_calls"] = self._json(index, turn["tool_calls"], f"turn {n} tool_calls")
            if turn.get("tools"):
                has_tools = True
                if role == "system":  # the template's tool list comes from the system turn alone
                    tools = self._json(index, turn["tools"], f"turn {n} tools")
            messages.append(message)
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{where}: no assistant turn: nothing to learn from; add a reply or drop the line")
        return messages, tools, has_tools

    def _json(self, index: int, value: Any, name: str) -> Any:
        """MiniMind keeps tool calls and tool lists as JSON strings; accept parsed ones too."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise DataError(f"{self.where(index)}: {name} is not valid JSON ({e.msg}): fix or drop it") from None

    item = conversation


def label_mask(ids: list[int], assistant: list[int], end: list[int], first: int, last: int) -> list[int]:
    """MiniMind's scan: after each `assistant` marker, positions from `first` past it to `last` past the
    next `end` marker (or to the end of the row when a turn is cut off)."""
    length = len(ids)
    mask = [0] * length
    i = 0
    while i < length:
        if ids[i:i + len(assistant)] == assistant:
            start = i + len(assistant)
            stop = start
            while stop < length and ids[stop:stop + len(end)] != end:
                stop += 1
            for j in range(start + first, min(stop + len(end) + last, length)):
                mask[j] = 1
            i = stop + len(end) if stop < length else length
        else:
            i += 1
    return mask


class SFTDataset:
    """One training row per conversation: (X, Y, loss_mask), int64, length max_length - 1."""

    def __init__(self, path: str | os.PathLike, tokenizer: Any, max_length: int, family: Family, seed: int = 0,
                 add_system_ratio: float = 0.0, empty_think_ratio: float = 1.0):
        if max_length < 2:
            raise DataError(f"max_length must be at least 2 (X and Y are shifted by one), got {max_length}")
        self.conversations = JsonlConversations(path, family.chat_roles)
        self.path = self.conversations.path
        self.tokenizer, self.max_length, self.family, self.seed = tokenizer, max_length, family, seed
        self.add_system_ratio, self.empty_think_ratio = add_system_ratio, empty_think_ratio
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"the tokenizer {getattr(tokenizer, 'name_or_path', '')} has no chat template: SFT needs "
                            "one (the shipped tokenizers have it; or add chat_template to tokenizer_config.json)")
        labels = family.sft_labels
        self._encoder = PretrainDataset.plain_encoder(tokenizer)
        self._assistant, self._end = self._encode(labels.assistant_marker), self._encode(labels.end_marker)
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.conversations)

    def _encode(self, text: str) -> list[int]:
        if self._encoder is not None:
            return self._encoder.encode(text).ids
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def prompt(self, index: int, epoch: int = 0) -> str:
        """The conversation's chat-template text, with MiniMind-3's augmentations drawn for (epoch, line)."""
        messages, tools, has_tools = self.conversations.conversation(index)
        rng = random.Random(f"{self.seed}-{epoch}-{index}")
        prompts = self.family.sft_system_prompts
        # MiniMind-3 adds no system prompt to a conversation where any turn lists tools.
        if prompts and not has_tools and messages[0]["role"] != "system" and rng.random() < self.add_system_ratio:
            messages = [{"role": "system", "content": rng.choice(prompts)}] + messages
        kwargs = {"tools": tools} if tools is not None else {}
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False, **kwargs)
        empty = self.family.empty_think
        if empty and empty in text and rng.random() > self.empty_think_ratio:
            text = text.replace(empty, "")
        return text

    def row(self, index: int, epoch: int = 0) -> tuple[list[int], list[int]]:
        """(ids, label mask), both max_length long, unshifted."""
        ids = self._encode(self.prompt(index, epoch))[:self.max_length]
        ids = ids + [self.pad_id] * (self.max_length - len(ids))
        labels = self.family.sft_labels
        return ids, label_mask(ids, self._assistant, self._end, labels.first, labels.last)

    def __getitem__(self, key: int):
        ids, mask = self.row(key % len(self), key // len(self))
        ids_t, mask_t = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
        return ids_t[:-1], ids_t[1:], mask_t[1:]


def build_sft_set(path: str | os.PathLike, tokenizer: Any, max_seq_len: int, family: Family, train: Any) -> TrainingSet:
    """Check the conversations (all of a small file), count those whose reply does not fit max_seq_len."""
    rows = SFTDataset(resolve_data_path(path), tokenizer, max_seq_len, family, train.seed, train.add_system_ratio,
                      train.empty_think_ratio)
    source = rows.conversations
    limit = validation_limit(source)
    checked = range(len(source) if limit is None else min(limit, len(source)))
    empty = [source.where(i) for i in checked if not any(rows.row(i)[1][1:])]
    note = None
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        note = (f"{len(empty)} of {len(checked)} conversations have no reply within max_seq_len {max_seq_len} and "
                f"train nothing: {shown} (raise --max_seq_len or shorten them)")
    return TrainingSet(source, rows, note)
