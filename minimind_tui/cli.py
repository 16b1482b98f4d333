"""`minimind-tui`: open the app, prefilled from the same options as `minimind train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import inspect

import typer

from minimind.cli import CONFIG_FILE_OPTION, build_config, config_options, fail, given_settings
from minimind.errors import MiniMindError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

EXTRA = [
    CONFIG_FILE_OPTION,
    inspect.Parameter("start", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--start", help="start training at once", rich_help_panel="app")),
    inspect.Parameter("attach", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, "--attach", help="watch and steer a run started elsewhere "
                                           "(its run directory)", rich_help_panel="app")),
    inspect.Parameter("launch", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("process", "--launch", help="where training runs: process (a background "
                                           "`minimind train` that survives closing the app or an SSH drop, and "
                                           "costs no throughput) or thread (inside the app)",
                                           rich_help_panel="app")),
]


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def tui(**values: Any) -> None:
    """Configure, launch, watch, pause and inspect MiniMind pretraining in a terminal UI."""
    from minimind.engine.run_store import RunStore

    from .app import make_app

    try:
        if values["launch"] not in ("process", "thread"):
            fail(f"--launch {values['launch']!r} is not process or thread")
        config = build_config(values.get("config"), given_settings(values))
        attach = values.get("attach")
        if attach is not None:
            RunStore.open(attach)
    except MiniMindError as e:
        fail(str(e))
    result = make_app(config, start=values["start"], attach=attach,
                      launch=values["launch"]).run()
    if result:
        typer.echo(result)


tui.__signature__ = inspect.Signature(EXTRA + config_options())


def main() -> None:
    app()
