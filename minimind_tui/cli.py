"""`minimind-tui`: open the app, prefilled from the same options as `minimind train`."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from minimind.config import RunConfig
from minimind.errors import MiniMindError
from minimind.options import CONFIG_FILE_OPTION, build_config, fail, given_settings, normalize_bool_values, with_options
from minimind.storage.run_store import RunStore

from .sessions import LAUNCH_MODES

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

EXTRA = [
    CONFIG_FILE_OPTION,
    inspect.Parameter("start", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--start", help="start training at once", rich_help_panel="app")),
    inspect.Parameter("attach", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, "--attach", help="watch and steer a run started elsewhere "
                                           "(its run directory)", rich_help_panel="app")),
    inspect.Parameter("launch", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("process", "--launch", help="where training runs: " + "; ".join(
                                           f"{mode} ({text})" for mode, text in LAUNCH_MODES.items()),
                                           rich_help_panel="app")),
]


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
@with_options(EXTRA)
def tui(**values: Any) -> None:
    """Configure, launch, watch, pause and inspect MiniMind pretraining in a terminal UI."""
    from .app import make_app  # Textual loads only once the options are valid

    try:
        if values["launch"] not in LAUNCH_MODES:
            fail(f"--launch {values['launch']!r} is not one of {', '.join(LAUNCH_MODES)}")
        config, attach = form_config(values)
    except MiniMindError as e:
        fail(str(e))
    result = make_app(config, start=values["start"], attach=attach,
                      launch=values["launch"]).run()
    if result:
        typer.echo(result)



def form_config(values: dict) -> tuple[RunConfig, Optional[Path]]:
    """The form's config from the flags, and the run to attach to (checked). Attached without
    --save_dir, the app's save_dir is the attached run's, so that its Runs tab lists that run's neighbours."""
    settings = given_settings(values)
    config = build_config(values.get("config"), settings)
    attach = values.get("attach")
    if attach is not None:
        runs = RunStore.open(attach).path.absolute().parent
        if "save_dir" not in settings and runs.name == "runs":
            config = config.replace(save_dir=str(runs.parent))
    return config, attach


def main(argv: Optional[list[str]] = None) -> None:
    app(normalize_bool_values(sys.argv[1:] if argv is None else argv))
