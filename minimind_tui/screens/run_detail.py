"""One past run: its settings, curve with its evaluations (optionally overlaid with another run's),
checkpoints, actions. Fits 80x24: two title lines, the actions and the overlay choice on one line of
compact buttons, the keys in the footer (? lists them all)."""

from __future__ import annotations

import math
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Select, Static

from minimind.config import RunConfig
from minimind.errors import MiniMindError
from minimind.events import RunState
from minimind.formatting import format_duration, format_loss
from minimind.storage.run_store import RunStore, RunSummary, list_runs, loss_curve

from ..widgets.key_bar import KeyBar
from ..widgets.loss_curve import LossCurve
from ..widgets.text_line import TextLine
from ..widgets.train_view import format_ppl, shorten_path

ACTIONS = ("attach", "resume", "sample", "chat", "finetune")


def loss_lines(s: RunSummary) -> tuple[str, ...]:
    """The losses and evaluations of a run, longest wording first (TextLine draws the longest that fits)."""
    losses = f"loss last {format_loss(s.last_loss)}  best {format_loss(s.best_loss)}"
    finite = [(step, loss) for step, loss in s.evals if math.isfinite(loss)]
    if not finite:
        return (losses,)
    best_step, best = min(finite, key=lambda p: p[1])
    last_step, last = s.evals[-1]
    ppl = format_ppl(math.exp(min(best, 700)))
    return (f"{losses}  ·  eval best {best:.4f} (ppl {ppl}, step {best_step})  last {format_loss(last)} "
            f"(step {last_step})",
            f"{losses}  ·  eval best {best:.4f} @{best_step} (ppl {ppl})  last {format_loss(last)}",
            f"loss {format_loss(s.last_loss)} best {format_loss(s.best_loss)} · eval best {best:.4f} @{best_step} "
            f"last {format_loss(last)}")


class RunDetailScreen(ModalScreen[tuple[str, Path] | None]):
    """Dismisses with ("resume" | "attach" | "sample" | "chat" | "finetune", run path) or None."""

    HELP_TITLE = "run detail"
    BINDINGS = [
        Binding("question_mark,f1", "app.help", "Help"),
        Binding("escape", "dismiss(None)", "Back"),
        Binding("r", "press('resume')", "Resume"),
        Binding("a", "press('attach')", "Attach"),
        Binding("t", "press('sample')", "Sample text"),
        Binding("c", "press('chat')", "Chat"),
        Binding("f", "press('finetune')", "Fine-tune"),
        Binding("l", "log_scale", "Log-y"),
        Binding("e", "smoothing", "EMA"),
    ]

    def __init__(self, path: Path, save_dir: str) -> None:
        super().__init__()
        self.store = RunStore(path)
        self.save_dir = save_dir
        self.summary = RunSummary.of(self.store)

    def compose(self) -> ComposeResult:
        s = self.summary
        try:
            c = RunConfig.from_dict(self.store.read_config())
            m, t = c.model, c.train
            settings = (f"{c.family.name} · {c.family.describe(m)} · {t.stage} · "
                        f"{t.epochs} epochs · batch {t.batch_size}x{t.accumulation_steps} · lr {t.learning_rate} · "
                        f"{s.ran_on or t.dtype} · {t.data_path}")
        except MiniMindError as e:
            settings = f"config unreadable: {e}"
        others = [(st.run_id, str(st.path)) for st in reversed(list_runs(self.save_dir)) if st.path != self.store.path]
        with Vertical(classes="dialog full", id="detail-dialog"):
            yield Static(f"run {s.run_id}  ·  {s.state}  ·  steps {s.global_step}/{s.total_steps}  ·  "
                         f"{format_duration(s.duration)}", classes="dialog-title", id="detail-title")
            losses = TextLine("", id="detail-losses")
            losses.set(*loss_lines(s))
            yield losses
            yield Static(settings, id="detail-settings")
            yield LossCurve(title=f"loss {s.run_id}", id="detail-curve")
            yield Static("", id="detail-checkpoints")
            with Horizontal(classes="dialog-buttons", id="detail-buttons"):
                live = s.state.live
                yield Button("Resume", id="resume", variant="success", compact=True,
                             disabled=live or not s.resumable or s.state == RunState.FINISHED)
                yield Button("Attach", id="attach", variant="primary", disabled=not live, compact=True)
                yield Button("Sample", id="sample", compact=True)
                yield Button("Chat", id="chat", compact=True)
                yield Button("Fine-tune", id="finetune", disabled=live, compact=True)
                yield Button("Back", id="back", compact=True)
                yield Select(others, prompt="overlay another run", id="overlay", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self._draw(self.store)
        self.query_one("#back", Button).focus()  # Enter = the safe choice
        self._show_checkpoints()

    def _draw(self, store: RunStore) -> None:
        curve, points = self.query_one("#detail-curve", LossCurve), loss_curve(store)
        curve.set_series(store.run_id, points.steps, points.losses)
        if points.evals:
            curve.set_evals(store.run_id, points.evals)

    def on_resize(self) -> None:
        self._show_checkpoints()

    def _show_checkpoints(self) -> None:
        width = max(self.size.width - 4, 20)
        problems = self.summary.checkpoint_problems
        lines = [f"{kind:<8}{shorten_path(str(path), width - 8)}" + (f"\n        ({problems[kind]})" if kind in problems else "")
                 for kind, path in sorted(self.summary.checkpoints.items())]
        self.query_one("#detail-checkpoints", Static).update("\n".join(lines) or "no checkpoints")

    def on_select_changed(self, event: Select.Changed) -> None:
        curve = self.query_one("#detail-curve", LossCurve)
        for name in [n for n in curve.series if n != self.store.run_id]:
            curve.remove_series(name)
        if event.value is not Select.NULL:
            self._draw(RunStore(Path(str(event.value))))
        curve.bring_to_front(self.store.run_id)  # this run's curve over the overlay

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.dismiss(None)
        else:
            self.dismiss((event.button.id or "", self.store.path))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "press" and parameters:
            buttons = self.query(f"#{parameters[0]}").results(Button)
            return None if any(b.disabled for b in buttons) else True
        return True

    def action_press(self, button_id: str) -> None:
        if button_id in ACTIONS:
            button = self.query_one(f"#{button_id}", Button)
            if not button.disabled:
                self.dismiss((button_id, self.store.path))

    def action_log_scale(self) -> None:
        self.query_one("#detail-curve", LossCurve).toggle_log_scale()

    def action_smoothing(self) -> None:
        self.query_one("#detail-curve", LossCurve).toggle_smoothing()
