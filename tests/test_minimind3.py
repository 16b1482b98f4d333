"""MiniMind-3 as a second exact family: the model, its rows and its loop against the independent naive
implementation of the spec (tests/minimind3_reference.py), its fingerprints, weights and exports."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.config import RunConfig
from minimind.data import PretrainDataset
from minimind.engine.trainer import Trainer
from minimind.events import StepLogged
from minimind.families import FAMILIES
from minimind.families.minimind3 import MINIMIND3, MiniMind3Config
from minimind.models.minimind3 import MiniMind3ForCausalLM
from minimind.models.shared import count_parameters
from minimind.storage.checkpoint import load_weights
from minimind.tokenizer import load_tokenizer
from tests.conftest import ASSETS, needs_assets
from tests.helpers import tiny_corpus
from tests.minimind3_reference import MiniMind3Config as ReferenceConfig
from tests.minimind3_reference import MiniMind3Reference, build_minimind3, pretrain_row, run_reference_pretraining

runner = CliRunner()
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=6400)


def small(seed=0, **kw) -> MiniMind3ForCausalLM:
    torch.manual_seed(seed)
    return MiniMind3ForCausalLM(MiniMind3Config(**{**SMALL, **kw}))


@pytest.mark.parametrize("moe", [False, True])
def test_keys_shapes_and_initial_weights_are_minimind3s(moe):
    kw = dict(use_moe=moe, num_experts=4, num_experts_per_tok=2)
    ours = small(seed=7, **kw)
    reference = build_minimind3(ReferenceConfig(**{**SMALL, **kw}), seed=7)
    ours_sd, ref_sd = ours.state_dict(), reference.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert all(torch.equal(ours_sd[k], ref_sd[k]) for k in ref_sd)  # bit-identical initial weights
    assert ours.model.embed_tokens.weight is ours.lm_head.weight


@pytest.mark.parametrize("moe,flash", [(False, True), (False, False), (True, True)])
def test_logits_and_aux_loss_match_the_reference(moe, flash):
    kw = dict(use_moe=moe, num_experts=4, num_experts_per_tok=2, flash_attn=flash)
    ours = small(seed=3, **kw)
    reference = MiniMind3Reference(ReferenceConfig(**{**SMALL, **kw}))
    reference.load_state_dict(ours.state_dict(), strict=True)
    ids = torch.randint(0, 6400, (2, 37))
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(reference, mode)()
        out = ours(ids)
        logits, aux, _ = reference(ids)
        assert (out.logits - logits).abs().max() <= 1e-5
        assert torch.allclose(out.aux_loss, aux, atol=1e-7)
    assert out.aux_loss > 0 if moe else out.aux_loss == 0


@pytest.mark.parametrize("kw,expected", [
    ({}, 63_912_192), ({"use_moe": True}, 198_416_640), ({"hidden_size": 512}, 30_025_216),
    ({"hidden_size": 512, "use_moe": True}, 91_383_296), ({"hidden_size": 640}, 45_395_840),
    ({"num_hidden_layers": 16}, 122_908_416)])
def test_parameter_counts_match_the_spec(kw, expected):
    with torch.device("meta"):  # shapes only: no memory, no time
        model = MiniMind3ForCausalLM(MiniMind3Config(**kw))
    assert count_parameters(model) == expected


@pytest.mark.slow
def test_the_default_model_has_minimind3s_fingerprints():
    torch.manual_seed(42)
    model = MiniMind3ForCausalLM(MiniMind3Config())
    sd = model.state_dict()
    assert len(sd) == 91
    assert torch.allclose(sd["model.embed_tokens.weight"][0, :4],
                          torch.tensor([0.03175516, -0.01487877, -0.04545280, 0.02954481]), atol=1e-8)
    assert torch.allclose(sd["model.layers.7.mlp.down_proj.weight"][0, :4],
                          torch.tensor([-0.01513874, -0.00342344, 0.01887637, -0.00494054]), atol=1e-8)
    assert sum(p.double().sum().item() for p in model.parameters()) == 14613.45783490903
    ids = torch.tensor([[1, 100, 200, 300, 400, 2]])
    logits = model.eval()(ids).logits
    assert torch.allclose(logits[0, -1, :4], torch.tensor([0.36486927, -0.10228929, 0.01450506, -0.28725588]),
                          atol=1e-5)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert loss.item() == pytest.approx(8.555189, abs=1e-5)


def test_kv_cache_and_batched_generation_equal_full_passes():
    model = small(seed=1).eval()
    ids = torch.randint(0, 6400, (1, 12))
    full = model(ids).logits
    first = model(ids[:, :7], use_cache=True)
    rest = model(ids[:, 7:], past_key_values=first.past_key_values, use_cache=True, start_pos=7)
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5)
    prompts = [[1, 5, 9, 33], [1, 44]]
    one_by_one = [model.generate([p], max_new_tokens=5, temperature=0, eos_token_id=None)[0] for p in prompts]
    assert model.generate(prompts, max_new_tokens=5, temperature=0, eos_token_id=None) == one_by_one


def test_yarn_scaling_follows_the_spec():
    from minimind.models.minimind3 import inverse_frequencies

    plain, _ = inverse_frequencies(MiniMind3Config())
    scaled, factor = inverse_frequencies(MiniMind3Config(inference_rope_scaling=True))
    ratio = plain / scaled
    assert factor == 1.0 and torch.allclose(ratio[:9], torch.ones(9)) and torch.allclose(ratio[21:], torch.full((27,), 16.0))
    assert ((ratio[9:21] > 1) & (ratio[9:21] < 16)).all()


def test_rows_are_minimind3s_wrapped_rows(tmp_path):
    tok = load_tokenizer(MINIMIND3.tokenizer_dir)
    path = tiny_corpus(tmp_path, 6)
    rows = PretrainDataset(path, tok, 40, rows="wrapped")
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    for i, text in enumerate(texts):
        ids, labels = pretrain_row(tok, text, 40)
        X, Y, mask = rows[i]
        assert X.tolist() == ids[:-1] and Y.tolist() == ids[1:]
        assert mask.tolist() == [int(label != -100) for label in labels[1:]]
        assert ids[0] == 1 and 2 in ids  # bos first; the eos is kept even when the text is cut


@needs_assets
def test_toy_rows_with_minimind3s_tokenizer_match_the_spec():
    tok = load_tokenizer(ASSETS / "tokenizer-minimind3")
    rows = PretrainDataset(ASSETS / "toydata" / "pretrain_data.jsonl", tok, 340, rows="wrapped")
    (X0, _, m0), (X1, _, m1) = rows[0], rows[1]
    assert X0[:6].tolist() == [1, 6270, 80, 1873, 420, 768] and int(m0.sum()) == 169
    assert X1[:6].tolist() == [1, 5743, 1100, 1857, 294, 6270] and int(m1.sum()) == 270


@pytest.mark.parametrize("moe", [False, True])
def test_training_matches_the_naive_reference_loop(tmp_path, moe):
    """Our Trainer against the spec's loop written naively: shuffled order (seed + epoch), MiniMind-3's
    schedule, accumulation with the short window divided by accumulation_steps, fp32. With MoE the
    aux loss counts every token of the row, the last one too (MiniMind-3's model shifts inside)."""
    corpus = tiny_corpus(tmp_path, 10)
    experts = dict(use_moe=True, num_experts=4, num_experts_per_tok=2) if moe else {}
    config = RunConfig.from_flat(dict(arch="minimind3", **SMALL, **experts, max_seq_len=32, epochs=2, batch_size=4,
                                      accumulation_steps=2, log_interval=1, save_interval=0, num_workers=0,
                                      device="cpu", dtype="float32", data_path=str(corpus),
                                      save_dir=str(tmp_path / "out")))
    assert config.train.shuffle  # MiniMind-3's default
    events = []
    trainer = Trainer(config, observers=[events.append])
    trainer.run()
    tok = load_tokenizer(MINIMIND3.tokenizer_dir)
    texts = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    log = []
    reference = MiniMind3Reference(ReferenceConfig(**SMALL, **experts))
    run_reference_pretraining([pretrain_row(tok, t, 32) for t in texts], epochs=2, batch_size=4, lr=5e-4,
                              accumulation_steps=2, model=_init_from_seed(reference, 42), log=log)
    # MiniMind-3 logs each micro-step; we log each optimizer step's mean: compare window means.
    windows = [(1, 2), (3,)]  # 3 micro-steps per epoch (4 + 4 + 2 documents), accumulation 2: a short last window
    expected = [sum(log[e * 3 + s - 1]["loss"] for s in w) / len(w) for e in range(2) for w in windows]
    ours = [e.loss for e in events if isinstance(e, StepLogged)]
    assert ours == pytest.approx(expected, abs=2e-5)
    # The aux loss is ~1e-3: compare it on its own scale (one token fewer moves it by ~1e-5).
    expected_aux = [sum(log[e * 3 + s - 1]["aux_loss"] for s in w) / len(w) for e in range(2) for w in windows]
    assert [e.aux_loss for e in events if isinstance(e, StepLogged)] == pytest.approx(expected_aux, rel=1e-5, abs=1e-9)
    assert all(a > 0 for a in expected_aux) if moe else not any(expected_aux)
    assert [e.lr for e in events if isinstance(e, StepLogged)] == pytest.approx(
        [log[e * 3 + w[-1] - 1]["lr"] for e in range(2) for w in windows])
    for key, value in reference.state_dict().items():
        assert torch.allclose(trainer.model.state_dict()[key], value, atol=1e-5), key


def _init_from_seed(reference, seed):
    """The reference initialised exactly as a fresh MiniMind-3 model (the oracle's own recipe)."""
    from tests.minimind3_reference import init_like_minimind3

    return init_like_minimind3(reference, seed)


def test_weights_file_has_minimind3s_keys_and_loads_strict(tmp_path):
    config = RunConfig.from_flat(dict(arch="minimind3", **SMALL, max_seq_len=32, epochs=1, batch_size=4,
                                      accumulation_steps=1, num_workers=0, device="cpu", dtype="float32",
                                      data_path=str(tiny_corpus(tmp_path, 4)), save_dir=str(tmp_path / "out")))
    Trainer(config).run()
    state = load_weights(tmp_path / "out" / "pretrain_64.pth")
    assert len(state) == 1 + 2 * 11 + 2 and all(v.dtype == torch.float16 for v in state.values())
    reference = MiniMind3Reference(ReferenceConfig(**SMALL))
    reference.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])


def test_classic_and_minimind3_weights_are_told_apart(tmp_path):
    classic = FAMILIES["classic"]
    with pytest.raises(Exception, match="use --arch minimind3"):
        classic.own_layout(small().state_dict())
    from minimind.config import LMConfig
    from minimind.models.classic import MiniMindLM

    with pytest.raises(Exception, match="with --arch classic"):
        MINIMIND3.own_layout(MiniMindLM(LMConfig(dim=32, n_layers=1, n_heads=4)).state_dict())


def test_cli_speaks_minimind3s_flags(tmp_path):
    """--hidden_size/--num_hidden_layers/--use_moe 1 as MiniMind-3's scripts spell them, then
    --from_weight and --from_resume 1."""
    from minimind.cli import main

    corpus = tiny_corpus(tmp_path, 6)
    common = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--max_seq_len", "32",
              "--num_workers", "0", "--data_path", str(corpus), "--save_dir", str(tmp_path / "out"), "--epochs", "1",
              "--batch_size", "3", "--dtype", "float32", "--log_interval", "1"]
    with pytest.raises(SystemExit) as done:
        main(["train", "--arch", "minimind3", *common, "--use_moe", "1", "--num_experts", "4"])
    assert done.value.code == 0
    assert (tmp_path / "out" / "pretrain_64_moe.pth").is_file()
    result = runner.invoke(app, ["train", "--arch", "minimind3", *common, "--from_weight", "pretrain", "--use_moe",
                                 "--num_experts", "4", "--save_weight", "second"])
    assert result.exit_code == 0, result.output
    assert "initial weights from" in result.output and "pretrain_64_moe.pth" in result.output
    missing = runner.invoke(app, ["train", "--arch", "minimind3", *common, "--from_weight", "nothing"])
    assert missing.exit_code == 2 and "nothing_64.pth does not exist" in missing.output
    mixed = runner.invoke(app, ["train", "--arch", "minimind3", *common, "--seq_aux"])
    assert mixed.exit_code == 2 and "seq_aux: is a setting of --arch classic" in mixed.output


def test_runs_record_the_family(tmp_path):
    result = runner.invoke(app, ["train", "--arch", "minimind3", "--hidden_size", "64", "--num_hidden_layers", "1",
                                 "--num_attention_heads", "4", "--max_seq_len", "32", "--num_workers", "0",
                                 "--data_path", str(tiny_corpus(tmp_path, 4)), "--save_dir", str(tmp_path / "out"),
                                 "--epochs", "1", "--batch_size", "4", "--run-name", "m3"])
    assert result.exit_code == 0, result.output
    assert re.search(r"model    \d\.\d{3}M parameters \(minimind3: hidden 64, 1 layers, dense, seq 32\)", result.output)
    record = json.loads((tmp_path / "out" / "runs" / "m3" / "config.json").read_text())
    assert record["train"]["arch"] == "minimind3" and record["model"]["hidden_size"] == 64
    shown = runner.invoke(app, ["runs", "show", "m3", "--save-dir", str(tmp_path / "out")])
    assert "minimind3: hidden 64" in shown.output


@pytest.mark.parametrize("moe", [False, True])
def test_hf_export_is_qwen3_and_computes_the_same(tmp_path, moe):
    """transformers loads the export as Qwen3ForCausalLM / Qwen3MoeForCausalLM without remote code:
    the same logits and the same greedy continuation."""
    from transformers import AutoModelForCausalLM

    from minimind.interop import export_hf

    model = small(seed=5, use_moe=moe, num_experts=4, num_experts_per_tok=2).eval()
    with torch.no_grad():  # livelier weights than the 0.02 init, so greedy decoding goes somewhere
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    export_hf(MINIMIND3, model.config, model.state_dict(), load_tokenizer(MINIMIND3.tokenizer_dir), tmp_path,
              MINIMIND3.tokenizer_dir)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False).eval()
    assert type(hf).__name__ == ("Qwen3MoeForCausalLM" if moe else "Qwen3ForCausalLM")
    ids = torch.randint(0, 6400, (2, 30))
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max() <= 1e-4
    prompt = [1, 300, 400, 500]
    ours = model.generate([prompt], max_new_tokens=12, temperature=0, eos_token_id=None)[0]
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == theirs and len(set(ours)) > 1
    # ... and our own tools read the export back (transformers 5 stores MoE experts fused).
    from minimind.weights import load_model

    again, _, family = load_model(tmp_path / "model.safetensors")
    assert family is MINIMIND3 and again.config.use_moe == moe
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)


def test_hf_export_keeps_yarn_rope_scaling(tmp_path):
    """A model that uses YaRN (inference_rope_scaling) exports it as Hugging Face's yarn rope scaling:
    transformers computes the same logits (MiniMind's converter writes null and would lose it)."""
    from transformers import AutoModelForCausalLM

    from minimind.interop import export_hf

    model = small(seed=6, inference_rope_scaling=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    plain = small(seed=6).eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 6400, (1, 40))
    with torch.no_grad():
        assert (model(ids).logits - plain(ids).logits).abs().max() > 1e-3  # YaRN changes every position
    export_hf(MINIMIND3, model.config, model.state_dict(), load_tokenizer(MINIMIND3.tokenizer_dir), tmp_path,
              MINIMIND3.tokenizer_dir)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False).eval()
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max() <= 1e-4


def test_the_benchmark_baseline_is_minimind3_and_computes_what_we_compute():
    """benchmarks/minimind3_loop.py is MiniMind-3's pretraining rebuilt from the spec with no imports from
    this project: it has the spec's init fingerprints and loss, and on a small model the same initial
    weights and bitwise the same logits as ours, so the speed baseline does the same math."""
    import sys

    from tests.helpers import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import minimind3_loop as baseline
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    torch.manual_seed(42)
    default = baseline.MiniMindForCausalLM(baseline.Config())
    torch.testing.assert_close(default.model.embed_tokens.weight[0, :4],
                               torch.tensor([0.03175516, -0.01487877, -0.04545280, 0.02954481]), rtol=0, atol=1e-8)
    ids = torch.tensor([[1, 100, 200, 300, 400, 2]])
    logits, loss = default(ids, labels=ids)
    torch.testing.assert_close(logits[0, -1, :4], torch.tensor([0.36486927, -0.10228929, 0.01450506, -0.28725588]),
                               rtol=0, atol=2e-6)
    assert loss.item() == pytest.approx(8.555189, abs=3e-6)
    del default

    size = {k: SMALL[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")}
    ours = small(seed=3)
    torch.manual_seed(3)
    theirs = baseline.MiniMindForCausalLM(baseline.Config(**size))
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd) and all(torch.equal(ours_sd[k], theirs_sd[k]) for k in ours_sd)
    ids = torch.randint(3, 6400, (2, 40))
    their_logits, _ = theirs(ids)
    assert torch.equal(ours(ids).logits, their_logits)


@pytest.mark.parametrize("skip_padding", [False, True])
def test_a_moe_batch_fed_whole_rows_keeps_its_loss_and_routes_every_token(skip_padding):
    """MiniMind-3 runs its model on the whole row (ids of length L) and shifts inside: the loss the
    trainer computes from X = ids[:-1] plus the last token is the masked CE of the X-only forward,
    and the aux loss is that of a forward over all L tokens."""
    from minimind.engine.loss import Batch, masked_lm_loss, real_targets_only

    model = small(seed=3, use_moe=True, num_experts=4, num_experts_per_tok=2).train()
    ids = torch.randint(3, 6400, (3, 9))
    ids[1, 6:] = 0  # a padded row
    X, Y, mask = ids[:, :-1], ids[:, 1:], (ids[:, 1:] != 0).long()
    batch = real_targets_only(X, Y, mask, trim=False) if skip_padding else Batch(X, Y, mask)
    assert (batch.at is not None) == skip_padding
    wide = batch.with_last_token(Y[:, -1:])
    assert torch.equal(wide.inputs, ids)
    out = model(wide.inputs, logits_at=wide.at)
    full = model(ids)
    assert torch.allclose(out.aux_loss, full.aux_loss, rtol=0, atol=0)
    assert not torch.allclose(model(X).aux_loss, full.aux_loss)  # the last token does move it
    expected = masked_lm_loss(full.logits[:, :-1], Y, mask)
    assert torch.allclose(wide.loss(out.logits), expected, rtol=1e-6, atol=1e-6)
