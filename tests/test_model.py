import math

import pytest
import torch

from minimind.config import LMConfig
from minimind.families.classic import CLASSIC
from minimind.models.classic import MiniMindLM, MoEGate
from minimind.models.shared import _penalize_repeats, _sample, count_parameters
from tests.classic_reference import ClassicReference

TINY = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64)


def tiny(**kw) -> MiniMindLM:
    torch.manual_seed(0)
    return MiniMindLM(LMConfig(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("kw,expected", [
    (dict(dim=512, n_layers=2, max_seq_len=512), 8_915_456),
    (dict(dim=512, n_layers=8), 25_829_888),
    (dict(dim=768, n_layers=16), 104_030_976),
    (dict(dim=512, n_layers=2, use_moe=True), 26_221_056),
    (dict(dim=640, n_layers=8, use_moe=True), 145_029_760),
])
def test_parameter_counts_match_minimind(kw, expected):
    with torch.device("meta"):
        model = MiniMindLM(LMConfig(**kw))
    assert count_parameters(model) == expected
    assert f"{count_parameters(model) / 1e6:.3f}" == f"{expected / 1e6:.3f}"


def test_state_dict_keys_are_classic():
    with torch.device("meta"):
        sd = MiniMindLM(LMConfig(dim=512, n_layers=2, max_seq_len=512)).state_dict()
    assert len(sd) == 21
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["tok_embeddings.weight"] == (6400, 512)
    assert shapes["output.weight"] == (6400, 512)
    assert shapes["norm.weight"] == (512,)
    for i in range(2):
        p = f"layers.{i}."
        assert shapes[p + "attention.wq.weight"] == (512, 512)
        assert shapes[p + "attention.wk.weight"] == (128, 512)
        assert shapes[p + "attention.wv.weight"] == (128, 512)
        assert shapes[p + "attention.wo.weight"] == (512, 512)
        assert shapes[p + "attention_norm.weight"] == (512,)
        assert shapes[p + "ffn_norm.weight"] == (512,)
        assert shapes[p + "feed_forward.w1.weight"] == (1408, 512)
        assert shapes[p + "feed_forward.w2.weight"] == (512, 1408)
        assert shapes[p + "feed_forward.w3.weight"] == (1408, 512)


def test_moe_state_dict_keys():
    with torch.device("meta"):
        sd = MiniMindLM(LMConfig(dim=64, n_layers=1, n_heads=4, vocab_size=100, use_moe=True)).state_dict()
    assert "layers.0.feed_forward.gate.weight" in sd and tuple(sd["layers.0.feed_forward.gate.weight"].shape) == (4, 64)
    for j in range(4):
        assert f"layers.0.feed_forward.experts.{j}.w2.weight" in sd
    assert "layers.0.feed_forward.shared_experts.w1.weight" in sd


def test_tied_embeddings():
    model = tiny()
    assert model.output.weight is model.tok_embeddings.weight
    sd = model.state_dict()
    assert sd["output.weight"].data_ptr() == sd["tok_embeddings.weight"].data_ptr()


@pytest.mark.parametrize("kw", [{}, {"dim": 512, "n_layers": 2, "n_heads": 8, "vocab_size": 6400}, {"flash_attn": False}])
def test_logits_match_classic_reference_after_fp16_pth_roundtrip(tmp_path, kw):
    config = LMConfig(**{**TINY, **kw})
    torch.manual_seed(1)
    reference = ClassicReference(config).eval()
    # A classic checkpoint: fp16 CPU state_dict saved with torch.save, loaded strictly.
    torch.save({k: v.half() for k, v in reference.state_dict().items()}, tmp_path / "classic.pth")
    sd = torch.load(tmp_path / "classic.pth", weights_only=True)
    reference.load_state_dict(sd, strict=True)
    model = MiniMindLM(config).eval()
    model.load_state_dict(sd, strict=True)
    ids = torch.randint(0, config.vocab_size, (2, 48))
    with torch.no_grad():
        ours, (theirs, _) = model(ids).logits, reference(ids)
    assert (ours - theirs).abs().max().item() < 1e-5


@pytest.mark.parametrize("seq_aux", [True, False])
def test_moe_matches_classic_reference_in_eval_and_training(seq_aux):
    config = LMConfig(**{**TINY, "use_moe": True, "seq_aux": seq_aux, "n_layers": 1})
    torch.manual_seed(2)
    model = MiniMindLM(config)
    reference = ClassicReference(config)
    reference.load_state_dict(model.state_dict(), strict=True)
    ids = torch.randint(0, config.vocab_size, (2, 12))
    for training in (False, True):
        model.train(training), reference.train(training)
        with torch.no_grad():
            out = model(ids)
            logits, aux = reference(ids)
        assert (out.logits - logits).abs().max().item() < 1e-5
        assert abs(out.aux_loss.item() - float(aux)) < 1e-6
        assert (out.aux_loss.item() > 0) == training


def test_moe_aux_loss_hand_computed():
    config = LMConfig(dim=2, n_heads=1, n_kv_heads=1, use_moe=True, n_routed_experts=2,
                      num_experts_per_tok=1, aux_loss_alpha=0.1)
    gate = MoEGate(config).train()
    with torch.no_grad():
        gate.weight.copy_(torch.eye(2))  # gate logits = the input itself
    x = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])  # both tokens prefer expert 0
    idx, weight, aux = gate(x)
    assert idx.view(-1).tolist() == [0, 0]
    # scores[:, 0] = e^2/(e^2+1), e/(e+1); ce = [2, 0] (counts / (T*k/E) = 2 / 1)
    p0 = (math.exp(2) / (math.exp(2) + 1) + math.e / (math.e + 1)) / 2
    assert aux.item() == pytest.approx(2 * p0 * 0.1, abs=1e-6)  # 0.161186
    gate.seq_aux = False  # fi = mean(one_hot) * E = [2, 0]; Pi = mean scores
    assert gate(x)[2].item() == pytest.approx(2 * p0 * 0.1, abs=1e-6)
    gate.eval()
    assert gate(x)[2].item() == 0.0


def test_causality():
    model = tiny()
    ids = torch.randint(0, 300, (1, 20))
    changed = ids.clone()
    changed[0, 11:] = torch.randint(0, 300, (9,))
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :11], b[:, :11], atol=1e-6)
    assert not torch.allclose(a[:, 11:], b[:, 11:], atol=1e-3)


@pytest.mark.parametrize("use_moe", [False, True])
def test_kv_cache_decoding_equals_full_forward(use_moe):
    model = tiny(use_moe=use_moe)
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)  # prefill, then one token at a time
        steps = [out.logits]
        past = out.past_key_values
        for t in range(5, 16):
            out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True, start_pos=t)
            past = out.past_key_values
            steps.append(out.logits)
        assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
        # chunked prefill (several new tokens against a cache) keeps the causal mask right
        first = model(ids[:, :9], use_cache=True)
        rest = model(ids[:, 9:], past_key_values=first.past_key_values, use_cache=True, start_pos=9)
        assert torch.allclose(rest.logits, full[:, 9:], atol=1e-5)
    k, v = past[0]
    assert k.shape == (2, 16, 2, 16) and v.shape == (2, 16, 2, 16)


def test_no_quadratic_buffers():
    config = LMConfig(dim=64, n_layers=2, n_heads=4, vocab_size=100, max_seq_len=8192)
    model = MiniMindLM(config)
    assert sum(b.numel() for b in model.buffers()) <= 2 * config.max_seq_len * config.head_dim


def test_generate_counts_new_tokens_and_stops_at_eos():
    model = tiny()
    prompt = [1, 5, 9]
    out = model.generate([prompt], max_new_tokens=7, temperature=0, eos_token_id=None)
    assert len(out[0]) == 7
    first = out[0][0]
    stopped = model.generate([prompt], max_new_tokens=7, temperature=0, eos_token_id=first)
    assert stopped == [[first]]


def test_batched_generation_equals_one_prompt_at_a_time():
    model = tiny()
    prompts = [[1, 5, 9, 20, 33, 7], [1, 42], [1, 8, 8, 100]]
    one_by_one = [model.generate([p], max_new_tokens=6, temperature=0, eos_token_id=None)[0] for p in prompts]
    assert model.generate(prompts, max_new_tokens=6, temperature=0, eos_token_id=None) == one_by_one
    no_cache = model.generate(prompts, max_new_tokens=6, temperature=0, eos_token_id=None, use_cache=False)
    assert no_cache == one_by_one


def test_streaming_and_seeded_sampling():
    model = tiny()
    stream = model.generate_stream([[1, 2, 3], [1, 4]], max_new_tokens=4, temperature=1.0, top_p=0.9,
                                   generator=torch.Generator().manual_seed(7), eos_token_id=None)
    steps = list(stream)
    assert len(steps) == 4 and all(s.shape == (2,) for s in steps)
    again = model.generate([[1, 2, 3], [1, 4]], max_new_tokens=4, temperature=1.0, top_p=0.9,
                           generator=torch.Generator().manual_seed(7), eos_token_id=None)
    assert torch.stack(steps, 1).tolist() == again


def test_top_p_keeps_only_the_nucleus():
    torch.manual_seed(3)
    logits = torch.tensor([[5.0, 4.0, -10.0, -10.0]])
    draws = {int(_sample(logits, 1.0, 0.5, None)) for _ in range(50)}
    assert draws == {0}


def test_top_p_zero_keeps_the_most_likely_token_and_top_k_cuts_the_rest():
    """MiniMind-3's generate(): marks shifted right by one, so the first token always stays."""
    logits = torch.tensor([[1.0, 1.2, 0.9, 1.1]])
    gen = torch.Generator().manual_seed(0)
    assert {int(_sample(logits, 1.0, 0.0, gen)) for _ in range(40)} == {1}
    assert {int(_sample(logits, 1.0, 1.0, gen, top_k=2)) for _ in range(200)} == {1, 3}


def test_repetition_penalty_pushes_seen_tokens_down():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    ids = torch.tensor([[0, 1, 0]])
    real = torch.tensor([[False, True, True]])  # position 0 is padding: token 0 only seen once, at position 2
    out = _penalize_repeats(logits, ids, real, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]


def test_flops_per_token_seed_config():
    config = LMConfig(dim=512, n_layers=2, max_seq_len=512)
    n_matmul = 2 * (512 * 512 * 2 + 512 * 128 * 2 + 3 * 512 * 1408) + 512 * 6400
    expected = 3 * (2 * n_matmul + 4 * 2 * 8 * 64 * 511)
    assert CLASSIC.flops_per_token(config, 511) == expected
    assert CLASSIC.flops_per_token(config, 511, training=False) == expected / 3


def test_logits_are_bitwise_those_of_the_spec_built_benchmark_baseline():
    """benchmarks/minimind_classic_loop.py is MiniMind classic rebuilt from the spec with no imports
    from this project (complex RoPE, SDPA is_causal): the speed baseline computes what we compute."""
    import sys

    from tests.helpers import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import minimind_classic_loop as baseline
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    torch.manual_seed(42)
    ours = MiniMindLM(LMConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64))
    torch.manual_seed(42)
    theirs = baseline.MiniMindLM(baseline.Config(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64))
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    ids = torch.randint(0, 6400, (2, 63))
    assert torch.equal(ours(ids).logits, theirs(ids))
