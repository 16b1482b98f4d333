"""The configuration: one source of truth for CLI flags, TUI form fields, validation and run records.

`LMConfig` keeps MiniMind classic's field names and defaults. `TrainConfig` holds the seed
notebook's training args (and the few this tool adds). `RunConfig` pairs them; it is what a run
directory records and what `--config FILE` reads. Every field carries its policy in its metadata:
help text, form group, choices, and whether a resumed run may change it. The CLI flags, the TUI
form, `command_for` and the resume check are all generated from here and cannot drift apart.

This module must stay importable without torch (the TUI form and `--help` use it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

CONFIG_FORMAT = 1  # bump when a saved config can no longer be read by the loader below


def _opt(default: Any, help: str, group: str, *, resume: bool = False, choices: tuple | None = None,
         flag: bool = True) -> Any:
    """A dataclass field whose metadata feeds the CLI flag, the TUI form field and the resume check.

    resume=True: a resumed run may change it (it does not alter what the model learns).
    flag=False: not user-settable (no flag, no form field)."""
    return field(default=default, metadata={"help": help, "group": group, "resume": resume, "choices": choices,
                                            "flag": flag})


@dataclass
class LMConfig:
    """MiniMind classic model hyper-parameters (names and defaults as MiniMind's LMConfig)."""

    dim: int = _opt(512, "hidden size", "model")
    n_layers: int = _opt(8, "number of transformer blocks", "model")
    n_heads: int = _opt(8, "attention heads; head_dim = dim / n_heads", "model")
    n_kv_heads: int = _opt(2, "key/value heads (grouped-query attention); divides n_heads", "model")
    vocab_size: int = _opt(6400, "embedding rows; must cover every token id", "model")
    hidden_dim: Optional[int] = _opt(None, "FFN size; empty = 8/3*dim rounded up to multiple_of", "model")
    multiple_of: int = _opt(64, "FFN size rounding", "model")
    norm_eps: float = _opt(1e-5, "RMSNorm epsilon", "model")
    max_seq_len: int = _opt(8192, "longest sequence (training rows are this long)", "model")
    rope_theta: float = _opt(1e6, "RoPE base", "model")
    dropout: float = _opt(0.0, "dropout on embeddings, attention, residual and FFN output", "model")
    flash_attn: bool = _opt(True, "use torch scaled_dot_product_attention", "model")
    use_moe: bool = _opt(False, "mixture-of-experts feed-forward layers", "moe")
    num_experts_per_tok: int = _opt(2, "experts each token is routed to (top-k)", "moe")
    n_routed_experts: int = _opt(4, "routed experts per MoE layer", "moe")
    n_shared_experts: bool = _opt(True, "add one always-on shared expert", "moe")
    scoring_func: str = _opt("softmax", "gate scoring function", "moe", choices=("softmax",), flag=False)
    aux_loss_alpha: float = _opt(0.1, "load-balancing loss weight (0 = off)", "moe")
    seq_aux: bool = _opt(True, "sequence-level load-balancing loss", "moe")
    norm_topk_prob: bool = _opt(True, "renormalise the top-k gate weights", "moe")

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _positive(self, "dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len")
        if self.hidden_dim is not None and self.hidden_dim <= 0:
            raise ConfigError("hidden_dim", f"must be positive or empty, got {self.hidden_dim}")
        if self.dim % self.n_heads:
            raise ConfigError(
                "dim", f"{self.dim} is not divisible by n_heads={self.n_heads}: pick a dim that is a "
                f"multiple of {self.n_heads} (e.g. {_round_up(self.dim, self.n_heads)}) or change n_heads")
        if (self.dim // self.n_heads) % 2:
            raise ConfigError(
                "dim", f"head size dim/n_heads = {self.dim // self.n_heads} is odd; RoPE needs an even "
                "head size: change dim or n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                "n_kv_heads", f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}: "
                "use a divisor of n_heads")
        for name in ("norm_eps", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.use_moe:
            _positive(self, "n_routed_experts", "num_experts_per_tok")
            if self.num_experts_per_tok > self.n_routed_experts:
                raise ConfigError(
                    "num_experts_per_tok", f"top-k {self.num_experts_per_tok} is above the number of "
                    f"experts n_routed_experts={self.n_routed_experts}: lower it or add experts")
            if self.aux_loss_alpha < 0:
                raise ConfigError("aux_loss_alpha", f"must be >= 0, got {self.aux_loss_alpha}")
        if self.scoring_func != "softmax":
            raise ConfigError("scoring_func", f"only 'softmax' is supported, got {self.scoring_func!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """FFN width: MiniMind's 4*dim -> 2/3 -> round up to multiple_of (512 -> 1408)."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


# The seed notebook trains a smaller model than LMConfig's defaults describe.
SEED_MODEL_DEFAULTS: dict[str, Any] = {"dim": 512, "n_layers": 2, "max_seq_len": 512, "use_moe": False}

DTYPES = ("float32", "bfloat16", "float16")
ON_NAN = ("pause", "stop")
TRACKERS = ("none", "tensorboard", "wandb", "swanlab")


@dataclass
class TrainConfig:
    """The seed notebook's training args (names and defaults as the seed), plus this tool's own."""

    data_path: str = _opt("./toydata/pretrain_data.jsonl", "JSONL corpus, one {\"text\": ...} per line", "data")
    tokenizer: Optional[str] = _opt(None, "tokenizer folder (empty = the shipped MiniMind-style one)", "data")
    num_workers: int = _opt(1, "DataLoader worker processes (0 = load in the training process)", "data", resume=True)
    shuffle: bool = _opt(False, "shuffle documents each epoch (seeded; the seed notebook does not)", "data")
    packing: bool = _opt(False, "concatenate documents (eos-separated) into full rows: no padding waste "
                         "(MiniMind pads each document)", "data")
    epochs: int = _opt(5, "passes over the corpus", "optimisation")
    batch_size: int = _opt(2, "sequences per micro-batch", "optimisation")
    learning_rate: float = _opt(5e-4, "peak learning rate (cosine decay to lr/10)", "optimisation")
    accumulation_steps: int = _opt(1, "micro-batches per optimizer step", "optimisation")
    grad_clip: float = _opt(1.0, "clip the gradient norm to this (0 = no clipping)", "optimisation")
    warmup_iters: int = _opt(0, "linear warm-up steps before the cosine schedule (0 = none, as MiniMind)", "optimisation")
    seed: int = _opt(42, "random seed, set before the model is built", "optimisation")
    device: str = _opt("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N", "precision", resume=True)
    dtype: str = _opt("bfloat16", "autocast dtype: bfloat16 (CUDA, and CPUs with fast bf16), float16 "
                      "(CUDA) or float32", "precision", choices=DTYPES)
    compile: bool = _opt(False, "torch.compile the model (pays off on CUDA; on CPU it mostly adds "
                         "compile time)", "precision", resume=True)
    save_dir: str = _opt("./output", "where weights and run records go", "checkpoints", resume=True)
    save_weight: str = _opt("minimind_pretrain", "weights file prefix: {save_weight}_{dim}[_moe].pth", "checkpoints")
    save_interval: int = _opt(1, "save weights every N steps (0 = never)", "checkpoints", resume=True)
    init_from: Optional[str] = _opt(None, "start from these weights (a classic .pth)", "checkpoints")
    resume_every_s: float = _opt(60.0, "at most one exact-resume save per this many seconds at weight saves "
                                 "(always at stop, save-now and the end)", "checkpoints", resume=True)
    nproc: int = _opt(1, "training processes on this machine (>1 launches torchrun: one per GPU, or CPU "
                      "processes with gloo)", "run", resume=True)
    log_interval: int = _opt(1, "print and record metrics every N steps", "run", resume=True)
    run_name: Optional[str] = _opt(None, "name of the run directory (empty = a timestamp)", "run", resume=True)
    on_nan: str = _opt("pause", "on a NaN/inf loss: pause (resume or stop later) or stop", "run", choices=ON_NAN, resume=True)
    tracker: str = _opt("none", "also log to: none, tensorboard (event files in the run directory), wandb or "
                        "swanlab (optional extras)", "run", choices=TRACKERS, resume=True)
    use_wandb: bool = _opt(False, "the seed's spelling of --tracker wandb", "run", resume=True)
    wandb_project: str = _opt("MiniMind-Notebook", "W&B / SwanLab project (the seed's default)", "run", resume=True)

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _positive(self, "epochs", "batch_size", "accumulation_steps", "log_interval", "nproc")
        _non_negative(self, "num_workers", "warmup_iters", "save_interval", "grad_clip", "resume_every_s")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError("learning_rate", f"must be a positive number, got {self.learning_rate}")
        if not math.isfinite(self.grad_clip):
            raise ConfigError("grad_clip", f"must be a finite number, got {self.grad_clip}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError("device", f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N")
        for name in ("dtype", "on_nan", "tracker"):
            choices = TRAIN_FIELDS[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ConfigError(name, f"{getattr(self, name)!r} is not one of {', '.join(choices)}")
        if not self.data_path:
            raise ConfigError("data_path", "is empty: give a .jsonl file")
        if not self.save_weight or not re.fullmatch(r"[\w.\-]+", self.save_weight):
            raise ConfigError("save_weight", f"{self.save_weight!r} must be a plain file-name prefix "
                              "(letters, digits, _ . -)")
        if self.use_wandb and self.tracker not in ("none", "wandb"):
            raise ConfigError("use_wandb", f"conflicts with --tracker {self.tracker}: use one of them")
        if self.run_name is not None and not re.fullmatch(r"[\w.\-]+", self.run_name):
            raise ConfigError("run_name", f"{self.run_name!r} must be a plain folder name (letters, digits, _ . -)")


def effective_tracker(train: "TrainConfig") -> str:
    return "wandb" if train.use_wandb else train.tracker


@dataclass
class RunConfig:
    """Everything that defines a training run: the model and how to train it."""

    model: LMConfig = field(default_factory=lambda: LMConfig(**SEED_MODEL_DEFAULTS))
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.max_seq_len < 2:
            raise ConfigError("max_seq_len", f"must be at least 2 to train (X and Y are shifted by one), "
                              f"got {self.model.max_seq_len}")

    def to_dict(self) -> dict:
        return {"format": CONFIG_FORMAT, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    def flat(self) -> dict:
        """All fields in one namespace (the CLI's and the form's view)."""
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.train)}

    @classmethod
    def from_flat(cls, values: dict) -> "RunConfig":
        unknown = sorted(set(values) - set(MODEL_FIELDS) - set(TRAIN_FIELDS))
        if unknown:
            raise ConfigError(unknown[0], "unknown setting: check the spelling (see `minimind train --help`)")
        model = {**SEED_MODEL_DEFAULTS, **{k: v for k, v in values.items() if k in MODEL_FIELDS}}
        train = {k: v for k, v in values.items() if k in TRAIN_FIELDS}
        return cls(model=LMConfig(**model), train=TrainConfig(**train))

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_flat({**self.flat(), **changes})

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "RunConfig":
        """Read a saved config: nested {"model": ..., "train": ...} or flat {"dim": ..., "epochs": ...}."""
        if not isinstance(data, dict):
            raise ConfigError(source, "must be a JSON object of settings")
        fmt = data.get("format", CONFIG_FORMAT)
        if not isinstance(fmt, int) or fmt > CONFIG_FORMAT:
            raise ConfigError(source, f"was written by a newer minimind (config format {fmt}); upgrade minimind")
        flat: dict = {}
        for key, value in data.items():
            if key in ("model", "train") and isinstance(value, dict):
                flat.update(value)
            elif key in ("format", "run"):  # "run" holds a run record's metadata (versions, world size)
                continue
            else:
                flat[key] = value
        return cls.from_flat(flat)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunConfig":
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config", f"{p} does not exist: give the path of a saved config .json") from None
        except IsADirectoryError:
            raise ConfigError("config", f"{p} is a directory: give a .json file (a run's config.json works)") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError("config", f"{p} is not valid JSON ({e}): fix or re-save it") from None
        return cls.from_dict(data, source=str(p))


MODEL_FIELDS = {f.name: f for f in dataclasses.fields(LMConfig)}
TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Form groups in display order, with their titles (the CLI's help panels use the keys).
GROUPS = {
    "model": "Model", "moe": "Mixture of experts", "data": "Data", "optimisation": "Optimisation",
    "precision": "Device and precision", "checkpoints": "Checkpoints", "run": "Run",
}
# Settings a resumed run may change: declared beside each field (resume=True).
RESUME_OVERRIDABLE = frozenset(name for name, f in {**MODEL_FIELDS, **TRAIN_FIELDS}.items() if f.metadata["resume"])


@dataclass(frozen=True)
class FieldSpec:
    """What a CLI flag or a form field needs to know about one setting."""

    name: str
    type: type  # int, float, str or bool
    optional: bool  # None is allowed (shown as an empty field)
    default: Any  # the default a new run gets (seed defaults for the model)
    help: str
    group: str
    choices: tuple | None
    resume: bool  # a resumed run may change it

    @property
    def flags(self) -> tuple[str, ...]:
        """The CLI spellings: MiniMind's (--batch_size) first, then Typer's (--batch-size)."""
        dashed = self.name.replace("_", "-")
        return (f"--{self.name}",) + ((f"--{dashed}",) if dashed != self.name else ())


def field_specs() -> list[FieldSpec]:
    """Every user-settable field, model first, in declaration order."""
    specs = []
    for cls in (LMConfig, TrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata["flag"]:
                continue
            base, optional = _unwrap_optional(hints[f.name])
            default = SEED_MODEL_DEFAULTS.get(f.name, f.default) if cls is LMConfig else f.default
            specs.append(FieldSpec(f.name, base, optional, default, f.metadata["help"], f.metadata["group"],
                                   f.metadata["choices"], f.metadata["resume"]))
    return specs


@dataclass(frozen=True)
class SamplingConfig:
    """Defaults for sampling text (`minimind generate`, the TUI's Sample screen), in one place."""

    max_new_tokens: int = 128
    temperature: float = 0.75  # 0 = greedy
    top_p: float = 0.9
    repetition_penalty: float = 1.0


def parse_value(spec: FieldSpec, text: str) -> Any:
    """Parse one setting typed as text (a form field); raise ConfigError naming the field."""
    text = text.strip()
    if text == "" and spec.optional:
        return None
    try:
        if spec.type is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if spec.type is int:
            return int(text)
        if spec.type is float:
            return float(text)
        return text
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number"}.get(spec.type, "text")
        raise ConfigError(spec.name, f"{text!r} is not {kind}") from None


def _unwrap_optional(tp: Any) -> tuple[type, bool]:
    args = typing.get_args(tp)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def _coerce_fields(obj: Any) -> None:
    """Accept JSON-ish values (1 for True, 5 for 5.0) but refuse wrong kinds with a clear message."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        base, optional = _unwrap_optional(hints[f.name])
        if value is None:
            if optional:
                continue
            raise ConfigError(f.name, "must be set")
        if base is bool:
            if isinstance(value, bool) or value in (0, 1):
                setattr(obj, f.name, bool(value))
                continue
        elif base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                continue
            if isinstance(value, float) and value.is_integer():
                setattr(obj, f.name, int(value))
                continue
        elif base is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(obj, f.name, float(value))
                continue
        elif isinstance(value, base):
            continue
        kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[base]
        raise ConfigError(f.name, f"must be {kind}, got {value!r}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(name, f"must be at least 1, got {value}")


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(name, f"must be >= 0, got {value}")


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))
