"""The real app in a real terminal: tmux runs minimind-tui, we read the screen as a person would."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.helpers import tiny_flags

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


class Terminal:
    def __init__(self, command: str, cwd, width: int, height: int):
        self.socket = f"minimind-test-{uuid.uuid4().hex[:8]}"
        # `unset COLUMNS LINES`: a test process can carry COLUMNS=80 LINES=24 in its C environment (readline sets
        # them when pytest loads it) and the app would then draw at 80x24 whatever the pane's size.
        self.tmux(["new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "-c", str(cwd),
                   f"unset COLUMNS LINES; {command}; echo EXITED rc=$?; sleep 60"])

    def tmux(self, args):
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30, env=env)

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "t"]).stdout

    def keys(self, *keys):
        self.tmux(["send-keys", "-t", "t", *keys])

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def wait_for_gone(self, text: str, timeout: float = 30.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            screen = self.screen()
            if text not in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never went away; screen:\n{self.screen()}")

    def close(self):
        self.tmux(["kill-server"])


def app_command(tmp_path, *extra):
    args = tiny_flags(tmp_path, *extra, save_dir="out")
    return shlex.join([sys.executable, "-m", "minimind_tui", *args])


def test_train_watch_and_quit_in_a_real_terminal(tmp_path):
    term = Terminal(app_command(tmp_path, "--epochs", "3", "--start", "--launch", "thread"), tmp_path, 100, 30)
    try:
        screen = term.wait_for("FINISHED")
        assert "MiniMind" in screen and "run " in screen
        assert "finished: 18/18 steps" in screen
        for column in ("loss", "logits", "lr", "gnorm", "tok/s"):
            assert column in screen
        assert "step" in screen and "checkpoints:" in screen and "device cpu" in screen
        assert "Pause" in screen and "Quit" in screen  # the footer
        term.keys("3")
        screen = term.wait_for("1 run(s) under out/runs")
        assert "finished" in screen and "18/18" in screen
        term.keys("q")
        term.wait_for("EXITED rc=0", 30)
    finally:
        term.close()


def test_pause_stop_and_the_quit_question_at_80x24(tmp_path):
    """The default launch: a background process, steered from the app through its run directory."""
    term = Terminal(app_command(tmp_path, "--epochs", "400", "--save_interval", "0", "--start"), tmp_path, 80, 24)
    try:
        assert "(background process)" in term.wait_for("RUNNING")
        term.keys("p")
        screen = term.wait_for("PAUSED")
        assert "Config" in screen and "Quit" in screen  # header, tabs and footer all fit
        term.keys("q")
        screen = term.wait_for("Stop and save")
        assert "Leave it running" in screen and "Cancel" in screen
        assert "background process this app started" in screen
        term.keys("Enter")  # the focused button is Cancel: Enter never stops a run
        assert "Stop and save" not in term.wait_for_gone("Stop and save") and "PAUSED" in term.screen()
        term.keys("q")
        term.wait_for("Stop and save")
        term.keys("s")  # stopping takes its own key
        term.wait_for("EXITED rc=0", 60)
    finally:
        term.close()
    for _ in range(100):  # the training process stops on its own, after its current step
        if '"state": "stopped"' in next((tmp_path / "out" / "runs").iterdir()).joinpath("status.json").read_text():
            break
        time.sleep(0.2)
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "resume.pt").is_file()
    assert '"state": "stopped"' in (runs[0] / "status.json").read_text()


def test_an_ssh_drop_stops_and_saves_an_in_app_run_and_the_app_exits(tmp_path):
    import psutil

    term = Terminal(app_command(tmp_path, "--epochs", "400", "--save_interval", "0", "--start", "--launch", "thread",
                                "--run-name", "drop"), tmp_path, 100, 30)
    try:
        term.wait_for("RUNNING")
        shell = int(term.tmux(["list-panes", "-t", "t", "-F", "#{pane_pid}"]).stdout.split()[0])
        [app] = [p for p in psutil.Process(shell).children(recursive=True) if "minimind_tui" in " ".join(p.cmdline())]
    finally:
        term.close()  # the terminal disappears: SIGHUP, as when an SSH connection drops
    app.wait(timeout=60)
    status = json.loads((tmp_path / "out" / "runs" / "drop" / "status.json").read_text())
    assert status["state"] == "stopped" and (tmp_path / "out" / "runs" / "drop" / "checkpoints" / "resume.pt").is_file()


def steps_table_lines(screen: str) -> tuple[str, list[str]]:
    """The steps table's header and data rows as drawn."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ep ") and " loss " in line)
    rows = []
    for line in lines[start + 1:]:
        if not line[:1].isdigit():
            break
        rows.append(line)
    return lines[start], rows


@pytest.mark.parametrize("width,height", [(80, 24), (100, 30)])
def test_train_view_with_evaluation_fits_80x24_and_100x30(tmp_path, width, height):
    """A real tiny run that evaluates: every steps-table row is one screen line with the header's columns, the curve
    has at least 8 rows of plot, and the evaluations are on it (marker and legend) and on the eval line."""
    from minimind_tui.widgets.loss_curve import EVAL_MARKER
    from minimind_tui.widgets.steps_table import COLUMNS

    term = Terminal(app_command(tmp_path, "--epochs", "3", "--eval_split", "0.25", "--eval_interval", "2", "--start",
                                "--launch", "thread"), tmp_path, width, height)
    try:
        screen = term.wait_for("FINISHED")
        term.wait_for("best ")  # the eval line, once drawn
        screen = term.wait_for(EVAL_MARKER, 10)  # and the curve, redrawn with its evaluations
        lines = screen.splitlines()
        assert len(lines) <= height and all(len(line) <= width for line in lines)
        header, rows = steps_table_lines(screen)
        assert len(rows) >= 2
        # the header is the shown columns' labels, each right-aligned at its column's end; every row ends its
        # cells at the same places (a wrapped row would not: its tail would start the next screen line)
        labels = [c for c in COLUMNS if c.label in header]
        ends, start = [], 0
        for c in labels:
            ends.append(start + c.width - 1)
            start += c.width + 1
        assert header.rstrip().endswith(labels[-1].label) and len(header.rstrip()) == ends[-1] + 1
        for row in rows:
            assert len(row.rstrip()) == ends[-1] + 1, row
            for end in ends[1:]:
                assert row[end] != " " and (end + 1 == len(row.rstrip()) or row[end + 1] == " "), (row, end)
        if width < 87:
            assert "metrics.jsonl" in screen  # the note that nothing is lost
        # the curve: rows between the top and the bottom of its frame
        top = next(i for i, line in enumerate(lines) if "┌" in line)
        bottom = next(i for i, line in enumerate(lines) if "└" in line)
        assert bottom - top - 1 >= 8
        plot = "\n".join(lines[top:bottom])
        assert EVAL_MARKER in plot and "eval" in plot, screen
        assert any(line.strip().startswith("eval") and "best" in line for line in lines)
        assert "? Help" in [line for line in lines if line.strip()][-1], screen
    finally:
        term.close()
