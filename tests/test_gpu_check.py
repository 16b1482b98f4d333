"""The GPU check script runs end to end on the CPU (its smoke mode), so it cannot rot unseen."""

import re
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow
def test_gpu_check_smoke_test_on_cpu_passes():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    rows = re.findall(r"^\| (.+?) +\| (.+?) +\| (PASS|SKIP|FAIL) +\|", out, re.M)
    assert len(rows) == 27 and "all checks passed" in out
    passed = {(name.strip(), where.strip()) for name, where, status in rows if status == "PASS"}
    # What a CPU can check must have passed, not been skipped.
    for must in [("bf16 autocast", "classic dense"), ("--compile", "classic dense"), ("exact resume", "minimind3 MoE"),
                 ("flash SDPA used", "classic"), ("pause/save/resume/stop", "minimind train"),
                 ("torchrun", "minimind train"), ("generate + eval", "minimind"), ("throughput", "seed 512x2")]:
        assert must in passed, must


def test_gpu_check_refuses_cuda_without_a_gpu():
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cuda"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "--device cpu" in result.stderr and "Traceback" not in result.stderr
