"""`?` / F1: every key of the screen it was opened on, generated from the bindings so it cannot drift.

The list is the screen's active bindings (the focused widget and its containers, the screen, the
app: what a key press would actually reach), grouped by where they come from, with the keys the
footer leaves out included. Below it, the keys of this app's own widgets on the screen that work
once that widget is focused (Tab moves the focus), and the app's keys that act on another tab or
once out of a text field.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Button, Static, Tabs

from ..widgets.key_bar import KeyBar

KEY_WIDTH = 16
# What Textual's own bindings do, where they carry no description.
KNOWN = {"help_quit": "how to quit", "app.focus_next": "next field or widget", "app.focus_previous":
         "previous field or widget", "screen.copy_text": "copy the selected text"}
OWN_PACKAGE = __name__.split(".")[0]


def describe(binding: Binding) -> str:
    if binding.description:
        return binding.description
    if binding.action in KNOWN:
        return KNOWN[binding.action]
    return binding.action.split(".")[-1].replace("_", " ")


def where(node: DOMNode, screen: Screen) -> str:
    if node is screen.app:
        return "everywhere"
    if node is screen:
        return "this screen"
    if isinstance(node, Tabs):
        return "the tab bar (focused)"
    name = node.id if node.id and not node.id.startswith("-") else type(node).__name__
    return f"{name.replace('-', ' ')} (focused)"


Group = tuple[str, list[tuple[str, str, bool]]]


def _add(groups: dict[str, dict[str, list]], group: str, key: str, what: str, enabled: bool) -> None:
    """One line per action in a group; a second key for the same action joins the first ("? / f1")."""
    entry = groups.setdefault(group, {}).setdefault(what, [[], enabled])
    if key not in entry[0]:
        entry[0].append(key)


def _flatten(groups: dict[str, dict[str, list]]) -> list[Group]:
    return [(g, [(" / ".join(keys), what, enabled) for what, (keys, enabled) in lines.items()])
            for g, lines in groups.items()]


def active_keys(screen: Screen) -> list[Group]:
    """[(group, [(keys, what it does, enabled)])]: the screen's active bindings grouped by owner, the app's
    (everywhere) first, then the screen's, then the focused widget's and its containers'."""
    groups: dict[str, dict[str, list]] = {}
    chain = list(screen.active_bindings.values())
    owners = list(dict.fromkeys(id(a.node) for a in chain))
    for active in sorted(chain, key=lambda a: -owners.index(id(a.node))):  # the app is last in the chain
        binding = active.binding
        _add(groups, where(active.node, screen), screen.app.get_key_display(binding), describe(binding),
             active.enabled)
    return _flatten(groups)


def inactive_app_keys(screen: Screen) -> list[Group]:
    """On the app's main screen, the app's keys that do not act right now: those of another tab (the
    app's TAB_ACTIONS), those the Chat tab takes as typing, and those a focused text field takes as
    typing (Escape leaves the field)."""
    app = screen.app
    if screen is not app.screen_stack[0]:
        return []
    tab_actions: dict[str, str] = getattr(app, "TAB_ACTIONS", {})
    active = {(a.binding.key, a.binding.action) for a in screen.active_bindings.values()}
    groups: dict[str, dict[str, list]] = {}
    for _, binding in app._bindings:  # the app's own declared bindings (Textual keeps them here)
        if (binding.key, binding.action) in active:
            continue
        tab = tab_actions.get(binding.action)
        if tab:
            group = f"on the {tab.capitalize()} tab"
        elif getattr(app, "types_into_chat", lambda action: False)(binding.action):
            group = "on the other tabs (here they are typed into the chat)"
        else:
            group = "once out of the text field (Escape)"
        _add(groups, group, app.get_key_display(binding), describe(binding), True)
    return _flatten(groups)


def widget_keys(screen: Screen) -> list[Group]:
    """Keys of this app's own widgets on the screen that are not in the active chain (not focused now)."""
    active = {id(a.node) for a in screen.active_bindings.values()}
    groups: dict[str, dict[str, list]] = {}
    for widget in screen.query(Widget):
        if id(widget) in active or not type(widget).__module__.startswith(OWN_PACKAGE) or not widget.display:
            continue
        if not widget.focusable or not widget.is_on_screen:
            continue
        name = (widget.id or type(widget).__name__).replace("-", " ")
        for _, binding in widget._bindings:  # the widget's declared bindings
            _add(groups, f"{name} (once focused: Tab)", screen.app.get_key_display(binding), describe(binding), True)
    return _flatten(groups)


def help_text(screen: Screen) -> Text:
    text = Text()
    for group, keys in [*active_keys(screen), *widget_keys(screen), *inactive_app_keys(screen)]:
        if text:
            text.append("\n")
        text.append(group + "\n", style="bold underline")
        for key, what, enabled in keys:
            pad = max(KEY_WIDTH - cell_len(key), 1)
            text.append("  " + key + " " * pad, style="bold" if enabled else "dim")
            text.append(what + ("" if enabled else "  (not now)") + "\n", style="" if enabled else "dim")
    text.append("\n? or F1 opens this list (F1 also while typing in a field); Escape closes it.", style="dim")
    return text


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close", show=True)]

    def __init__(self, screen: Screen, title: str) -> None:
        super().__init__()
        self.of_screen = screen
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full", id="help-dialog"):
            yield Static(f"Keys: {self.title_text}", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(help_text(self.of_screen), id="help-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)
