"""The args form, generated from minimind.config (the same specs as the CLI flags).

Every family's model fields are built once; the form shows those of the chosen family. Choosing
another family or stage fills the form with that combination's defaults, keeping the settings the
user changed that still apply (RunConfig.replace).
"""

from __future__ import annotations

from typing import Any, Optional

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Collapsible, Input, Label, Select, Static

from minimind.config import GROUPS, FieldSpec, RunConfig, defaults_for, field_specs, parse_value
from minimind.errors import ConfigError

from ..sessions import LAUNCH_MODES


class ConfigForm(VerticalScroll):
    """Typed inputs grouped as the config is, help beside each, errors inline."""

    class Changed(Message):
        def __init__(self, config: Optional[RunConfig], error: Optional[ConfigError]) -> None:
            super().__init__()
            self.config, self.error = config, error

    def __init__(self, initial: RunConfig, launch: str = "process", **kwargs) -> None:
        super().__init__(**kwargs)
        self.specs = {s.name: s for s in field_specs()}
        self.initial = initial
        self.initial_launch = launch
        self.config: Optional[RunConfig] = initial
        self.error: Optional[ConfigError] = None
        self._ready = False  # widgets report their initial values once mounted: ignore those
        # The family and stage whose fields and defaults the form shows; their selects take effect
        # through _switch, never half-way through validate.
        self.arch, self.stage = initial.train.arch, initial.train.stage

    def on_mount(self) -> None:
        self._show_family(self.initial.train.arch)
        self.call_after_refresh(self._settle)

    def _settle(self) -> None:
        self._ready = True
        self._changed()

    def compose(self) -> ComposeResult:
        yield Static("", id="form-error", classes="form-error")
        values = self._values_for_every_field(self.initial)
        for group, title in GROUPS.items():
            specs = [s for s in self.specs.values() if s.group == group]
            with Collapsible(title=title, collapsed=group == "moe", id=f"group-{group}"):
                for spec in specs:
                    with Horizontal(classes="field-row", id=f"row-{spec.name}"):
                        yield Label(spec.name, classes="field-name")
                        yield self._editor(spec, values[spec.name])
                        yield Static(spec.help, classes="field-help")
                    yield Static("", id=f"error-{spec.name}", classes="field-error")
                if group == "run":
                    with Horizontal(classes="field-row"):
                        yield Label("launch", classes="field-name")
                        yield Select([(text, mode) for mode, text in LAUNCH_MODES.items()],
                                     value=self.initial_launch, allow_blank=False, id="launch-mode",
                                     classes="field-input", compact=True)
                        yield Static("where the training runs (a thread shares the CPU and Python's GIL with "
                                     "the app: a few % slower)", classes="field-help")

    def _values_for_every_field(self, config: RunConfig) -> dict[str, Any]:
        """The config's values, and for the other families' fields their defaults (hidden until chosen)."""
        values: dict[str, Any] = {}
        for arch in {a for spec in self.specs.values() for a in spec.families}:
            values.update(defaults_for(arch, config.train.stage))
        values.update(config.flat())
        return values

    def _editor(self, spec: FieldSpec, value):
        wid = f"field-{spec.name}"
        if spec.type is bool:
            return Checkbox("", value=bool(value), id=wid, classes="field-input", compact=True)
        if spec.choices:
            return Select([(c, c) for c in spec.choices], value=value, allow_blank=False, id=wid,
                          classes="field-input", compact=True)
        return Input("" if value is None else str(value), id=wid, classes="field-input", compact=True)

    @property
    def launch_mode(self) -> str:
        return str(self.query_one("#launch-mode", Select).value)

    def _visible(self, spec: FieldSpec) -> bool:
        return self.arch in spec.families

    def _show_family(self, arch: str) -> None:
        self.arch = arch
        for spec in self.specs.values():
            shown = arch in spec.families
            self.query_one(f"#row-{spec.name}").display = shown
            self.query_one(f"#error-{spec.name}").display = shown

    # ---- reading and validating --------------------------------------------------------------
    def validate(self) -> tuple[Optional[RunConfig], Optional[ConfigError]]:
        """Parse every shown field, then build the RunConfig; show each problem beside its field."""
        values, errors = {}, {}
        for name, spec in self.specs.items():
            if not self._visible(spec):
                continue
            widget: Any = self.query_one(f"#field-{name}")  # Input, Checkbox or Select
            try:
                values[name] = parse_value(spec, widget.value) if isinstance(widget, Input) else widget.value
            except ConfigError as e:
                errors[name] = e
        values.update(arch=self.arch, stage=self.stage)
        config = None
        if not errors:
            try:
                config = RunConfig.from_flat(values)
            except ConfigError as e:
                errors[e.field] = e
        for name in self.specs:
            self.query_one(f"#error-{name}", Static).update(f"  ↳ {errors[name].reason}" if name in errors else "")
            self.query_one(f"#field-{name}").set_class(name in errors, "-invalid")
        first = next(iter(errors.values()), None)
        self.query_one("#form-error", Static).update(f"✗ {first}" if first else "")
        self.config, self.error = config, first
        return config, first

    def _changed(self) -> None:
        if not self._ready:
            return
        config, error = self.validate()
        self.post_message(self.Changed(config, error))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._changed()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._changed()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        name = (event.select.id or "").removeprefix("field-")
        if name in ("arch", "stage") and str(event.value) != getattr(self, name):
            self._switch(**{name: str(event.value)})
            return
        self._changed()

    def _switch(self, **change: str) -> None:
        """Another family or stage: its defaults, keeping what the user changed that still applies."""
        base = self.config or RunConfig.from_flat({"arch": self.arch, "stage": self.stage})
        self._ready = True  # a switch before the first refresh still validates once done
        try:
            self.set_config(base.replace(**change))
        except ConfigError:  # the kept settings do not fit: start from the new family's and stage's defaults
            self.set_config(RunConfig.from_flat({"arch": self.arch, "stage": self.stage, **change}))

    # ---- filling ----------------------------------------------------------------------------
    def set_config(self, config: RunConfig) -> None:
        values = self._values_for_every_field(config)
        with self.prevent(Input.Changed, Checkbox.Changed, Select.Changed):
            for name in self.specs:
                widget: Any = self.query_one(f"#field-{name}")  # Input, Checkbox or Select
                value = values[name]
                if isinstance(widget, Input):
                    widget.value = "" if value is None else str(value)
                else:
                    widget.value = value
        self.stage = config.train.stage
        self._show_family(config.train.arch)
        self._changed()

    def focus_field(self, name: str) -> None:
        """Show and focus a field's editor (names that are not form fields are ignored)."""
        if name not in self.specs:
            return
        widget = self.query_one(f"#field-{name}")
        for ancestor in widget.ancestors:
            if isinstance(ancestor, Collapsible):
                ancestor.collapsed = False
        widget.focus()
