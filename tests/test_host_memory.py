"""Freed tensor-sized memory stays with the process for the next step instead of going back to the OS
(glibc only). Page faults per step are what this saves (`benchmarks/host_allocator.py`); here the
mechanism is checked directly, with glibc's own accounting, in fresh processes."""

import json
import os
import subprocess
import sys

import pytest

from minimind.engine.host_memory import _glibc

ALLOCATE_IN_A_THREAD = """
import ctypes, json, threading
from minimind.engine.host_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
keep_freed_memory()  # before the thread, as the app does; a no-op with MINIMIND_DEFAULT_MALLOC=1
SIZE = 26 << 20  # a seed step's logits
out = {}

def step():
    block = libc.malloc(SIZE)
    ctypes.memset(block, 1, SIZE)
    out["mmapped_while_used"] = libc.mallinfo2().hblkhd
    libc.free(block)
    out["kept_after_free"] = libc.mallinfo2().fordblks

worker = threading.Thread(target=step)
worker.start()
worker.join()
print(json.dumps(out))
"""


def allocate(default_malloc: bool) -> dict:
    env = {**os.environ, "MINIMIND_DEFAULT_MALLOC": "1" if default_malloc else "0"}
    done = subprocess.run([sys.executable, "-c", ALLOCATE_IN_A_THREAD], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None or not hasattr(_glibc(), "mallinfo2"), reason="glibc >= 2.33 only")
def test_freed_activation_sized_memory_stays_for_the_next_step():
    size = 26 << 20
    kept, default = allocate(False), allocate(True)
    # glibc's defaults: a fresh process mmaps a block this big and unmaps it on free (faulted in again next step)
    assert default["mmapped_while_used"] >= size and default["kept_after_free"] < size, default
    # kept: it comes from the arena and stays there, free for the next step
    assert kept["mmapped_while_used"] < size and kept["kept_after_free"] >= size, kept


def test_keeping_and_releasing_are_safe_to_call_again():
    from minimind.engine.host_memory import keep_freed_memory, release_free_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first
    release_free_memory()
