"""Pilot tests from a user walkthrough: fine-tuning keeps the run's family and model, the Chat tab takes
typed keys as text (never as start/stop), a Start that cannot start says why, and mistyped chat
commands are answered instead of sent to the model."""

import asyncio
from pathlib import Path

import pytest
from textual.widgets import DataTable

from minimind.config import RunConfig
from minimind.engine.trainer import Trainer
from minimind.options import command_for
from minimind.storage.run_store import RunStore
from minimind_tui.app import default_session_factory, make_app
from minimind_tui.screens.help import HelpScreen
from minimind_tui.screens.run_detail import RunDetailScreen
from minimind_tui.sessions import AttachedSession
from minimind_tui.widgets.key_bar import KeyBar
from tests.helpers import tiny_config
from tests.test_sft import chats, toy_conversations
from tests.test_tui import SIZE, started, wait_for
from tests.tui_fakes import Factory, ScriptedSession


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def footer(app) -> dict[str, bool]:
    """The footer's keys: description -> enabled (shown bright)."""
    return {description: enabled for _, description, enabled in app.query_one(KeyBar).items()}


# ---- 1. fine-tuning keeps the family and the model ----------------------------------------------------------------

@pytest.mark.parametrize("arch,use_moe,attach", [("minimind3", False, False), ("minimind3", True, True),
                                                 ("classic", True, False)], ids=["m3", "m3-moe-attached", "classic-moe"])
def test_fine_tune_from_a_run_keeps_its_family_and_model_and_trains(tmp_path, arch, use_moe, attach):
    """Runs tab -> Enter -> f on a MiniMind-3 (or MoE) run: the form is an SFT run of that family with the
    run's model sizes, `y` names the family, and `s` fine-tunes from the run's weights. Also from an app
    that attached to the run."""
    base_config = tiny_config(tmp_path, arch=arch, use_moe=use_moe, epochs=1, save_interval=0, run_name="base")
    base = Trainer(base_config).run()
    form_start = tiny_config(tmp_path)  # the form starts as a classic pretrain run

    def factory(kind, config=None, run_dir=None):  # the app's own, attaching without the long wait
        return AttachedSession(run_dir, wait_s=10) if kind == "attach" else default_session_factory(kind, config, run_dir)

    async def scenario():
        app = make_app(form_start, launch="thread", attach=Path(base.run_dir) if attach else None,
                       session_factory=factory)
        async with app.run_test(size=SIZE) as pilot:
            if attach:
                assert await wait_for(pilot, lambda: app.state == "finished")
            await pilot.press("3")
            runs = app.query_one("#runs-table", DataTable)
            assert await wait_for(pilot, lambda: runs.row_count == 1)
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
            await pilot.press("f")
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.train.stage == "sft")
            sft = app.form_config
            assert sft.train.arch == arch and sft.model == base_config.model  # every model size, MoE included
            assert sft.train.init_from == base.run_dir and sft.train.from_weight == "none"
            assert app.query_one("#field-arch").value == arch and app.query_one("#field-stage").value == "sft"
            size_field = "#field-hidden_size" if arch == "minimind3" else "#field-dim"
            assert app.query_one(size_field).value == "32" and app.query_one(f"#row-{size_field[7:]}").display
            assert f"--arch {arch}" in command_for(sft) or arch == "classic"
            # a short fine-tune on a few conversations, from the run's weights
            app.query_one("#field-data_path").value = str(chats(tmp_path, toy_conversations(4)))
            app.query_one("#field-max_seq_len").value = "64"
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.model.max_seq_len == 64)
            await pilot.press("s")
            assert await wait_for(pilot, lambda: app.state == "finished", 60), app.query_one("#run-error").render()
            tuned = RunConfig.from_dict(RunStore.open(app.run_dir).read_config())
            assert tuned.train.stage == "sft" and tuned.train.arch == arch and tuned.model.use_moe == use_moe

    asyncio.run(scenario())


def test_choosing_the_stage_keeps_the_minimind3_family_and_its_sizes(tmp_path):
    config = tiny_config(tmp_path, arch="minimind3")

    async def scenario():
        app = make_app(config, session_factory=Factory())
        async with app.run_test(size=SIZE) as pilot:
            app.query_one("#field-stage").value = "sft"
            assert await wait_for(pilot, lambda: app.form_config is not None and app.form_config.train.stage == "sft")
            assert app.form_config.train.arch == "minimind3" and app.form_config.model.hidden_size == 32
            assert app.query_one("#field-arch").value == "minimind3" and app.query_one("#row-hidden_size").display

    asyncio.run(scenario())


# ---- 2. the Chat tab types what is typed ---------------------------------------------------------------------------

def test_keys_typed_on_the_chat_tab_go_into_the_chat_and_never_steer_the_run(tmp_path):
    """Out of the text field on the Chat tab, letters are typed into it (s never starts a run, x never
    stops one); the tab keys, ? and q still act, and the footer and help say so."""
    run = ScriptedSession()
    factory = Factory(run)

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=factory, launch="thread")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            source = app.query_one("#chat-source")
            assert await wait_for(pilot, lambda: app.focused is source)
            await pilot.press("escape")  # leaves the field
            assert app.focused is None
            await pilot.press(*"/system Be brief.")
            assert source.value == "/system Be brief." and app.focused is source
            assert factory.calls == [] and app.state == "idle"
            await pilot.press("tab")  # the focus elsewhere on the tab (the tab bar): still typed into the chat
            assert app.focused is not source
            await pilot.press(*" spcx")
            assert source.value.endswith(" spcx") and factory.calls == []
            await pilot.press("escape")
            await pilot.pause(0.1)
            assert set(footer(app)) == {"Help", "Quit"}  # no steering keys shown where they would be typed
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            assert "here they are typed into the chat" in str(app.screen.query_one("#help-text").render())
            await pilot.press("escape")
            await pilot.press("1")  # the tab keys still switch tabs
            assert app.query_one("#tabs").active == "config"

            await pilot.press("s")  # a run, then back to the Chat tab: x and p are typed, not obeyed
            run.push(started())
            assert await wait_for(pilot, lambda: app.state == "running")
            await pilot.press("4")
            await pilot.pause(0.1)
            await pilot.press("escape", "x", "p")
            assert source.value.endswith("xp") and run.commands == [] and app.state == "running"
            await pilot.press("escape", "2", "p")  # on the Train tab they steer again
            assert run.commands == ["pause"]
            await pilot.press("q")  # quitting asks while a run is active
            assert await wait_for(pilot, lambda: app.screen is not app.screen_stack[0])
            await pilot.press("enter")  # Cancel
            run.push(None)

    asyncio.run(scenario())


# ---- 3. a Start that cannot start says why ---------------------------------------------------------------------------

def test_s_says_why_it_cannot_start_and_the_footer_shows_it_dimmed(tmp_path):
    run = ScriptedSession()
    factory = Factory(run)

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=factory, launch="thread")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            field = app.query_one("#field-max_seq_len")
            field.value = "abc"
            assert await wait_for(pilot, lambda: app.form_config is None)
            await pilot.press("escape")
            assert footer(app)["Start"] is False
            await pilot.press("s")
            assert await wait_for(pilot, lambda: any("cannot start: max_seq_len" in n for n in notes(app)))
            assert factory.calls == [] and app.focused is field  # the field to fix has the focus
            field.value = "48"
            assert await wait_for(pilot, lambda: app.form_config is not None)
            await pilot.press("escape", "s")
            run.push(started())
            assert await wait_for(pilot, lambda: app.state == "running")
            assert footer(app)["Start"] is False
            await pilot.press("s")
            assert await wait_for(pilot, lambda: any("already active" in n for n in notes(app)))
            assert len(factory.calls) == 1 and app.state == "running"
            run.push(None)

    asyncio.run(scenario())


# ---- 4. chat commands in the Chat tab ------------------------------------------------------------------------------

def test_the_chat_tab_answers_mistyped_commands_and_sends_slash_messages(tmp_path):
    base = Trainer(tiny_config(tmp_path, epochs=1, save_interval=0, run_name="base")).run()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory())
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            chat = app._chat_view
            app.query_one("#chat-source").value = base.run_dir
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: chat.chat is not None, 60)
            chat.chat.with_sampling(max_new_tokens=2)
            message = app.query_one("#chat-input")
            assert app.focused is message
            await pilot.press("escape", *"/system Be brief.", "enter")  # typed out of the field: still a command
            assert await wait_for(pilot, lambda: chat.chat.system == "Be brief.")
            for typo in ("/rest", "/systemx hi"):
                message.value = typo
                await pilot.press("enter")
                answer = ("note", f"(unknown command {typo.split()[0]}: try /reset, /system TEXT, /exit)")
                assert await wait_for(pilot, lambda answer=answer: chat.turns[-1] == answer)
            assert chat.chat.messages == [] and not chat.replying  # nothing went to the model
            message.value = "/ hi"  # a slash and a space: a message
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: not chat.replying and chat.chat.messages[:1] == [
                {"role": "user", "content": "/ hi"}], 30)

    asyncio.run(scenario())


def test_attaching_without_save_dir_lists_the_attached_runs_neighbours(tmp_path, monkeypatch):
    from minimind_tui.cli import form_config

    ended = Trainer(tiny_config(tmp_path, epochs=1, run_name="there")).run()
    monkeypatch.chdir(tmp_path)  # ./output is not where that run lives
    config, attach = form_config({"attach": Path(ended.run_dir), "launch": "process"})
    assert attach == Path(ended.run_dir) and config.train.save_dir == str(tmp_path / "out")
    config, _ = form_config({"attach": Path(ended.run_dir), "save_dir": "elsewhere", "launch": "process"})
    assert config.train.save_dir == "elsewhere"  # said explicitly: kept


def test_sample_text_streams_and_a_run_gone_since_says_so(tmp_path):
    import shutil

    from textual.widgets import Input, Static

    from minimind_tui.screens.sample import SampleScreen

    ended = Trainer(tiny_config(tmp_path, epochs=1, run_name="s")).run()

    async def scenario():
        app = make_app(tiny_config(tmp_path))
        async with app.run_test(size=SIZE) as pilot:
            screen = SampleScreen(Path(ended.run_dir))
            app.push_screen(screen)
            await pilot.pause()
            output = screen.query_one("#sample-output", Static)
            screen.query_one("#max-new-tokens", Input).value = "4"
            screen.query_one("#prompt", Input).value = "hello"
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: not screen.query_one("#generate").disabled, 60)
            assert str(output.render()).startswith("hello") and not str(output.render()).startswith("✗")
            shutil.rmtree(ended.run_dir)
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: not screen.query_one("#generate").disabled, 60)
            assert str(output.render()).startswith("✗ "), str(output.render())

    asyncio.run(scenario())


def test_following_a_run_replays_its_history_without_announcing_it_again(tmp_path):
    """Attaching to (or resuming from the Runs tab) a run with old pauses, alerts and a failed session:
    the views show them, the toasts are only for what happens while the user watches."""
    from minimind.events import RunState

    ended = Trainer(tiny_config(tmp_path, epochs=1, run_name="nan", learning_rate=1e8, grad_clip=0.0,
                                on_nan="stop")).run()
    history = RunStore(Path(ended.run_dir)).read_events()
    assert ended.status == RunState.FAILED and any(e["event"] == "Alert" for e in history)

    async def scenario():
        app = make_app(tiny_config(tmp_path), attach=Path(ended.run_dir))
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            assert await wait_for(pilot, lambda: app.state == RunState.FAILED, 30)  # the history, replayed
            await pilot.pause(0.3)
            assert not [n for n in notes(app) if "non-finite" in n or "run failed" in n], notes(app)

    asyncio.run(scenario())


def test_the_live_curve_moves_onto_a_resumed_sessions_step_axis(tmp_path):
    """Followed across a resume with twice the processes (steps halve), the curve does not jump back."""
    from dataclasses import replace

    from minimind_tui.widgets.loss_curve import LossCurve
    from tests.test_tui import step

    session = ScriptedSession()

    async def scenario():
        app = make_app(tiny_config(tmp_path), session_factory=Factory(session), launch="thread")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("s")
            session.push(started(total=20), *[step(i) for i in (1, 2, 3, 4)])
            session.push(replace(started(total=10), start_step=2), *[replace(step(i), total_steps=10) for i in (3, 4)])
            curve = app.query_one("#curve", LossCurve)
            assert await wait_for(pilot, lambda: "loss" in curve.series and len(curve.series["loss"].steps) == 6)
            assert curve.series["loss"].steps == [0.5, 1.0, 1.5, 2.0, 3, 4]
            session.push(None)  # the session ends

    asyncio.run(scenario())
