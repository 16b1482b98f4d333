"""Soak test (not part of CI): a long CPU training run steered from another process the whole time.

Starts `minimind train` in a subprocess sized to take about --minutes, then every few seconds sends
it a pause, a resume or a save-now request through its run directory, and samples its memory. At
the end it checks, and prints:
- the run finished;
- no missed checkpoint: a weights save at every save_interval step of every epoch, and one save
  (weights + resume state) for every save-now request;
- memory: the training process's peak resident memory in the last quarter of the run vs the second
  quarter, after warm-up (must grow < 5%).

    python scripts/soak.py [--minutes 30] [--dir /tmp/soak]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minimind.events import RunState  # noqa: E402
from minimind.storage.run_store import RunStore  # noqa: E402

MODEL = ["--dim", "128", "--n_layers", "2", "--n-heads", "4", "--max_seq_len", "256", "--num_workers", "0",
         "--batch_size", "4", "--save_interval", "10", "--log_interval", "5", "--resume_every_s", "30"]
PAUSED_S = 1.0  # each pause lasts about this long


def step_time(workdir: Path) -> float:
    """Seconds per step of this model here, from a short calibration run."""
    out = workdir / "calibrate"
    subprocess.run([sys.executable, "-m", "minimind", "train", *MODEL, "--epochs", "1", "--save_dir", str(out),
                    "--run-name", "c"], check=True, capture_output=True)
    metrics = RunStore(out / "runs" / "c").read_metrics()[2:]
    return sum(m["step_time"] * 5 for m in metrics) / (5 * len(metrics))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between control requests")
    args = parser.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="minimind-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    per_step = step_time(workdir)
    iters = 36  # 144 toy documents / batch 4
    busy = args.minutes * 60 * (1 - PAUSED_S / (2 * args.every))  # pauses take part of the wall time
    epochs = max(1, round(busy / per_step / iters))
    print(f"calibration: {per_step * 1000:.0f} ms/step; {epochs} epochs x {iters} steps for ~{args.minutes:g} min")

    out = workdir / "out"
    proc = subprocess.Popen([sys.executable, "-m", "minimind", "train", *MODEL, "--epochs", str(epochs),
                             "--save_dir", str(out), "--run-name", "soak"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    store = RunStore(out / "runs" / "soak")
    ps = psutil.Process(proc.pid)
    rng = random.Random(0)
    sent = {"pause": 0, "resume": 0, "save": 0}
    rss: list[tuple[float, int]] = []
    start = time.time()
    paused = False
    next_request = start + args.every
    while proc.poll() is None:
        try:
            rss.append((time.time() - start, ps.memory_info().rss))
        except psutil.Error:
            break
        if time.time() >= next_request and store.state() in (RunState.RUNNING, RunState.PAUSED):
            if paused:
                command = "resume"
            else:
                command = rng.choice(["pause", "save"])
            store.send(command)
            sent[command] += 1
            paused = command == "pause"
            next_request = time.time() + (PAUSED_S if paused else args.every)
        time.sleep(0.25)
    elapsed = time.time() - start

    status = store.read_status()
    events = store.read_events()
    weights_steps = [e["global_step"] for e in events if e["event"] == "CheckpointSaved" and e["kind"] == "weights"]
    expected = ({e * iters + s for e in range(epochs) for s in range(10, iters + 1, 10)}
                | {e * iters + iters for e in range(epochs)})
    missed = sorted(expected - set(weights_steps))
    honoured_saves = len(weights_steps) - len(expected & set(weights_steps))
    states = [e["state"] for e in events if e["event"] == "StateChanged"]
    # Resident memory swings with each step and save; compare peaks: the second quarter of the run
    # (after warm-up) against the last quarter. A leak shows as a rising peak.
    quarter = lambda lo, hi: max((r for t, r in rss if lo * elapsed < t <= hi * elapsed), default=0)
    first, last = quarter(0.25, 0.5), quarter(0.75, 1.0)
    growth = (last - first) / first
    report = {
        "minutes": round(elapsed / 60, 1), "finished": RunState.parse(status.get("state")) == RunState.FINISHED,
        "steps": f"{status.get('global_step')}/{status.get('total_steps')}",
        "requests_sent": sent, "pauses_seen": states.count(RunState.PAUSED), "resumes_seen": states.count(RunState.RUNNING),
        "interval_checkpoints_expected": len(expected), "interval_checkpoints_missed": len(missed),
        "save_now_requests": sent["save"], "extra_weight_saves_seen": honoured_saves,
        "rss_peak_2nd_quarter_mib": round(first / 2**20), "rss_peak_last_quarter_mib": round(last / 2**20),
        "rss_growth": f"{growth:.1%}",
        "rss_peak_up_to_each_quarter_mib": [round(max(r for t, r in rss if t <= q * elapsed) / 2**20)
                                            for q in (0.25, 0.5, 0.75, 1.0)],
    }
    print(json.dumps(report, indent=2))
    ok = report["finished"] and not missed and growth < 0.05 and honoured_saves >= sent["save"] - 1
    print("SOAK PASSED" if ok else "SOAK FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
