"""The minimind-tui App: configure, launch, watch, pause and inspect training.

The App owns the training: one Session at a time, run in a thread worker of the App, reporting
engine events as messages. Sessions are made by a factory so tests can script one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import psutil
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Button, Static, TabbedContent, TabPane

from minimind.config import RunConfig
from minimind.errors import MiniMindError
from minimind.events import Alert, Event, EventHandler, RunEnded, RunStarted, RunState, StateChanged, StepLogged
from minimind.options import command_for
from minimind.storage.atomic import atomic_write_json
from minimind.storage.run_store import RunStore

from .messages import EngineEvent, SessionDone, SessionFailed
from .screens.help import HelpScreen
from .screens.path_dialog import PathScreen
from .screens.quit_dialog import QuitScreen
from .screens.run_detail import RunDetailScreen
from .screens.sample import SampleScreen
from .screens.text_dialog import TextScreen
from .sessions import AttachedSession, Session, SessionKind, ThreadSession, launch_new_run, launch_resume
from .widgets.chat_view import ChatView
from .widgets.config_form import ConfigForm
from .widgets.key_bar import KeyBar
from .widgets.runs_view import RunsView
from .widgets.status_bar import StatusBar
from .widgets.train_view import TrainView

DEVICE_REFRESH_S = 5.0  # memory moves slowly; every redraw costs training CPU on a small machine
NARROW_BELOW = 150  # columns: below this the steps table and the curve stack
TAB_NAMES = {"config": "Config", "train": "Train", "runs": "Runs", "chat": "Chat"}


def default_session_factory(kind: str, config: Optional[RunConfig] = None, run_dir: Optional[Path] = None) -> Session:
    """kind: "thread" (train here), "process" (a detached minimind train), "resume-thread",
    "resume-process" or "attach"."""
    if kind in ("thread", "process"):
        if config is None:
            raise ValueError(f"a {kind} session needs a config")
        if kind == "process":
            return launch_new_run(config)
        if config.train.nproc > 1:
            raise MiniMindError(f"nproc {config.train.nproc}: several processes run under torchrun, so set launch "
                                "to 'background process'")
        return ThreadSession(config)
    if run_dir is None:
        raise ValueError(f"a {kind} session needs a run directory")
    if kind == "resume-thread":
        return ThreadSession(resume=run_dir)
    if kind == "resume-process":
        return launch_resume(run_dir)
    if kind == "attach":
        return AttachedSession(run_dir, wait_s=5.0)
    raise ValueError(kind)


SessionFactory = Callable[..., Session]


class MiniMindApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "minimind-tui"
    ENABLE_COMMAND_PALETTE = False  # the footer's width is better spent on our keys
    # The footer (KeyBar) shows the bindings with show=True in this order, as many as fit: at 80 columns the
    # current tab's keys and the run's steering keys, at 100 also the rest; `?` lists every key.
    BINDINGS = [
        Binding("question_mark,f1", "help", "Help"),
        Binding("s", "start", "Start"),
        Binding("p", "pause_resume", "Pause"),
        Binding("x", "stop", "Stop"),
        Binding("c", "save_now", "Save"),
        Binding("q", "quit", "Quit"),
        Binding("l", "log_scale", "Log-y"),
        Binding("e", "smoothing", "EMA"),
        Binding("k", "checkpoints", "Ckpts"),
        Binding("y", "copy_command", "Command"),
        Binding("w", "save_config", "Save cfg"),
        Binding("o", "load_config", "Load cfg"),
        Binding("r", "refresh_runs", "Refresh"),
        Binding("1", "tab('config')", "Config tab", show=False),
        Binding("2", "tab('train')", "Train tab", show=False),
        Binding("3", "tab('runs')", "Runs tab", show=False),
        Binding("4", "tab('chat')", "Chat tab", show=False),
        Binding("escape", "leave_field", "Leave the field (then keys work)", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]
    # Keys that only mean something on one tab: hidden (and inactive) on the others.
    TAB_ACTIONS = {"log_scale": "train", "smoothing": "train", "checkpoints": "train", "copy_command": "config",
                   "save_config": "config", "load_config": "config", "refresh_runs": "runs"}
    # The Chat tab is for typing: there the app's letter keys but q are typed into the chat instead of
    # acting (a message that starts with s must never start a run); digits, ? and q still act.
    CHAT_TYPED_ACTIONS = {b.action for b in BINDINGS
                          if isinstance(b, Binding) and len(b.key) == 1 and b.key.isalpha()} - {"quit"}

    # The current run's state; changing it refreshes the status line, the Start button and which
    # key bindings are enabled.
    state: reactive[RunState] = reactive(RunState.IDLE, bindings=True, init=False)

    def __init__(self, config: Optional[RunConfig] = None, start: bool = False, attach: Optional[Path] = None,
                 session_factory: SessionFactory = default_session_factory, launch: str = "process") -> None:
        super().__init__()
        self.initial_config = config or RunConfig()
        self.start_on_mount = start
        self.attach_on_mount = attach
        self.session_factory = session_factory
        self.initial_launch = launch
        self.session: Optional[Session] = None
        self.form_config: Optional[RunConfig] = self.initial_config
        self.run_dir: Optional[Path] = None
        self.run_device = ""
        self._leaving = False  # exit() was called: late messages must not touch the widgets
        self._quit_after_run: Optional[str] = None  # "exit" or "keep" once the current run has stopped
        self._events = _EventRouter(self)

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        # The app keeps its widgets and talks to them through their methods.
        self._status_bar = StatusBar(id="status-bar")
        self._tabs = TabbedContent(initial="config", id="tabs")
        self._start_button = Button("Start (s)", id="btn-start", variant="success", compact=True)
        self._run_error = Static("", id="run-error", classes="form-error")
        self._form = ConfigForm(self.initial_config, launch=self.initial_launch, id="form")
        self._train_view = TrainView(id="train-view")
        self._runs_view = RunsView(self.initial_config.train.save_dir, id="runs-view")
        self._chat_view = ChatView(id="chat-view")
        yield self._status_bar
        with self._tabs:
            with TabPane("1 Config", id="config"):
                with Horizontal(id="form-buttons"):
                    yield self._start_button
                    yield Button("Command (y)", id="btn-command", compact=True)
                    yield Button("Save config (w)", id="btn-save", compact=True)
                    yield Button("Load config (o)", id="btn-load", compact=True)
                yield self._run_error
                yield self._form
            with TabPane("2 Train", id="train"):
                yield self._train_view
            with TabPane("3 Runs", id="runs"):
                yield self._runs_view
            with TabPane("4 Chat", id="chat"):
                yield self._chat_view
        yield KeyBar(id="key-bar")

    def on_mount(self) -> None:
        self.form_config, _ = self._form.validate()
        self._apply_layout(self.size.width, self.size.height)
        self.set_interval(DEVICE_REFRESH_S, self._refresh_device_line)
        if hasattr(signal, "SIGHUP"):  # an SSH drop: stop and save instead of losing the run
            try:
                signal.signal(signal.SIGHUP, lambda *_: self._hangup())
            except ValueError:  # not the main thread (tests)
                pass
        if self.attach_on_mount is not None:
            self._begin(self._make_session("attach", run_dir=self.attach_on_mount))
        elif self.start_on_mount:
            self.action_start()

    def on_resize(self, event) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        if self._train_view.is_mounted:
            self._train_view.set_stacked(width < NARROW_BELOW)
            self._train_view.set_height(height)

    # ---- state -------------------------------------------------------------------------------
    def exit(self, *args, **kwargs) -> None:
        self._leaving = True
        super().exit(*args, **kwargs)

    @property
    def _closing_down(self) -> bool:
        """Exiting: the widgets are going away, late messages must not touch them."""
        if self._leaving:
            return True
        bar = getattr(self, "_status_bar", None)  # Pilot's shutdown tears down without exit()
        return bar is None or not bar.is_attached

    def _set_state(self, state: RunState, run_id: Optional[str] = None, details: Optional[str] = None) -> None:
        if run_id is not None or details is not None:
            self._status_bar.show(run_id=run_id, details=details)
        self.state = state
        self.watch_state(state)  # also when unchanged: the run or its details may be new

    def watch_state(self, state: RunState) -> None:
        if self._closing_down:
            return
        self._status_bar.show(state=state, where=self._where())
        self._start_button.disabled = self.active

    def _where(self) -> str:
        """How the current run relates to this app, for the status bar."""
        if self.session is None or self.session.kind != SessionKind.ATTACHED:
            return ""
        return "background process" if getattr(self.session, "process", None) is not None else "attached"

    @property
    def active(self) -> bool:
        return self.session is not None and self.state.live

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if self.types_into_chat(action):
            return False
        if action == "start":
            return True if not self.active and self.form_config is not None else None
        if action in ("pause_resume", "stop", "save_now"):
            return True if self.active and self.state != RunState.STOPPING else None
        tab = self.TAB_ACTIONS.get(action)
        if tab is not None and self._tabs.is_mounted and self._tabs.active != tab:
            return False
        return True

    def types_into_chat(self, action: str) -> bool:
        """Whether this app action's key is typed into the chat instead (on the Chat tab)."""
        return action in self.CHAT_TYPED_ACTIONS and self._tabs.is_mounted and self._tabs.active == "chat"

    def on_key(self, event: events.Key) -> None:
        """Keys no focused widget took, before the app's bindings see them (Textual dispatches a subclass's
        on_key first): a dimmed Start says why it cannot start, and on the Chat tab a printable key no
        binding takes goes into the chat's text field."""
        if self.screen is not self.screen_stack[0]:
            return
        bound = self.screen.active_bindings.get(event.key)
        if bound is not None and bound.node is self and bound.binding.action == "start" and not bound.enabled:
            event.prevent_default()
            self.action_start()
        elif bound is None and event.is_printable and event.character and self._tabs.active == "chat":
            event.prevent_default()
            self._chat_view.type_in(event.character)

    # ---- starting ----------------------------------------------------------------------------
    def _make_session(self, kind: str, config: Optional[RunConfig] = None, run_dir: Optional[Path] = None):
        return self.session_factory(kind, config=config, run_dir=run_dir)

    def action_start(self) -> None:
        if self.active:
            self.notify("a run is already active: stop it first", severity="warning")
            return
        config, error = self._form.validate()
        if error is not None or config is None:
            self._tabs.active = "config"
            if error is not None:
                self._form.focus_field(error.field)
            self.notify(f"cannot start: {error}", severity="error")
            return
        try:
            session = self._make_session(self._form.launch_mode, config=config)
        except MiniMindError as e:
            self._show_failure(str(e))
            return
        self._begin(session)

    def _begin(self, session: Session) -> None:
        self.session = session
        self._events.news_since = time.time()
        self._run_error.update("")
        self._train_view.reset()
        self._set_state(RunState.STARTING, run_id="", details="")
        self._tabs.active = "train"
        self._run_session(session)

    @work(thread=True, exclusive=True, exit_on_error=False, group="session")
    def _run_session(self, session: Session) -> None:
        def emit(event: Event) -> None:
            self.post_message(EngineEvent(event))

        try:
            session.run(emit)
        except MiniMindError as e:
            self.post_message(SessionFailed(str(e)))
        except Exception as e:  # a bug: say so in one line, keep the app alive
            self.post_message(SessionFailed(f"internal error {type(e).__name__}: {e}"))
        finally:
            self.post_message(SessionDone(session))

    # ---- engine events -----------------------------------------------------------------------
    def on_engine_event(self, message: EngineEvent) -> None:
        if self._closing_down:
            return
        self._train_view.handle(message.event)
        self._events(message.event)

    def on_session_failed(self, message: SessionFailed) -> None:
        if not self._closing_down:
            self._show_failure(message.message)

    def _show_failure(self, text: str) -> None:
        self._set_state(RunState.FAILED)
        self._run_error.update(f"✗ {text}")
        self._tabs.active = "config"
        self.notify(text, severity="error", timeout=10)

    def on_session_done(self, message: SessionDone) -> None:
        if message.session is not self.session or self._closing_down:
            return
        if self.state.live:  # the worker ended without a RunEnded (detached, or failed early)
            self._set_state(RunState.IDLE if self.state == RunState.STARTING else RunState.STOPPED)
        self._runs_view.reload()
        after, self._quit_after_run = self._quit_after_run, None
        if after == "keep" and self.run_dir is not None:
            launch_resume(self.run_dir)
            self.exit(message=f"training continues in the background: minimind-tui --attach {self.run_dir}")
        elif after == "exit":
            self.exit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = {"btn-start": self.action_start, "btn-command": self.action_copy_command,
                  "btn-save": self.action_save_config, "btn-load": self.action_load_config}.get(event.button.id or "")
        if action:
            action()

    def on_config_form_changed(self, message: ConfigForm.Changed) -> None:
        self.form_config = message.config
        if self._closing_down:
            return
        if message.config is not None:  # the Runs tab lists the runs of the save_dir being configured
            self._runs_view.set_save_dir(message.config.train.save_dir)
        self.refresh_bindings()

    # ---- steering ----------------------------------------------------------------------------
    def action_pause_resume(self) -> None:
        if self.session is None or not self.active:
            return
        if self.state == RunState.PAUSED:
            self.session.resume()
        else:
            self.session.pause()
            self.notify("pausing after the current step", timeout=2)

    def action_stop(self) -> None:
        if self.session is not None and self.active:
            self.session.stop()
            self._set_state(RunState.STOPPING)

    def action_save_now(self) -> None:
        if self.session is not None and self.active:
            self.session.save()
            self.notify("saving after the current step", timeout=2)

    def action_log_scale(self) -> None:
        self._train_view.toggle_log_scale()

    def action_smoothing(self) -> None:
        self._train_view.toggle_smoothing()

    def action_leave_field(self) -> None:
        """Escape in a text field: focus nothing, so single-letter keys act again instead of typing."""
        self.screen.set_focus(None)

    def action_checkpoints(self) -> None:
        self._train_view.toggle_checkpoints()

    def action_tab(self, tab: str) -> None:
        self._tabs.active = tab

    def action_help(self) -> None:
        """The keys of the screen on top (this one or a dialog that binds ?), from its active bindings."""
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        if screen is self.screen_stack[0]:
            title = f"{TAB_NAMES.get(self._tabs.active, 'minimind-tui')} tab"
        else:
            title = getattr(screen, "HELP_TITLE", type(screen).__name__)
        self.push_screen(HelpScreen(screen, title))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()  # the footer shows the new tab's keys
        if event.pane.id == "runs":
            self._runs_view.reload()
            self.call_after_refresh(self._runs_view.focus_table)
        elif event.pane.id == "chat":
            self.call_after_refresh(self._chat_view.focus_input)

    def action_refresh_runs(self) -> None:
        self._runs_view.reload()

    def _refresh_device_line(self) -> None:
        if not self.run_device or self._closing_down:
            return
        memory = self._run_memory() if self.active else ""  # a finished run holds none
        self._train_view.show_device(f"device {self.run_device}" + (f"  ·  memory {memory}" if memory else ""),
                                     f"memory {memory}" if memory else "")

    def _run_memory(self) -> str:
        """The live run's memory: this process's (or its GPU's) for a thread run, else its process's."""
        if isinstance(self.session, ThreadSession):
            # The engine (and torch) is loaded once a run trains in this process; not at app start.
            from minimind.engine.environment import memory_in_use

            return memory_in_use(self.session.device) if self.session.device is not None else ""
        if self.run_dir is None:
            return ""
        return _process_memory(RunStore(self.run_dir).read_status().get("pid"))

    # ---- config file and command line ----------------------------------------------------------
    def action_copy_command(self) -> None:
        if self.form_config is None:
            self.notify("fix the form first", severity="error")
            return
        command = command_for(self.form_config)
        self.copy_to_clipboard(command)
        self.push_screen(TextScreen("The same run, headless:", command,
                                    "also copied to the clipboard (terminals with OSC 52 support)"))

    def action_save_config(self) -> None:
        if self.form_config is None:
            self.notify("fix the form first", severity="error")
            return
        config = self.form_config

        def save(path: Optional[str]) -> None:
            if path:
                try:
                    atomic_write_json(path, config.to_dict())
                    self.notify(f"config saved to {path}")
                except OSError as e:
                    self.notify(f"cannot write {path}: {e.strerror}", severity="error")

        self.push_screen(PathScreen("Save the config as", "minimind_config.json", "Save", confirm_overwrite=True), save)

    def action_load_config(self) -> None:
        def load(path: Optional[str]) -> None:
            if path:
                try:
                    self._form.set_config(RunConfig.load(path))
                    self.notify(f"config loaded from {path}")
                except MiniMindError as e:
                    self.notify(str(e), severity="error", timeout=8)

        self.push_screen(PathScreen("Load a config from", "minimind_config.json", "Load"), load)

    # ---- runs --------------------------------------------------------------------------------
    def on_runs_view_open(self, message: RunsView.Open) -> None:
        save_dir = self.form_config.train.save_dir if self.form_config else self.initial_config.train.save_dir
        self.push_screen(RunDetailScreen(message.path, save_dir), self._run_detail_action)

    def _run_detail_action(self, result: Optional[tuple[str, Path]]) -> None:
        """What a run's detail screen was left with: sample, chat, fine-tune, attach or resume."""
        if not result:
            return
        what, path = result
        if what == "sample":
            self.push_screen(SampleScreen(path))
        elif what == "chat":
            self._tabs.active = "chat"
            self._chat_view.open(path)
        elif what == "finetune":
            self._fine_tune_from(path)
        elif self.active:
            self.notify("a run is already active: stop it first", severity="warning")
        elif what == "attach":
            self._begin(self._make_session("attach", run_dir=path))
        elif what == "resume":
            self._begin(self._make_session(f"resume-{self._form.launch_mode}", run_dir=path))

    def _fine_tune_from(self, run_dir: Path) -> None:
        """The form set to fine-tune this run's model: stage sft, its weights, its model settings."""
        try:
            config = RunConfig.from_dict(RunStore.open(run_dir).read_config())
            self._form.set_config(config.replace(stage="sft", init_from=str(run_dir), run_name=None))
        except MiniMindError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        self._tabs.active = "config"
        self.notify(f"fine-tuning from {run_dir.name}: check the data and press s", timeout=5)

    # ---- quitting ----------------------------------------------------------------------------
    async def action_quit(self) -> None:
        session = self.session
        if session is None or not self.active:
            self.exit()
            return
        attached = session.kind == SessionKind.ATTACHED
        where = "thread" if not attached else "launched" if getattr(session, "process", None) is not None else "attached"

        def decide(choice: str | None) -> None:
            if choice in (None, "cancel"):
                return
            if choice == "keep" and attached:
                session.detach()
                self.exit()
                return
            self._quit_after_run = "keep" if choice == "keep" else "exit"
            session.stop()
            self._set_state(RunState.STOPPING)
            if attached:  # the other process stops on its own; stop following it now
                session.detach()
                self.notify("asked the run to stop; it saves its resume state", timeout=3)

        self.push_screen(QuitScreen(where), decide)

    def _hangup(self) -> None:
        """The terminal is gone (SSH drop). Textual cannot shut down cleanly without it (it blocks
        writing to the dead terminal), so leave without it: a run in another process goes on; a run
        in this process is stopped at a step boundary and its resume state saved first."""
        session = self.session
        if isinstance(session, ThreadSession) and self.state.live:
            session.stop()
            threading.Thread(target=lambda: (session.finished.wait(600), os._exit(0)), daemon=True).start()
        else:
            os._exit(0)

    def on_unmount(self) -> None:
        # Never leave a training thread behind: it would keep the process alive after the UI is gone.
        self._leaving = True
        if self.session is not None and self.state.live:
            if self.session.kind == SessionKind.ATTACHED:
                self.session.detach()
            else:
                self.session.stop()


class _EventRouter(EventHandler):
    """The app's reaction to engine events (the Train view draws them itself)."""

    def __init__(self, app: MiniMindApp) -> None:
        self.app = app
        self.news_since = 0.0  # when the app began following this run: older events are history

    def _news(self, event: Event) -> bool:
        """Toasts are for what happens while the user watches: a followed run's history (old pauses,
        alerts, a failed earlier session) is replayed into the views, not announced again."""
        return event.time >= self.news_since

    def on_run_started(self, event: RunStarted) -> None:
        app = self.app
        app.run_dir = Path(event.run_dir)
        app.run_device = f"{event.device}, {event.precision}"
        details = (f"{event.model.split(':')[0]}  {app.run_device}  {event.n_params / 1e6:.3f}M params  "
                   f"{Path(event.data_path).name} ({event.n_docs} docs)")
        app._set_state(RunState.RUNNING, run_id=event.run_id, details=details)
        app._refresh_device_line()

    def on_state_changed(self, event: StateChanged) -> None:
        self.app._set_state(event.state)
        if event.state == RunState.PAUSED and event.reason and self._news(event):
            self.app.notify(f"paused: {event.reason}", timeout=3)

    def on_run_ended(self, event: RunEnded) -> None:
        self.app._set_state(event.status)
        if event.status == RunState.FAILED and self._news(event):
            self.app.notify(f"run failed: {event.error}", severity="error", timeout=10)

    def on_alert(self, event: Alert) -> None:
        if self._news(event):
            self.app.notify(event.message, severity="error" if event.level == "error" else "warning", timeout=10)

    def on_step_logged(self, event: StepLogged) -> None:
        if self.app.state == RunState.STARTING:
            self.app._set_state(RunState.RUNNING)


def _process_memory(pid) -> str:
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: it holds nothing
            return ""
        return f"{process.memory_info().rss / 2**30:.2f} GiB RSS (pid {pid})"
    except Exception:  # another host, or the process is gone
        return ""


def make_app(config: Optional[RunConfig] = None, **kwargs) -> MiniMindApp:
    """The app as the CLI and the tests build it."""
    return MiniMindApp(config=config, **kwargs)
