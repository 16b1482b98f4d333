"""The headless printer: the seed's lines untouched, one line about saves instead of one per save, verbosity."""

import io
import re

import pytest
from typer.testing import CliRunner

from minimind.cli import app
from minimind.config import RunConfig
from minimind.console import ConsolePrinter
from minimind.events import Alert, CheckpointSaved, EvalDone, RunEnded, RunStarted, StateChanged, StepLogged
from tests.helpers import tiny_flags

runner = CliRunner()
CLASSIC_LINE = re.compile(r"^Epoch:\[\d+/\d+\]\(\d+/\d+\), loss: \d+\.\d{4}, logits_loss: \d+\.\d{4}, "
                          r"aux_loss: \d+\.\d{4}, lr: \d\.\d{8}, epoch_time: \d+\.\dmin$")
WEIGHTS = "out/minimind_pretrain_32.pth"


def started(notes=(), **train) -> RunStarted:
    config = RunConfig().replace(dim=32, n_layers=2, save_dir="out", **train)
    return RunStarted(run_id="r", run_dir="out/runs/r", config=config.to_dict(), n_params=1000, model="classic: tiny",
                      device="cpu", precision="float32", data_path="d.jsonl", n_docs=10, iters_per_epoch=6,
                      total_steps=6, start_step=0, notes=tuple(notes))


def logged(step: int, iters: int = 6) -> StepLogged:
    return StepLogged(epoch=1, epochs=1, step=step, iters=iters, global_step=step, total_steps=iters, loss=5.0,
                      logits_loss=5.0, aux_loss=0.0, lr=5e-4, grad_norm=1.0, tokens=10, tokens_per_s=100.0,
                      positions_per_s=100.0, step_time=0.1, elapsed=1.0, epoch_eta=0.0, total_eta=0.0)


def printed(events, **kwargs) -> tuple[list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    printer = ConsolePrinter(out=out, err=err, progress=False, **kwargs)
    for event in events:
        printer(event)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


def a_run(save_interval: int, log_interval: int, extra=()) -> list:
    """Six steps as the trainer emits them: a log line on each logged step, then that step's scheduled save."""
    events: list = [started(save_interval=save_interval, log_interval=log_interval)]
    for step in range(1, 7):
        if step % log_interval == 0 or step == 6:
            events.append(logged(step))
        if step % save_interval == 0 or step == 6:
            events.append(CheckpointSaved("weights", WEIGHTS, step))
        events += [e for at, e in extra if at == step]
    events.append(RunEnded("finished", 6, 6, "out/runs/r"))
    return events


def test_saves_on_every_logged_step_are_one_line_at_the_start():
    out, _ = printed(a_run(save_interval=1, log_interval=1))
    assert [l for l in out if l.startswith("saves ")] == [f"saves    weights after every step to {WEIGHTS}"]
    assert not any(l.startswith("saved weights") for l in out)
    assert sum(bool(CLASSIC_LINE.match(l)) for l in out) == 6
    assert out.index(f"saves    weights after every step to {WEIGHTS}") < out.index(next(l for l in out if l.startswith("Epoch")))

    out, _ = printed(a_run(save_interval=4, log_interval=2))  # every save is on a log step too
    assert f"saves    weights every 4 steps and at each epoch's end to {WEIGHTS}" in out
    assert not any(l.startswith("saved weights") for l in out)


def test_saves_off_the_log_steps_and_extra_saves_still_print():
    out, _ = printed(a_run(save_interval=3, log_interval=2))  # step 3 is saved but not logged
    assert not any(l.startswith("saves ") for l in out)
    assert [l for l in out if l.startswith("saved weights")] == [f"saved weights: {WEIGHTS} (step 3)",
                                                                 f"saved weights: {WEIGHTS} (step 6)"]
    # a save-now on a logged step that is not a scheduled save, and a second save on a scheduled step
    extra = [(2, CheckpointSaved("weights", WEIGHTS, 2))]
    out, _ = printed(a_run(save_interval=3, log_interval=1, extra=extra))
    assert "saves    weights every 3 steps and at each epoch's end to " + WEIGHTS in out
    assert [l for l in out if l.startswith("saved weights")] == [f"saved weights: {WEIGHTS} (step 2)"]
    out, _ = printed(a_run(save_interval=3, log_interval=1, extra=[(3, CheckpointSaved("weights", WEIGHTS, 3))]))
    assert [l for l in out if l.startswith("saved weights")] == [f"saved weights: {WEIGHTS} (step 3)"]


def test_weights_saved_elsewhere_are_said_where():
    note = f"another live run writes {WEIGHTS}: this run saves its weights to out/runs/r/minimind_pretrain_32.pth"
    events = a_run(1, 1)
    events[0] = started(notes=[note], save_interval=1, log_interval=1)
    events = [e if not isinstance(e, CheckpointSaved) else CheckpointSaved("weights", "out/runs/r/minimind_pretrain_32.pth",
                                                                             e.global_step) for e in events]
    out, _ = printed(events)
    assert "saves    weights after every step to out/runs/r/minimind_pretrain_32.pth" in out
    assert not any(l.startswith("saved weights") for l in out)


def test_verbosity_quiet_normal_verbose():
    extra = [(2, EvalDone(2, 2, 4.5, 90.0, 100, 3, True)), (2, CheckpointSaved("best", "out/best.pth", 2)),
             (3, CheckpointSaved("resume", "out/runs/r/checkpoints/resume.pt", 3)), (4, StateChanged("paused", "asked")),
             (5, Alert("loss spike", level="warning"))]
    events = a_run(1, 1, extra=extra)

    out, err = printed(events, verbosity="quiet")
    assert out == ["eval: step 2, loss 4.5000, ppl 90.00", "finished 6/6 steps; run record: out/runs/r"]
    assert err == ["warning: loss spike"]

    out, err = printed(events)  # normal
    assert sum(bool(CLASSIC_LINE.match(l)) for l in out) == 6 and "paused: asked" in out
    assert not any(l.startswith(("saved", "saved resume")) for l in out)
    assert out[0].startswith("run ") and out[-1].startswith("finished ")

    out, err = printed(events, verbosity="verbose")
    assert [l for l in out if l.startswith("saved weights")] == [f"saved weights: {WEIGHTS} (step {i})" for i in range(1, 7)]
    assert "saved best weights: out/best.pth (step 2)" in out
    assert "saved resume state: out/runs/r/checkpoints/resume.pt (step 3)" in out
    assert not any(l.startswith("saves ") for l in out)
    assert sum(bool(CLASSIC_LINE.match(l)) for l in out) == 6

    with pytest.raises(ValueError, match="verbosity"):
        ConsolePrinter(verbosity="loud")


def test_a_failed_run_prints_its_error_even_when_quiet():
    out, err = printed([started(), RunEnded("failed", 2, 6, "out/runs/r", error="boom")], verbosity="quiet")
    assert out == [] and err == ["error: boom"]


def test_minimind_train_with_the_seed_save_and_log_intervals(tmp_path):
    """The real command: save_interval 1 and log_interval 1 (the seed's) give one saves line, the seed's lines unchanged."""
    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "1", "--batch-size", "4")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    saves = [l for l in lines if l.startswith("saves ")]
    assert saves == [f"saves    weights after every step to {tmp_path / 'out' / 'minimind_pretrain_32.pth'}"]
    assert not any(l.startswith("saved weights") for l in lines)
    assert sum(bool(CLASSIC_LINE.match(l)) for l in lines) == 3


def test_saves_reported_after_later_steps_are_still_recognised():
    """Weights are written in the background: a save's event can come after the next steps' log lines."""
    events = [started(save_interval=1, log_interval=1), logged(1), logged(2), CheckpointSaved("weights", WEIGHTS, 1),
              logged(3), CheckpointSaved("weights", WEIGHTS, 2), CheckpointSaved("weights", WEIGHTS, 3),
              CheckpointSaved("weights", WEIGHTS, 3), RunEnded("finished", 3, 6, "out/runs/r")]
    out, _ = printed(events)
    assert [l for l in out if l.startswith("saved weights")] == [f"saved weights: {WEIGHTS} (step 3)"]  # the extra one
