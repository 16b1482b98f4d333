"""Host memory between training steps: keep what glibc's malloc would hand back to the OS.

PyTorch's CPU tensors come from malloc. With glibc's defaults, a step's large activations (the
logits alone are batch x seq x vocab floats: 26 MB for the seed config) are mmap'd or trimmed back to
the OS when freed, and the next step faults the same pages in again, zero-filled by the kernel: 10,000
to 13,000 page faults per seed step, in the main thread and in a thread (the app's `--launch
thread`) alike. Keeping freed memory in one arena (no trimming, the mmap threshold at its 32 MB
maximum, one arena for every thread) reuses it: under 100 faults per step, and a thread's peak RSS
no higher than the main thread's (`benchmarks/host_allocator.py`). The arena count is fixed when a
thread first allocates, so call `keep_freed_memory()` before starting a training thread. What a
finished run held is given back with `release_free_memory()`, so a long-lived app does not keep it.

Linux with glibc only; elsewhere (musl, macOS, Windows) both calls do nothing. MINIMIND_DEFAULT_MALLOC=1
in the environment keeps glibc's defaults (for comparison, or should a system misbehave with these).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from typing import Optional

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper bound on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim below 2 GiB of free memory at the top

_lock = threading.Lock()
_kept = False


@functools.cache  # looked up once: release_free_memory runs at the end of every run
def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # musl's mallopt does nothing anyway


def keep_freed_memory() -> bool:
    """Make malloc keep freed tensor memory for reuse (idempotent; call before training threads start).
    True when the setting took effect."""
    global _kept
    with _lock:
        if _kept:
            return True
        libc = _glibc()
        if libc is None or os.environ.get("MINIMIND_DEFAULT_MALLOC") == "1":
            return False
        # Order matters: setting either threshold also turns off glibc's dynamic mmap threshold.
        _kept = bool(libc.mallopt(M_ARENA_MAX, 1) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                     and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        return _kept


def release_free_memory() -> None:
    """Give the memory malloc keeps but nothing uses back to the OS (after a run)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
