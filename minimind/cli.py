"""`minimind`: headless training, past runs, run control, sampling and tokenizer training.

Every training flag is generated from minimind.config, in MiniMind's spelling (--batch_size) and
Typer's (--batch-size). Bad input ends with one line naming the problem and the fix, exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import typer

from .config import RunConfig, SamplingConfig
from .families import FAMILIES
from .errors import AlreadyFinished, CheckpointError, MiniMindError
from .events import RunState
from .formatting import resume_command
from .options import (CONFIG_FILE_OPTION, EXIT_FAILED, build_config, fail, given_settings, normalize_bool_values,
                      with_options)

# Commands import torch (through the engine, models and data) inside their bodies: it takes seconds
# to load, and `--help`, `runs list` and the control commands do not need it.

app = typer.Typer(help="Pretrain MiniMind-style language models: headless training and run tools.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
runs_app = typer.Typer(help="Inspect past runs.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train a tokenizer.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(tokenizer_app, name="tokenizer")


RESUME_OPTION = inspect.Parameter(
    "resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
    default=typer.Option(None, "--resume", help="continue a run exactly: its run directory, or 'auto' for the "
                         "newest unfinished run in save_dir", rich_help_panel="run"))
ALLOW_CHANGED_DATA_OPTION = inspect.Parameter(
    "allow_changed_data", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--allow-changed-data", "--allow_changed_data", help="resume even though the corpus "
                         "changed since the save (the position is kept in samples; the LR schedule is recomputed)",
                         rich_help_panel="run"))
FROM_RESUME_OPTION = inspect.Parameter(
    "from_resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--from_resume/--no_from_resume", help="MiniMind's spelling (--from_resume 1): "
                         "continue the newest unfinished run of the same family, weights name and width in save_dir "
                         "if there is one, else start a new run", rich_help_panel="run"))

QUIET_OPTION = inspect.Parameter(
    "quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--quiet", help="print only problems, the evaluations and the final line",
                         rich_help_panel="run"))
VERBOSE_OPTION = inspect.Parameter(
    "verbose", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--verbose", help="also print every save: weights, best weights, resume state",
                         rich_help_panel="run"))


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
@with_options([CONFIG_FILE_OPTION, RESUME_OPTION, FROM_RESUME_OPTION, ALLOW_CHANGED_DATA_OPTION, QUIET_OPTION,
               VERBOSE_OPTION])
def train(**values: Any) -> None:
    """Train headless: the seed notebook's loop and log lines, recorded in a run directory."""
    from .console import ConsolePrinter
    from .engine.control import RunControl
    from .engine.distributed import current_world, torchrun_argv
    from .engine.trainer import Trainer

    settings = given_settings(values)
    world = current_world()
    try:
        if values.get("quiet") and values.get("verbose"):
            fail("--quiet and --verbose do not mix: choose one")
        verbosity = "quiet" if values.get("quiet") else "verbose" if values.get("verbose") else "normal"
        # the run a --resume names, found once (before any launch: its recorded process count counts)
        resumed = _resume_dir(values["resume"], settings) if values.get("resume") and not values.get("config") else None
        nproc = 1 if world.distributed else _requested_nproc(values, settings, resumed)
        if nproc > 1:
            # torchrun starts the processes; each of them runs this same command and finds WORLD_SIZE set.
            raise typer.Exit(_launch_workers(torchrun_argv(nproc, _without_nproc(sys.argv[1:])), nproc))
        resume = values.get("resume")
        if values.get("from_resume") and not resume:
            resume = _matching_resumable(build_config(values.get("config"), settings))
        if resume:
            if values.get("config"):
                fail("--config and --resume do not mix: a resumed run keeps its own config")
            resume = str((resumed or _resume_dir(resume, settings)).path)
            trainer = Trainer(control=RunControl(), resume=resume, overrides=settings,
                              allow_changed_data=values.get("allow_changed_data", False))
        else:
            trainer = Trainer(build_config(values.get("config"), settings), control=RunControl())
    except AlreadyFinished as e:  # resuming until done is a script's loop: done is not a failure
        print(e)
        raise typer.Exit(0) from None
    except MiniMindError as e:
        if world.local_rank != 0:
            # Every process of a machine meets the same setup error: local rank 0 says it and exits, and
            # torchrun then ends this one before it repeats it. An error of this process alone still shows.
            time.sleep(SETUP_ERROR_DEFER_S)
        fail(str(e))
    if world.is_main:  # rank 0 alone prints
        trainer.observers.append(ConsolePrinter(verbosity=verbosity,
                                                on_output_closed=lambda: trainer.control.stop("stdout closed")))
    with _stop_on_signals(trainer.control, announce=world.is_main):
        ended = trainer.run()
    if ended.status == RunState.FAILED:
        if not world.is_main and (ended.error or "").startswith("internal error"):
            _say(f"error (rank {world.rank}): {ended.error}")  # rank 0 reports the run; this one's own fault
        raise typer.Exit(EXIT_FAILED)


def _matching_resumable(config: RunConfig) -> Optional[str]:
    """MiniMind's --from_resume: the newest unfinished run writing the same weights file, if any."""
    from .storage.run_store import find_resumable

    def same_weights(record: dict) -> bool:
        try:
            other = RunConfig.from_dict(record)
        except MiniMindError:
            return False
        name = lambda c: (c.train.arch, c.family.weights_name(c.train.save_weight, c.model))  # noqa: E731
        return name(other) == name(config)

    found = find_resumable(config.train.save_dir, same_weights)
    return str(found.path) if found else None


def _without_nproc(args: list[str]) -> list[str]:
    """The command line minus --nproc N (torchrun would take it for its own --nproc-per-node)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _requested_nproc(values: dict, settings: dict, resumed) -> int:
    """--nproc if given; else, for a resume, as many processes per machine as the run last trained
    with, or what the config file says."""
    if "nproc" in settings:
        return settings["nproc"]
    if resumed is not None:
        recorded = resumed.read_config().get("train", {})
        nproc = recorded.get("nproc", 1) if isinstance(recorded, dict) else 1
        return nproc if isinstance(nproc, int) and nproc >= 1 else 1
    if values.get("config"):
        return RunConfig.load(values["config"]).train.nproc
    return 1


def _resume_dir(resume: str, settings: dict):
    """The run a --resume names: a run directory, a run id under save_dir/runs, or "auto" (the newest
    unfinished run with a resume state)."""
    from .storage.run_store import find_resumable

    save_dir = settings.get("save_dir", RunConfig().train.save_dir)
    if resume == "auto":
        found = find_resumable(save_dir)
        if found is None:
            fail(f"no unfinished run with a resume state under {save_dir}/runs: start a new run, "
                 "or pass --save_dir where it was saved")
        return found
    return resolve_run(resume, save_dir)


SETUP_ERROR_DEFER_S = 3.0
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _on_stop_signals(handler: Callable) -> Iterator[None]:
    """`handler` for every stop signal, the previous handlers back after. A signal the caller ignores
    (nohup, a background job) stays ignored."""
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _stop_on_signals(control, announce: bool = True):
    """First SIGINT/SIGTERM/SIGHUP (a closed terminal): finish the step, save, exit 0. A second one
    aborts at once."""
    def handle(signum, _frame):
        if control.stop_reason is not None:
            raise KeyboardInterrupt
        control.stop(signal.Signals(signum).name)
        if announce:  # one line per run, not one per rank
            _say(f"\n{signal.Signals(signum).name}: stopping after this step and saving the resume state "
                 "(press Ctrl-C again to abort without saving)")

    return _on_stop_signals(handle)


def _say(line: str) -> None:
    """A line on stderr that cannot fail the run: inside a signal handler a closed pipe or a hung-up
    terminal would raise in the middle of a training step."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _launch_workers(argv: list[str], nproc: int) -> int:
    """torchrun, with this command's signals passed to the training processes themselves.

    torchrun starts each worker in a session of its own, so a Ctrl-C in the terminal or a `kill` of
    this command would reach only torchrun, which tears its workers down (exit 130, no save) or, if
    it dies first, leaves them training with no parent. Here torchrun gets its own session too, and a
    stop signal to this command goes to every worker, which stops after the step and saves, as a
    single process does; torchrun then ends as they do (0)."""
    import psutil

    env = dict(os.environ)
    # torchrun would set 1 thread per process, with a banner saying so; the cores shared out is faster
    # on a CPU run and quiet. A value the user set is kept.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # macOS
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    proc = subprocess.Popen(argv, start_new_session=True, env=env)

    def forward(signum, _frame):
        try:
            workers = psutil.Process(proc.pid).children()  # not their DataLoader workers: ranks stop them
        except psutil.Error:
            return
        for worker in workers:
            try:
                worker.send_signal(signum)
            except psutil.Error:
                pass

    with _on_stop_signals(forward):
        return proc.wait()


# ---- run control from another process ---------------------------------------------------------------

def resolve_run(run: str, save_dir: str):
    """A run directory given as a path or as a run id under save_dir."""
    from .storage.run_store import RUNS_DIR, RunStore

    path = Path(run)
    if not path.is_dir() and (Path(save_dir) / RUNS_DIR / run).is_dir():
        path = Path(save_dir) / RUNS_DIR / run
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{run} is not a run directory (no config.json) nor a run id under "
                              f"{Path(save_dir) / RUNS_DIR}: see `minimind runs list --save-dir {save_dir}`")
    return RunStore.open(path)


SAVE_DIR_OPTION = typer.Option("./output", "--save-dir", "--save_dir", help="where runs are recorded")


def _send(command: str, run: str, save_dir: str) -> None:
    try:
        store = resolve_run(run, save_dir)
        state = store.state()
        if not state.live:
            hint = (f"it has finished, nothing to control; to train it further, start a new run with --init-from "
                    f"{store.path}" if state == RunState.FINISHED else
                    f"resume it with `{resume_command(str(store.path))}`" if store.resume_path.is_file()
                    else "nothing to control")
            fail(f"run {store.run_id} is not running (state: {state}): {hint}")
        if state == RunState.STOPPING:
            fail(f"run {store.run_id} is already stopping: it saves its resume state and exits after this step")
        store.send(command)
    except MiniMindError as e:
        fail(str(e))
    typer.echo(f"asked run {store.run_id} to {command} (takes effect after the current step)")


@app.command()
def pause(run: str = typer.Argument(..., help="run directory or run id"), save_dir: str = SAVE_DIR_OPTION) -> None:
    """Pause a running run (it keeps its place and memory; resume continues it)."""
    _send("pause", run, save_dir)


@app.command()
def resume(run: str = typer.Argument(..., help="run directory or run id"), save_dir: str = SAVE_DIR_OPTION) -> None:
    """Resume a paused run."""
    _send("resume", run, save_dir)


@app.command()
def stop(run: str = typer.Argument(..., help="run directory or run id"), save_dir: str = SAVE_DIR_OPTION) -> None:
    """Stop a run after its current step, saving the exact-resume state."""
    _send("stop", run, save_dir)


@app.command()
def save(run: str = typer.Argument(..., help="run directory or run id"), save_dir: str = SAVE_DIR_OPTION) -> None:
    """Save weights and the exact-resume state of a running run now."""
    _send("save", run, save_dir)


# ---- past runs ---------------------------------------------------------------------------------------

@runs_app.command("list")
def runs_list(save_dir: str = SAVE_DIR_OPTION) -> None:
    """Runs recorded under save_dir: state, steps, losses, duration."""
    from rich.console import Console
    from rich.table import Table

    from .formatting import format_duration, format_loss, format_started
    from .storage.run_store import RunSummary, list_runs

    stores = list_runs(save_dir)
    if not stores:
        typer.echo(f"no runs under {save_dir}/runs yet: start one with `minimind train`")
        return
    summaries = [RunSummary.of(store) for store in stores]
    with_eval = any(s.best_eval is not None for s in summaries)  # the column only when a run evaluates
    columns = ["run", "family", "stage", "state", "steps", "last loss", "best loss"] + ["best eval"] * with_eval
    table = Table(box=None, pad_edge=False)
    for col in columns + ["duration", "started"]:
        table.add_column(col, justify="right" if col in ("steps", "last loss", "best loss", "best eval", "duration")
                         else "left")
    for s in summaries:
        evals = [format_loss(s.best_eval)] if with_eval else []
        table.add_row(s.run_id, s.arch, s.stage, s.state, f"{s.global_step}/{s.total_steps}", format_loss(s.last_loss),
                      format_loss(s.best_loss), *evals, format_duration(s.duration), format_started(s.started))
    Console(width=max(100, Console().width)).print(table)


@runs_app.command("show")
def runs_show(run: str = typer.Argument(..., help="run directory or run id"), save_dir: str = SAVE_DIR_OPTION,
              width: int = typer.Option(80, help="plot width in characters"),
              height: int = typer.Option(16, help="plot height in lines")) -> None:
    """One run: settings, status, checkpoints and its loss curve."""
    from .formatting import format_duration, format_loss
    from .storage.run_store import RunSummary, loss_curve

    try:
        store = resolve_run(run, save_dir)
        config = RunConfig.from_dict(store.read_config())
    except MiniMindError as e:
        fail(str(e))
    s = RunSummary.of(store)
    m, t = config.model, config.train
    typer.echo(f"run        {s.run_id}  ({store.path})")
    typer.echo(f"state      {s.state}   steps {s.global_step}/{s.total_steps}   duration {format_duration(s.duration)}")
    typer.echo(f"loss       last {format_loss(s.last_loss)}   best {format_loss(s.best_loss)}")
    typer.echo(f"model      {config.family.name}: {config.family.describe(m)}   stage {t.stage}")
    typer.echo(f"training   {t.epochs} epochs, batch {t.batch_size} x {t.accumulation_steps}, lr {t.learning_rate}, "
               f"{s.ran_on or t.dtype}, data {t.data_path}")
    for kind, path in sorted(s.checkpoints.items()):
        why = s.checkpoint_problems.get(kind)
        typer.echo(f"checkpoint {kind}: {path}" + (f" ({why})" if why else ""))
    if s.resumable and s.state != RunState.FINISHED:
        typer.echo(f"resume     {resume_command(str(store.path))}")
    if s.evals:
        typer.echo(f"eval       last {format_loss(s.evals[-1][1])}   best {format_loss(s.best_eval)}   "
                   f"({len(s.evals)} evaluations)")
    curve = loss_curve(store)
    if len(curve.steps) >= 2:
        typer.echo(loss_plot(curve.steps, curve.losses, curve.evals, width, height))


@runs_app.command("export")
def runs_export(run: str = typer.Argument(..., help="run directory or run id"), save_dir: str = SAVE_DIR_OPTION,
                to: str = typer.Option("tensorboard", "--to", help="tensorboard"),
                out: Optional[Path] = typer.Option(None, help="folder for the event files (default: RUN/tensorboard)")) -> None:
    """Write a recorded run's metrics for another viewer (runs trained without a tracker too)."""
    from .engine.trackers import export_tensorboard

    if to != "tensorboard":
        fail(f"--to {to!r} is not supported: use tensorboard")
    try:
        store = resolve_run(run, save_dir)
        log_dir = export_tensorboard(store, out)
    except MiniMindError as e:
        fail(str(e))
    typer.echo(f"wrote {len(store.read_metrics())} steps to {log_dir}: tensorboard --logdir {log_dir}")


def loss_plot(steps: list, losses: list, evals: list[tuple[float, float]], width: int, height: int) -> str:
    import plotext as plt  # only `runs show` draws

    plt.clear_figure()
    plt.plot(steps, losses, marker="braille", label="train")
    if evals:  # held-out loss as its own series, with visible markers
        plt.plot([step for step, _ in evals], [loss for _, loss in evals], marker="o", label="eval")
    plt.title("loss")
    plt.xlabel("step")
    plt.plotsize(width, height)
    if not sys.stdout.isatty():
        plt.clear_color()
    return plt.build()


# ---- sampling and tokenizer --------------------------------------------------------------------------

SAMPLING = SamplingConfig()
SOURCE_ARGUMENT = typer.Argument(..., help="a run directory, a weights file (.pth or .safetensors) of either family, "
                                 "or a Hugging Face export folder")
N_HEADS_OPTION = typer.Option(8, "--n-heads", "--n_heads", help="attention heads of a bare classic weights file "
                              "(its shapes cannot tell)")
ARCH_OPTION = typer.Option(None, "--arch", help="family of a bare weights file (default: told by its keys)")
TOKENIZER_OPTION = typer.Option(None, "--tokenizer", help="tokenizer folder (default: the run's, else the family's "
                                "shipped one)")
FORCE_OPTION = typer.Option(False, "--force", help="replace an existing output")


def _refuse_existing(out: Path, force: bool) -> None:
    """Outputs are never replaced by accident: an existing file or a non-empty folder needs --force."""
    if force:
        return
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        fail(f"{out} already exists: choose another output, or pass --force to replace it")


def _refuse_bad_place(out: Path) -> None:
    """An output inside a path one of whose parts is a file cannot be written: name that file."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                fail(f"{parent} is a file, not a folder: choose an output path inside a folder")
            return


class Loaded(NamedTuple):
    """What the sampling, eval and export commands load; `note` names a guessed tokenizer (or is empty)."""

    model: Any
    run_config: Optional[RunConfig]
    family: Any
    tokenizer_folder: Any
    tokenizer: Any
    note: str


def _load(source: Path, n_heads: int, device: str, arch: Optional[str], tokenizer: Optional[str]) -> Loaded:
    """The model and the tokenizer that goes with it: --tokenizer, else the run's, else the one beside an
    exported weights file, else the family's bundled one (with a note saying so)."""
    from .engine.environment import resolve_device
    from .tokenizer import load_tokenizer
    from .weights import load_model, tokenizer_folder_for

    if arch is not None and arch not in FAMILIES:
        fail(f"--arch {arch!r} is not one of {', '.join(FAMILIES)}")
    where = resolve_device(device)  # a one-line error for cuda without CUDA, or a device that is no device
    model, run_config, family = load_model(source, n_heads=n_heads, device=str(where), arch=arch)
    folder, note = tokenizer_folder_for(source, run_config, family, tokenizer)
    return Loaded(model, run_config, family, folder, load_tokenizer(folder), note)


@app.command()
def generate(source: Path = SOURCE_ARGUMENT,
             prompt: str = typer.Option("", "--prompt", "-p", help="text to continue"),
             max_new_tokens: int = typer.Option(SAMPLING.max_new_tokens, "--max-new-tokens", "--max_new_tokens", min=1),
             temperature: float = typer.Option(SAMPLING.temperature, min=0.0, help="0 = greedy"),
             top_p: float = typer.Option(SAMPLING.top_p, "--top-p", "--top_p", min=0.0, max=1.0),
             top_k: int = typer.Option(SAMPLING.top_k, "--top-k", "--top_k", min=0, help="0 = no top-k cut"),
             repetition_penalty: float = typer.Option(SAMPLING.repetition_penalty, "--repetition-penalty",
                                                      "--repetition_penalty", min=1.0),
             seed: Optional[int] = typer.Option(None, help="sampling seed (repeatable output)"),
             tokenizer: Optional[str] = TOKENIZER_OPTION, n_heads: int = N_HEADS_OPTION,
             arch: Optional[str] = ARCH_OPTION,
             device: str = typer.Option("cpu", help="cpu or cuda")) -> None:
    """Sample text from a trained model, streamed as it is generated."""
    from .sampling import stream_text

    try:
        model, _, _, _, tok, note = _load(source, n_heads, device, arch, tokenizer)
    except MiniMindError as e:
        fail(str(e))
    if note:
        typer.echo(note, err=True)
    sampling = SamplingConfig(max_new_tokens, temperature, top_p, top_k, repetition_penalty)
    typer.echo(prompt, nl=False)
    for piece in stream_text(model, tok, prompt, sampling, seed):
        typer.echo(piece, nl=False)
    typer.echo("")


@app.command("eval")
def evaluate(source: Path = SOURCE_ARGUMENT,
             data: Path = typer.Option(..., "--data", "--data_path", help="held-out JSONL in the training format"),
             stage: Optional[str] = typer.Option(None, "--stage", help="how rows are built: pretrain (text) or sft "
                                                 "(chats); default: the run's, else pretrain"),
             max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", "--max_seq_len", min=2,
                                                       help="row length (default: the run's, else the family's)"),
             batch_size: int = typer.Option(8, "--batch-size", "--batch_size", min=1),
             packing: bool = typer.Option(False, "--packing/--no-packing", help="packed rows, as --packing trains"),
             tokenizer: Optional[str] = TOKENIZER_OPTION, n_heads: int = N_HEADS_OPTION, arch: Optional[str] = ARCH_OPTION,
             device: str = typer.Option("cpu", help="cpu, cuda or auto"),
             dtype: str = typer.Option("float32", help="float32, or an autocast dtype: bfloat16 or float16 (CUDA)"),
             json_output: bool = typer.Option(False, "--json", help="one JSON object: loss, ppl, tokens, docs")) -> None:
    """Held-out loss and perplexity of a model: the token-weighted mean cross-entropy over every real
    target of the file's rows, built as training builds them."""
    import json

    from .config import TrainConfig, defaults_for
    from .engine.distributed import World
    from .engine.environment import resolve_precision
    from .engine.evaluation import Evaluator
    from .stages import STAGES

    try:
        model, run_config, family, _, tok, note = _load(source, n_heads, "cpu", arch, tokenizer)
        stage = stage or (run_config.train.stage if run_config else "pretrain")
        if stage not in STAGES:
            fail(f"--stage {stage!r} is not one of {', '.join(STAGES)}")
        length = max_seq_len or (run_config.model.max_seq_len if run_config else
                                 defaults_for(family.name, stage)["max_seq_len"])
        train = run_config.train if run_config else TrainConfig()
        train = dataclasses.replace(train, packing=packing, stage=stage)
        STAGES[stage].check(types.SimpleNamespace(train=train))
        precision = resolve_precision(device, dtype, training=False)
        held = STAGES[stage].build_set(family, data, tok, length, train)
        result = Evaluator(held, batch_size, precision, World()).run(model.to(precision.device))
    except MiniMindError as e:
        fail(str(e))
    values = {"loss": result.loss, "ppl": result.ppl, "tokens": result.tokens, "docs": result.docs}
    if note:
        typer.echo(note, err=True)
    if json_output:
        typer.echo(json.dumps(values))
        return
    typer.echo(f"loss    {result.loss:.4f}\nppl     {result.ppl:.2f}\ntokens  {result.tokens}\ndocs    {result.docs}")


@app.command()
def chat(source: Path = SOURCE_ARGUMENT,
         system: Optional[str] = typer.Option(None, "--system", help="system prompt (default: the template's own)"),
         max_new_tokens: int = typer.Option(SAMPLING.max_new_tokens, "--max-new-tokens", "--max_new_tokens", min=1),
         temperature: float = typer.Option(SAMPLING.temperature, min=0.0, help="0 = greedy"),
         top_p: float = typer.Option(SAMPLING.top_p, "--top-p", "--top_p", min=0.0, max=1.0),
         top_k: int = typer.Option(SAMPLING.top_k, "--top-k", "--top_k", min=0, help="0 = no top-k cut"),
         repetition_penalty: float = typer.Option(SAMPLING.repetition_penalty, "--repetition-penalty",
                                                  "--repetition_penalty", min=1.0),
         seed: Optional[int] = typer.Option(None, help="sampling seed (a repeatable conversation)"),
         tokenizer: Optional[str] = TOKENIZER_OPTION, n_heads: int = N_HEADS_OPTION, arch: Optional[str] = ARCH_OPTION,
         device: str = typer.Option("cpu", help="cpu or cuda")) -> None:
    """Talk to a model (an SFT run is the one that answers): the chat template, replies streamed."""
    from .chat import COMMANDS, Chat, parse_line

    try:
        model, _, family, _, tok, note = _load(source, n_heads, device, arch, tokenizer)
        session = Chat(model, tok, SamplingConfig(max_new_tokens, temperature, top_p, top_k, repetition_penalty),
                       seed, system)
    except MiniMindError as e:
        fail(str(e))
    if note:
        typer.echo(note, err=True)
    typer.echo(f"chat with {source} ({family.name}); " + ", ".join(f"{c}: {w}" for c, w in COMMANDS.items())
               + "; Ctrl-C stops a reply, Ctrl-D leaves")
    interrupted = {"now": False}

    def on_sigint(_signum, _frame) -> None:
        interrupted["now"] = True

    while True:
        try:
            line = input("you> ")
        except EOFError:
            typer.echo("")
            return
        except KeyboardInterrupt:  # at the prompt: a fresh line, as in a shell
            typer.echo("")
            continue
        kind, text = parse_line(line)
        if not text and kind == "message":
            continue
        if kind == "exit":
            return
        if kind == "reset":
            session.reset()
            typer.echo("(conversation cleared)")
            continue
        if kind == "system":
            session.reset(system=text)
            typer.echo(f"(system prompt {'set' if session.system else 'cleared'}; conversation cleared)")
            continue
        if kind == "note":  # a mistyped command: never sent to the model
            typer.echo(f"({text})")
            continue
        interrupted["now"] = False
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            typer.echo("ai> ", nl=False)
            for piece in session.reply(text, stop=lambda: interrupted["now"]):
                typer.echo(piece, nl=False)
        finally:
            signal.signal(signal.SIGINT, previous)
        typer.echo(" [stopped]" if interrupted["now"] else "")


@app.command()
def convert(source: Path = typer.Argument(..., help="weights file (.pth or .safetensors), classic or MiniMind2"),
            out: Path = typer.Argument(..., help="output file: .pth or .safetensors"),
            to: str = typer.Option(..., "--to", help="classic or minimind2"),
            n_heads: int = typer.Option(8, "--n-heads", "--n_heads", help="attention heads (RoPE works per head)"),
            force: bool = FORCE_OPTION) -> None:
    """Convert weights between MiniMind classic and MiniMind2 (Hugging Face style keys, rotate-half RoPE)."""
    from .interop import classic_to_minimind2, detect_layout, load_state, save_state, to_classic
    from .weights import detect_family

    if to not in ("classic", "minimind2"):
        fail(f"--to {to!r} is not classic or minimind2")
    if out.suffix not in (".pth", ".safetensors"):
        fail(f"{out} does not end in .pth or .safetensors: the extension picks the file format, name it e.g. "
             f"{out.with_suffix('.pth')}")
    try:
        state = load_state(source)
        if detect_family(state).name != "classic":
            fail(f"{source} holds MiniMind-3 weights: convert rewrites classic weights between the classic and "
                 "MiniMind2 layouts only; MiniMind-3 weights load as they are (for other tools use "
                 "`minimind export SOURCE OUT --format hf` or `--format gguf`)")
        layout = detect_layout(state)
        classic = to_classic(state, n_heads)
        dim = classic["tok_embeddings.weight"].shape[1]
        if dim % n_heads:
            fail(f"dim {dim} is not divisible by --n-heads {n_heads}: pass the model's head count")
        result = classic if to == "classic" else classic_to_minimind2(classic, dim // n_heads)
        _refuse_bad_place(out)
        _refuse_existing(out, force)
        save_state(result, out)
    except MiniMindError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {out} ({e.strerror or e}): choose a writable place with free space")
    typer.echo(f"{source} ({layout}) -> {out} ({to}, {len(result)} tensors)")


@app.command()
def export(source: Path = SOURCE_ARGUMENT,
           out: Path = typer.Argument(..., help="hf: the folder to write into; gguf: the .gguf file to write"),
           format: Optional[str] = typer.Option(None, "--format", help="hf: a Hugging Face checkpoint (classic as "
                                                "Llama, MiniMind-3 as Qwen3 / Qwen3-MoE); gguf: one file llama.cpp "
                                                "runs (classic as llama, MiniMind-3 as qwen3 / qwen3moe); default: "
                                                "gguf for an output ending in .gguf, else hf"),
           outtype: Optional[str] = typer.Option(None, "--outtype", help="gguf weights: f32 (default) or f16 "
                                                 "(matrices in f16, norms in f32)"),
           n_heads: int = N_HEADS_OPTION, arch: Optional[str] = ARCH_OPTION,
           tokenizer: Optional[str] = TOKENIZER_OPTION, force: bool = FORCE_OPTION) -> None:
    """Export a model as a Hugging Face checkpoint (config.json, model.safetensors, tokenizer) or a GGUF file."""
    from .gguf_export import OUTTYPES, export_gguf
    from .interop import export_hf
    from .models.shared import model_state

    named = "gguf" if out.suffix == ".gguf" else "hf"  # what the output's name says it is
    format = format or named
    if format not in ("hf", "gguf"):
        fail(f"--format {format!r} is not supported: use hf or gguf")
    if format == "gguf" and named == "hf":
        fail(f"{out} does not end in .gguf: --format gguf writes one file, name it e.g. {out.with_suffix('.gguf')}")
    if format == "hf" and named == "gguf":
        fail(f"{out} ends in .gguf but --format hf writes a folder: drop --format hf to write a GGUF file, or name "
             "the folder without .gguf")
    if format == "hf" and outtype is not None:
        fail("--outtype applies to GGUF exports only (the Hugging Face export is float32): drop it, or name the "
             "output *.gguf")
    if (outtype or "f32") not in OUTTYPES:
        fail(f"--outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    try:  # the source first: a missing or unreadable model is the problem to name, whatever the output
        model, _, family, folder, tok, note = _load(source, n_heads, "cpu", arch, tokenizer)
    except MiniMindError as e:
        fail(str(e))
    _refuse_bad_place(out)
    if format == "gguf" and out.is_dir():
        fail(f"{out} is a folder: give the path of the .gguf file to write")
    if format == "hf" and out.is_file():
        fail(f"{out} is a file: --format hf writes a folder, give a folder name")
    _refuse_existing(out, force)
    try:
        if format == "gguf":
            summary = export_gguf(family, model.config, model_state(model), tok, out, outtype or "f32", folder)
        else:
            export_hf(family, model.config, model_state(model), tok, out, folder)
    except MiniMindError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {out} ({e.strerror or e}): choose a writable place with free space")
    if format == "gguf":
        typer.echo(f"exported {source} to {out} (llama.cpp architecture {summary.arch}, {summary.outtype}, "
                   f"{summary.n_tensors} tensors, {summary.size / 1e6:.1f} MB): load it with llama.cpp, e.g. "
                   f"llama_cpp.Llama(model_path={str(out)!r}) from llama-cpp-python")
    else:
        typer.echo(f"exported {source} to {out}: load it with transformers.AutoModelForCausalLM.from_pretrained"
                   f"({str(out)!r})")
    if note:
        typer.echo(note, err=True)


@tokenizer_app.command("train")
def tokenizer_train(data: Path = typer.Option(..., "--data", help="JSONL corpus with a \"text\" per line"),
                    vocab_size: int = typer.Option(6400, "--vocab-size", "--vocab_size"),
                    arch: str = typer.Option("classic", "--arch", help="layout: classic (<unk>=pad, <s>, </s>) or "
                                             "minimind3 (<|endoftext|>=pad, <|im_start|>, <|im_end|>, think and "
                                             "tool tags, MiniMind-3's chat template)"),
                    out: Path = typer.Option(..., "--out", help="folder to write tokenizer.json into"),
                    force: bool = FORCE_OPTION) -> None:
    """Train MiniMind's byte-level BPE in a family's layout (special tokens and chat template)."""
    from .data import JsonlTexts
    from .tokenizer import LAYOUTS, MAX_VOCAB, train_tokenizer

    if arch not in LAYOUTS:
        fail(f"--arch {arch!r} is not one of {', '.join(LAYOUTS)}")
    if vocab_size > MAX_VOCAB:
        fail(f"--vocab-size {vocab_size} is above {MAX_VOCAB:,}: MiniMind's vocabularies are 6,400; pick a size "
             "the corpus can fill")
    if out.is_file():
        fail(f"--out {out} is a file: give a folder for tokenizer.json")
    _refuse_existing(out / "tokenizer.json", force)
    try:
        texts = JsonlTexts(data)
        texts.validate()
        size = train_tokenizer((texts.text(i) for i in range(len(texts))), out, vocab_size, arch)
    except MiniMindError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {out} ({e.strerror or e}): choose a writable folder with free space")
    typer.echo(f"tokenizer with {size} entries written to {out}")
    if size < vocab_size:
        typer.echo(f"warning: the corpus only supports {size} of the {vocab_size} entries asked for: "
                   "train on more text for a full vocabulary", err=True)


def main(argv: Optional[list[str]] = None) -> None:
    app(normalize_bool_values(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
