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

from .config import FieldSpec, RunConfig, defaults_for, field_specs

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


BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def normalize_bool_values(args: list[str]) -> list[str]:
    """MiniMind's scripts take `--use_moe 1` / `--from_resume 0`; ours are switches (`--use_moe`,
    `--no_use_moe`). Rewrite a switch followed by 0/1/true/false into the switch itself."""
    switches = {flag: (spec.flags[0], _negative_flags(spec)[0]) for spec in field_specs() if spec.type is bool
                for flag in spec.flags}
    switches.update({flag: (flag, f"--no_{flag[2:]}") for flag in EXTRA_SWITCHES})
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1].lower() if i + 1 < len(args) else None
        if arg in switches and value in BOOL_WORDS:
            out.append(switches[arg][0] if BOOL_WORDS[value] else switches[arg][1])
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


# Switches outside the config that MiniMind's scripts also spell with a 0/1 value.
EXTRA_SWITCHES = ("--from_resume",)


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
    """--config FILE (if any), then the flags on top of it; without a file, the defaults of the
    family and stage the flags name."""
    if config_file is None:
        return RunConfig.from_flat(settings)
    base = RunConfig.load(config_file)
    return base.replace(**settings) if settings else base


def command_for(config: RunConfig) -> str:
    """The `minimind train ...` line that reproduces `config`: its family and stage, then only the
    settings that differ from that family's and stage's defaults."""
    defaults = defaults_for(config.train.arch, config.train.stage)
    defaults.update(arch="classic", stage="pretrain")  # what the CLI assumes when they are not given
    values = config.flat()
    parts = ["minimind", "train"]
    specs = sorted((s for s in field_specs() if s.name in values), key=lambda s: s.name not in ("arch", "stage"))
    for spec in specs:
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
