"""Naive supervised fine-tuning label builders, written literally from shared/spec/minimind3-and-sft.md
part B (and the A7 chat template), used only as test oracles.

- Classic era (B1): `classic_chat_prompt` builds the classic template string by hand (B1.1);
  `classic_sft_row` gives `(X, Y, loss_mask)` as MiniMind's Feb-2025 `SFTDataset` did (B1.2), with the
  58e3af0 patterns (variant "2502") or the e369b33 ones (variant "2504"), roles by position parity (as
  upstream) or from the role field.
- MiniMind-3 (B2): `minimind3_chat_prompt` builds the A7 template by hand; `minimind3_sft_row` gives the
  `(input_ids, labels)` of HEAD's `SFTDataset` (random system prompt, empty-think removal, labels window).

The prompts are built by hand, never with `apply_chat_template`, so that comparing them with the
tokenizers' own templates is a check. Tokenizers are only used to turn strings into ids.
Imports only torch, json, random (no product code).
"""

import json
import random

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------
# B1. classic


CLASSIC_DEFAULT_SYSTEM = "你是 MiniMind，是一个有用的人工智能助手。"

# (assistant-start pattern, end pattern) per variant (B1.2)
CLASSIC_PATTERNS = {
    "2502": ("<s>assistant\n", "</s>\n"),  # 58e3af0
    "2504": ("<s>assistant", "</s>"),  # e369b33 "fix chat mask bug"
}


def classic_chat_prompt(messages):
    """B1.1: always a system block (the given one if messages[0] is system, else the default);
    user -> `<s>user\\n{c}</s>\\n<s>assistant\\n`, assistant -> `{c}</s>\\n`, other roles -> nothing."""
    out = ""
    if messages and messages[0].get("role") == "system":
        out += "<s>system\n" + messages[0]["content"] + "</s>\n"
    else:
        out += "<s>system\n" + CLASSIC_DEFAULT_SYSTEM + "</s>\n"
    for m in messages:
        if m.get("role") == "user":
            out += "<s>user\n" + m["content"] + "</s>\n<s>assistant\n"
        elif m.get("role") == "assistant":
            out += m["content"] + "</s>\n"
    return out


def classic_parity_messages(conversations):
    """B1.2: roles by position (even -> user, odd -> assistant); the role field is ignored."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t["content"]} for i, t in enumerate(conversations)]


def classic_loss_mask(ids, bos_id, eos_id, max_length):
    """B1.2's loop, written generically in the pattern lengths as upstream does:
    mask[j] = 1 for j in [start + 1, end + len(eos)] (capped at L-1); continue at end + len(eos)."""
    mask = [0] * len(ids)
    i = 0
    while i < len(ids):
        if ids[i : i + len(bos_id)] == bos_id:
            start = i + len(bos_id)
            end = start
            while end < len(ids):
                if ids[end : end + len(eos_id)] == eos_id:
                    break
                end += 1
            for j in range(start + 1, min(end + len(eos_id) + 1, max_length)):
                mask[j] = 1
            i = end + len(eos_id) if end < len(ids) else len(ids)
        else:
            i += 1
    return mask


def classic_sft_row(tokenizer, messages, max_length, variant="2502", roles="parity", pad_id=0):
    """B1.2: (X, Y, loss_mask), int64 tensors of length L-1.

    roles="parity": MiniMind's behaviour (position decides the role; a leading system message becomes a
    user turn). roles="field": honour the role field (a first system message replaces the default one).
    """
    if roles == "parity":
        msgs = classic_parity_messages(messages)
    elif roles == "field":
        msgs = [dict(m) for m in messages]
    else:
        raise ValueError(roles)
    prompt = classic_chat_prompt(msgs)
    ids = tokenizer(prompt).input_ids[:max_length]
    ids = list(ids) + [pad_id] * (max_length - len(ids))
    bos_text, eos_text = CLASSIC_PATTERNS[variant]
    bos_id = tokenizer(bos_text, add_special_tokens=False).input_ids
    eos_id = tokenizer(eos_text, add_special_tokens=False).input_ids
    mask = classic_loss_mask(ids, bos_id, eos_id, max_length)
    ids_t = torch.tensor(ids, dtype=torch.long)
    mask_t = torch.tensor(mask, dtype=torch.long)
    return ids_t[:-1], ids_t[1:], mask_t[1:]


def classic_masked_loss(logits, Y, loss_mask):
    """B1.3: sum(CE_none * mask) / sum(mask), no epsilon. logits (B, T, V), Y and mask (B, T)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), Y.reshape(-1), reduction="none")
    m = loss_mask.reshape(-1).float()
    return (ce * m).sum() / m.sum()


# --------------------------------------------------------------------------------------------------
# A7 / B2. MiniMind-3


TOOLS_H1 = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_H2 = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n"
)
EMPTY_THINK = "<think>\n\n</think>\n\n"

SYSTEM_PROMPTS = [
    "你是一个知识丰富的AI，尽力为用户提供准确的信息。",
    "你是minimind，一个小巧但有用的语言模型。",
    "你是一个专业的AI助手，请提供有价值的回答。",
    "你是minimind，请尽力帮助用户解决问题。",
    "你是一个可靠的AI，请给出准确的回答。",
    "You are a helpful AI assistant.",
    "You are minimind, a lightweight intelligent assistant.",
    "You are a friendly chatbot. Please answer the user's questions carefully.",
    "You are a knowledgeable AI. Try your best to provide accurate information.",
    "You are minimind, a small but useful language model.",
]


def tojson(x):
    """Hugging Face's chat-template `tojson`: keys in order, ', ' / ': ' separators, non-ASCII kept."""
    return json.dumps(x, ensure_ascii=False)


def minimind3_chat_prompt(messages, tools=None, add_generation_prompt=False, open_thinking=False):
    """A7's template, by hand."""
    out = ""
    first_system = bool(messages) and messages[0].get("role") == "system"
    if tools:
        out += "<|im_start|>system\n"
        if first_system:
            out += messages[0]["content"] + "\n\n"
        out += TOOLS_H1
        for tool in tools:
            out += "\n" + tojson(tool)
        out += TOOLS_H2
    elif first_system:
        out += "<|im_start|>system\n" + messages[0]["content"] + "<|im_end|>\n"
    n = len(messages)
    for idx, m in enumerate(messages):
        role = m.get("role")
        content = m.get("content")
        if not isinstance(content, str):
            content = ""
        if role == "user" or (role == "system" and idx != 0):
            out += "<|im_start|>" + role + "\n" + content + "<|im_end|>\n"
        elif role == "assistant":
            rc = m.get("reasoning_content")
            if isinstance(rc, str):
                reasoning = rc
            elif "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
            else:
                reasoning = ""
            out += "<|im_start|>assistant\n<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
            calls = m.get("tool_calls")
            if calls:
                for j, call in enumerate(calls):
                    if j > 0 or content:
                        out += "\n"
                    if isinstance(call, dict) and call.get("function"):
                        call = call["function"]
                    args = call.get("arguments")
                    out += '<tool_call>\n{"name": "' + call["name"] + '", "arguments": '
                    out += args if isinstance(args, str) else tojson(args)
                    out += "}\n</tool_call>"
            out += "<|im_end|>\n"
        elif role == "tool":
            if idx == 0 or messages[idx - 1].get("role") != "tool":
                out += "<|im_start|>user"
            out += "\n<tool_response>\n" + content + "\n</tool_response>"
            if idx == n - 1 or messages[idx + 1].get("role") != "tool":
                out += "<|im_end|>\n"
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
        out += "<think>\n" if open_thinking is True else EMPTY_THINK
    return out


def pre_processing_chat(conversations, rng, add_system_ratio=0.2):
    """B2.1 step 1."""
    if any(m.get("tools") for m in conversations):
        return conversations
    if conversations and conversations[0].get("role") != "system":
        if rng.random() < add_system_ratio:
            return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] + list(conversations)
    return conversations


def create_chat_messages(conversations):
    """B2.1 step 2 (without the template): copies, tools of the last system message that has them,
    string tool_calls parsed. Returns (messages, tools)."""
    messages = []
    tools = None
    for m in conversations:
        m = dict(m)
        if m.get("role") == "system" and m.get("tools"):
            tools = json.loads(m["tools"]) if isinstance(m["tools"], str) else m["tools"]
        if m.get("tool_calls") and isinstance(m["tool_calls"], str):
            m["tool_calls"] = json.loads(m["tool_calls"])
        messages.append(m)
    return messages, tools


def post_processing_chat(prompt, rng, empty_think_ratio=0.2):
    """B2.1 step 3: with an empty think block present, one random(); > ratio removes every one."""
    if EMPTY_THINK in prompt and rng.random() > empty_think_ratio:
        prompt = prompt.replace(EMPTY_THINK, "")
    return prompt


def minimind3_labels(ids, bos_id, eos_id, max_length):
    """B2.1 step 5: labels[j] = ids[j] for j in [start, end + 1] (capped at L-1), -100 elsewhere."""
    labels = [-100] * len(ids)
    i = 0
    while i < len(ids):
        if ids[i : i + len(bos_id)] == bos_id:
            start = i + len(bos_id)
            end = start
            while end < len(ids):
                if ids[end : end + len(eos_id)] == eos_id:
                    break
                end += 1
            for j in range(start, min(end + len(eos_id), max_length)):
                labels[j] = ids[j]
            i = end + len(eos_id) if end < len(ids) else len(ids)
        else:
            i += 1
    return labels


def minimind3_sft_prompt(messages, rng, add_system_ratio=0.2, empty_think_ratio=0.2):
    conv = pre_processing_chat(messages, rng, add_system_ratio)
    msgs, tools = create_chat_messages(conv)
    prompt = minimind3_chat_prompt(msgs, tools=tools, add_generation_prompt=False)
    return post_processing_chat(prompt, rng, empty_think_ratio)


def minimind3_sft_row(tokenizer, messages, max_length, rng, add_system_ratio=0.2, empty_think_ratio=0.2, pad_id=0):
    """B2.1: (input_ids, labels), int64 tensors of length L, unshifted. rng: a `random.Random`."""
    prompt = minimind3_sft_prompt(messages, rng, add_system_ratio, empty_think_ratio)
    ids = tokenizer(prompt).input_ids[:max_length]
    ids = list(ids) + [pad_id] * (max_length - len(ids))
    bos_id = tokenizer("<|im_start|>assistant\n", add_special_tokens=False).input_ids
    eos_id = tokenizer("<|im_end|>\n", add_special_tokens=False).input_ids
    labels = minimind3_labels(ids, bos_id, eos_id, max_length)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


class ScriptedRandom:
    """A stand-in for `random.Random` returning scripted values: `random()` pops from `values`,
    `choice(seq)` returns `seq[i]` for i popped from `choices`."""

    def __init__(self, values=(), choices=()):
        self.values = list(values)
        self.choices = list(choices)
        self.calls = []

    def random(self):
        self.calls.append("random")
        return self.values.pop(0)

    def choice(self, seq):
        self.calls.append("choice")
        return seq[self.choices.pop(0)]


def new_rng(seed):
    return random.Random(seed)
