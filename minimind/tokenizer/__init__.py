"""Tokenizers: MiniMind's byte-level BPE, in each family's layout.

- classic (`classic/`): 6400 entries, `<unk>`=0 (also pad), `<s>`=1 (bos), `</s>`=2 (eos), MiniMind
  classic's chat template (a system block always, `<s>user\\n...</s>\\n<s>assistant\\n`).
- minimind3 (`minimind3/`): 6400 entries, 36 added tokens first (`<|endoftext|>`=0 pad/unk,
  `<|im_start|>`=1 bos, `<|im_end|>`=2 eos, ... `<think>`=25, `</think>`=26 ...), MiniMind-3's
  Qwen-style chat template with a think block in every assistant turn.

The project ships both, trained with `train_tokenizer` on the project's toy corpus (the chat
templates are this project's own Jinja, written from MiniMind's documented output); any local
Hugging Face tokenizer folder (MiniMind's own included) loads through `load_tokenizer(path)`.
Everything loads from local files: no hub access, no remote code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import MiniMindError

CLASSIC_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<s>system\\n' + messages[0]['content'] + '</s>\\n' -}}"
    "{%- else -%}"
    "{{- '<s>system\\n你是 MiniMind，是一个有用的人工智能助手。</s>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '<s>user\\n' + message['content'] + '</s>\\n<s>assistant\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- message['content'] + '</s>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

_TOOLS_HEAD = ("# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
               "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>")
_TOOLS_TAIL = ("\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
               "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, "
               "\"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n")
MINIMIND3_TEMPLATE = (
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages[0]['role'] == 'system' -%}{{- messages[0]['content'] + '\\n\\n' -}}{%- endif -%}"
    "{{- '" + _TOOLS_HEAD + "' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '" + _TOOLS_TAIL.replace("'", "\\'") + "' -}}"
    "{%- elif messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- set content = message['content'] if message['content'] is string else '' -%}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- set reasoning = '' -%}"
    "{%- if message['reasoning_content'] is string -%}"
    "{%- set reasoning = message['reasoning_content'] -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') -}}"
    "{%- if message['tool_calls'] -%}"
    "{%- for tool_call in message['tool_calls'] -%}"
    "{%- if not loop.first or content.lstrip('\\n') -%}{{- '\\n' -}}{%- endif -%}"
    "{%- if tool_call['function'] -%}{%- set tool_call = tool_call['function'] -%}{%- endif -%}"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call['name'] + '\", \"arguments\": ' -}}"
    "{%- if tool_call['arguments'] is string -%}{{- tool_call['arguments'] -}}"
    "{%- else -%}{{- tool_call['arguments'] | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if open_thinking -%}{{- '<think>\\n' -}}{%- else -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


MAX_VOCAB = 1 << 20  # a sanity bound (MiniMind's are 6,400): a huge BPE on a small corpus only eats memory


@dataclass(frozen=True)
class Layout:
    """A family's tokenizer: its added tokens (ids 0.. in order), which are special, and its config."""

    added: tuple[str, ...]
    special: int  # the first `special` added tokens are special (skipped when decoding)
    bos: str
    eos: str
    pad: str
    chat_template: str
    model_max_length: int

    def config(self) -> dict:
        """What AutoTokenizer needs besides tokenizer.json (no remote code, no slow tokenizer)."""
        return {"add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
                "bos_token": self.bos, "eos_token": self.eos, "pad_token": self.pad, "unk_token": self.pad,
                "additional_special_tokens": [t for t in self.added[:self.special] if t not in (self.bos, self.eos, self.pad)],
                "clean_up_tokenization_spaces": False, "model_max_length": self.model_max_length,
                "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": self.chat_template}


_MINIMIND3_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>", "<tts_pad>",
    "<tts_text_bos>", "<tts_text_eod>", "<tts_text_bos_single>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
    *(f"<|buffer{i}|>" for i in range(1, 10)),
)
LAYOUTS = {
    "classic": Layout(added=("<unk>", "<s>", "</s>"), special=3, bos="<s>", eos="</s>", pad="<unk>",
                      chat_template=CLASSIC_TEMPLATE, model_max_length=32768),
    "minimind3": Layout(added=_MINIMIND3_ADDED, special=21, bos="<|im_start|>", eos="<|im_end|>", pad="<|endoftext|>",
                        chat_template=MINIMIND3_TEMPLATE, model_max_length=131072),
}


def load_tokenizer(path: str | os.PathLike):
    """A `PreTrainedTokenizerFast` from a local folder (a family's shipped one, or any other)."""
    folder = Path(path)
    if not folder.is_dir():
        raise MiniMindError(f"tokenizer folder {folder} does not exist: give a folder with tokenizer.json "
                            "(or leave --tokenizer empty for the shipped one)")
    if not (folder / "tokenizer.json").is_file():
        raise MiniMindError(f"tokenizer folder {folder} has no tokenizer.json: give a Hugging Face tokenizer "
                            "folder, or train one with `minimind tokenizer train`")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # safe with DataLoader worker processes
    from transformers import AutoTokenizer  # transformers takes seconds to import: only when a tokenizer loads

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for a broken folder
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MiniMindError(f"tokenizer folder {folder} could not be loaded ({first_line}): "
                            "check tokenizer.json / tokenizer_config.json") from None
    if tok.pad_token_id is None:
        raise MiniMindError(f"tokenizer in {folder} has no pad token: set pad_token in tokenizer_config.json")
    if tok.bos_token is None or tok.eos_token is None:
        raise MiniMindError(f"tokenizer in {folder} needs bos_token and eos_token in tokenizer_config.json")
    return tok


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 6400,
                    layout: str = "classic") -> int:
    """Train MiniMind's byte-level BPE on `texts` in a family's layout, save it to `out_dir`, return
    the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = LAYOUTS[layout]
    if vocab_size < 256 + len(spec.added):
        raise MiniMindError(f"vocab size {vocab_size} is too small: byte-level BPE needs at least "
                            f"{256 + len(spec.added)} (256 bytes + {len(spec.added)} added tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(spec.added), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.decoder = decoders.ByteLevel()
    for i, token in enumerate(spec.added):
        if tokenizer.token_to_id(token) != i:
            raise MiniMindError(f"added token {token} did not get id {i}")
    definition = json.loads(tokenizer.to_str())
    for entry in definition["added_tokens"]:  # tool and think tags are matched whole but are not special
        entry["special"] = entry["id"] < spec.special
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(Tokenizer.from_str(json.dumps(definition)).to_str(pretty=True), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(spec.config(), indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    return tokenizer.get_vocab_size()
