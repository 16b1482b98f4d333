"""Where a model's weights come from: a run directory (its newest weights), a weights file in any
layout a family reads (classic, MiniMind2, MiniMind-3; .pth or .safetensors) or a Hugging Face export
folder (read as its model.safetensors), and the model built from them. Used by training
(`--init-from`, `--from_weight`), `generate`, `chat`, `eval` and export.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from .config import RunConfig
from .errors import CheckpointError, MiniMindError
from .events import RunState
from .families import FAMILIES, Family
from .interop import load_state
from .storage.checkpoint import apply_weights, load_resume_state, load_weights
from .storage.run_store import RunStore, checkpoint_change, is_same_file, list_runs


def detect_family(state: dict) -> Family:
    """The family whose layout these keys are: q/k norms mean MiniMind-3, else classic (or MiniMind2,
    which classic reads)."""
    if any(".self_attn.q_norm." in k for k in state):
        return FAMILIES["minimind3"]
    return FAMILIES["classic"]


def load_run_weights(run_dir: str | os.PathLike) -> tuple[dict, RunConfig]:
    """A run's newest weights (fp32 from its resume state, else the fp16 weights file it wrote) and its
    config. Never another run's: the weights file is shared by the runs of a save_dir, so it is used
    only while it is still the file this run saved (same size and time)."""
    store = RunStore.open(run_dir)
    run_config = RunConfig.from_dict(store.read_config())
    if store.resume_path.is_file():
        return load_resume_state(store.resume_path)["model"], run_config
    saved = store.read_status().get("checkpoints", {}).get("weights")
    if not isinstance(saved, dict) or not isinstance(saved.get("path"), str):
        raise CheckpointError(f"run {store.run_id} saved no weights and has no resume state: nothing to load")
    path = Path(saved["path"])
    change = checkpoint_change(saved, killed=store.state() == RunState.LOST)
    if change == "gone":
        raise CheckpointError(f"run {store.run_id}'s weights file {path} is gone and it has no resume state: "
                              "nothing to load")
    if change == "overwritten":
        raise CheckpointError(f"{path} was written by another run since run {store.run_id} saved it, and this run "
                              "has no resume state: its own weights are gone (load the other run, or that file)")
    if change == "changed":
        raise CheckpointError(f"{path} changed after run {store.run_id}'s last record of it (it was killed, maybe "
                              "while saving it) and the run has no resume state: load that file itself if it is "
                              "this run's")
    return load_weights(path), run_config


def resolve_source(source: str | os.PathLike) -> Path:
    """`source` itself (a run directory or a weights file), or the model.safetensors of a Hugging Face
    export folder (`minimind export RUN DIR --format hf`): its config.json is the export's, not a run's,
    and the file is read like any exported weights file (with that config.json and the tokenizer beside)."""
    path = Path(source)
    if not path.is_dir():
        return path
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is neither a run directory (no config.json) nor a Hugging Face export (no "
                              "model.safetensors): give a run directory (see `minimind runs list`), an export "
                              "folder or a weights file")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return path  # not an export's config either: opening it as a run names the problem
    if isinstance(config, dict) and "model_type" in config:
        raise CheckpointError(f"{path} holds a Hugging Face config.json but no model.safetensors: export it again "
                              f"with `minimind export RUN {path} --format hf --force`, or give the weights file")
    return path


def load_state_for(family: Family, source: str | os.PathLike, config: Any = None, n_heads: int = 8) -> dict:
    """Weights from a run directory, a file or an export folder, in `family`'s own layout."""
    path = resolve_source(source)
    state = load_run_weights(path)[0] if path.is_dir() else load_state(path)
    return family.own_layout(state, config=config, n_heads=n_heads)


def load_model(source: str | os.PathLike, n_heads: int = 8, device: str = "cpu",
               arch: Optional[str] = None) -> tuple[Any, Optional[RunConfig], Family]:
    """A model in eval mode from a run directory (its own config) or a weights file or export folder (the
    family from `arch` or the keys, the config from the shapes and an export's config.json), with its run
    config (None for a file) and family."""
    path = resolve_source(source)
    if path.is_dir():
        state, run_config = load_run_weights(path)
        family, config = run_config.family, run_config.model
        if arch is not None and arch != family.name:
            raise CheckpointError(f"{path} is a {family.name} run, not {arch}: drop --arch (a run directory's "
                                  "family comes from its own config)")
        state = family.own_layout(state, config=config)
    else:
        run_config = None
        raw = load_state(path)
        family = FAMILIES[arch] if arch else detect_family(raw)
        hf_config = _hf_config_beside(path)
        settings = family.settings_from_hf(hf_config)
        heads = hf_config.get("num_attention_heads")
        if settings and isinstance(heads, int) and heads > 0:
            n_heads = heads  # this family's export: its config knows the head count the shapes cannot tell
        state = family.own_layout(raw, n_heads=n_heads)
        config = family.infer_config(state, n_heads=n_heads)
        if settings:
            config = dataclasses.replace(config, **settings)
    model = family.build_model(config)
    apply_weights(model, state, str(path))
    return model.to(device).eval(), run_config, family


def run_that_saved(path: str | os.PathLike) -> Optional[RunConfig]:
    """The config of the run (under the file's folder) whose record says it wrote this very file, same
    size and time; None when no run there did, or another run has overwritten it since."""
    path = Path(path)
    try:
        stat, where = path.stat(), path.resolve()
        stores = list_runs(path.parent)
    except (OSError, MiniMindError):
        return None
    for store in reversed(stores):
        try:
            for saved in store.read_status().get("checkpoints", {}).values():
                if (isinstance(saved, dict) and isinstance(saved.get("path"), str)
                        and Path(saved["path"]).resolve() == where
                        and is_same_file(saved, stat)):
                    return RunConfig.from_dict(store.read_config())
        except (OSError, MiniMindError):
            continue
    return None


def tokenizer_folder_for(source: str | os.PathLike, run_config: Optional[RunConfig], family: Family,
                         tokenizer: Optional[str] = None) -> tuple[str, str]:
    """(folder, note) of the tokenizer that goes with a model loaded from `source`: `tokenizer` if given,
    else its run's (a run directory, or a file whose run record says that run wrote it), else the
    tokenizer files beside it (an export), else the family's bundled one, with a note saying so."""
    path = resolve_source(source)
    if tokenizer:
        return str(tokenizer), ""
    if run_config is None and not path.is_dir():
        if all((path.parent / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            return str(path.parent), ""
        writer = run_that_saved(path)
        run_config = writer if writer is not None and writer.family is family else None
        if run_config is None:
            return str(family.tokenizer_dir), (
                f"tokenizer: the one bundled for {family.name} (ours; MiniMind's released weights were trained "
                "with MiniMind's own: pass --tokenizer DIR for those)")
    return str((run_config.train.tokenizer if run_config else None) or family.tokenizer_dir), ""


def _hf_config_beside(path: Path) -> dict:
    """The Hugging Face config.json in a weights file's folder (an export), or {}."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        return {}
    try:
        value = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path} beside the weights cannot be read ({e}): fix or remove it") from None
    return value if isinstance(value, dict) else {}


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist: train that stage first, or give --init-from PATH")
    return path
