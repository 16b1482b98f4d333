"""Held-out evaluation: the number (token-weighted, against independent references), that it never
touches training, the split, where it shows, --save_best and `minimind eval`."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from minimind.cli import app
from minimind.engine.control import RunControl
from minimind.engine.trainer import Trainer
from minimind.events import EvalDone, StepLogged
from minimind.families import FAMILIES
from minimind.storage.checkpoint import load_weights
from minimind.storage.run_store import RunStore, RunSummary
from minimind.tokenizer import load_tokenizer
from tests.classic_reference import ClassicReference
from tests.helpers import read_json_lines, tiny_config, tiny_corpus
from tests.minimind3_reference import MiniMind3Config as ReferenceConfig
from tests.minimind3_reference import MiniMind3Reference, pretrain_row

runner = CliRunner()


def texts_of(path):
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def naive_token_weighted_loss(logits_of, rows):
    """sum over every row of the masked per-token losses / number of real targets."""
    total, count = 0.0, 0
    for ids, mask in rows:
        ids = torch.tensor([ids])
        logits = logits_of(ids[:, :-1])
        ce = F.cross_entropy(logits[0].double(), ids[0, 1:], reduction="none")
        m = torch.tensor(mask[1:], dtype=torch.float64)
        total += float((ce * m).sum())
        count += int(m.sum())
    return total / count, count


@pytest.mark.parametrize("arch", ["classic", "minimind3"])
def test_minimind_eval_equals_the_reference_models_on_the_same_weights_and_file(tmp_path, arch):
    """`minimind eval --dtype float32` on CPU: MiniMind's own model definitions (the independent
    references) and its dataset rows give the same token-weighted loss to 1e-4."""
    config = tiny_config(tmp_path, arch=arch, epochs=1, save_interval=100)
    Trainer(config).run()
    family = FAMILIES[arch]
    weights = tmp_path / "out" / family.weights_name(config.train.save_weight, config.model)
    held = tiny_corpus(tmp_path, 30, "held.jsonl")
    result = runner.invoke(app, ["eval", str(weights), "--data", str(held), "--max_seq_len", "48", "--n-heads", "4",
                                 "--batch-size", "7", "--json"])
    assert result.exit_code == 0, result.output
    ours = json.loads(result.output)
    state = {k: v.float() for k, v in load_weights(weights).items()}
    tok = load_tokenizer(family.tokenizer_dir)
    if arch == "classic":
        reference = ClassicReference(config.model)
        reference.load_state_dict(state)
        rows = []
        for text in texts_of(held):  # MiniMind classic's PretrainDataset: the Hugging Face call
            ids = tok(f"{tok.bos_token}{text}{tok.eos_token}", max_length=48, padding="max_length",
                      truncation=True).input_ids
            rows.append((ids, [int(i != tok.pad_token_id) for i in ids]))
        logits_of = lambda x: reference(x)[0]  # noqa: E731
    else:
        reference = MiniMind3Reference(ReferenceConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       num_key_value_heads=2))
        reference.load_state_dict(state)
        rows = [(ids, [int(label != -100) for label in labels])
                for ids, labels in (pretrain_row(tok, text, 48) for text in texts_of(held))]
        logits_of = lambda x: reference(x)[0]  # noqa: E731
    reference.eval()
    with torch.no_grad():
        expected, count = naive_token_weighted_loss(logits_of, rows)
    assert ours["tokens"] == count and ours["docs"] == 30
    assert ours["loss"] == pytest.approx(expected, abs=1e-4)
    assert ours["ppl"] == pytest.approx(math.exp(ours["loss"]))


def test_evaluation_never_touches_training(tmp_path):
    """Dropout, shuffling and a worker: a run evaluating every optimizer step trains bit for bit as one
    that never evaluates."""
    config = tiny_config(tmp_path, epochs=2, dropout=0.2, shuffle=True, num_workers=1)
    plain = Trainer(config)
    plain.run()
    events = []
    evaluated = Trainer(config.replace(eval_data=str(tiny_corpus(tmp_path, 20, "held.jsonl")), eval_interval=1),
                        observers=[events.append])
    evaluated.run()
    assert len([e for e in events if isinstance(e, EvalDone)]) == 12
    for (name, a), b in zip(plain.model.state_dict().items(), evaluated.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("packing", [False, True])
def test_a_split_is_held_out_the_same_way_and_resume_stays_exact(tmp_path, packing):
    config = tiny_config(tmp_path, epochs=3, eval_split=0.25, eval_interval=2, packing=packing, shuffle=True)
    full_events = []
    full = Trainer(config, observers=[full_events.append])
    full.run()
    lines, held = set(full.data.lines.tolist()), set(full.eval_data.lines.tolist())
    assert not lines & held and len(lines | held) == 12 and len(held) == 3
    if packing:  # the training rows carry exactly the training documents' tokens
        assert full.data.rows.n_targets + 1 == sum(
            int(full.data.rows.ends[i]) - (int(full.data.rows.ends[i - 1]) if i else 0) for i in sorted(lines))
    control = RunControl()

    def stop_at_4(e):
        if isinstance(e, StepLogged) and e.global_step == 4:
            control.stop("test")

    first_events = []
    ended = Trainer(config, control=control, observers=[first_events.append, stop_at_4]).run()
    second_events = []
    resumed = Trainer(resume=ended.run_dir, observers=[second_events.append])
    assert set(resumed.eval_data.lines.tolist()) == held
    resumed.run()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    evals = lambda evs: [(e.global_step, e.eval_loss) for e in evs if isinstance(e, EvalDone)]  # noqa: E731
    assert evals(first_events) + evals(second_events) == evals(full_events)
    recorded = [(r["global_step"], r["eval_loss"]) for r in RunStore(ended.run_dir).read_events()
                if r["event"] == "EvalDone"]
    assert recorded == evals(full_events)  # one record per evaluation, none duplicated by the resume


@pytest.mark.parametrize("flags,words", [
    (["--eval_split", "0.2", "--eval_data", "x.jsonl"], "eval_split: conflicts with --eval_data"),
    (["--eval_split", "0.99"], "leaves no training document"),
    (["--eval_split", "0.01"], "holds out none"),
    (["--eval_data", "/nonexistent/held.jsonl"], "data file /nonexistent/held.jsonl does not exist"),
    (["--save_best"], "save_best: needs an evaluation"),
    (["--eval_split", "1.5"], "eval_split: must be in [0, 1)"),
])
def test_bad_combinations_are_refused_before_any_work(tmp_path, flags, words):
    from tests.helpers import tiny_flags

    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "1", *flags)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result.output
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())


def test_where_evaluations_show_and_save_best(tmp_path):
    from tests.helpers import tiny_flags

    held = tiny_corpus(tmp_path, 20, "held.jsonl")
    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "2", "--eval_data", str(held),
                                                      "--eval_interval", "3", "--save_best", "--tracker", "tensorboard",
                                                      "--run-name", "evaluated", "--learning_rate", "0.01")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("eval: ")]
    assert len(lines) == 4 and all(line.startswith("eval: step ") and ", ppl " in line for line in lines)
    assert "Epoch:[1/2](1/6), loss: " in result.output  # the seed's lines are unchanged
    store = RunStore(tmp_path / "out" / "runs" / "evaluated")
    records = [r for r in store.read_events() if r["event"] == "EvalDone"]
    assert [r["global_step"] for r in records] == [3, 6, 9, 12]
    assert all(r["eval_ppl"] == pytest.approx(math.exp(r["eval_loss"])) and r["eval_tokens"] > 0 for r in records)
    best = min(records, key=lambda r: r["eval_loss"])
    saved = [r for r in store.read_events() if r["event"] == "CheckpointSaved" and r["kind"] == "best"]
    assert saved[-1]["global_step"] == best["global_step"]
    assert store.read_status()["checkpoints"]["best"]["global_step"] == best["global_step"]
    best_file = tmp_path / "out" / "minimind_pretrain_32_best.pth"
    assert all(v.dtype == torch.float16 for v in load_weights(best_file).values())
    summary = RunSummary.of(store)
    assert summary.best_eval == best["eval_loss"] and len(summary.evals) == 4
    listed = runner.invoke(app, ["runs", "list", "--save-dir", str(tmp_path / "out")])
    assert "best eval" in listed.output and f"{best['eval_loss']:.4f}" in listed.output
    shown = runner.invoke(app, ["runs", "show", "evaluated", "--save-dir", str(tmp_path / "out")])
    assert f"best {best['eval_loss']:.4f}" in shown.output and "eval" in shown.output
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(store.path / "tensorboard"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("eval/loss")] == [3, 6, 9, 12] and "eval/ppl" in acc.Tags()["scalars"]


def test_minimind_eval_refuses_and_reads_sft_rows(tmp_path):
    from tests.test_sft import chats, toy_conversations

    config = tiny_config(tmp_path, epochs=1, save_interval=100)
    Trainer(config).run()
    weights = tmp_path / "out" / "minimind_pretrain_32.pth"
    bad = runner.invoke(app, ["eval", str(weights), "--data", str(tmp_path / "none.jsonl"), "--n-heads", "4"])
    assert bad.exit_code == 2 and "does not exist" in bad.output and bad.output.count("\n") == 1
    packed = runner.invoke(app, ["eval", str(weights), "--data", str(tmp_path / "x.jsonl"), "--stage", "sft",
                                 "--packing", "--n-heads", "4"])
    assert packed.exit_code == 2 and "packing: does not apply to --stage sft" in packed.output
    sft = runner.invoke(app, ["eval", str(weights), "--data", str(chats(tmp_path, toy_conversations(12))),
                              "--stage", "sft", "--n-heads", "4", "--max_seq_len", "96", "--json"])
    assert sft.exit_code == 0, sft.output
    assert json.loads(sft.output)["docs"] == 12


def test_eval_records_read_back_for_viewers(tmp_path):
    config = tiny_config(tmp_path, epochs=1, eval_split=0.25)
    ended = Trainer(config).run()
    records = read_json_lines(RunStore(ended.run_dir).events_path)
    from minimind.events import event_from_record

    evals = [event_from_record(r) for r in records if r["event"] == "EvalDone"]
    assert len(evals) == 1 and isinstance(evals[0], EvalDone) and evals[0].best
