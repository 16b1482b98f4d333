"""Command-line options generated from the config, shared by `minimind train` and `minimind-tui`.

One declaration (`FieldSpec.flags`) gives the Typer options and `command_for`, the line that
reproduces a config, so the two cannot disagree.
"""

from __future__ import annotations

import inspect
import shlex
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer

from .config import FieldSpec, RunConfig, field_specs

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """End a command with one `error:` line (no traceback) and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _negative_flags(spec: FieldSpec) -> tuple[str, ...]:
    return tuple(f"--no_{flag[2:]}" if "_" in flag else f"--no-{flag[2:]}" for flag in spec.flags)


def config_options() -> list[inspect.Parameter]:
    """One Typer option per config field (default None = "not given"), grouped as the form is."""
    params = []
    for spec in field_specs():
        if spec.type is bool:
            decls = [f"{on}/{off}" for on, off in zip(spec.flags, _negative_flags(spec))]
        else:
            decls = list(spec.flags)
        default = "empty" if spec.default is None else spec.default
        help_text = f"{spec.help} (default: {str(default).lower() if spec.type is bool else default})"
        option = typer.Option(None, *decls, help=help_text, rich_help_panel=spec.group, show_default=False)
        params.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[spec.type]))
    return params


def with_options(extra: list[inspect.Parameter]) -> Callable:
    """Give a command function (taking **values) the generated config options plus its own."""
    def decorate(fn: Callable) -> Callable:
        fn.__signature__ = inspect.Signature(extra + config_options())  # type: ignore[attr-defined]
        return fn
    return decorate


def given_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The config flags that were actually passed."""
    names = {spec.name for spec in field_specs()}
    return {k: v for k, v in values.items() if k in names and v is not None}


def build_config(config_file: Optional[Path], settings: dict[str, Any]) -> RunConfig:
    """--config FILE (if any), then the flags on top of it."""
    base = RunConfig.load(config_file) if config_file else RunConfig()
    return base.replace(**settings) if settings else base


def command_for(config: RunConfig) -> str:
    """The `minimind train ...` line that reproduces `config` (only settings that differ from the seed)."""
    defaults = RunConfig().flat()
    values = config.flat()
    parts = ["minimind", "train"]
    for spec in field_specs():
        value = values[spec.name]
        if value == defaults[spec.name]:
            continue
        if spec.type is bool:
            parts.append(spec.flags[0] if value else _negative_flags(spec)[0])
        else:
            parts += [spec.flags[0], shlex.quote(str(value))]
    return " ".join(parts)


CONFIG_FILE_OPTION = inspect.Parameter(
    "config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
    default=typer.Option(None, "--config", help="read settings from a JSON file (a run's config.json works); "
                         "flags override it", rich_help_panel="run"))
