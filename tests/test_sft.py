"""Supervised fine-tuning as a second stage: rows and labels against the spec's worked examples and the
independent reference (tests/sft_reference.py), bad conversations, exact losses for both families,
exact resume, and pretrain -> SFT -> chat through the CLI and a pseudo-terminal."""

import json
import os
import pty
import random
import select
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.config import RunConfig
from minimind.engine.control import RunControl
from minimind.engine.trainer import Trainer
from minimind.errors import DataError
from minimind.events import StepLogged
from minimind.families import FAMILIES
from minimind.models.minimind3 import MiniMind3ForCausalLM
from minimind.sft_data import SFTDataset, label_mask
from minimind.tokenizer import load_tokenizer
from tests.classic_reference import ClassicReference
from tests.conftest import ASSETS, needs_assets
from tests.helpers import REPO, TINY_MODEL, tiny_corpus, write_jsonl
from tests.minimind3_reference import MiniMind3Config as ReferenceConfig
from tests.minimind3_reference import MiniMind3Reference, run_reference_pretraining
from tests.sft_reference import SYSTEM_PROMPTS, classic_masked_loss, classic_sft_row, minimind3_sft_row

runner = CliRunner()
SFT_DATA = REPO / "toydata" / "sft_data.jsonl"
CONV = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=2."}]


def chats(tmp_path, conversations, name="chat.jsonl"):
    return write_jsonl(tmp_path / name, [json.dumps({"conversations": c}) for c in conversations])  # \\u escapes


def toy_conversations(n=None):
    lines = SFT_DATA.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["conversations"] for line in lines[:n]]


# ---- rows and labels ---------------------------------------------------------------------------------

def test_label_scan_windows():
    ids = [7, 1, 5, 8, 9, 2, 4, 1, 5, 3, 0]
    assert label_mask(ids, [1, 5], [2], first=1, last=1) == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1]  # cut off: to the end
    assert label_mask(ids, [1, 5], [2, 4], first=0, last=0) == [0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1]


@needs_assets
def test_classic_rows_match_the_spec_example_with_minimind_tokenizer(tmp_path):
    tok = load_tokenizer(ASSETS / "tokenizer")
    X, Y, mask = SFTDataset(chats(tmp_path, [CONV]), tok, 75, FAMILIES["classic"])[0]
    assert len(X) == 74 and X[:4].tolist() == [1, 85, 736, 201]
    # MiniMind's 2025-04-01 fix: the whole reply, </s> and the newline (k = 35..45 and 63..70)
    assert [k for k, m in enumerate(mask.tolist()) if m] == list(range(35, 46)) + list(range(63, 71))
    ref_X, ref_Y, ref_mask = classic_sft_row(tok, CONV, 75, variant="2504", roles="field")
    assert torch.equal(X, ref_X) and torch.equal(Y, ref_Y) and torch.equal(mask, ref_mask)


@needs_assets
@pytest.mark.parametrize("keep_think,length,labelled", [
    (False, 50, list(range(13, 22)) + list(range(39, 47))), (True, 61, list(range(13, 28)) + list(range(45, 59)))])
def test_minimind3_rows_match_the_spec_examples(tmp_path, keep_think, length, labelled):
    tok = load_tokenizer(ASSETS / "tokenizer-minimind3")
    ds = SFTDataset(chats(tmp_path, [CONV]), tok, length, FAMILIES["minimind3"], empty_think_ratio=float(keep_think))
    ids, mask = ds.row(0)
    assert [j for j, m in enumerate(mask) if m] == labelled
    if not keep_think:
        torch.manual_seed(42)
        model = MiniMind3ForCausalLM(FAMILIES["minimind3"].new_config()).eval()
        X, Y, loss_mask = ds[0]
        logits = model(X[None]).logits
        loss = classic_masked_loss(logits, Y[None], loss_mask[None])
        assert loss.item() == pytest.approx(8.903176, abs=1e-5)  # the spec's loss for this row


def test_shipped_tokenizers_give_the_references_rows(tmp_path):
    convs = toy_conversations(40)
    path = chats(tmp_path, convs)
    classic_tok = load_tokenizer(FAMILIES["classic"].tokenizer_dir)
    ds = SFTDataset(path, classic_tok, 160, FAMILIES["classic"])
    for i, conv in enumerate(convs):
        X, Y, mask = ds[i]
        ref = classic_sft_row(classic_tok, conv, 160, variant="2504", roles="field")
        assert torch.equal(X, ref[0]) and torch.equal(mask, ref[2]), i
    m3_tok = load_tokenizer(FAMILIES["minimind3"].tokenizer_dir)
    ds3 = SFTDataset(path, m3_tok, 160, FAMILIES["minimind3"], add_system_ratio=0.0, empty_think_ratio=0.0)
    for i, conv in enumerate(convs):
        ids, labels = minimind3_sft_row(m3_tok, conv, 160, random.Random(i), add_system_ratio=0.0,
                                        empty_think_ratio=0.0)
        ours, mask = ds3.row(i)
        assert ours == ids.tolist() and mask == [int(label != -100) for label in labels.tolist()], i


def test_minimind3_augmentations_have_minimind3s_rates_and_are_reproducible(tmp_path):
    tok = load_tokenizer(FAMILIES["minimind3"].tokenizer_dir)
    convs = [c for c in toy_conversations() if c[0]["role"] != "system"]
    ds = SFTDataset(chats(tmp_path, convs), tok, 400, FAMILIES["minimind3"], seed=3, add_system_ratio=0.2,
                    empty_think_ratio=0.2)
    prompts = [ds.prompt(i, epoch) for epoch in range(5) for i in range(len(convs))]
    with_system = [p for p in prompts if p.startswith("<|im_start|>system\n")]
    assert 0.13 < len(with_system) / len(prompts) < 0.27
    assert all(any(p.startswith(f"<|im_start|>system\n{s}<|im_end|>") for s in SYSTEM_PROMPTS) for p in with_system)
    kept = [p for p in prompts if "<think>\n\n</think>\n\n" in p]
    assert 0.13 < len(kept) / len(prompts) < 0.27
    assert ds.prompt(5, 2) == ds.prompt(5, 2) and [ds.prompt(i, 0) for i in range(30)] != [ds.prompt(i, 1) for i in range(30)]
    # A conversation where any turn lists tools gets no system prompt (MiniMind-3's pre_processing_chat).
    tooled = [[{**c[0], "tools": '[{"name": "f"}]'}, *c[1:]] for c in convs]
    ds = SFTDataset(chats(tmp_path, tooled), tok, 400, FAMILIES["minimind3"], seed=3, add_system_ratio=1.0)
    assert not any(ds.prompt(i, 0).startswith("<|im_start|>system") for i in range(len(tooled)))


@pytest.mark.parametrize("turns,words", [
    ([{"role": "user", "content": "hi"}], "no assistant turn"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], "turn 2 has role 'bot'"),
    ([{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}], "turn 1 content is a int, not a string"),
    ([{"role": "assistant", "content": "x"}], "a conversation starts with a user turn"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}],
     "only the first turn may be one"),
    ([{"role": "user", "content": "\ud800"}, {"role": "assistant", "content": "x"}], "lone UTF-16 surrogate"),
])
def test_bad_conversations_are_refused_with_file_and_line(tmp_path, turns, words):
    path = chats(tmp_path, [CONV, turns])
    with pytest.raises(DataError, match=r"chat\.jsonl:2: .*" + words.replace("(", r"\(").replace("'", "'")):
        SFTDataset(path, load_tokenizer(FAMILIES["classic"].tokenizer_dir), 64, FAMILIES["classic"]).conversations.validate()
    config = RunConfig.from_flat(dict(**TINY_MODEL, stage="sft", data_path=str(path), save_dir=str(tmp_path / "out"),
                                      from_weight="none", num_workers=0))
    result = runner.invoke(app, ["train", "--config", _save(tmp_path, config)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "chat.jsonl:2" in result.output, result.output


def _save(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    return str(path)


def test_replies_cut_off_by_max_seq_len_are_counted_and_reported(tmp_path):
    long = [{"role": "user", "content": "tell me " * 60}, {"role": "assistant", "content": "ok"}]
    path = chats(tmp_path, [CONV, long, CONV])
    events = []
    config = RunConfig.from_flat(dict(**TINY_MODEL, stage="sft", data_path=str(path), save_dir=str(tmp_path / "out"),
                                      from_weight="none", num_workers=0, epochs=1, batch_size=3, log_interval=1,
                                      device="cpu", dtype="float32"))
    Trainer(config, observers=[events.append]).run()
    notes = [n for e in events if type(e).__name__ == "RunStarted" for n in e.notes]
    assert any("1 of 3 conversations have no reply within max_seq_len 48" in n and "chat.jsonl:2" in n for n in notes)


def test_packing_is_refused_for_sft_in_one_line(tmp_path):
    result = runner.invoke(app, ["train", "--stage", "sft", "--packing", "--save_dir", str(tmp_path)])
    assert result.exit_code == 2 and "packing: does not apply to --stage sft" in result.output


# ---- exact training --------------------------------------------------------------------------------

def _pretrained(tmp_path, arch):
    """A tiny model of the family, trained a few steps, saved where --from_weight finds it."""
    config = RunConfig.from_flat(dict(arch=arch, **TINY_MODEL, epochs=1, batch_size=4, num_workers=0, device="cpu",
                                      dtype="float32", save_interval=1000, log_interval=100,
                                      data_path=str(tiny_corpus(tmp_path, 8)), save_dir=str(tmp_path / "out")))
    Trainer(config).run()
    return config


def _sft_config(tmp_path, arch, **kw):
    values = dict(arch=arch, stage="sft", **{**TINY_MODEL, "max_seq_len": 96}, epochs=2, batch_size=4, num_workers=0,
                  device="cpu", dtype="float32", log_interval=1, save_interval=0, save_dir=str(tmp_path / "out"),
                  data_path=str(chats(tmp_path, toy_conversations(10), "sft.jsonl")), learning_rate=1e-3)
    values.update(kw)
    return RunConfig.from_flat(values)


def test_classic_sft_losses_equal_a_naive_loop(tmp_path):
    pretrain = _pretrained(tmp_path, "classic")
    config = _sft_config(tmp_path, "classic")
    assert config.train.from_weight == "minimind_pretrain" and not config.train.shuffle
    events = []
    trainer = Trainer(config, observers=[events.append])
    trainer.run()
    ours = [e.loss for e in events if isinstance(e, StepLogged)]
    # the naive loop: the reference model from the same pretrained weights, rows from the reference row builder
    from minimind.storage.checkpoint import load_weights

    model = ClassicReference(pretrain.model)
    model.load_state_dict({k: v.float() for k, v in load_weights(tmp_path / "out" / "minimind_pretrain_32.pth").items()})
    tok = load_tokenizer(FAMILIES["classic"].tokenizer_dir)
    rows = [classic_sft_row(tok, c, 96, variant="2504", roles="field") for c in toy_conversations(10)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    expected, iters = [], 3
    for epoch in range(2):
        for step in range(1, iters + 1):
            batch = rows[(step - 1) * 4: step * 4]
            X, Y, M = (torch.stack(t) for t in zip(*batch))
            for g in opt.param_groups:
                g["lr"] = FAMILIES["classic"].lr(epoch * iters + step, 2 * iters, 1e-3)
            logits, aux = model(X)
            loss = classic_masked_loss(logits, Y, M) + aux
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            expected.append(loss.item())
    assert ours == pytest.approx(expected, abs=2e-5)


def test_minimind3_sft_losses_equal_the_reference_loop(tmp_path):
    pretrain = _pretrained(tmp_path, "minimind3")
    config = _sft_config(tmp_path, "minimind3", add_system_ratio=0.0, empty_think_ratio=0.0, accumulation_steps=2)
    assert config.train.from_weight == "pretrain" and config.train.shuffle
    events = []
    Trainer(config, observers=[events.append]).run()
    ours = [e.loss for e in events if isinstance(e, StepLogged)]
    from minimind.storage.checkpoint import load_weights

    reference = MiniMind3Reference(ReferenceConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   num_key_value_heads=2))
    reference.load_state_dict({k: v.float() for k, v in load_weights(tmp_path / "out" / "pretrain_32.pth").items()})
    tok = load_tokenizer(FAMILIES["minimind3"].tokenizer_dir)
    rows = [minimind3_sft_row(tok, c, 96, random.Random(0), add_system_ratio=0.0, empty_think_ratio=0.0)
            for c in toy_conversations(10)]
    log = []
    run_reference_pretraining([(ids.tolist(), labels.tolist()) for ids, labels in rows], epochs=2, batch_size=4,
                              lr=1e-3, accumulation_steps=2, model=reference, log=log)
    windows = [(1, 2), (3,)]  # 10 conversations, batch 4: 3 micro-steps per epoch, accumulation 2
    expected = [sum(log[e * 3 + s - 1]["loss"] for s in w) / len(w) for e in range(2) for w in windows]
    assert ours == pytest.approx(expected, abs=2e-5)
    assert pretrain.train.arch == "minimind3"


@pytest.mark.parametrize("arch", ["classic", "minimind3"])
def test_sft_resume_is_bitwise_exact(tmp_path, arch):
    _pretrained(tmp_path, arch)
    extra = dict(add_system_ratio=0.3, empty_think_ratio=0.5, dropout=0.1) if arch == "minimind3" else dict(shuffle=True)
    config = _sft_config(tmp_path, arch, num_workers=1, **extra)
    full = Trainer(config)
    full.run()
    control = RunControl()

    def stop_after_4(e):
        if isinstance(e, StepLogged) and e.global_step == 4:
            control.stop("test")

    ended = Trainer(config, control=control, observers=[stop_after_4]).run()
    resumed = Trainer(resume=ended.run_dir)
    assert resumed.run().status == "finished"
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


# ---- pretrain -> SFT -> chat, as a user ------------------------------------------------------------

@pytest.mark.slow
def test_pretrain_then_sft_then_chat_through_the_cli(tmp_path):
    out = tmp_path / "out"
    tiny = ["--dim", "32", "--n_layers", "2", "--n_heads", "4", "--num_workers", "0", "--save_dir", str(out)]
    pre = runner.invoke(app, ["train", *tiny, "--max_seq_len", "64", "--epochs", "1", "--data_path",
                              str(tiny_corpus(tmp_path, 8)), "--save_interval", "100"])
    assert pre.exit_code == 0, pre.output
    sft = runner.invoke(app, ["train", "--stage", "sft", *tiny, "--max_seq_len", "96", "--batch_size", "16",
                              "--data_path", str(chats(tmp_path, toy_conversations(32))), "--run-name", "chatty"])
    assert sft.exit_code == 0, sft.output
    assert "initial weights from" in sft.output and (out / "full_sft_32.pth").is_file()
    session = PtySession([sys.executable, "-m", "minimind", "chat", str(out / "runs" / "chatty"), "--seed", "0",
                          "--max-new-tokens", "20000", "--temperature", "0", "--repetition-penalty", "1.0"])
    try:
        session.expect("you> ")
        session.send("hello there\n")
        session.expect("ai> ")
        time.sleep(0.3)
        session.send("\x03")  # Ctrl-C: stops the reply, not the program
        session.expect("you> ", timeout=30)
        session.send("/system Be brief.\n")
        session.expect("system prompt set")
        session.send("/reset\n")
        session.expect("conversation cleared")
        session.send("/exit\n")
        assert session.wait() == 0
    finally:
        session.close()
    assert "[stopped]" in session.output  # a greedy tiny model talks on until Ctrl-C


class PtySession:
    """A program on a pseudo-terminal, read and written as a person at a terminal would."""

    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, {**os.environ, "PYTHONUNBUFFERED": "1"})
        self.output = ""

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str, timeout: float = 120.0) -> None:
        end = time.time() + timeout
        seen_from = len(self.output) - len(text) if text in self.output[-len(text):] else len(self.output)
        while text not in self.output[seen_from:]:
            if time.time() > end:
                raise AssertionError(f"{text!r} did not appear; output:\n{self.output[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:
                    break

    def wait(self, timeout: float = 60.0) -> int:
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        raise AssertionError("the program did not exit")

    def close(self) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        os.close(self.fd)
