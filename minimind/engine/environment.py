"""Where and in what precision a run computes: device, autocast dtype, gradient scaling."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

import torch

from ..errors import MiniMindError

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None = plain fp32
    use_scaler: bool  # float16 autocast needs gradient scaling; bfloat16 does not
    notes: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        if self.autocast_dtype is None:
            return "float32"
        return f"{str(self.autocast_dtype).removeprefix('torch.')} autocast" + (" + grad scaling" if self.use_scaler else "")

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        raise MiniMindError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MiniMindError(f"device {name} was asked for but CUDA is not available here "
                                f"(torch {torch.__version__}): use --device cpu or --device auto")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MiniMindError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} "
                                "GPU(s), numbered from 0")
        return device
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise MiniMindError("device mps was asked for but is not available: use --device cpu")
    return torch.device(name)


def resolve_precision(device_name: str, dtype: str, local_rank: int | None = None, training: bool = True) -> Precision:
    """The device and autocast for `dtype`; `training` False (evaluation) words the refusals without the
    gradient scaling that only training does."""
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return Precision(device, torch.float16, True,
                             ["this GPU has no bfloat16: using float16 autocast with gradient scaling"])
        autocast = None if dtype == "float32" else TORCH_DTYPES[dtype]
        return Precision(device, autocast, dtype == "float16")
    if dtype == "float16":
        why = (f"gradient scaling on {device.type} is not supported" if training
               else f"float16 autocast runs on CUDA only here, not on {device.type}")
        raise MiniMindError(f"dtype float16 needs CUDA ({why}): use --dtype bfloat16 or --dtype float32")
    if dtype == "bfloat16":
        if device.type == "cpu" and cpu_has_fast_bf16():
            return Precision(device, torch.bfloat16, False)
        return Precision(device, None, False, [f"this {device.type} has no fast bfloat16 (avx512_bf16 or AMX): "
                                               "training in float32"])
    return Precision(device, None, False)


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls that beat fp32 on this CPU: x86 with AVX512-BF16 or AMX."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def memory_in_use(device: torch.device) -> str:
    """Memory the run holds now: GPU memory allocated, or the process's resident memory on CPU."""
    if device.type == "cuda":
        used = torch.cuda.memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
        return f"{used / 2**30:.2f} / {total / 2**30:.0f} GiB"
    try:
        import psutil

        return f"{psutil.Process(os.getpid()).memory_info().rss / 2**30:.2f} GiB RSS"
    except ImportError:
        return "n/a"
