"""The Trainer: the seed notebook's pretraining loop, steerable and exactly resumable.

It knows nothing of terminals: it reports typed events to observers and records every run in its
run directory. Constructing a Trainer builds everything (and raises MiniMindError before any
work); `run()` trains. Call `run()` from any thread; steer it with a RunControl.

Two counts, two names: a *micro-step* is one micro-batch (forward + backward; MiniMind's `step`,
which the log lines, metrics and LR schedule count), an *optimizer step* applies the gradients of
`accumulation_steps` micro-steps. The loop is the seed's (AdamW, cosine LR from micro-step 1,
masked CE + aux loss, clipping, AMP, fp16 weights every save_interval micro-steps) with MiniMind's
gradient-accumulation slips fixed: the optimizer steps after every `accumulation_steps`
micro-steps counted from 1, a short last window at an epoch's end is applied (its loss averaged
over its own length), and the logged loss is the window's mean.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..config import RESUME_OVERRIDABLE, RunConfig, effective_tracker
from ..data import EpochSampler, TrainingSet, data_fingerprint, resolve_data_path, split_lines
from ..errors import AlreadyFinished, CheckpointError, MiniMindError
from ..events import (Alert, CheckpointSaved, EvalDone, Event, Observer, RunEnded, RunStarted, RunState, StateChanged,
                      StepLogged)
from ..families import Family
from ..models.shared import count_parameters
from ..stages import Stage
from ..storage.atomic import remove_stale_temp_files
from ..storage.background import BackgroundWriter
from ..storage.checkpoint import (WeightsLock, all_finite, apply_weights, atomic_torch_save, load_resume_state, rng_state,
                                  save_resume_state, save_weights, set_rng_state, unwrap, weights_snapshot)
from ..storage.run_store import RunStore, StorageError
from ..tokenizer import load_tokenizer
from ..weights import load_state_for, require_file
from . import distributed
from .control import RunControl
from .distributed import World, current_world
from .environment import Precision, describe_device, resolve_precision
from .host_memory import keep_freed_memory, release_free_memory
from .evaluation import Evaluator
from .loss import Batch, real_targets_only
from .schedule import learning_rate
from .trackers import check_tracker, make_tracker

PAUSE_POLL_S = 0.2


@dataclass
class Position:
    """Where the run is: samples of the current epoch (0-based) consumed by all ranks together.
    Samples, not micro-steps, so a run can resume with a different number of processes."""

    epoch: int = 0
    samples: int = 0


@dataclass
class _Window:
    """Sums over one optimizer step's micro-steps, kept on the device (no host sync)."""

    loss: Optional[torch.Tensor] = None
    aux: Optional[torch.Tensor] = None
    micro_steps: int = 0

    def add(self, loss: torch.Tensor, aux: torch.Tensor) -> None:
        self.loss = loss if self.loss is None else self.loss + loss
        self.aux = aux if self.aux is None else self.aux + aux
        self.micro_steps += 1


@dataclass
class _Meter:
    """Throughput and ETA bookkeeping, pauses excluded."""

    active: float = 0.0  # seconds spent training in this process
    since_log_time: float = 0.0
    since_log_micro_steps: int = 0
    since_log_tokens: int = 0
    since_log_positions: int = 0
    micro_steps_done: int = 0  # in this process
    epoch_active: float = 0.0
    epoch_micro_steps: int = 0


class Trainer:
    # ---- inputs ----------------------------------------------------------------------------
    config: RunConfig
    control: RunControl
    observers: list[Observer]
    world: World
    resume_dir: Optional[Path]
    family: Family  # the model family (config.train.arch): model, weights layout, rows, schedule
    stage: Stage  # the training stage (config.train.stage): its rows
    # ---- built by __init__ ------------------------------------------------------------------
    precision: Precision
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    data: TrainingSet  # the training rows
    eval_data: Optional[TrainingSet]  # held-out rows (--eval_data or --eval_split)
    evaluator: Optional[Evaluator]
    model: nn.Module
    wrapped: nn.Module  # the model, inside DistributedDataParallel when distributed
    forward: Callable  # `wrapped`, compiled when --compile
    _trim_padding: bool  # cut the columns after a batch's last real target (exact for causal dense models)
    _whole_rows: bool  # feed each row's last token too (MiniMind-3 MoE: its routing counts it)
    n_params: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: EpochSampler
    loader: torch.utils.data.DataLoader
    iters: int  # micro-steps per epoch (per rank)
    total_steps: int  # micro-steps in the run
    store: Optional[RunStore]  # rank 0 only
    weights_file: Optional[Path]  # where the seed's weights go (rank 0 only)
    weights_lock: Optional[WeightsLock]
    notes: list[str]  # one-line facts told once at the start
    # ---- progress ----------------------------------------------------------------------------
    position: Position
    micro_step: int  # micro-steps done in the run (MiniMind's global step)
    optimizer_step: int  # optimizer steps done in the run (what eval_interval counts)
    best_eval: Optional[float]  # the lowest held-out loss so far
    lr: float
    meter: _Meter

    def __init__(self, config: Optional[RunConfig] = None, control: Optional[RunControl] = None,
                 observers: Iterable[Observer] = (), resume: Optional[str | os.PathLike] = None,
                 overrides: Optional[dict] = None, allow_changed_data: bool = False):
        """A new run of `config`, or with `resume` the run in that directory, continued with its own
        saved config and only the `overrides` that do not change the math (a corpus that changed since
        the save is refused unless `allow_changed_data`). Checks everything that can be checked and
        builds the run; raises MiniMindError before any training."""
        keep_freed_memory()  # before the first big allocation: no page faults for reused activations
        self.control = control or RunControl()
        self.observers = list(observers)
        self.world = current_world()
        self.resume_dir = Path(resume).absolute() if resume else None  # recorded paths are absolute
        self.notes = []
        self.micro_step = 0
        self.optimizer_step = 0
        self.best_eval = None
        self._evaluated_at = -1
        self.position = Position()
        self.lr = 0.0
        self.meter = _Meter()
        self._poisoned = False  # non-finite numbers were seen: never save over good checkpoints
        self._nonfinite: Optional[str] = None  # what was not finite, once seen
        self._last_resume_save = 0.0
        self._resume_saved_at = -1
        self.store, self.weights_file, self.weights_lock = None, None, None
        self.saver = BackgroundWriter()
        try:
            resume_state = self._load_resume_state(self.resume_dir, overrides or {}) if self.resume_dir else None
            if resume_state is None:
                self.config = with_absolute_paths(config or RunConfig())
            if self.config.train.nproc != self.world.local_size:  # recorded as run, so a resume relaunches the same
                self.config = self.config.replace(nproc=self.world.local_size)
            self.family, self.stage = self.config.family, self.config.stage
            check_tracker(effective_tracker(self.config.train))
            self._resume_state = resume_state
            self.precision = resolve_precision(self.config.train.device, self.config.train.dtype,
                                               self.world.local_rank if self.world.distributed else None)
            self._check_memory()
            distributed.init(self.world, self.precision.device)
            self._build_data()
            if resume_state is not None:
                self._check_same_data(resume_state, allow_changed_data)
            self._build_model(resume_state)
            self._build_optimizer(resume_state)
            self._open_run_record()
            self._build_loader()
        except BaseException:
            self._release()  # a run that cannot start leaves nobody holding it
            raise

    # ---- build steps ---------------------------------------------------------------------------
    def _load_resume_state(self, resume_dir: Path, overrides: dict) -> dict:
        store = RunStore.open(resume_dir)
        if self.world.is_main:  # one trainer per run: refused while another process holds it
            store.claim()
            self.store = store
        if not store.resume_path.is_file():
            raise CheckpointError(f"{store.path} has no resume state (checkpoints/resume.pt): it stopped "
                                  "before its first save; start it again instead")
        state = load_resume_state(store.resume_path)
        if state.get("run_id", store.run_id) != store.run_id:
            raise CheckpointError(f"{store.resume_path} belongs to run {state['run_id']}, not {store.run_id}: it was "
                                  "copied from another run; resume that run instead")
        # a new --save_dir or --eval_data given relative to this working directory is recorded absolute
        self.config = with_absolute_paths(_resume_config(RunConfig.from_dict(state["config"]), overrides))
        if state["epoch"] >= self.config.train.epochs and not state["samples"]:
            raise AlreadyFinished(f"{store.path} has already finished (epoch {state['epoch']} of "
                                  f"{self.config.train.epochs}): nothing to resume; to train it further, start a "
                                  "new run with --init-from it")
        save_dir = Path(self.config.train.save_dir)
        try:  # a new --save_dir for the weights: made if missing
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create --save_dir {save_dir} ({e.strerror}): choose a writable folder") from None
        return state

    def _check_same_data(self, state: dict, allow_changed_data: bool) -> None:
        """A resume continues at a position in the corpus: refuse one that changed since the save."""
        saved, now = state.get("data"), data_fingerprint(self.data.path)
        if saved is None or saved == now:
            return
        change = (f"{saved.get('size')} -> {now['size']} bytes" if saved.get("size") != now["size"]
                  else "same size, other content")
        if not allow_changed_data:
            raise CheckpointError(f"the corpus {self.data.path} changed since this run was saved ({change}): the data "
                                  "position would not match; restore it, or pass --allow-changed-data to continue "
                                  "on the new corpus (the position is kept in samples, the LR schedule recomputed)")
        self.notes.append(f"the corpus changed since the save ({change}): continuing at sample "
                          f"{state['samples']} of epoch {state['epoch'] + 1} of the new corpus, with the LR schedule "
                          "recomputed for its length (--allow-changed-data)")

    def _check_memory(self) -> None:
        """Refuse a model whose training state cannot fit before allocating it."""
        import psutil  # only here: the estimate runs once per run

        with torch.device("meta"):  # shapes only
            n_params = count_parameters(self.family.build_model(self.config.model))
        need = n_params * 16  # fp32 weights, gradients and AdamW's two moments
        if self.precision.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.precision.device)[0]
        else:
            free = psutil.virtual_memory().available
        if need > free:
            raise MiniMindError(f"the model has {n_params / 1e6:,.1f}M parameters: training needs at least "
                                f"{need / 2**30:,.1f} GiB (weights, gradients, AdamW state) but {free / 2**30:,.1f} GiB "
                                f"are free on {self.precision.device}: choose a smaller model")

    def _build_data(self) -> None:
        cfg, train = self.config.model, self.config.train
        self.tokenizer = load_tokenizer(train.tokenizer or self.family.tokenizer_dir)
        if len(self.tokenizer) > cfg.vocab_size:
            raise MiniMindError(f"the tokenizer has {len(self.tokenizer)} tokens but vocab_size is {cfg.vocab_size}: "
                                f"set --vocab_size {len(self.tokenizer)} or use a smaller tokenizer")
        self.data = self.stage.build_set(self.family, train.data_path, self.tokenizer, cfg.max_seq_len, train)
        self.eval_data: Optional[TrainingSet] = None
        if train.eval_split > 0:  # the held-out documents are never trained on (the same ones on resume)
            train_lines, eval_lines = split_lines(len(self.data.source), train.eval_split, train.seed)
            self.data, self.eval_data = self.data.select(train_lines), self.data.select(eval_lines)
        elif train.eval_data:
            self.eval_data = self.stage.build_set(self.family, train.eval_data, self.tokenizer, cfg.max_seq_len, train)
        for part in (self.data, self.eval_data):
            if part is not None and part.note and part.note not in self.notes:
                self.notes.append(part.note)
        self.evaluator = None if self.eval_data is None else Evaluator(
            self.eval_data, train.batch_size, self.precision, self.world, train.eval_max_batches)
        if self.eval_data is not None:
            self.notes.append(f"held-out evaluation: {self.eval_data.n_docs} docs from {self.eval_data.path}"
                              + (f" (eval_split {train.eval_split})" if train.eval_split else "")
                              + (f", every {train.eval_interval} optimizer steps" if train.eval_interval else "")
                              + " and at the end")

    def _initial_weights(self) -> Optional[tuple[dict, str]]:
        """(weights in this family's layout, where from) for --init-from or --from_weight."""
        cfg, train = self.config.model, self.config.train
        if train.init_from:
            return load_state_for(self.family, train.init_from, config=cfg), train.init_from
        if train.from_weight != "none":
            path = Path(train.save_dir) / self.family.weights_name(train.from_weight, cfg)
            require_file(path, f"--from_weight {train.from_weight}:")
            return load_state_for(self.family, path, config=cfg), str(path)
        return None

    def _build_model(self, resume_state: Optional[dict]) -> None:
        cfg, train = self.config.model, self.config.train
        initial = self._initial_weights() if resume_state is None else None
        torch.manual_seed(train.seed)  # before the model is built, as MiniMind's trainers do
        self.model = self.family.build_model(cfg)
        if initial is not None:
            state, source = initial
            apply_weights(self.model, state, source)
            self.notes.append(f"initial weights from {source}")
        if resume_state is not None:
            apply_weights(self.model, resume_state["model"], f"resume state of {self.resume_dir}")
        self.model.to(self.precision.device)
        self.n_params = count_parameters(self.model)
        self.wrapped = self.model
        if self.world.distributed:  # gradients are averaged over ranks; rank 0's initial weights are broadcast
            device = self.precision.device
            self.wrapped = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.forward = torch.compile(self.wrapped) if train.compile else self.wrapped
        # Cutting trailing padding columns is exact for a causal dense model; MoE routing statistics
        # and dropout's random draws see every column.
        self._trim_padding = train.skip_padding and not cfg.use_moe and cfg.dropout == 0
        # Only MoE routing notices the row's last token; a dense model would compute it for nothing.
        self._whole_rows = self.family.forward_reads_whole_row and cfg.use_moe

    def _build_optimizer(self, resume_state: Optional[dict]) -> None:
        train = self.config.train
        self.optimizer = _adamw(self.model.parameters(), train.learning_rate)
        self.scaler = torch.amp.GradScaler(self.precision.device.type, enabled=self.precision.use_scaler)
        self.sampler = EpochSampler(len(self.data.rows), shuffle=train.shuffle, seed=train.seed,
                                    rank=self.world.rank, world_size=self.world.size)
        self.iters = math.ceil(EpochSampler.per_rank(len(self.data.rows), self.world.size) / train.batch_size)
        self.total_steps = train.epochs * self.iters
        if train.warmup_iters > self.total_steps:
            self.notes.append(f"warning: --warmup_iters {train.warmup_iters} is longer than the run ({self.total_steps} "
                              "steps): the learning rate never reaches --learning_rate")
        if resume_state is None:
            return
        self.optimizer.load_state_dict(resume_state["optimizer"])
        if resume_state.get("scaler"):
            self.scaler.load_state_dict(resume_state["scaler"])
        self.position = Position(resume_state["epoch"], resume_state["samples"])
        if self.position.epoch >= train.epochs and self.position.samples:
            raise CheckpointError(f"{self.resume_dir} is past its last epoch: the corpus changed since it was saved")
        self.micro_step = self.position.epoch * self.iters + self._micro_steps_at(self.position.samples)
        self.optimizer_step = resume_state.get("optimizer_step", 0)
        self.best_eval = resume_state.get("best_eval")
        set_rng_state(resume_state["rng"])
        self._resume_saved_at = self.micro_step

    def _open_run_record(self) -> None:
        """Rank 0: the run directory (new, or the resumed one cut back to the resume point)."""
        if not self.world.is_main:
            return
        train = self.config.train
        resumed = self.resume_dir is not None
        if self.store is None:
            self.store = RunStore.create(train.save_dir, train.run_name)
            self.store.claim()
            if train.run_name and self.store.run_id != train.run_name:  # never reuses a folder: say so
                self.notes.append(f"a run named {train.run_name} already exists: this one is {self.store.run_id}")
        store = self.store
        if resumed:
            saved = self._resume_state or {}
            saved_step = saved.get("global_step")  # in the saving session's step units
            store.truncate_after(saved_step if isinstance(saved_step, int) else self.micro_step, saved.get("records"))
        self.weights_file = self._claim_weights_file(store)
        remove_stale_temp_files(store.checkpoints_dir)
        store.write_config({**self.config.to_dict(), "run": {
            "run_id": store.run_id, "minimind_version": __version__, "torch_version": torch.__version__,
            "world_size": self.world.size, "data_path": str(self.data.path), "n_docs": self.data.n_docs,
            "n_params": self.n_params, "created": time.time()}})
        self.control.connect_inbox(store.take_requests)
        tracker = make_tracker(effective_tracker(train), store.path, train.wandb_project,
                               purge_step=self.micro_step + 1 if resumed else None)
        if tracker is not None:
            self.observers.append(tracker)

    def _build_loader(self) -> None:
        train = self.config.train
        self.loader = torch.utils.data.DataLoader(
            cast(torch.utils.data.Dataset, self.data.rows), batch_size=train.batch_size, sampler=self.sampler,
            num_workers=train.num_workers,
            pin_memory=self.precision.device.type == "cuda", drop_last=False,
            persistent_workers=train.num_workers > 0, worker_init_fn=_ignore_sigint,
            generator=torch.Generator().manual_seed(train.seed))  # keep the global RNG for dropout only

    # ---- running -------------------------------------------------------------------------------
    def run(self) -> RunEnded:
        """Train to the end, a stop request or a failure."""
        notes = list(self.precision.notes) + self.notes
        if self._resume_state is not None:
            saved_world = self._resume_state.get("world_size", 1)
            notes.append(f"resumed at step {self.micro_step}/{self.total_steps} from {self.resume_dir}"
                         + (f" (saved with {_processes(saved_world)}, continuing with {self.world.size}: the data "
                            "position is kept in samples)" if saved_world != self.world.size else ""))
        run_dir = str(self.store.path) if self.store else ""
        self._emit(RunStarted(
            run_id=self.store.run_id if self.store else "", run_dir=run_dir, config=self.config.to_dict(),
            n_params=self.n_params, model=f"{self.family.name}: {self.family.describe(self.config.model)}",
            device=describe_device(self.precision.device),
            precision=self.precision.description, data_path=str(self.data.path), n_docs=self.data.n_docs,
            iters_per_epoch=self.iters, total_steps=self.total_steps, start_step=self.micro_step,
            world_size=self.world.size, notes=tuple(notes)))
        self._last_resume_save = time.monotonic()
        status, error = RunState.FINISHED, None
        try:
            if self._train_epochs():
                status = RunState.STOPPED
                if self._nonfinite and self.config.train.on_nan == "stop":  # diverged: a script must see it
                    status, error = RunState.FAILED, f"{self._nonfinite}: stopped (--on_nan stop)"
            self._report_saves(wait=True)
            self._save_resume()
        except MiniMindError as e:
            status, error = RunState.FAILED, str(e)
        except torch.cuda.OutOfMemoryError:
            status, error = RunState.FAILED, ("CUDA out of memory: lower --batch_size or --max_seq_len, or use "
                                              "--accumulation_steps for the same effective batch")
        except Exception as e:  # a bug: keep the traceback in the run directory, show one line
            status, error = RunState.FAILED, f"internal error {type(e).__name__}: {e}"
            if self.store is not None:  # rank 0; another rank has no run directory (never the working directory)
                error += f" (traceback in {self.store.path / 'traceback.txt'})"
                try:
                    (self.store.path / "traceback.txt").write_text(traceback.format_exc())
                except OSError:  # the disk that failed may be this one: the one line still goes out
                    pass
        finally:
            self._wait_for_saves()
            self._shutdown_loader()
            if status != RunState.FAILED:  # a failed rank must not wait at a barrier the others never reach
                distributed.shutdown(self.world)
        ended = RunEnded(status=status, global_step=self.micro_step, total_steps=self.total_steps,
                         run_dir=run_dir, error=error,
                         resumable=bool(self.store and self.store.resume_path.is_file()) and status != RunState.FINISHED)
        try:
            self._emit(ended)
        except StorageError as e:  # not even how it ended could be recorded: the viewers still hear of it
            for observer in self.observers:
                observer(Alert(str(e), level="error"))
                observer(ended)
        finally:
            self._release()
        return ended

    def _wait_for_saves(self) -> None:
        """A write still in flight after a failure finishes (or fails) before the files are let go."""
        try:
            self.saver.finished(wait=True)
        except BaseException:  # the run already failed with its own error
            pass

    def _release(self) -> None:
        """Let go of the run, its weights file (another process may train them now) and the memory
        malloc kept for it (a long-lived app process should not hold a finished run's peak)."""
        release_free_memory()
        if self.weights_lock is not None:
            self.weights_lock.release()
        if self.store is not None:
            self.store.release()

    def _train_epochs(self) -> bool:
        """The loop; True when it stopped early on request."""
        train = self.config.train
        meter = self.meter = _Meter()
        self.model.train()
        per_micro_step = train.batch_size * self.world.size  # samples all ranks consume per micro-step
        for epoch in range(self.position.epoch, train.epochs):
            first = self.position.samples if epoch == self.position.epoch else 0
            start = self._micro_steps_at(first)
            self.sampler.set_epoch(epoch, first)
            meter.epoch_active, meter.epoch_micro_steps = 0.0, 0
            window = _Window()
            step = start  # micro-step within the epoch, 1-based once running (MiniMind's `step`)
            tick = time.perf_counter()
            for X, Y, loss_mask in self.loader:
                step += 1
                self.micro_step = epoch * self.iters + step
                self._set_lr(self.micro_step)
                divisor = self._loss_divisor(step)
                window_end = not (step % train.accumulation_steps and step != self.iters)
                loss, aux = self._forward_backward(X, Y, loss_mask, divisor, sync=window_end)
                window.add(loss, aux)
                meter.since_log_tokens += int(loss_mask.sum())
                meter.since_log_positions += loss_mask.numel()
                if not window_end:
                    continue
                grad_norm = self._optimizer_step()
                self.optimizer_step += 1
                self.position = Position(epoch, min(len(self.data.rows), first + (step - start) * per_micro_step))
                now = time.perf_counter()
                elapsed, tick = now - tick, now
                meter.active += elapsed
                meter.epoch_active += elapsed
                meter.since_log_time += elapsed
                meter.micro_steps_done += window.micro_steps
                meter.epoch_micro_steps += window.micro_steps
                meter.since_log_micro_steps += window.micro_steps
                last = step == self.iters
                if _crossed(train.log_interval, step, window.micro_steps) or last:
                    self._log(epoch, step, window, grad_norm)
                if (_crossed(train.save_interval, step, window.micro_steps) or (last and train.save_interval > 0)) \
                        and not self._poisoned:
                    self._save_weights()
                window = _Window()
                self._report_saves()
                if train.eval_interval and self.optimizer_step % train.eval_interval == 0:
                    self._evaluate()
                if self._handle_control():
                    return True
                tick = time.perf_counter()  # pauses, saves and evaluations do not count as training time
            self.position = Position(epoch + 1, 0)
        if self._evaluated_at != self.micro_step:
            self._evaluate()  # once at the end
        return False

    def _micro_steps_at(self, samples: int) -> int:
        """Micro-steps of an epoch done once `samples` of it are consumed (with this world size)."""
        left = EpochSampler.per_rank(len(self.data.rows) - samples, self.world.size)
        return self.iters - math.ceil(left / self.config.train.batch_size)

    def _loss_divisor(self, step: int) -> int:
        """What micro-step `step`'s loss is divided by before backward: the accumulation steps, except
        in a short last window of an epoch, where the family says (classic here: its own length, so
        the window's gradient is its mean; MiniMind-3 keeps dividing by accumulation_steps)."""
        accum = self.config.train.accumulation_steps
        last_full = self.iters - self.iters % accum
        if step > last_full and self.family.short_window_divisor == "own_length":
            return self.iters % accum
        return accum

    def _set_lr(self, micro_step: int) -> None:
        train = self.config.train
        self.lr = learning_rate(self.family.lr, micro_step, self.total_steps, train.learning_rate, train.warmup_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def _forward_backward(self, X, Y, loss_mask, divisor: int, sync: bool = True):
        """One micro-step; returns its loss and aux loss (detached, undivided)."""
        if self.config.train.skip_padding:
            batch = real_targets_only(X, Y, loss_mask, trim=self._trim_padding)
        else:
            batch = Batch(X, Y, loss_mask)
        if self._whole_rows:
            batch = batch.with_last_token(Y[:, -1:])
        batch = batch.to(self.precision.device)
        # Inside an accumulation window DDP skips the gradient all-reduce until the last micro-step.
        no_sync = self.wrapped.no_sync() if isinstance(self.wrapped, DistributedDataParallel) and not sync \
            else contextlib.nullcontext()
        with no_sync:
            with self.precision.autocast():
                res = self.forward(batch.inputs, logits_at=batch.at)
                loss = batch.loss(res.logits) + res.aux_loss
            self.scaler.scale(loss / divisor).backward()
        return loss.detach(), res.aux_loss.detach()

    def _optimizer_step(self) -> torch.Tensor:
        clip = self.config.train.grad_clip
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _log(self, epoch: int, step: int, window: _Window, grad_norm: torch.Tensor) -> None:
        train, meter = self.config.train, self.meter
        assert window.loss is not None and window.aux is not None  # a logged window ran micro-steps
        # The window's mean: the one host sync, on log steps only.
        loss, aux = window.loss.item() / window.micro_steps, window.aux.item() / window.micro_steps
        if self.world.distributed:  # every rank's mean, and every rank's tokens
            total_loss, total_aux, tokens, positions = distributed.sum_values(
                [loss, aux, meter.since_log_tokens, meter.since_log_positions], self.precision.device)
            loss, aux = total_loss / self.world.size, total_aux / self.world.size
            meter.since_log_tokens, meter.since_log_positions = int(tokens), int(positions)
        rate_time = max(meter.since_log_time, 1e-9)
        per_micro_step = meter.active / max(meter.micro_steps_done, 1)
        epoch_per_micro_step = meter.epoch_active / max(meter.epoch_micro_steps, 1)
        event = StepLogged(
            epoch=epoch + 1, epochs=train.epochs, step=step, iters=self.iters, global_step=self.micro_step,
            total_steps=self.total_steps, loss=loss, logits_loss=loss - aux, aux_loss=aux, lr=self.lr,
            grad_norm=float(grad_norm), tokens=meter.since_log_tokens,
            tokens_per_s=meter.since_log_tokens / rate_time, positions_per_s=meter.since_log_positions / rate_time,
            step_time=meter.since_log_time / max(meter.since_log_micro_steps, 1), elapsed=meter.active,
            epoch_eta=epoch_per_micro_step * (self.iters - step),
            total_eta=per_micro_step * (self.total_steps - self.micro_step))
        meter.since_log_time, meter.since_log_micro_steps = 0.0, 0
        meter.since_log_tokens = meter.since_log_positions = 0
        self._emit(event)
        if not (math.isfinite(loss) and math.isfinite(aux)):
            self._on_nonfinite(f"loss is {loss} at step {self.micro_step}")

    def _on_nonfinite(self, what: str) -> None:
        self._poisoned = True
        on_nan = self.config.train.on_nan
        last = (f"the last good resume state is at step {self._resume_saved_at}"
                if self._resume_saved_at >= 0 else "no resume state was saved before it")
        self._emit(Alert(f"{what}: checkpoints are no longer written ({last}); "
                         + ("paused: resume to continue anyway, or stop" if on_nan == "pause" else "stopping"),
                         level="error"))
        self._nonfinite = f"non-finite numbers ({what})"  # the reason the pause or stop is recorded with
        if on_nan == "pause":
            self.control.pause(self._nonfinite)
        else:
            self.control.stop(self._nonfinite)

    def _sync_control(self) -> tuple[bool, bool, bool]:
        """(stop, paused, save) as all ranks agree: a stop on any rank (a signal) stops every rank;
        pause and save-now are rank 0's, which alone reads the run directory's requests."""
        self.control.poll()
        main = self.world.is_main
        flags = [int(self.control.stop_reason is not None), int(main and self.control.paused),
                 int(main and self.control.take_save_request())]
        if self.world.distributed:
            flags = distributed.max_flags(flags, self.precision.device)
            if flags[0] and self.control.stop_reason is None:
                self.control.stop("stop requested on another rank")
        return bool(flags[0]), bool(flags[1]), bool(flags[2])

    def _handle_control(self) -> bool:
        """Apply save/pause/stop requests between optimizer steps; True when the run must stop."""
        stop, paused, save = self._sync_control()
        if save:
            self._save_now()
        if paused and not stop:
            self._report_saves(wait=True)
            self._emit(StateChanged(RunState.PAUSED, self.control.pause_reason))
            while paused and not stop:
                self.control.wait(PAUSE_POLL_S) if self.world.is_main else time.sleep(PAUSE_POLL_S)
                if self.store is not None:
                    self.store.heartbeat()
                stop, paused, save = self._sync_control()
                if save:
                    self._save_now()
            if not stop:
                self._emit(StateChanged(RunState.RUNNING, "resumed"))
        if stop:
            self._emit(StateChanged(RunState.STOPPING, self.control.stop_reason or "stop requested"))
            return True
        return False

    def _evaluate(self) -> None:
        if self.evaluator is None:
            return
        # The plain model, not the DDP wrapper: ranks may run different numbers of eval batches.
        result = self.evaluator.run(self.model)
        self._evaluated_at = self.micro_step
        best = math.isfinite(result.loss) and (self.best_eval is None or result.loss < self.best_eval)
        if best:
            self.best_eval = result.loss
        self._emit(EvalDone(global_step=self.micro_step, optimizer_step=self.optimizer_step, eval_loss=result.loss,
                            eval_ppl=result.ppl, eval_tokens=result.tokens, eval_docs=result.docs, best=best))
        if best and self.config.train.save_best and self.weights_file is not None and self._weights_finite():
            path = self.weights_file.with_name(f"{self.weights_file.stem}_best.pth")
            _writing(path, lambda: save_weights(self.model, path))
            self._emit(CheckpointSaved("best", str(path), self.micro_step))

    # ---- checkpoints -----------------------------------------------------------------------------
    def _claim_weights_file(self, store: RunStore) -> Path:
        """MiniMind's {save_dir}/{save_weight}_{width}[_moe].pth, or a copy in the run directory when
        another live run in the same save_dir already writes that file."""
        train = self.config.train
        path = Path(train.save_dir) / self.family.weights_name(train.save_weight, self.config.model)
        remove_stale_temp_files(path.parent)
        self.weights_lock = WeightsLock(path)
        if self.weights_lock.acquire():
            return path
        own = store.path / path.name
        self.notes.append(f"another live run writes {path}: this run saves its weights to {own}")
        return own

    def _weights_finite(self) -> bool:
        """Checked before every save (one host sync): an update can overflow even after a finite loss."""
        if not self._poisoned and not bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()):
            self._on_nonfinite(f"the weights are no longer finite after step {self.micro_step} (an update "
                               "overflowed: lower --learning_rate)")
        return not self._poisoned

    def _save_weights(self) -> None:
        if self.weights_file is None:  # rank 0 alone saves
            return
        if self._poisoned:
            self._emit(Alert("not saving weights: non-finite numbers were seen, the weights may be corrupt"))
            return
        path, state = self.weights_file, weights_snapshot(self.model)
        # The fp16 copy is checked (cheap, exact): it is what lands on disk, and it is non-finite
        # whenever the weights are. Only when it is not finite is the slower check of the weights run.
        if not all_finite(state):
            if self._weights_finite():
                self._emit(Alert(f"not saving weights at step {self.micro_step}: some exceed fp16's range "
                                 "(65504), so the saved file would hold inf; the previous file is intact"))
            else:
                self._emit(Alert("not saving weights: non-finite numbers were seen, the weights may be corrupt"))
            return
        # Written while the next step trains; its CheckpointSaved is reported once the file is in place.
        self._report_saves(self.saver.submit(lambda: _writing(path, lambda: atomic_torch_save(state, path)),
                                             CheckpointSaved("weights", str(path), self.micro_step)))
        if time.monotonic() - self._last_resume_save >= self.config.train.resume_every_s or self._resume_saved_at < 0:
            self._save_resume()

    def _save_now(self) -> None:
        """A save-now request: weights and the exact-resume state, both on disk when this returns."""
        self._save_weights()
        self._save_resume()
        self._report_saves(wait=True)

    def _report_saves(self, finished: Optional[list] = None, wait: bool = False) -> None:
        """Emit the CheckpointSaved of background writes that are done (raising one that failed)."""
        for event in (finished if finished is not None else self.saver.finished(wait=wait)):
            self._emit(event)

    def _save_resume(self) -> None:
        if self.store is None or self._resume_saved_at == self.micro_step or not self._weights_finite():
            return
        path = self.store.resume_path
        _writing(path, lambda: save_resume_state(path, self.state_dict()))
        self._last_resume_save = time.monotonic()
        self._resume_saved_at = self.micro_step
        self._emit(CheckpointSaved("resume", str(path), self.micro_step))

    def state_dict(self) -> dict:
        """Everything an exact resume needs, loadable with torch.load(weights_only=True)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in unwrap(self.model).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng_state(),
            "epoch": self.position.epoch,
            "samples": self.position.samples,
            "global_step": self.micro_step,
            "run_id": self.store.run_id if self.store else None,
            "data": data_fingerprint(self.data.path),
            "optimizer_step": self.optimizer_step,
            "best_eval": self.best_eval,
            "config": self.config.to_dict(),
            "world_size": self.world.size,
            "records": self.store.record_counts() if self.store else None,  # the history this state continues
            "minimind_version": __version__,
        }

    # ---- plumbing --------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        if not self.world.is_main:  # rank 0 alone reports
            return
        if self.store is not None:
            self.store(event)
        for observer in self.observers:
            observer(event)

    def _shutdown_loader(self) -> None:
        iterator = getattr(self.loader, "_iterator", None)  # DataLoader keeps its worker iterator here
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _crossed(interval: int, step: int, window: int) -> bool:
    """Did the last optimizer step (covering micro-steps step-window+1 .. step) pass a multiple of interval?"""
    return interval > 0 and step // interval > (step - window) // interval


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """The config with every path resolved now, as the run records it: resuming from another working
    directory finds the same corpus, tokenizer and save_dir."""
    train = config.train
    changes: dict[str, Any] = {"data_path": str(resolve_data_path(train.data_path).absolute()),
                               "save_dir": str(Path(train.save_dir).absolute())}
    if train.eval_data:
        changes["eval_data"] = str(resolve_data_path(train.eval_data).absolute())
    for name in ("tokenizer", "init_from"):
        if getattr(train, name):
            changes[name] = str(Path(getattr(train, name)).absolute())
    return config.replace(**changes)


def _resume_config(saved: RunConfig, overrides: dict) -> RunConfig:
    """The saved run's config; only settings that do not change the math may be overridden."""
    changes = {k: v for k, v in overrides.items() if v != saved.flat().get(k)}
    refused = sorted(set(changes) - RESUME_OVERRIDABLE)
    if refused:
        name = refused[0]
        raise CheckpointError(f"--{name} differs from the run being resumed ({saved.flat()[name]!r}): a resumed "
                              "run keeps its settings; start a new run with --init-from its weights to change it")
    return saved.replace(**changes) if changes else saved


def _writing(path: Path, write: Callable[[], None]) -> None:
    """Run a checkpoint write; a full disk or a permission problem becomes a one-line error (the
    previous file stays intact: writes are atomic)."""
    try:
        write()
    except OSError as e:
        raise MiniMindError(f"cannot write {path} ({e.strerror or e}): free disk space or choose another "
                            "--save_dir; the previous checkpoint is intact") from None


def _adamw(params, lr: float) -> torch.optim.Optimizer:
    """AdamW with torch's defaults (as MiniMind), fused where the device supports it: same update,
    one kernel instead of dozens (the seed's fp32 CPU losses agree to 1e-6)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr)


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: let the main process finish the step and stop cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
