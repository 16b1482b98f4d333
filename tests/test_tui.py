"""Pilot tests of the app: a scripted engine for states and widgets, and one real training run."""

import asyncio
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from minimind.errors import MiniMindError
from minimind.events import Alert, CheckpointSaved, RunEnded, RunStarted, StateChanged, StepLogged
from minimind_tui.app import make_app
from minimind_tui.screens.quit_dialog import QuitScreen
from minimind_tui.widgets.status_bar import StatusBar
from minimind_tui.widgets.steps_table import StepsTable
from tests.helpers import tiny_config
from tests.tui_fakes import Factory, ScriptedSession

SIZE = (100, 30)


def started(total=20):
    return RunStarted(run_id="r1", run_dir="/tmp/none/runs/r1", config={}, n_params=8_915_456,
                      model="classic: dim 512, 2 layers, dense, seq 512", device="cpu (2 threads)",
                      precision="float32", data_path="toy.jsonl", n_docs=40, iters_per_epoch=10, total_steps=total,
                      start_step=0)


def step(i, loss=5.0):
    return StepLogged(epoch=1 + (i - 1) // 10, epochs=2, step=(i - 1) % 10 + 1, iters=10, global_step=i, total_steps=20,
                      loss=loss, logits_loss=loss, aux_loss=0.0, lr=5e-4, grad_norm=1.0, tokens=100, tokens_per_s=1000.0,
                      positions_per_s=1200.0, step_time=0.1, elapsed=float(i), epoch_eta=1.0, total_eta=2.0)


async def wait_for(pilot, cond, timeout=20.0):
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        await pilot.pause(0.05)
    return False


def status_text(app) -> str:
    return str(app.query_one(StatusBar).render())


def test_scripted_run_states_table_alerts_and_bindings(tmp_path):
    session = ScriptedSession()
    factory = Factory(session)

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=factory, launch="thread")
        async with app.run_test(size=SIZE) as pilot:
            assert app.state == "idle" and app.check_action("start", ()) is True
            assert app.check_action("pause_resume", ()) is None and app.check_action("stop", ()) is None
            await pilot.press("s")
            assert factory.calls[0][0] == "thread" and factory.calls[0][1].model.dim == 32
            session.push(started())
            assert await wait_for(pilot, lambda: app.state == "running")
            assert "RUNNING" in status_text(app) and "8.915M params" in status_text(app)
            assert app.check_action("start", ()) is None and app.check_action("pause_resume", ()) is True
            session.push(*[step(i, 6.0 - i * 0.1) for i in range(1, 4)])
            table = app.query_one("#steps", StepsTable)
            assert await wait_for(pilot, lambda: table.row_count == 3)
            assert list(table.rows[2][:3]) == ["1", "3/10", "5.7000"]
            await pilot.press("p")
            assert session.commands == ["pause"]
            session.push(StateChanged("paused", "pause requested"))
            assert await wait_for(pilot, lambda: app.state == "paused")
            assert "PAUSED" in status_text(app)
            await pilot.press("p")
            await pilot.press("c")
            assert session.commands == ["pause", "resume", "save"]
            session.push(StateChanged("running", "resumed"),
                         CheckpointSaved("weights", "out/minimind_pretrain_512.pth", 3))
            assert await wait_for(pilot, lambda: "minimind_pretrain_512.pth" in str(app.query_one("#checkpoints").render()))
            session.push(Alert("loss is nan at step 4: checkpoints are no longer written", level="error"))
            assert await wait_for(pilot, lambda: "loss is nan" in str(app.query_one("#alert", Static).render()))
            session.push(RunEnded("finished", 20, 20, "/tmp/none/runs/r1"))
            assert await wait_for(pilot, lambda: app.state == "finished")
            assert app.check_action("start", ()) is True and app.check_action("stop", ()) is None

    asyncio.run(scenario())


def test_form_validation_blocks_start_and_names_the_field(tmp_path):
    factory = Factory()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=factory)
        async with app.run_test(size=SIZE) as pilot:
            app.query_one("#field-dim").value = "30"
            assert await wait_for(pilot, lambda: app.check_action("start", ()) is None)
            assert "dim: 30 is not divisible by n_heads=4" in str(app.query_one("#form-error").render())
            assert "not divisible" in str(app.query_one("#error-dim").render())
            await pilot.press("s")
            assert factory.calls == [] and app.state == "idle"
            app.query_one("#field-batch_size").value = "two"
            app.query_one("#field-dim").value = "32"
            assert await wait_for(pilot, lambda: "batch_size: 'two' is not a whole number"
                                  in str(app.query_one("#form-error").render()))
            app.query_one("#field-batch_size").value = "2"
            assert await wait_for(pilot, lambda: app.check_action("start", ()) is True)
            assert str(app.query_one("#form-error").render()) == ""

    asyncio.run(scenario())


def test_bad_input_at_start_is_shown_inline_and_the_app_keeps_running(tmp_path):
    second = ScriptedSession()
    factory = Factory(ScriptedSession(fail_with=MiniMindError("data file /x.jsonl does not exist: check --data_path")),
                      second)

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=factory)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.state == "failed")
            assert "/x.jsonl does not exist" in str(app.query_one("#run-error").render())
            assert app.query_one("#tabs").active == "config"
            await pilot.press("s")  # still alive: a second start is possible
            assert len(factory.calls) == 2
            second.push(None)

    asyncio.run(scenario())


def test_quit_asks_while_a_run_is_active(tmp_path):
    session = ScriptedSession()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory(session))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("s")
            session.push(started())
            assert await wait_for(pilot, lambda: app.state == "running")
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.click("#cancel")
            assert not isinstance(app.screen, QuitScreen) and app.state == "running"
            await pilot.press("q")
            await pilot.click("#stop")
            assert session.commands == ["stop"] and app.state == "stopping"
            session.push(RunEnded("stopped", 5, 20, "/tmp/none/runs/r1", resumable=True))
            assert await wait_for(pilot, lambda: app.return_code is not None, 10)

    asyncio.run(scenario())


def test_copy_as_command_and_config_files(tmp_path):
    async def scenario():
        app = make_app(tiny_config(tmp_path, epochs=3), session_factory=Factory())
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("y")
            text = app.screen.query_one("#dialog-textarea").text
            assert text.startswith("minimind train ") and "--epochs 3" in text and "--dim 32" in text
            await pilot.press("escape")
            path = tmp_path / "saved.json"
            await pilot.press("w")
            app.screen.query_one("#path-input").value = str(path)
            await pilot.press("enter")
            assert await wait_for(pilot, path.is_file)
            app.query_one("#field-epochs").value = "9"
            await pilot.press("o")
            app.screen.query_one("#path-input").value = str(path)
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: app.query_one("#field-epochs").value == "3")

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["thread", "process"])
def test_a_real_training_run_through_the_app(tmp_path, launch):
    config = tiny_config(tmp_path, epochs=2, save_interval=3)

    async def scenario():
        app = make_app(config, launch=launch)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.state == "finished", 120)
            await pilot.pause(0.4)  # one table flush
            table = app.query_one("#steps", StepsTable)
            assert await wait_for(pilot, lambda: table.row_count == 12)
            assert "finished: 12/12 steps" in str(app.query_one("#progress-line").render())
            assert "weights" in str(app.query_one("#checkpoints").render())
            # a finished run holds no memory, and a process the app launched is reaped, not left a zombie
            device_line = app.query_one("#device-line")
            assert await wait_for(pilot, lambda: "device cpu" in str(device_line.render())
                                  and "memory" not in str(device_line.render()), 10)
            if launch == "process":
                assert await wait_for(pilot, lambda: app.session.process.returncode == 0, 70)  # reaped by the app
            await pilot.press("3")
            runs = app.query_one("#runs-table", DataTable)
            assert await wait_for(pilot, lambda: runs.row_count == 1)
            labels = [str(c.label) for c in runs.columns.values()]  # the columns that fit the width
            assert str(runs.get_row_at(0)[labels.index("state")]) == "finished"

    asyncio.run(scenario())
    assert (Path(config.train.save_dir) / "minimind_pretrain_32.pth").is_file()


@pytest.mark.slow
def test_attach_to_a_headless_run_and_steer_it(tmp_path):
    """A run started by `minimind train` elsewhere: watched live, paused, resumed and stopped from the app."""
    import subprocess
    import sys

    from minimind.storage.run_store import RunStore
    from minimind_tui.sessions import AttachedSession

    config = tiny_config(tmp_path, epochs=400, save_interval=0)
    flags = [f"--{k}={v}" for k, v in config.flat().items()
             if k in ("dim", "n_layers", "n_heads", "max_seq_len", "epochs", "data_path", "save_dir", "num_workers",
                      "save_interval")]
    proc = subprocess.Popen([sys.executable, "-m", "minimind", "train", "--run-name", "elsewhere", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    run_dir = Path(config.train.save_dir) / "runs" / "elsewhere"
    store = RunStore(run_dir)

    async def scenario():
        app = make_app(config, attach=run_dir,
                       session_factory=lambda kind, config=None, run_dir=None: AttachedSession(run_dir, wait_s=60))
        async with app.run_test(size=SIZE) as pilot:
            assert await wait_for(pilot, lambda: app.state == "running", 60)
            assert "(attached)" in status_text(app)
            assert await wait_for(pilot, lambda: app.query_one("#steps", StepsTable).row_count > 2, 30)
            await pilot.press("p")
            assert await wait_for(pilot, lambda: app.state == "paused", 30)
            # the viewer follows events.jsonl; status.json is written just after the event
            assert await wait_for(pilot, lambda: store.read_status().get("state") == "paused", 10)
            await pilot.press("p")
            assert await wait_for(pilot, lambda: app.state == "running", 30)
            await pilot.press("x")
            assert await wait_for(pilot, lambda: app.state == "stopped", 30)

    try:
        asyncio.run(scenario())
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert store.read_status()["state"] == "stopped" and store.resume_path.is_file()


def test_loss_curve_series_keeps_exact_emas_as_points_arrive():
    import math

    from minimind_tui.widgets.loss_curve import Series, stride_indices

    losses = [9.0, 8.5, float("nan"), 7.25, 7.5, float("inf"), 6.0, 5.5]
    series = Series()
    for step, loss in enumerate(losses, 1):
        series.add(step, loss)
    finite = [(s, v) for s, v in enumerate(losses, 1) if math.isfinite(v)]
    assert series.steps == [s for s, _ in finite]
    for log, f in ((False, lambda v: v), (True, math.log10)):
        avg = weight = 0.0  # TensorBoard's bias-corrected EMA, computed over the whole history at once
        expected = []
        for _, v in finite:
            avg, weight = 0.9 * avg + 0.1 * f(v), 0.9 * weight + 0.1
            expected.append(avg / weight)
        assert series.values[log] == [f(v) for _, v in finite]
        assert series.smoothed[log] == pytest.approx(expected, rel=1e-12)
    assert series.smoothed[False][0] == 9.0  # bias-corrected: the first point is itself

    assert list(stride_indices(5, 10)) == [0, 1, 2, 3, 4]
    idx = stride_indices(100_001, 200)
    assert len(idx) <= 201 and idx[0] == 0 and idx[-1] == 100_000


def test_a_streaming_curve_keeps_to_its_cpu_budget_and_key_presses_redraw_at_once():
    """While points stream in, the Train view's curve is redrawn at most as often as keeps drawing it under
    CURVE_CPU_SHARE of a core (never more than once per REDRAW_S); a key press redraws at once."""
    from textual.app import App

    from minimind_tui.widgets import loss_curve
    from minimind_tui.widgets.loss_curve import LossCurve

    class CurveApp(App):
        def compose(self):
            yield LossCurve(id="curve", redraw_every=None)  # as the Train view has it: drawn on its owner's tick

    async def scenario():
        app = CurveApp()
        async with app.run_test(size=SIZE) as pilot:
            curve = app.query_one("#curve", LossCurve)
            # the empty plot, drawn once mounted: its real render time is measured
            assert await wait_for(pilot, lambda: curve._render_s > 0 and curve._drawn_at > float("-inf"))

            def interval():
                return min(max(loss_curve.REDRAW_S, curve._render_s / loss_curve.CURVE_CPU_SHARE),
                           loss_curve.MAX_REDRAW_S)

            rebuilds = []
            real_rebuild = curve.rebuild
            curve.rebuild = lambda: (rebuilds.append(len(curve.series["loss"].steps)), real_rebuild())
            curve.add_point(1, 9.0)
            curve.redraw_if_dirty(streaming=True)
            assert rebuilds == []  # right after the first draw: left for a later tick
            await asyncio.sleep(interval() + 0.05)
            curve.redraw_if_dirty(streaming=True)
            await pilot.pause()
            assert rebuilds == [1]
            for step in (2, 3, 4):
                curve.add_point(step, 9.0 - step / 10)
                curve.redraw_if_dirty(streaming=True)  # within the interval: left for a later tick
            assert rebuilds == [1]
            await asyncio.sleep(interval() + 0.05)
            curve.add_point(5, 8.4)
            curve.redraw_if_dirty(streaming=True)
            assert rebuilds == [1, 5]  # every point so far, once the interval passed
            curve.add_point(6, 8.3)
            curve.toggle_log_scale()  # what the l key does: drawn at once, with the newest point
            assert rebuilds == [1, 5, 6] and curve.log_scale

    asyncio.run(scenario())


def test_the_train_views_pace_keeps_the_ui_threads_cpu_under_its_share():
    """Pacer: updates no more often than `fastest`; after an update whose work cost C CPU seconds the next
    comes C / share later (so the UI thread stays under `share` of a core), never later than `slowest`."""
    import time

    from minimind_tui.widgets.train_view import Pacer

    pacer = Pacer(fastest=0.05, slowest=1.0, share=0.1)
    assert pacer.due() and not pacer.due()  # the first is due at once, then not before `fastest`
    time.sleep(0.06)
    assert pacer.due() and pacer.interval < 0.2  # sleeping costs no CPU: (about) the fastest pace
    spent = time.thread_time()
    while time.thread_time() - spent < 0.03:  # an expensive update: 30 ms of this thread's CPU
        pass
    time.sleep(0.05)
    assert pacer.due() and 0.25 <= pacer.interval <= 1.0  # ~0.3 s: 30 ms is 10% of it
    assert not pacer.due()
    time.sleep(pacer.interval + 0.01)
    assert pacer.due() and pacer.interval < 0.2


def test_run_detail_overlays_another_runs_curve_under_its_own(tmp_path):
    from textual.widgets import Select

    from minimind.engine.trainer import Trainer
    from minimind_tui.screens.run_detail import RunDetailScreen
    from minimind_tui.widgets.loss_curve import LossCurve

    config = tiny_config(tmp_path, epochs=1, save_interval=0)
    first = Trainer(config.replace(run_name="first")).run()
    second = Trainer(config.replace(run_name="second", learning_rate=1e-3)).run()
    assert first.status == second.status == "finished"

    async def scenario():
        app = make_app(config)
        async with app.run_test(size=SIZE) as pilot:
            app.push_screen(RunDetailScreen(Path(first.run_dir), config.train.save_dir))
            await pilot.pause(0.2)
            curve = app.screen.query_one("#detail-curve", LossCurve)
            assert list(curve.series) == ["first"] and len(curve.series["first"].steps) == first.global_step
            app.screen.query_one("#overlay", Select).value = second.run_dir
            assert await wait_for(pilot, lambda: list(curve.series) == ["second", "first"])  # its own drawn on top
            curve.toggle_log_scale()
            curve.rebuild()  # draws both curves and their EMAs on the log scale
            drawn = curve.plt.build()
            assert "(log10)" in drawn and "second EMA" in drawn and "first EMA" in drawn
            app.screen.query_one("#overlay", Select).clear()
            assert await wait_for(pilot, lambda: list(curve.series) == ["first"])

    asyncio.run(scenario())


def test_choosing_the_family_switches_the_form_and_a_minimind3_run_trains(tmp_path):
    """The arch field swaps the model fields and defaults (MiniMind-3's train_pretrain.py); a tiny
    MiniMind-3 run then trains in the app, and the status line names the family."""
    from minimind.config import defaults_for

    config = tiny_config(tmp_path, epochs=1)

    async def scenario():
        app = make_app(config, launch="thread")
        async with app.run_test(size=SIZE) as pilot:
            assert app.query_one("#row-dim").display and not app.query_one("#row-hidden_size").display
            app.query_one("#field-arch").value = "minimind3"
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.train.arch == "minimind3")
            assert not app.query_one("#row-dim").display and app.query_one("#row-hidden_size").display
            m3 = defaults_for("minimind3", "pretrain")
            assert app.query_one("#field-hidden_size").value == "768"
            assert app.query_one("#field-save_weight").value == m3["save_weight"] == "pretrain"
            assert app.query_one("#field-accumulation_steps").value == "8"
            # what the user had changed and still applies stays: data, save_dir, epochs
            assert app.form_config.train.data_path == config.train.data_path and app.form_config.train.epochs == 1
            for name, value in dict(hidden_size="32", num_hidden_layers="1", num_attention_heads="4",
                                    num_key_value_heads="2", max_seq_len="32", batch_size="4",
                                    accumulation_steps="1").items():
                app.query_one(f"#field-{name}").value = value
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.model.hidden_size == 32)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.state == "finished", 60)
            assert "minimind3" in status_text(app)
            app.query_one("#field-arch").value = "classic"
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.train.arch == "classic")
            assert app.query_one("#row-dim").display and app.query_one("#field-dim").value == "512"

    asyncio.run(scenario())
    assert (tmp_path / "out" / "pretrain_32.pth").is_file()


def test_fine_tune_from_a_run_and_chat_with_it_at_80x24(tmp_path):
    """Run detail -> "Fine-tune from this run" fills the form (stage sft, the run's weights and model);
    the Chat tab loads a model off the UI thread, streams a reply and stops one with Escape."""
    from textual.widgets import Button

    from minimind.engine.trainer import Trainer
    from minimind_tui.screens.run_detail import RunDetailScreen

    config = tiny_config(tmp_path, epochs=1, save_interval=0, run_name="base")
    base = Trainer(config).run()

    async def scenario():
        app = make_app(config, launch="thread")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            app.push_screen(RunDetailScreen(Path(base.run_dir), config.train.save_dir), app._run_detail_action)
            await pilot.pause(0.2)
            app.screen.query_one("#finetune", Button).press()
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.train.stage == "sft")
            sft = app.form_config
            assert sft.train.init_from == base.run_dir and sft.train.from_weight == "none"
            assert sft.model.dim == 32 and sft.train.data_path == "./toydata/sft_data.jsonl"
            assert sft.train.save_weight == "full_sft" and app.query_one("#tabs").active == "config"

            await pilot.press("4")
            chat = app._chat_view
            source = app.query_one("#chat-source")
            await pilot.pause(0.1)  # at 80x24 both text fields show their line of text
            assert source.content_region.height == 1 and app.query_one("#chat-input").content_region.height == 1
            source.value = base.run_dir
            source.focus()
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: chat.chat is not None, 60)
            chat.chat.with_sampling(temperature=0.0, max_new_tokens=100_000)  # a reply that runs on
            message = app.query_one("#chat-input")
            message.value = "hello"
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: chat.replying and len(chat.turns[-1][1]) > 5, 60)
            await pilot.press("escape")
            assert await wait_for(pilot, lambda: not chat.replying, 30)
            assert chat.turns[1] == ("you", "hello") and chat.turns[-1] == ("note", "(reply stopped)")
            assert [m["role"] for m in chat.chat.messages] == ["user", "assistant"]
            message.value = "/reset"
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: chat.chat.messages == [])

    asyncio.run(scenario())


# ---- held-out evaluation, 80x24, keys and dialogs ---------------------------------------------------------------
EVALUATING = {"train": {"eval_split": 0.25, "eval_interval": 2}}


def started_with(config, total=20):
    import dataclasses

    return dataclasses.replace(started(total), config=config)


def evaluated(global_step, loss, best):
    import math

    from minimind.events import EvalDone

    return EvalDone(global_step=global_step, optimizer_step=global_step, eval_loss=loss, eval_ppl=math.exp(loss),
                    eval_tokens=100, eval_docs=3, best=best)


def plain(drawn: str) -> str:
    """A plotext drawing without its colour codes."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", drawn)


def plot_rows(drawn: str) -> int:
    """Rows inside the plot frame of a plotext drawing."""
    lines = plain(drawn).splitlines()
    top = next(i for i, line in enumerate(lines) if "┌" in line)
    bottom = next(i for i, line in enumerate(lines) if "└" in line)
    return bottom - top - 1


def test_the_steps_table_never_trails_the_eval_line(tmp_path):
    """Steps are drawn at a paced tick, an evaluation at once: the steps it follows are drawn with it."""
    from minimind_tui.widgets.train_view import TrainView

    async def scenario():
        app = make_app(tiny_config(tmp_path), launch="thread")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            view = app.query_one("#train-view", TrainView)
            view.handle(started_with(EVALUATING))  # no await below: no tick can flush in between
            for i in range(1, 9):
                view.handle(step(i))
            view.handle(evaluated(8, 5.0, True))
            assert "at step 8" in app.query_one("#eval-line").text
            assert app.query_one("#steps", StepsTable).row_count == 8

    asyncio.run(scenario())


def test_eval_line_and_eval_points_on_the_curve(tmp_path):
    """A run that evaluates: the eval line appears at the start, shows the last and the best eval (loss, ppl, step),
    and the curve draws the evaluations as marked points on the step axis, in log scale too."""
    import math

    from minimind_tui.widgets.loss_curve import EVAL_MARKER, LossCurve

    session = ScriptedSession()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory(session), launch="thread")
        async with app.run_test(size=SIZE) as pilot:
            line = app.query_one("#eval-line")
            assert not line.display
            await pilot.press("s")
            session.push(started_with(EVALUATING), *[step(i, 6.0 - i * 0.1) for i in range(1, 5)])
            assert await wait_for(pilot, lambda: line.display and app.query_one("#steps", StepsTable).row_count == 4)
            assert "none yet" in line.text and "every 2 optimizer steps" in line.text
            session.push(evaluated(2, 5.5, True), evaluated(4, 5.25, True), evaluated(6, 5.375, False))
            assert await wait_for(pilot, lambda: "at step 6" in line.text)
            assert line.text.startswith("eval   last 5.3750 (ppl 215.94) at step 6")
            assert "best 5.2500 (ppl 190.57) at step 4" in line.text
            assert "best 5.2500" in str(line.render()) and "5.3750" in str(line.render())  # what is drawn fits too
            curve = app.query_one("#curve", LossCurve)
            assert curve.evals["loss"].steps == [2, 4, 6]

            calls = []
            scatter = curve.plt.scatter
            curve.plt.scatter = lambda xs, ys, **kw: (calls.append((list(xs), list(ys), kw)), scatter(xs, ys, **kw))
            curve.rebuild()
            assert calls[-1][0] == [2, 4, 6] and calls[-1][1] == [5.5, 5.25, 5.375]
            assert calls[-1][2]["marker"] == EVAL_MARKER and calls[-1][2]["label"] == "eval"
            drawn = plain(curve.plt.build())
            assert EVAL_MARKER in drawn and "eval" in drawn and "raw EMA" in drawn
            await pilot.press("l")  # the log-scale toggle applies to the eval points as well
            curve.rebuild()
            assert calls[-1][1] == pytest.approx([math.log10(v) for v in (5.5, 5.25, 5.375)])
            assert "(log10)" in curve.plt.build()

            session.push(RunEnded("finished", 20, 20, "/tmp/none/runs/r1"))
            assert await wait_for(pilot, lambda: app.state == "finished")
            app._train_view.reset()  # a new run that does not evaluate: no eval line
            assert not line.display and curve.evals == {}

    asyncio.run(scenario())


def test_train_view_at_80x24_fits_every_line_and_keeps_8_plot_rows(tmp_path):
    from minimind_tui.widgets.loss_curve import LossCurve
    from minimind_tui.widgets.steps_table import COLUMNS, FULL_WIDTH

    session = ScriptedSession()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory(session), launch="thread")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("s")
            session.push(started_with(EVALUATING), *[step(i, 6.0 - i * 0.1) for i in range(1, 11)],
                         evaluated(10, 5.0, True),
                         *[CheckpointSaved(kind, f"out/runs/r1/{kind}.pt", 10) for kind in ("weights", "resume", "best")])
            table = app.query_one("#steps", StepsTable)
            checkpoints = app.query_one("#checkpoints")
            assert await wait_for(pilot, lambda: table.row_count == 10 and "best" in str(checkpoints.render()))
            await pilot.pause(1.2)  # a curve redraw
            lines = str(table.render()).splitlines()
            assert all(len(line) <= table.size.width <= 80 for line in lines)
            header, rows, note = lines[0], lines[1:-1], lines[-1]
            assert rows and all(len(row) == len(header) for row in rows)  # the same columns, one line each
            assert "pos/s" in note and "metrics.jsonl" in note and "pos/s" not in header
            assert table.size.width < FULL_WIDTH
            # the curve: >= 8 rows of plot; the checkpoint list is the newest save on one line
            curve = app.query_one("#curve", LossCurve)
            assert plot_rows(curve.plt.build()) >= 8
            assert checkpoints.size.height == 1
            assert "best" in str(checkpoints.render()) and "k: all" in str(checkpoints.render())
            await pilot.press("k")
            assert await wait_for(pilot, lambda: checkpoints.size.height == 4)
            assert all(kind in str(checkpoints.render()) for kind in ("weights", "resume", "best"))
            await pilot.press("k")
            assert await wait_for(pilot, lambda: checkpoints.size.height == 1)
            for widget_id in ("#progress-line", "#eval-line", "#device-line"):
                widget = app.query_one(widget_id)
                assert len(str(widget.render())) <= widget.size.width, widget_id

            await pilot.resize_terminal(100, 30)  # wider: every column, no note; taller: the full checkpoint list
            assert await wait_for(pilot, lambda: table.size.width >= FULL_WIDTH and checkpoints.size.height == 4)
            lines = str(table.render()).splitlines()
            assert all(c.label in lines[0] for c in COLUMNS) and "metrics.jsonl" not in lines[-1]
            assert all(len(line) == len(lines[0]) for line in lines[1:])
            session.push(RunEnded("finished", 20, 20, "/tmp/none/runs/r1"))
            assert await wait_for(pilot, lambda: app.state == "finished")

    asyncio.run(scenario())


def test_steps_table_columns_fit_any_width():
    from minimind_tui.widgets.steps_table import COLUMNS, FULL_WIDTH, StepsTable, columns_for, hidden_note, row_cells

    big = StepLogged(epoch=123, epochs=400, step=123456, iters=234567, global_step=10**7, total_steps=10**8,
                     loss=12.3456789, logits_loss=1e6, aux_loss=1234.5, lr=1.5e-7, grad_norm=123456.0, tokens=1,
                     tokens_per_s=12_345_678.0, positions_per_s=float("inf"), step_time=1.0, elapsed=1.0,
                     epoch_eta=500_000.0, total_eta=float("nan"))
    cells = row_cells(big)
    assert all(len(cell) <= c.width for cell, c in zip(cells, COLUMNS))  # no cell overflows its column
    assert columns_for(FULL_WIDTH) == COLUMNS
    labels = [c.label for c in columns_for(80)]
    assert "pos/s" not in labels and "loss" in labels and "step" in labels
    narrow = [c.label for c in columns_for(40)]
    assert narrow[:3] == ["ep", "step", "loss"] and "ETA ep" not in narrow
    assert sum(c.width for c in columns_for(60)) + len(columns_for(60)) - 1 <= 60
    assert "metrics.jsonl" in hidden_note([COLUMNS[-1]], 80) and len(hidden_note([COLUMNS[-1]], 30)) <= 30
    table = StepsTable()
    indices, header, note = table.layout_for(70)
    assert len(header) <= 70 and note and [COLUMNS[i] for i in indices] == columns_for(70)


def test_runs_table_shows_the_family_from_100_columns():
    """Two families share a save_dir: at the README's 100x30 the Runs tab tells them apart."""
    from minimind_tui.widgets.runs_view import columns_for, table_width

    assert "family" not in [c.label for c in columns_for(80)] and "best eval" in [c.label for c in columns_for(80)]
    assert "family" in [c.label for c in columns_for(100)]
    assert all(table_width(columns_for(w)) <= w for w in (80, 100, 120))
    # run ids of the default kind (a 15-character time) and no evaluations: duration shows at 100 too
    labels = [c.label for c in columns_for(100, run_width=15, evals=False)]
    assert "duration" in labels and "stage" in labels and "best eval" not in labels
    assert table_width(columns_for(100, run_width=15, evals=False)) <= 100


def test_runs_view_and_run_detail_show_the_best_eval_at_80x24(tmp_path):
    from textual.widgets import Button

    from minimind.engine.trainer import Trainer
    from minimind.storage.run_store import RunStore, RunSummary
    from minimind_tui.screens.run_detail import RunDetailScreen
    from minimind_tui.widgets.loss_curve import LossCurve

    config = tiny_config(tmp_path, epochs=1, save_interval=0, eval_split=0.25, eval_interval=2, run_name="evals")
    ended = Trainer(config).run()
    summary = RunSummary.of(RunStore(ended.run_dir))
    assert summary.best_eval is not None and len(summary.evals) >= 2

    async def scenario(size):
        app = make_app(config)
        async with app.run_test(size=size) as pilot:
            await pilot.press("3")
            runs = app.query_one("#runs-table", DataTable)
            assert await wait_for(pilot, lambda: runs.row_count == 1)
            labels = [str(c.label) for c in runs.columns.values()]
            assert "best eval" in labels and "state" in labels and "run" in labels
            assert str(runs.get_row_at(0)[labels.index("best eval")]) == f"{summary.best_eval:.4f}"
            assert runs.virtual_size.width <= runs.size.width  # no column off the edge
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
            screen = app.screen
            await pilot.pause(0.2)
            losses = screen.query_one("#detail-losses")
            assert f"eval best {summary.best_eval:.4f}" in str(losses.render())
            assert len(str(losses.render())) <= losses.size.width
            curve = screen.query_one("#detail-curve", LossCurve)
            assert [(s, v) for s, v in zip(curve.evals["evals"].steps, curve.evals["evals"].values[False])] \
                == summary.evals
            assert plot_rows(curve.plt.build()) >= 8
            for button in screen.query(Button):  # every action is on screen, Back is the default
                assert button.region.right <= size[0] and button.region.bottom <= size[1] - 1, button.id
            assert screen.focused is screen.query_one("#back", Button)
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, RunDetailScreen))

    for size in ((80, 24), (100, 30)):
        asyncio.run(scenario(size))


class _Launched(ScriptedSession):
    """A scripted run in another process that this app launched (it has a process) or only follows."""

    def __init__(self, process):
        super().__init__()
        from minimind_tui.sessions import SessionKind

        self.kind = SessionKind.ATTACHED
        self.process = process


@pytest.mark.parametrize("where,session,title,keep", [
    ("thread", lambda: ScriptedSession(), "trains inside this app", "Keep running"),
    ("launched", lambda: _Launched(process=object()), "background process this app started", "Leave it running"),
    ("attached", lambda: _Launched(process=None), "started elsewhere", "Leave it running"),
])
def test_quit_dialog_words_and_enter_is_the_safe_choice(tmp_path, where, session, title, keep):
    from textual.widgets import Button

    run = session()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory(run))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("s")
            run.push(started())
            assert await wait_for(pilot, lambda: app.state == "running")
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen) and app.screen.where == where
            text = " ".join(str(s.render()) for s in app.screen.query(Static))
            assert title in text
            assert str(app.screen.query_one("#keep", Button).label).startswith(keep)
            assert app.screen.focused.id == "cancel"
            for button in app.screen.query(Button):
                assert button.region.right <= 80, button.id
            await pilot.press("enter")  # the default: nothing stops
            assert not isinstance(app.screen, QuitScreen) and app.state == "running" and run.commands == []
            await pilot.press("q")
            await pilot.press("s")  # stopping takes its own key
            assert run.commands[0] == "stop" and app.state in ("stopping", "stopped")
            run.push(RunEnded("stopped", 5, 20, "/tmp/none/runs/r1", resumable=True))
            assert await wait_for(pilot, lambda: app.return_code is not None, 10)

    asyncio.run(scenario())


def test_help_lists_every_key_from_the_bindings_and_follows_new_ones(tmp_path):
    from minimind_tui.screens.help import HelpScreen
    from minimind_tui.screens.run_detail import RunDetailScreen

    config = tiny_config(tmp_path, epochs=1, save_interval=0)

    def help_shown(app) -> str:
        return str(app.screen.query_one("#help-text").render())

    async def scenario():
        app = make_app(config, session_factory=Factory())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            shown = help_shown(app)
            assert "Keys: Train tab" in str(app.screen.query_one(".dialog-title").render())
            for binding in app.BINDINGS:  # every described app key, whichever tab it belongs to
                assert binding.description and binding.description in shown, binding
            assert "Older step" in shown  # the steps table's keys, once it is focused
            assert "on the Config tab" in shown and "Save cfg" in shown
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            app.bind("z", "bell", description="Ring the terminal bell")  # a key added later is listed as is
            await pilot.press("f1")
            assert "Ring the terminal bell" in help_shown(app)
            await pilot.press("escape")

            from minimind.engine.trainer import Trainer

            ended = Trainer(config).run()
            app.push_screen(RunDetailScreen(Path(ended.run_dir), config.train.save_dir))
            await pilot.pause(0.2)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            shown = help_shown(app)
            for binding in RunDetailScreen.BINDINGS:
                assert binding.description in shown, binding
            assert "Keys: run detail" in str(app.screen.query_one(".dialog-title").render())

    asyncio.run(scenario())


def test_footer_shows_what_fits_and_help_comes_first(tmp_path):
    from minimind_tui.widgets.key_bar import KeyBar

    async def scenario():
        shown = {}
        for width in (80, 100):
            app = make_app(tiny_config(tmp_path), session_factory=Factory())
            async with app.run_test(size=(width, 24)) as pilot:
                await pilot.pause(0.2)
                bar = app.query_one(KeyBar)
                items = bar.shown(width)
                line = str(bar.render())
                assert items[0][:2] == ("?", "Help") and len(line) <= width
                assert line.count("  ") == len(items) - 1 + line.startswith("  ")  # whole keys, never cut
                shown[width] = {description for _, description, _ in items}
                all_items = {description for _, description, _ in bar.items()}
                assert {"Start", "Quit", "Command", "Save cfg", "Load cfg"} <= all_items  # the Config tab's keys
                assert "Log-y" not in all_items  # a Train tab key is hidden here (and listed by ?)
                await pilot.press("2")
                await pilot.pause(0.1)
                assert {"Pause", "Log-y", "EMA", "Ckpts"} <= {d for _, d, _ in bar.shown(width)}
        assert shown[80] < shown[100]  # wider: more keys

    asyncio.run(scenario())


def test_saving_a_config_over_an_existing_file_takes_a_second_enter(tmp_path):
    import json

    path = tmp_path / "saved.json"
    path.write_text("{}")

    async def scenario():
        app = make_app(tiny_config(tmp_path, epochs=3), session_factory=Factory())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("w")
            app.screen.query_one("#path-input").value = str(path)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert "exists" in str(app.screen.query_one("#path-note").render()) and path.read_text() == "{}"
            await pilot.press("enter")  # the second Enter replaces it
            assert await wait_for(pilot, lambda: path.read_text() != "{}")
            assert json.loads(path.read_text())["train"]["epochs"] == 3

    asyncio.run(scenario())


@pytest.mark.parametrize("process", [object(), None])
def test_leaving_a_background_or_attached_run_running_only_detaches(tmp_path, process):
    run = _Launched(process=process)

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory(run))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("s")
            run.push(started())
            assert await wait_for(pilot, lambda: app.state == "running")
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("l")
            assert await wait_for(pilot, lambda: app.return_code is not None, 10)
            assert run.commands == ["detach"]  # never asked to stop

    asyncio.run(scenario())
