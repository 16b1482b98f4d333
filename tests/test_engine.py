import math
import threading
import time

import pytest
import torch

from minimind.engine.control import RunControl
from minimind.engine.loss import masked_lm_loss
from minimind.engine.schedule import learning_rate
from minimind.families.classic import CLASSIC
from minimind.engine.trainer import Trainer
from minimind.errors import CheckpointError
from minimind.events import CheckpointSaved, RunEnded, RunStarted, StateChanged, StepLogged
from minimind.models.classic import MiniMindLM
from minimind.storage.checkpoint import load_resume_state, load_weights
from minimind.storage.run_store import RunStore, RunSummary, find_resumable, list_runs
from tests.helpers import REPO, tiny_config, wait_until


def test_seed_learning_rates():
    get_lr = lambda step, total, lr, warmup_steps=0: learning_rate(CLASSIC.lr, step, total, lr, warmup_steps)
    got = [round(get_lr(e * 1 + 1, 5 * 1, 5e-4), 8) for e in range(5)]
    assert got == [0.00050225, 0.00037725, 0.00022275, 0.00009775, 0.00005000]
    assert get_lr(5, 10, 1e-3, warmup_steps=10) == pytest.approx(0.5 * get_lr(5, 10, 1e-3))


def test_masked_loss_against_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
    targets = torch.tensor([[0, 2, 1]])
    mask = torch.tensor([[1, 1, 0]])
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    ce1 = -math.log(1 / (math.e + 2))
    assert masked_lm_loss(logits, targets, mask).item() == pytest.approx((ce0 + ce1) / 2, abs=1e-6)
    assert masked_lm_loss(logits, targets, torch.zeros_like(mask)).item() == 0.0  # no NaN on all-pad


def collect(events):
    return lambda e: events.append(e)


def test_run_records_and_classic_weights(tmp_path):
    events = []
    ended = Trainer(tiny_config(tmp_path), observers=[collect(events)]).run()
    assert ended.status == "finished" and ended.global_step == 12  # 12 docs / batch 2 x 2 epochs
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunEnded"
    steps = [e for e in events if isinstance(e, StepLogged)]
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6] * 2 and steps[-1].global_step == 12
    assert steps[-1].lr == pytest.approx(5e-5) and all(s.tokens > 0 and s.grad_norm > 0 for s in steps)
    saved = [e for e in events if isinstance(e, CheckpointSaved) and e.kind == "weights"]
    assert [e.global_step for e in saved] == [2, 4, 6, 8, 10, 12]
    path = tmp_path / "out" / "minimind_pretrain_32.pth"
    assert saved[0].path == str(path) and path.name == "minimind_pretrain_32.pth"
    state = load_weights(path)
    assert all(v.dtype == torch.float16 for v in state.values())
    model = MiniMindLM(tiny_config(tmp_path).model)
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)

    store = RunStore(ended.run_dir)
    assert store.read_config()["model"]["dim"] == 32 and store.read_config()["run"]["world_size"] == 1
    assert [m["loss"] for m in store.read_metrics()] == [s.loss for s in steps]
    assert store.read_status()["state"] == "finished" and store.state() == "finished"
    summary = RunSummary.of(store)
    assert summary.global_step == 12 and summary.best_loss == min(s.loss for s in steps)
    assert [e["event"] for e in store.read_events()][0] == "RunStarted"


def test_moe_weights_name(tmp_path):
    ended = Trainer(tiny_config(tmp_path, use_moe=True, epochs=1, save_interval=6)).run()
    assert ended.status == "finished"
    assert (tmp_path / "out" / "minimind_pretrain_32_moe.pth").is_file()


def manual_training(config, windows):
    """A plain reference loop: each optimizer step averages its micro-batches' losses."""
    from minimind.data import PretrainDataset
    from minimind.tokenizer import load_tokenizer

    torch.manual_seed(config.train.seed)
    model = MiniMindLM(config.model)
    ds = PretrainDataset(config.train.data_path, load_tokenizer(CLASSIC.tokenizer_dir), config.model.max_seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    bs, iters = config.train.batch_size, math.ceil(len(ds) / config.train.batch_size)
    total = config.train.epochs * iters
    for epoch in range(config.train.epochs):
        step = 0
        for window in windows:
            for _ in range(window):
                step += 1
                batch = [ds[i] for i in range((step - 1) * bs, min(step * bs, len(ds)))]
                X, Y, M = (torch.stack(t) for t in zip(*batch))
                out = model(X)
                (masked_lm_loss(out.logits, Y, M) / window).backward()
            for g in opt.param_groups:
                g["lr"] = CLASSIC.lr(epoch * iters + step, total, config.train.learning_rate)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return model


def test_gradient_accumulation_boundaries(tmp_path):
    # 7 micro-batches per epoch, accumulation 3: optimizer steps after micro-batches 3, 6 and 7
    config = tiny_config(tmp_path, batch_size=1, accumulation_steps=3, save_interval=0)
    config = config.replace(data_path=config.train.data_path)
    lines = open(config.train.data_path, encoding="utf-8").read().splitlines()[:7]
    open(config.train.data_path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    events = []
    trainer = Trainer(config, observers=[collect(events)])
    trainer.run()
    logged = [(s.epoch, s.step) for s in events if isinstance(s, StepLogged)]
    assert logged == [(1, 3), (1, 6), (1, 7), (2, 3), (2, 6), (2, 7)]
    reference = manual_training(config, windows=[3, 3, 1])
    for (name, ours), theirs in zip(trainer.model.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(ours, theirs, atol=1e-6), name


def test_log_interval_logs_window_means(tmp_path):
    events = []
    Trainer(tiny_config(tmp_path, log_interval=4, save_interval=0), observers=[collect(events)]).run()
    assert [s.step for s in events if isinstance(s, StepLogged)] == [4, 6, 4, 6]  # every 4 and each epoch's last


def stop_at(control, global_step):
    def observer(e):
        if isinstance(e, StepLogged) and e.global_step == global_step:
            control.stop("test")
    return observer


@pytest.mark.parametrize("overrides", [
    dict(), dict(shuffle=True, dropout=0.1, accumulation_steps=2),
    dict(arch="minimind3", use_moe=True, num_experts=4, num_experts_per_tok=2, dropout=0.1, accumulation_steps=2,
         packing=True)])
def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path, overrides):
    config = tiny_config(tmp_path, epochs=3, **overrides)
    full_events = []
    full = Trainer(config, observers=[collect(full_events)])
    full.run()

    control = RunControl()
    first_events = []
    first = Trainer(config, control=control, observers=[collect(first_events), stop_at(control, 8)])
    ended = first.run()
    assert ended.status == "stopped" and ended.resumable and ended.global_step == 8
    assert RunStore(ended.run_dir).read_status()["state"] == "stopped"

    second_events = []
    second = Trainer(resume=ended.run_dir, observers=[collect(second_events)])
    assert second.run().status == "finished"
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    losses = lambda evs: [(e.global_step, e.loss) for e in evs if isinstance(e, StepLogged)]
    assert losses(first_events) + losses(second_events) == losses(full_events)
    assert [(m["global_step"], m["loss"]) for m in RunStore(ended.run_dir).read_metrics()] == losses(full_events)
    started = [e for e in second_events if isinstance(e, RunStarted)][0]
    assert started.start_step == 8 and any("resumed" in n for n in started.notes)


def test_resume_drops_metrics_logged_after_the_saved_state(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    control = RunControl()
    ended = Trainer(config, control=control, observers=[stop_at(control, 4)]).run()
    store = RunStore(ended.run_dir)
    # simulate a crash: a later metric line was logged but its state never saved, plus a torn line
    with open(store.metrics_path, "a") as f:
        f.write('{"global_step": 5, "loss": 1.0}\n{"global_st')
    Trainer(resume=ended.run_dir).run()
    assert [m["global_step"] for m in store.read_metrics()] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_math_and_foreign_files(tmp_path):
    control = RunControl()
    ended = Trainer(tiny_config(tmp_path), control=control, observers=[stop_at(control, 2)]).run()
    with pytest.raises(CheckpointError, match="--learning_rate differs"):
        Trainer(resume=ended.run_dir, overrides={"learning_rate": 1e-3})
    Trainer(resume=ended.run_dir, overrides={"log_interval": 3})  # harmless changes are fine
    with pytest.raises(CheckpointError, match="not a run directory"):
        Trainer(resume=tmp_path)
    store = RunStore(ended.run_dir)
    torch.save({"something": torch.zeros(1)}, store.resume_path)
    with pytest.raises(CheckpointError, match="not a minimind-tui resume state"):
        Trainer(resume=ended.run_dir)
    store.resume_path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(resume=ended.run_dir)


def test_pause_resume_and_save_now_through_the_run_directory(tmp_path):
    control = RunControl()
    events = []
    trainer = Trainer(tiny_config(tmp_path, epochs=50, save_interval=0), control=control, observers=[collect(events)])
    thread = threading.Thread(target=trainer.run)
    thread.start()
    store = trainer.store
    wait_for = lambda cond: wait_until(cond, timeout=15)
    assert wait_for(lambda: any(isinstance(e, StepLogged) for e in events))
    store.send("pause")
    assert wait_for(lambda: store.read_status().get("state") == "paused")
    paused_at = trainer.micro_step
    time.sleep(0.5)
    assert trainer.micro_step == paused_at  # no step while paused
    store.send("save")
    assert wait_for(lambda: any(isinstance(e, CheckpointSaved) and e.kind == "weights" for e in events))
    store.send("resume")
    assert wait_for(lambda: trainer.micro_step > paused_at)
    store.send("stop")
    thread.join(30)
    assert not thread.is_alive()
    ended = events[-1]
    assert isinstance(ended, RunEnded) and ended.status == "stopped"
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states == ["paused", "running", "stopping"]
    assert load_resume_state(store.resume_path)["global_step"] == ended.global_step
    assert find_resumable(tmp_path / "out").path == store.path
    assert [s.path for s in list_runs(tmp_path / "out")] == [store.path]


def test_nan_loss_pauses_and_never_overwrites_the_good_checkpoint(tmp_path):
    control = RunControl()
    events = []
    config = tiny_config(tmp_path, epochs=3, save_interval=1)
    trainer = Trainer(config, control=control, observers=[collect(events)])
    poisoned_at = None

    def poison(e):  # corrupt the weights once step 4's save is reported: the next loss is NaN
        nonlocal poisoned_at
        if isinstance(e, CheckpointSaved) and e.kind == "weights" and e.global_step == 4:
            poisoned_at = trainer.micro_step  # saves are reported once written: a step later or so
            with torch.no_grad():
                trainer.model.tok_embeddings.weight.fill_(float("nan"))
        if isinstance(e, StateChanged) and e.state == "paused":
            control.stop("test")
    trainer.observers.append(poison)
    good = None

    def remember(e):  # the weights file as each reported save left it
        nonlocal good
        if isinstance(e, CheckpointSaved) and e.kind == "weights":
            good = load_weights(e.path)
    trainer.observers.insert(0, remember)
    ended = trainer.run()
    assert ended.status == "stopped" and poisoned_at is not None
    alerts = [e for e in events if type(e).__name__ == "Alert"]
    assert alerts and f"loss is nan at step {poisoned_at + 1}" in alerts[0].message
    paused = [e for e in events if isinstance(e, StateChanged)][0]
    assert paused.state == "paused" and paused.reason == f"non-finite numbers (loss is nan at step {poisoned_at + 1})"
    saved_steps = [e.global_step for e in events if isinstance(e, CheckpointSaved)]
    assert max(saved_steps) <= poisoned_at  # nothing written after the NaN
    after = load_weights(tmp_path / "out" / "minimind_pretrain_32.pth")
    assert all(torch.equal(after[k], good[k]) for k in good)
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert load_resume_state(RunStore(ended.run_dir).resume_path)["global_step"] <= poisoned_at


def test_data_error_mid_run_fails_cleanly(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    trainer = Trainer(config)
    with open(config.train.data_path, "r+b") as f:  # damage a line after the up-front check
        f.seek(int(trainer.data.source.starts[7]))
        f.write(b"XX")
    ended = trainer.run()
    assert ended.status == "failed" and ":8: malformed JSON" in ended.error
    assert RunStore(ended.run_dir).read_status()["state"] == "failed"


SFT_TOY = REPO / "toydata" / "sft_data.jsonl"


@pytest.mark.parametrize("overrides", [
    dict(), dict(use_moe=True),
    dict(arch="minimind3", stage="sft", batch_size=4, data_path=str(SFT_TOY), from_weight="none", max_seq_len=96)])
def test_skip_padding_trains_the_same_as_full_padded_rows(tmp_path, overrides):
    """Skipping padding (trimmed columns, output layer at real targets only) is the same math: the
    losses agree to float rounding and so do the weights after a few epochs."""
    runs = {}
    for skip in (False, True):
        events = []
        (tmp_path / str(skip)).mkdir()
        config = tiny_config(tmp_path / str(skip), epochs=2, skip_padding=skip, **overrides)
        trainer = Trainer(config, observers=[collect(events)])
        assert trainer.run().status == "finished"
        runs[skip] = ([e.loss for e in events if isinstance(e, StepLogged)], trainer.model.state_dict())
    (full_losses, full_weights), (skip_losses, skip_weights) = runs[False], runs[True]
    assert len(full_losses) == len(skip_losses) > 4
    assert skip_losses == pytest.approx(full_losses, rel=1e-5, abs=1e-6)
    for name, weight in full_weights.items():
        torch.testing.assert_close(skip_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)


def test_real_targets_only_keeps_every_real_target_and_trims_only_trailing_padding():
    from minimind.engine.loss import real_targets_only

    X = torch.arange(12).view(2, 6)
    Y = (X * 5 + 3) % 7
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    batch = real_targets_only(X, Y, mask, trim=True)
    assert batch.inputs.tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]]  # up to the last real target, column 3
    assert batch.at.tolist() == [0, 1, 3, 4, 5, 6]
    assert batch.targets.tolist() == [Y[0, 0], Y[0, 1], Y[0, 3], Y[1, 0], Y[1, 1], Y[1, 2]]
    untrimmed = real_targets_only(X, Y, mask, trim=False)
    assert untrimmed.inputs.shape == (2, 6) and untrimmed.at.tolist() == [0, 1, 3, 6, 7, 8]
    logits = torch.randn(2, 6, 7)
    seed_loss = masked_lm_loss(logits, Y, mask)
    assert float(untrimmed.loss(logits.reshape(-1, 7).index_select(0, untrimmed.at))) == pytest.approx(
        float(seed_loss), rel=1e-6)
    packed = real_targets_only(X, Y, torch.ones_like(mask), trim=True)
    assert packed.at is None and packed.inputs is X  # nothing to skip in packed rows
    empty = real_targets_only(X, Y, torch.zeros_like(mask), trim=True)
    assert empty.inputs.shape == (2, 1) and empty.at.numel() == 0
    assert float(empty.loss(torch.zeros(0, 7))) == 0.0  # no NaN when a batch has no real target


def test_a_packed_epochs_short_last_row_keeps_the_whole_batch():
    """Skipping a few padded positions saves nothing, and a compiled model would compile again for
    the one batch of a packed epoch that holds the short last row: below 1/8 padding the batch is
    kept whole (the seed's masked loss); from 1/8 on the padding is skipped."""
    from minimind.engine.loss import real_targets_only

    X = torch.arange(32).view(4, 8)
    Y = (X * 5 + 3) % 7
    mask = torch.ones_like(X)
    mask[3, 5:] = 0  # 3 of 32 positions are padding
    kept = real_targets_only(X, Y, mask, trim=True)
    assert kept.at is None and kept.inputs is X
    logits = torch.randn(4, 8, 7)
    assert torch.equal(kept.loss(logits), masked_lm_loss(logits, Y, mask))
    mask[3, 4:] = 0  # 4 of 32: one eighth
    skipped = real_targets_only(X, Y, mask, trim=True)
    assert skipped.at is not None and skipped.at.numel() == 28


def test_a_bug_in_a_step_fails_the_run_with_one_line_and_its_traceback_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(tiny_config(tmp_path, epochs=1))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer, "_forward_backward", broken)
    ended = trainer.run()
    run_dir = RunStore(ended.run_dir).path
    assert ended.status == "failed" and ended.error == (f"internal error RuntimeError: boom (traceback in "
                                                        f"{run_dir / 'traceback.txt'})")
    assert "RuntimeError: boom" in (run_dir / "traceback.txt").read_text()
    assert not (tmp_path / "traceback.txt").exists()
