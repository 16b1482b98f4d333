"""Checkpoints: the seed's fp16 weights file and the exact-resume state.

Every load uses `torch.load(weights_only=True)`: a file whose unpickling would run code is refused
before anything in it runs.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from .atomic import atomic_write
from .locks import OwnerLock

RESUME_FORMAT = 1  # bump when the resume state's layout changes
RESUME_KIND = "minimind-tui/resume"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    def write(f) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch reports a failed write (a full disk) as an error of its own
            raise _write_error(Path(path).parent, e) from None

    atomic_write(path, write)


def _write_error(folder: Path, error: Exception) -> OSError:
    """What a failed torch.save into `folder` means: a full disk (the usual cause), or else an I/O error."""
    try:
        stat = os.statvfs(folder)
        full = stat.f_bavail * stat.f_frsize < (1 << 20)
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return OSError(errno.EIO, f"torch.save failed ({str(error).strip().splitlines()[0][:120]})")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def weights_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """fp16 CPU copy of the state_dict (never a view of the live weights), as the seed saves it."""
    return {k: v.detach().to("cpu", torch.float16, copy=True) for k, v in unwrap(model).state_dict().items()}


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    """Whether every float in an fp16/bf16 snapshot is finite, in one pass and one host sync: a sum in
    fp32 is non-finite exactly when a NaN or an inf is summed (finite half-precision values, at most
    65504 each, cannot overflow an fp32 sum below 5e33 elements). About a third of the time of
    isfinite().all() per fp32 parameter (7 ms against 21 ms for the seed model); for fp32 tensors use
    `torch.isfinite` (their sum can overflow)."""
    sums = [t.sum(dtype=torch.float32) for t in state.values() if t.is_floating_point() and t.numel()]
    return not sums or bool(torch.stack(sums).isfinite().all())


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """The weights file MiniMind writes, written atomically."""
    atomic_torch_save(weights_snapshot(model), path)


def safe_load(path: str | os.PathLike, what: str) -> Any:
    """torch.load with weights_only=True and errors a person can act on."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} {p} does not exist: check the path")
    if p.is_dir():
        raise CheckpointError(f"{what} {p} is a directory: give the file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # the weights-only unpickler met a class or function reference
            raise CheckpointError(f"{what} {p} was refused: it holds Python objects whose loading could run "
                                  "code; only plain tensors are accepted") from None
        raise CheckpointError(f"{what} {p} is corrupt or not a torch checkpoint: use an earlier copy") from None
    except Exception as e:  # garbage makes the unpickler fail in many ways: all mean "not a checkpoint"
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{what} {p} is corrupt or truncated ({first}): use an earlier copy") from None


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A classic weights file as {key: tensor}, wrapper prefixes removed."""
    state = safe_load(path, "weights file")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path} is not a state_dict of tensors: give a MiniMind .pth")
    return {_strip_prefixes(k): v for k, v in state.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly, explaining a mismatch in terms of the model config."""
    own = unwrap(model).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        hint = "it has MoE layers" if any(".experts." in k for k in unexpected) else (
            "it has no MoE layers" if any(".experts." in k for k in missing) else "layer count or layout differs")
        raise CheckpointError(f"{source} does not fit this model ({hint}; missing {len(missing)} keys, "
                              f"unexpected {len(unexpected)}, e.g. {(missing or unexpected)[0]}): "
                              "use the model settings it was trained with")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source} does not fit this model: {key} is {tuple(tensor.shape)} there, "
                                  f"{tuple(own[key].shape)} here: set dim/n_layers/vocab_size as it was trained")
    unwrap(model).load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


# ---- exact resume ------------------------------------------------------------------------------

def rng_state() -> dict:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _py_state_to_plain(random.getstate()),
        "numpy": _np_state_to_plain(np.random.get_state(legacy=True)),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_plain_to_py_state(state["python"]))
    np.random.set_state(_plain_to_np_state(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_plain(state: tuple) -> dict:  # weights_only loads ints/lists, not arbitrary tuples
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _plain_to_py_state(plain: dict) -> tuple:
    return (plain["version"], tuple(int(x) for x in plain["internal"].tolist()), plain["gauss"])


def _np_state_to_plain(state: Any) -> dict:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _plain_to_np_state(plain: dict) -> tuple:
    return (plain["name"], plain["keys"].numpy().astype(np.uint32), plain["pos"], plain["has_gauss"], plain["cached"])


def save_resume_state(path: str | os.PathLike, state: dict) -> None:
    """The state with a checksum of every tensor in it, written atomically."""
    full = {"kind": RESUME_KIND, "format": RESUME_FORMAT, **state}
    atomic_torch_save({**full, "checksum": _checksum(full)}, path)


def _checksum(obj: Any, crc: int = 0) -> int:
    """CRC-32 of every tensor's bytes in a nested state, in a fixed order (a flipped byte shows)."""
    if isinstance(obj, torch.Tensor):
        data = obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return zlib.crc32(cast(Any, data), crc)  # the array's buffer, without a copy
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            if key != "checksum":
                crc = _checksum(obj[key], zlib.crc32(str(key).encode(), crc))
        return crc
    if isinstance(obj, (list, tuple)):
        for item in obj:
            crc = _checksum(item, crc)
    return crc


def load_resume_state(path: str | os.PathLike) -> dict:
    state = safe_load(path, "resume state")
    if not isinstance(state, dict) or state.get("kind") != RESUME_KIND:
        raise CheckpointError(f"{path} is not a minimind-tui resume state: resume from a run directory "
                              "made by `minimind train`, or start fresh with --init-from for plain weights")
    if not isinstance(state.get("format"), int) or state["format"] > RESUME_FORMAT:
        raise CheckpointError(f"{path} was written by a newer minimind-tui (format {state.get('format')}): "
                              "upgrade minimind-tui to resume it")
    if "checksum" in state and state["checksum"] != _checksum(state):
        raise CheckpointError(f"{path} is damaged (its tensors do not match their checksum): resume from an "
                              "earlier copy, or start again with --init-from the weights file")
    return state


class WeightsLock(OwnerLock):
    """MiniMind's weights file is one path per save_dir: only one live run writes it at a time.

    A run that finds the file owned by another live process saves its weights inside its own run
    directory instead, so two runs on the same save_dir never overwrite each other's weights. The
    lock dies with its owner (kill -9 included); its file goes at a clean end, so a save_dir holds
    MiniMind's files and no leftovers of ours."""

    remove_on_release = True

    def __init__(self, weights: Path):
        super().__init__(weights.with_name(weights.name + ".lock"))

    def acquire(self, wait_s: float = 0.2) -> bool:
        return super().acquire(wait_s)
