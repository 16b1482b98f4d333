"""The configuration: one source of truth for CLI flags, TUI form fields, validation and run records.

A run is a `RunConfig`: the model (the config class of its family: classic `LMConfig` or
`MiniMind3Config`, see `minimind.families`) and how to train it (`TrainConfig`, the seed notebook's
args plus this tool's own, including the family `arch` and the `stage`). It is what a run
directory records and what `--config FILE` reads. Every field carries its policy in its metadata
(`minimind.fields.setting`): help text, form group, choices, and whether a resumed run may change
it. The CLI flags, the TUI form, `command_for` and the resume check are generated from here.

Defaults depend on the family and the stage: a new run starts from the family's model defaults and
the stage's training defaults for that family (MiniMind's script defaults), then the given values.

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
from .families import FAMILIES, Family, LMConfig, MiniMind3Config
from .fields import KINDS, coerce_fields, require_non_negative, require_positive, setting, unwrap_optional
from .stages import STAGES, Stage

CONFIG_FORMAT = 1  # bump when a saved config can no longer be read by the loader below

DTYPES = ("float32", "bfloat16", "float16")
ON_NAN = ("pause", "stop")
TRACKERS = ("none", "tensorboard", "wandb", "swanlab")
ModelConfig = typing.Union[LMConfig, MiniMind3Config]  # one config class per family
# Settings that belong to the stage: a new stage never inherits them (its data has another format; its
# weights must not overwrite the previous stage's).
STAGE_OWNED = ("data_path", "save_weight", "from_weight", "init_from")
# Other spellings of training settings (MiniMind-3's trainer flags).
TRAIN_ALIASES = {"use_compile": "compile"}


@dataclass
class TrainConfig:
    """The seed notebook's training args (names and defaults as the seed), plus this tool's own."""

    arch: str = setting("classic", "model family: classic (the seed notebook's MiniMind) or minimind3 "
                        "(MiniMind since 2026-03)", "family", choices=tuple(FAMILIES))
    stage: str = setting("pretrain", "training stage: " + "; ".join(f"{s.name} ({s.title})" for s in STAGES.values()),
                         "family", choices=tuple(STAGES))
    data_path: str = setting("./toydata/pretrain_data.jsonl", "JSONL corpus, one {\"text\": ...} per line", "data")
    tokenizer: Optional[str] = setting(None, "tokenizer folder (empty = the one shipped for the family)", "data")
    num_workers: int = setting(1, "DataLoader worker processes (0 = load in the training process)", "data", resume=True)
    shuffle: bool = setting(False, "shuffle documents each epoch (seeded; the seed notebook does not)", "data")
    packing: bool = setting(False, "concatenate documents (eos-separated) into full rows: no padding waste "
                            "(MiniMind pads each document)", "data")
    add_system_ratio: float = setting(0.0, "SFT: share of conversations without a system turn that get one of "
                                      "MiniMind-3's system prompts (its default 0.2)", "data")
    empty_think_ratio: float = setting(1.0, "SFT: chance that a conversation keeps its empty <think> blocks "
                                       "(MiniMind-3's default 0.2; the rest lose them)", "data")
    epochs: int = setting(5, "passes over the corpus", "optimisation")
    batch_size: int = setting(2, "sequences per micro-batch", "optimisation")
    learning_rate: float = setting(5e-4, "peak learning rate (cosine decay to lr/10)", "optimisation")
    accumulation_steps: int = setting(1, "micro-batches per optimizer step", "optimisation")
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0 = no clipping)", "optimisation")
    warmup_iters: int = setting(0, "linear warm-up steps before the cosine schedule (0 = none, as MiniMind)", "optimisation")
    seed: int = setting(42, "random seed, set before the model is built", "optimisation")
    device: str = setting("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N", "precision", resume=True)
    dtype: str = setting("bfloat16", "autocast dtype: bfloat16 (CUDA, and CPUs with fast bf16), float16 "
                      "(CUDA) or float32", "precision", choices=DTYPES)
    skip_padding: bool = setting(True, "compute a padded batch only up to its last real target and the output layer "
                                 "only at real targets: the same loss and gradients with less work (no trimming "
                                 "for MoE or dropout, whose results padding changes)", "precision", resume=True)
    compile: bool = setting(False, "torch.compile the model (pays off on CUDA; on CPU it mostly adds "
                         "compile time)", "precision", resume=True)
    save_dir: str = setting("./output", "where weights and run records go", "checkpoints", resume=True)
    save_weight: str = setting("minimind_pretrain", "weights file prefix: {save_weight}_{width}[_moe].pth", "checkpoints")
    save_interval: int = setting(1, "save weights every N steps (0 = never)", "checkpoints", resume=True)
    init_from: Optional[str] = setting(None, "start from these weights: a .pth/.safetensors file of the family, or "
                                       "a run directory (its newest weights)", "checkpoints")
    from_weight: str = setting("none", "MiniMind's spelling: start from {save_dir}/{from_weight}_{width}[_moe].pth "
                               "(none = from scratch)", "checkpoints")
    resume_every_s: float = setting(60.0, "at most one exact-resume save per this many seconds at weight saves "
                                 "(always at stop, save-now and the end)", "checkpoints", resume=True)
    eval_data: Optional[str] = setting(None, "held-out JSONL in the training format, evaluated as it trains "
                                       "(eval loss and perplexity)", "eval", resume=True)
    eval_split: float = setting(0.0, "hold out this fraction of the training documents instead (seeded, the same on "
                                "resume; 0 = off)", "eval")
    eval_interval: int = setting(0, "evaluate every N optimizer steps, and once at the end (0 = only at the end)",
                                 "eval", resume=True)
    eval_max_batches: int = setting(0, "evaluate at most this many batches (0 = the whole held-out set)", "eval",
                                    resume=True)
    save_best: bool = setting(False, "also keep {save_weight}_{width}[_moe]_best.pth: the weights of the best eval "
                              "loss so far", "eval", resume=True)
    nproc: int = setting(1, "training processes on this machine (>1 launches torchrun: one per GPU, or CPU "
                      "processes with gloo)", "run", resume=True)
    log_interval: int = setting(1, "print and record metrics every N steps", "run", resume=True)
    run_name: Optional[str] = setting(None, "name of the run directory (empty = a timestamp)", "run", resume=True)
    on_nan: str = setting("pause", "on a NaN/inf loss: pause (resume or stop later) or stop", "run", choices=ON_NAN, resume=True)
    tracker: str = setting("none", "also log to: none, tensorboard (event files in the run directory), wandb or "
                        "swanlab (optional extras)", "run", choices=TRACKERS, resume=True)
    use_wandb: bool = setting(False, "the seed's spelling of --tracker wandb", "run", resume=True)
    wandb_project: str = setting("MiniMind-Notebook", "W&B / SwanLab project (the seed's default)", "run", resume=True)

    def __post_init__(self) -> None:
        coerce_fields(self)
        require_positive(self, "epochs", "batch_size", "accumulation_steps", "log_interval", "nproc")
        require_non_negative(self, "num_workers", "warmup_iters", "save_interval", "grad_clip", "resume_every_s",
                             "eval_interval", "eval_max_batches")
        if not 0.0 <= self.eval_split < 1.0:
            raise ConfigError("eval_split", f"must be in [0, 1), got {self.eval_split}")
        if self.eval_data and self.eval_split > 0:
            raise ConfigError("eval_split", "conflicts with --eval_data: hold out a split or give a file, not both")
        if self.save_best and not self.evaluates:
            raise ConfigError("save_best", "needs an evaluation: give --eval_data or --eval_split")
        for name in ("add_system_ratio", "empty_think_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(name, f"must be between 0 and 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError("learning_rate", f"must be a positive number, got {self.learning_rate}")
        if not math.isfinite(self.grad_clip):
            raise ConfigError("grad_clip", f"must be a finite number, got {self.grad_clip}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError("device", f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N")
        for name in ("arch", "stage", "dtype", "on_nan", "tracker"):
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
        if not re.fullmatch(r"[\w.\-]+", self.from_weight):
            raise ConfigError("from_weight", f"{self.from_weight!r} must be a plain file-name prefix (or none)")
        if self.init_from and self.from_weight != "none":
            raise ConfigError("from_weight", "conflicts with --init-from: give one of them")
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed", f"{self.seed} is outside 0 .. 2**63-1 (torch's seeds): pick a smaller one")
        if self.run_name is not None and len(self.run_name) > 100:
            raise ConfigError("run_name", f"is {len(self.run_name)} characters long: keep it under 100 (it names a folder)")
        if self.run_name is not None and not re.fullmatch(r"[\w.\-]+", self.run_name):
            raise ConfigError("run_name", f"{self.run_name!r} must be a plain folder name (letters, digits, _ . -)")

    @property
    def evaluates(self) -> bool:
        return bool(self.eval_data) or self.eval_split > 0


def effective_tracker(train: "TrainConfig") -> str:
    return "wandb" if train.use_wandb else train.tracker


TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Every family's model fields, by name (a name two families share, like vocab_size, appears once).
MODEL_FIELDS = {name: f for family in FAMILIES.values() for name, f in family.model_fields().items()}


def defaults_for(arch: str, stage: str) -> dict[str, Any]:
    """Every setting a new run of this family and stage starts from (flat)."""
    family, stage_ = _family(arch), _stage(stage)
    model = dataclasses.asdict(family.new_config())
    train = dataclasses.asdict(TrainConfig())
    return {**model, **train, **stage_.defaults(family), "arch": arch, "stage": stage}


@dataclass
class RunConfig:
    """Everything that defines a training run: the model and how to train it."""

    model: ModelConfig = field(default_factory=lambda: FAMILIES["classic"].new_config())  # the family's config class
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, self.family.config_class):
            raise ConfigError("arch", f"the model settings are not {self.train.arch}'s: "
                              f"expected {self.family.config_class.__name__}")
        if self.model.max_seq_len < 2:
            raise ConfigError("max_seq_len", f"must be at least 2 to train (X and Y are shifted by one), "
                              f"got {self.model.max_seq_len}")
        self.stage.check(self)

    @property
    def family(self) -> Family:
        return FAMILIES[self.train.arch]

    @property
    def stage(self) -> Stage:
        return STAGES[self.train.stage]

    def to_dict(self) -> dict:
        return {"format": CONFIG_FORMAT, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    def flat(self) -> dict:
        """All fields in one namespace (the CLI's and the form's view)."""
        return {**dataclasses.asdict(self.model), **dataclasses.asdict(self.train)}

    @classmethod
    def from_flat(cls, values: dict) -> "RunConfig":
        """A run from flat settings; those not given take the family's and stage's defaults."""
        values = dict(values)
        arch, stage = values.get("arch", "classic"), values.get("stage", "pretrain")
        family = _family(arch)
        _stage(stage)
        merged = defaults_for(arch, stage)
        given = _own_names(family, values)
        if given.get("init_from") and "from_weight" not in given:  # --init-from replaces the default start
            merged["from_weight"] = "none"
        merged.update(given)
        model_names = family.model_fields()
        model = {k: v for k, v in merged.items() if k in model_names}
        train = {k: v for k, v in merged.items() if k in TRAIN_FIELDS}
        return cls(model=family.config_class(**model), train=TrainConfig(**train))

    def replace(self, **changes: Any) -> "RunConfig":
        """This config with some settings changed. Changing the family or the stage moves every
        setting still at the old default to the new default (the model settings too, for a family)."""
        arch, stage = changes.get("arch", self.train.arch), changes.get("stage", self.train.stage)
        current = self.flat()
        if (arch, stage) != (self.train.arch, self.train.stage):
            old = defaults_for(self.train.arch, self.train.stage)
            current = {k: v for k, v in current.items() if v != old.get(k)}
            if arch != self.train.arch:
                current = {k: v for k, v in current.items() if k in TRAIN_FIELDS}
            if stage != self.train.stage:  # another stage reads other data and writes other weights
                current = {k: v for k, v in current.items() if k not in STAGE_OWNED}
        if changes.get("init_from") and "from_weight" not in changes:
            current.pop("from_weight", None)  # the new start replaces the old one
        # the family is always said: dropped as "at its old default" it would read as classic
        return RunConfig.from_flat({**current, "arch": arch, **_own_names(_family(arch), changes)})

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
        except (ValueError, RecursionError) as e:  # a number of thousands of digits, absurd nesting
            raise ConfigError("config", f"{p} cannot be read as settings ({str(e)[:80]}): fix or re-save it") from None
        except OSError as e:
            raise ConfigError("config", f"{p} cannot be read ({e.strerror}): check its permissions") from None
        return cls.from_dict(data, source=str(p))


def _family(arch: Any) -> Family:
    if arch not in FAMILIES:
        raise ConfigError("arch", f"{arch!r} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[arch]


def _stage(stage: Any) -> Stage:
    if stage not in STAGES:
        raise ConfigError("stage", f"{stage!r} is not one of {', '.join(STAGES)}")
    return STAGES[stage]


def _own_names(family: Family, values: dict) -> dict:
    """Settings under this family's (and TrainConfig's) names: aliases translated, another family's
    model settings and unknown names refused with the field named."""
    own = family.model_fields()
    out: dict = {}
    for key, value in values.items():
        name = family.aliases.get(key, TRAIN_ALIASES.get(key, key))
        if name not in own and name not in TRAIN_FIELDS:
            others = [f.name for f in FAMILIES.values() if key in f.model_fields()]
            if others:
                raise ConfigError(key, f"is a setting of --arch {others[0]}, not {family.name}: drop it or "
                                  f"switch --arch")
            raise ConfigError(key, "unknown setting: check the spelling (see `minimind train --help`)")
        if name in out and name != key and out[name] != value:
            raise ConfigError(key, f"and --{name} give different values ({value!r}, {out[name]!r}): give one")
        if name != key and name in values and values[name] != value:
            raise ConfigError(key, f"and --{name} give different values ({value!r}, {values[name]!r}): give one")
        out[name] = value
    return out


# Form groups in display order, with their titles (the CLI's help panels use the keys).
GROUPS = {
    "family": "Model family and stage", "model": "Model", "moe": "Mixture of experts", "data": "Data",
    "optimisation": "Optimisation", "precision": "Device and precision", "checkpoints": "Checkpoints",
    "eval": "Held-out evaluation", "run": "Run",
}
# Settings a resumed run may change: declared beside each field (resume=True).
RESUME_OVERRIDABLE = frozenset(name for name, f in {**MODEL_FIELDS, **TRAIN_FIELDS}.items() if f.metadata["resume"])


@dataclass(frozen=True)
class FieldSpec:
    """What a CLI flag or a form field needs to know about one setting."""

    name: str
    type: type  # int, float, str or bool
    optional: bool  # None is allowed (shown as an empty field)
    default: Any  # a new classic pretraining run's value (see `defaults`)
    help: str
    group: str
    choices: tuple | None
    resume: bool  # a resumed run may change it
    families: tuple[str, ...]  # the families whose model has it (every family for training settings)
    defaults: dict[str, Any]  # a new pretraining run's value, per family that has the setting

    @property
    def flags(self) -> tuple[str, ...]:
        """The CLI spellings: MiniMind's (--batch_size) first, then Typer's (--batch-size)."""
        dashed = self.name.replace("_", "-")
        return (f"--{self.name}",) + ((f"--{dashed}",) if dashed != self.name else ())


def field_specs() -> list[FieldSpec]:
    """Every user-settable field: each family's model fields (shared names once), then training."""
    pretrain = {name: defaults_for(name, "pretrain") for name in FAMILIES}
    specs: dict[str, FieldSpec] = {}
    sources: list[tuple[dataclasses.Field, tuple[str, ...], type]] = [
        (f, (family.name,), family.config_class) for family in FAMILIES.values()
        for f in dataclasses.fields(family.config_class)]
    sources += [(f, tuple(FAMILIES), TrainConfig) for f in dataclasses.fields(TrainConfig)]
    for f, families, cls in sources:
        if not f.metadata["flag"]:
            continue
        if f.name in specs:  # a model setting another family has too
            spec = specs[f.name]
            specs[f.name] = dataclasses.replace(spec, families=spec.families + families,
                                                defaults={**spec.defaults, **{a: pretrain[a][f.name] for a in families}})
            continue
        base, optional = unwrap_optional(typing.get_type_hints(cls)[f.name])
        defaults = {a: pretrain[a][f.name] for a in families}
        specs[f.name] = FieldSpec(f.name, base, optional, next(iter(defaults.values())), f.metadata["help"],
                                  f.metadata["group"], f.metadata["choices"], f.metadata["resume"], families, defaults)
    return list(specs.values())


@dataclass(frozen=True)
class SamplingConfig:
    """Defaults for sampling text (`minimind generate`, `minimind chat`, the TUI), in one place."""

    max_new_tokens: int = 256
    temperature: float = 0.85  # 0 = greedy (MiniMind's eval scripts use 0.85)
    top_p: float = 0.85
    top_k: int = 50  # MiniMind-3's generate() default; 0 = no top-k cut
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
        raise ConfigError(spec.name, f"{text!r} is not {KINDS.get(spec.type, 'text')}") from None
