"""One past run: its settings, curve (optionally overlaid with another run's), checkpoints, actions."""

from __future__ import annotations

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
from minimind.storage.run_store import RunStore, RunSummary, list_runs

from ..widgets.loss_curve import LossCurve


class RunDetailScreen(ModalScreen[tuple[str, Path] | None]):
    """Dismisses with ("resume" | "attach" | "sample" | "chat" | "finetune", run path) or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Back"), Binding("l", "log_scale", "Log-y"),
                Binding("e", "smoothing", "Smoothing")]

    def __init__(self, path: Path, save_dir: str) -> None:
        super().__init__()
        self.store = RunStore(path)
        self.save_dir = save_dir

    def compose(self) -> ComposeResult:
        s = RunSummary.of(self.store)
        try:
            c = RunConfig.from_dict(self.store.read_config())
            m, t = c.model, c.train
            settings = (f"{c.family.name} · {c.family.describe(m)} · {t.stage} · "
                        f"{t.epochs} epochs · batch {t.batch_size}x{t.accumulation_steps} · lr {t.learning_rate} · "
                        f"{t.dtype} · {t.data_path}")
        except MiniMindError as e:
            settings = f"config unreadable: {e}"
        others = [(st.run_id, str(st.path)) for st in reversed(list_runs(self.save_dir)) if st.path != self.store.path]
        with Vertical(classes="dialog full"):
            yield Static(f"run {s.run_id}  ·  {s.state}  ·  steps {s.global_step}/{s.total_steps}  ·  "
                         f"last {format_loss(s.last_loss)}  best {format_loss(s.best_loss)}  ·  {format_duration(s.duration)}",
                         classes="dialog-title")
            yield Static(settings, id="detail-settings")
            yield LossCurve(title=f"loss {s.run_id}", id="detail-curve")
            yield Static("\n".join(f"{k}: {v}" for k, v in sorted(s.checkpoints.items())) or "no checkpoints",
                         id="detail-checkpoints")
            with Horizontal(classes="dialog-buttons"):
                live = s.state.live
                yield Button("Attach", id="attach", variant="primary", disabled=not live)
                yield Button("Resume", id="resume", variant="success",
                             disabled=live or not s.resumable or s.state == RunState.FINISHED)
                yield Button("Sample text", id="sample")
                yield Button("Chat", id="chat")
                yield Button("Fine-tune from this run", id="finetune", disabled=live)
                yield Select(others, prompt="overlay another run", id="overlay")
                yield Button("Back", id="back")

    def on_mount(self) -> None:
        curve = self.query_one("#detail-curve", LossCurve)
        metrics = self.store.read_metrics()
        curve.set_series(self.store.run_id, [m["global_step"] for m in metrics], [m["loss"] for m in metrics])

    def on_select_changed(self, event: Select.Changed) -> None:
        curve = self.query_one("#detail-curve", LossCurve)
        for name in [n for n in curve.series if n != self.store.run_id]:
            curve.remove_series(name)
        if event.value is not Select.NULL:
            other = RunStore(Path(str(event.value)))
            metrics = other.read_metrics()
            curve.set_series(other.run_id, [m["global_step"] for m in metrics], [m["loss"] for m in metrics])
        curve.bring_to_front(self.store.run_id)  # this run's curve over the overlay

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.dismiss(None)
        else:
            self.dismiss((event.button.id or "", self.store.path))

    def action_log_scale(self) -> None:
        self.query_one("#detail-curve", LossCurve).toggle_log_scale()

    def action_smoothing(self) -> None:
        self.query_one("#detail-curve", LossCurve).toggle_smoothing()
