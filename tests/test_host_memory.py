"""Freed tensor memory is kept for the next step instead of being faulted in again (glibc only)."""

import json
import os
import subprocess
import sys

import pytest

from minimind.engine.host_memory import _glibc

STEPS = """
import json, resource, threading, torch
from minimind.engine.host_memory import keep_freed_memory
from minimind.families.classic import LMConfig
from minimind.models.classic import MiniMindLM

torch.manual_seed(0)
torch.set_num_threads(1)
keep_freed_memory()  # before the thread, as the app does; a no-op with MINIMIND_DEFAULT_MALLOC=1
model = MiniMindLM(LMConfig(dim=64, n_layers=1, n_heads=2, n_kv_heads=2, max_seq_len=512))
ids = torch.randint(0, 6400, (2, 512))  # logits of 2 x 512 x 6400 floats: 26 MB a step
out = {}

def train():
    faults = []
    for _ in range(6):
        model(ids).logits.log_softmax(-1).mean().backward()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    out["per_step"] = (faults[-1] - faults[2]) / 3  # after the first steps: steady state

worker = threading.Thread(target=train)
worker.start()
worker.join()
print(json.dumps(out))
"""


def faults_per_step(default_malloc: bool) -> float:
    env = {**os.environ, "MINIMIND_DEFAULT_MALLOC": "1" if default_malloc else "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])["per_step"]


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_a_training_thread_reuses_freed_memory_instead_of_faulting_it_in_each_step():
    kept, default = faults_per_step(False), faults_per_step(True)
    assert default > 1000, default  # glibc's defaults: the big activations come back as fresh pages
    assert kept < default / 10, (kept, default)


def test_keeping_and_releasing_are_safe_to_call_again():
    from minimind.engine.host_memory import keep_freed_memory, release_free_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first
    release_free_memory()
