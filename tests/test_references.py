"""The naive oracles (tests/minimind3_reference.py, tests/sft_reference.py) against the fingerprints and
worked examples of shared/spec/minimind3-and-sft.md. No product code is imported here."""

import math
import random
import types

import pytest
import torch

from tests.classic_reference import ClassicReference
from tests.conftest import ASSETS, needs_assets
from tests.minimind3_reference import (
    MiniMind3Config,
    MiniMind3Reference,
    build_minimind3,
    count_params,
    minimind3_lr,
    pretrain_row,
    read_jsonl_texts,
    rope_inv_freq,
    run_reference_pretraining,
)
from tests.sft_reference import (
    SYSTEM_PROMPTS,
    ScriptedRandom,
    classic_chat_prompt,
    classic_masked_loss,
    classic_sft_row,
    minimind3_chat_prompt,
    minimind3_sft_row,
)

CONV = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 1+1?"},
    {"role": "assistant", "content": "1+1=2."},
]


def _tok(name):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ASSETS / name), local_files_only=True)


@pytest.fixture(scope="module")
def classic_tok():
    if not ASSETS.is_dir():
        pytest.skip("../shared/minimind-assets is absent")
    return _tok("tokenizer")


@pytest.fixture(scope="module")
def m3_tok():
    if not ASSETS.is_dir():
        pytest.skip("../shared/minimind-assets is absent")
    return _tok("tokenizer-minimind3")


@pytest.fixture(scope="module")
def m3_default():
    """The seed-42 default MiniMind-3 (768 x 8) per A4."""
    return build_minimind3(seed=42)


def _meta_model(**kw):
    with torch.device("meta"):
        return MiniMind3Reference(MiniMind3Config(**kw))


# ------------------------------------------------------------------------------------------------
# A1 / A3: config, state dict, parameter counts


def test_config_defaults():
    c = MiniMind3Config()
    assert (c.hidden_size, c.num_hidden_layers, c.use_moe, c.dropout, c.vocab_size) == (768, 8, False, 0.0, 6400)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (8, 4, 96)
    assert c.intermediate_size == 2432 and c.moe_intermediate_size == 2432
    assert MiniMind3Config(hidden_size=512).intermediate_size == 1664
    assert MiniMind3Config(hidden_size=640).intermediate_size == 2048
    assert MiniMind3Config(hidden_size=512).head_dim == 64
    assert (c.max_position_embeddings, c.rms_norm_eps, c.rope_theta) == (32768, 1e-6, 1e6)
    assert (c.num_experts, c.num_experts_per_tok, c.norm_topk_prob, c.router_aux_loss_coef) == (4, 1, True, 5e-4)
    assert c.flash_attn is True and c.tie_word_embeddings is True
    assert c.rope_scaling is None
    y = MiniMind3Config(inference_rope_scaling=True).rope_scaling
    assert y == dict(beta_fast=32, beta_slow=1, factor=16, original_max_position_embeddings=2048,
                     attention_factor=1.0, type="yarn")
    assert MiniMind3Config(max_seq_len=340).max_seq_len == 340


def test_state_dict_layout_dense():
    m = _meta_model()
    sd = m.state_dict()
    expected = [("model.embed_tokens.weight", (6400, 768))]
    for i in range(8):
        p = f"model.layers.{i}."
        expected += [
            (p + "self_attn.q_proj.weight", (768, 768)),
            (p + "self_attn.k_proj.weight", (384, 768)),
            (p + "self_attn.v_proj.weight", (384, 768)),
            (p + "self_attn.o_proj.weight", (768, 768)),
            (p + "self_attn.q_norm.weight", (96,)),
            (p + "self_attn.k_norm.weight", (96,)),
            (p + "input_layernorm.weight", (768,)),
            (p + "post_attention_layernorm.weight", (768,)),
            (p + "mlp.gate_proj.weight", (2432, 768)),
            (p + "mlp.down_proj.weight", (768, 2432)),
            (p + "mlp.up_proj.weight", (2432, 768)),
        ]
    expected += [("model.norm.weight", (768,)), ("lm_head.weight", (6400, 768))]
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected
    assert len(sd) == 91
    assert m.model.embed_tokens.weight is m.lm_head.weight
    names = [n for n, _ in m.named_parameters()]
    assert len(names) == 90 and names[0] == "model.embed_tokens.weight" and "lm_head.weight" not in names
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_state_dict_layout_moe():
    sd = _meta_model(use_moe=True).state_dict()
    assert len(sd) == 171
    keys = list(sd)
    i0 = keys.index("model.layers.0.mlp.gate.weight")
    assert tuple(sd[keys[i0]].shape) == (4, 768)
    exp = []
    for e in range(4):
        exp += [f"model.layers.0.mlp.experts.{e}.{n}_proj.weight" for n in ("gate", "down", "up")]
    assert keys[i0 + 1 : i0 + 13] == exp
    assert keys[i0 - 1] == "model.layers.0.post_attention_layernorm.weight"
    assert tuple(sd["model.layers.0.mlp.experts.3.down_proj.weight"].shape) == (768, 2432)


@pytest.mark.parametrize(
    "kw,total",
    [
        (dict(), 63_912_192),
        (dict(use_moe=True), 198_416_640),
        (dict(hidden_size=512), 30_025_216),
        (dict(hidden_size=512, use_moe=True), 91_383_296),
        (dict(hidden_size=640), 45_395_840),
        (dict(num_hidden_layers=16), 122_908_416),
    ],
)
def test_parameter_counts(kw, total):
    m = _meta_model(**kw)
    assert count_params(m) == total
    if kw.get("use_moe"):
        c = m.config
        one_expert = 3 * c.hidden_size * c.moe_intermediate_size
        active = total - c.num_hidden_layers * (c.num_experts - c.num_experts_per_tok) * one_expert
        if c.hidden_size == 768:
            assert active == 63_936_768


def test_dense_breakdown():
    m = _meta_model()
    layer = m.model.layers[0]
    assert m.model.embed_tokens.weight.numel() == 4_915_200
    assert sum(p.numel() for p in layer.parameters()) == 7_374_528
    a = layer.self_attn
    assert sum(getattr(a, n).weight.numel() for n in ("q_proj", "k_proj", "v_proj", "o_proj")) == 1_769_472
    assert a.q_norm.weight.numel() + a.k_norm.weight.numel() == 192
    assert sum(p.numel() for p in layer.mlp.parameters()) == 5_603_328


# ------------------------------------------------------------------------------------------------
# A2: pieces


def test_yarn_inv_freq():
    base, f1 = rope_inv_freq(96, 1e6, 32768, None)
    yarn, f2 = rope_inv_freq(96, 1e6, 32768, MiniMind3Config(inference_rope_scaling=True).rope_scaling)
    assert f1 == 1.0 and f2 == 1.0
    ratio = yarn / base
    assert torch.equal(yarn[:9], base[:9])  # i <= 8 unchanged
    assert torch.allclose(ratio[21:], torch.full((27,), 1 / 16))  # i >= 21 divided by 16
    for i in range(9, 21):  # linear ramp between low 8 and high 21
        r = (i - 8) / 13
        assert math.isclose(ratio[i].item(), (1 - r) + r / 16, rel_tol=1e-6)
    # not applied when max_position_embeddings / original_max <= 1
    same, _ = rope_inv_freq(96, 1e6, 2048, MiniMind3Config(inference_rope_scaling=True).rope_scaling)
    assert torch.equal(same, base)


def test_moe_with_identical_experts_equals_dense():
    """k=1 and norm_topk_prob give weight exactly 1, so identical experts reproduce the dense MLP."""
    kw = dict(hidden_size=64, num_hidden_layers=2, vocab_size=300, max_position_embeddings=64)
    torch.manual_seed(0)
    dense = MiniMind3Reference(MiniMind3Config(**kw)).eval()
    moe = MiniMind3Reference(MiniMind3Config(use_moe=True, **kw)).eval()
    sd = dense.state_dict()
    msd = {}
    for k, v in moe.state_dict().items():
        if ".mlp.experts." in k:
            layer, rest = k.split(".mlp.experts.")
            msd[k] = sd[layer + ".mlp." + rest.split(".", 1)[1]]
        elif k in sd:
            msd[k] = sd[k]
        else:
            msd[k] = v
    moe.load_state_dict(msd)
    ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        a, aux_d, _ = dense(ids)
        b, aux_m, _ = moe(ids)
    assert torch.allclose(a, b, atol=1e-5)
    assert aux_d.item() == 0.0 and aux_m.item() == 0.0  # eval: no aux loss
    moe.train()
    _, aux, _ = moe(ids)
    # aux = E * coef * sum_e count_e / N * P_e, summed over layers; top-1 with 14 tokens
    assert aux.item() > 0
    assert aux.item() <= 2 * 4 * 5e-4 + 1e-9


def test_moe_aux_loss_formula_k2():
    torch.manual_seed(1)
    c = MiniMind3Config(hidden_size=32, num_hidden_layers=1, vocab_size=50, max_position_embeddings=16,
                        use_moe=True, num_experts_per_tok=2, router_aux_loss_coef=0.1)
    m = MiniMind3Reference(c).train()
    ids = torch.randint(0, 50, (2, 5))
    x = m.model.layers[0].post_attention_layernorm
    captured = {}
    hook = x.register_forward_hook(lambda mod, inp, out: captured.__setitem__("h", out.detach()))
    _, aux, _ = m(ids)
    hook.remove()
    h = captured["h"].reshape(-1, 32)
    scores = torch.softmax(h @ m.model.layers[0].mlp.gate.weight.t(), -1)
    idx = scores.topk(2, -1).indices
    counts = torch.bincount(idx.reshape(-1), minlength=4).float()
    expect = 4 * 0.1 * (counts / h.shape[0] * scores.mean(0)).sum()
    assert math.isclose(aux.item(), expect.item(), rel_tol=1e-5)


# ------------------------------------------------------------------------------------------------
# A4: initialisation fingerprints (768 x 8)


@pytest.mark.slow
def test_init_fingerprints(m3_default):
    sd = m3_default.state_dict()
    torch.testing.assert_close(
        sd["model.embed_tokens.weight"][0, :4], torch.tensor([0.03175516, -0.01487877, -0.04545280, 0.02954481]),
        atol=5e-9, rtol=0)
    torch.testing.assert_close(
        sd["model.layers.0.self_attn.q_proj.weight"][0, :4],
        torch.tensor([-0.03258300, 0.00491578, 0.00959621, 0.00773556]), atol=5e-9, rtol=0)
    torch.testing.assert_close(
        sd["model.layers.7.mlp.down_proj.weight"][0, :4],
        torch.tensor([-0.01513874, -0.00342344, 0.01887637, -0.00494054]), atol=5e-9, rtol=0)
    total = sum(p.double().sum() for p in m3_default.parameters()).item()
    assert total == pytest.approx(14613.45783490903, abs=1e-9)
    assert torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    for k, v in sd.items():
        if k.endswith("norm.weight"):
            assert torch.equal(v, torch.ones_like(v))


@pytest.mark.slow
def test_init_logits_and_loss(m3_default):
    ids = torch.tensor([[1, 100, 200, 300, 400, 2]])
    with torch.no_grad():
        logits, aux, loss = m3_default(ids, labels=ids)
    # spec values come from SDPA; the naive path agrees to ~6e-7 on the dev machine (spec: paths agree to 4.5e-6)
    torch.testing.assert_close(logits[0, -1, :4], torch.tensor([0.36486927, -0.10228929, 0.01450506, -0.28725588]),
                               atol=5e-6, rtol=0)
    assert loss.item() == pytest.approx(8.555189, abs=3e-6)
    assert aux.item() == 0.0


# ------------------------------------------------------------------------------------------------
# A8 / A9


@needs_assets
def test_pretrain_rows_toy(m3_tok):
    texts = read_jsonl_texts(ASSETS / "toydata" / "pretrain_data.jsonl")
    assert len(texts) == 2
    rows = [pretrain_row(m3_tok, t, 340) for t in texts]
    (i0, l0), (i1, l1) = rows
    assert i0[:6] == [1, 6270, 80, 1873, 420, 768]
    assert i1[:6] == [1, 5743, 1100, 1857, 294, 6270]
    for (ids, labels), n_text in zip(rows, (168, 269)):
        assert len(ids) == len(labels) == 340
        assert ids[n_text + 1] == 2 and all(i == 0 for i in ids[n_text + 2 :])
        assert sum(l != -100 for l in labels) == n_text + 2
        assert sum(l != -100 for l in labels[1:]) == n_text + 1  # effective targets after the shift
    # truncation keeps the head and the eos
    ids, labels = pretrain_row(m3_tok, texts[0], 20)
    assert ids[:6] == [1, 6270, 80, 1873, 420, 768] and ids[-1] == 2 and len(ids) == 20 and -100 not in labels


def test_lr_schedule():
    assert [round(minimind3_lr(e + 1, 5, 5e-4), 8) for e in range(5)] == [
        0.00045703, 0.00034453, 0.00020547, 0.00009297, 0.00005000]
    assert [round(minimind3_lr(e + 1, 3, 5e-4), 8) for e in range(3)] == [0.0003875, 0.0001625, 0.00005]
    assert minimind3_lr(0, 10, 1.0) == pytest.approx(1.0)


@pytest.mark.slow
@needs_assets
def test_seed_run(m3_tok):
    texts = read_jsonl_texts(ASSETS / "toydata" / "pretrain_data.jsonl")
    rows = [pretrain_row(m3_tok, t, 340) for t in texts]
    log = []
    losses = run_reference_pretraining(rows, MiniMind3Config(), epochs=3, batch_size=32, lr=5e-4,
                                       accumulation_steps=8, grad_clip=1.0, seed=42, log=log)
    assert [f"{x:.4f}" for x in losses] == ["8.9631", "7.9607", "7.3462"]
    assert [f"{r['lr']:.8f}" for r in log] == ["0.00038750", "0.00016250", "0.00005000"]
    assert all(r["aux_loss"] == 0.0 and r["iters"] == 1 for r in log)


# ------------------------------------------------------------------------------------------------
# B1: classic SFT

B14_IDS = [1, 85, 736, 201, 608, 345, 562, 261, 75, 47, 807, 270, 1589, 400, 411, 1946, 740, 1728, 945, 1184, 286,
           2, 201, 1, 320, 275, 201, 42, 75, 2, 201, 1, 1078, 538, 501, 201, 42, 392, 338, 3, 1747, 343, 384, 545,
           33, 2, 201, 1, 320, 275, 201, 3526, 370, 730, 13, 19, 33, 2, 201, 1, 1078, 538, 501, 201, 19, 13, 19, 31,
           20, 16, 2, 201, 0, 0, 0]


@needs_assets
def test_classic_patterns(classic_tok):
    t = classic_tok
    assert t("<s>assistant\n").input_ids == [1, 1078, 538, 501, 201]
    assert t("</s>\n").input_ids == [2, 201]
    assert t("<s>assistant").input_ids == [1, 1078, 538, 501]
    assert t("</s>").input_ids == [2]


@needs_assets
def test_classic_worked_example(classic_tok):
    prompt = classic_chat_prompt(CONV)
    assert prompt == ("<s>system\n你是 MiniMind，是一个有用的人工智能助手。</s>\n<s>user\nHi</s>\n<s>assistant\n"
                      "Hello! How can I help?</s>\n<s>user\nWhat is 1+1?</s>\n<s>assistant\n1+1=2.</s>\n")
    assert len(classic_tok(prompt).input_ids) == 72
    X, Y, M = classic_sft_row(classic_tok, CONV, 75, "2502")
    assert X.dtype == Y.dtype == M.dtype == torch.long
    assert X.tolist() == B14_IDS[:74] and Y.tolist() == B14_IDS[1:75] and len(M) == 74
    assert [k for k in range(74) if M[k]] == list(range(36, 47)) + list(range(64, 72))
    trained = classic_tok.convert_ids_to_tokens([Y[k].item() for k in range(74) if M[k]])
    assert trained[-1] == "<unk>" and trained[10] == "<s>" and trained[8] == "</s>"
    X4, Y4, M4 = classic_sft_row(classic_tok, CONV, 75, "2504")
    assert torch.equal(X4, X) and torch.equal(Y4, Y)
    assert [k for k in range(74) if M4[k]] == list(range(35, 46)) + list(range(63, 71))
    # roles from the field give the same row for a conversation that alternates user/assistant
    for v in ("2502", "2504"):
        a = classic_sft_row(classic_tok, CONV, 75, v, roles="parity")
        b = classic_sft_row(classic_tok, CONV, 75, v, roles="field")
        assert all(torch.equal(p, q) for p, q in zip(a, b))


@needs_assets
def test_classic_parity_vs_role_field(classic_tok):
    conv = [{"role": "system", "content": "Be brief."}] + CONV[:2]
    X, Y, M = classic_sft_row(classic_tok, conv, 64, "2502", roles="parity")
    text = classic_tok.decode(X.tolist())
    # parity: the system message became a user turn and "Hi" an assistant turn; the default system stays
    assert text.startswith("<s>system\n你是 MiniMind，是一个有用的人工智能助手。</s>\n"
                           "<s>user\nBe brief.</s>\n<s>assistant\nHi</s>\n")
    X2, _, _ = classic_sft_row(classic_tok, conv, 64, "2502", roles="field")
    assert classic_tok.decode(X2.tolist()).startswith("<s>system\nBe brief.</s>\n<s>user\nHi</s>\n<s>assistant\nHello!")


@needs_assets
def test_classic_truncated_turn_masked_to_end(classic_tok):
    X, Y, M = classic_sft_row(classic_tok, CONV, 40, "2502")
    assert [k for k in range(39) if M[k]] == list(range(36, 39))
    X, Y, M = classic_sft_row(classic_tok, CONV, 40, "2504")
    assert [k for k in range(39) if M[k]] == list(range(35, 39))


@needs_assets
def test_classic_fresh_model_loss(classic_tok):
    c = types.SimpleNamespace(dim=512, n_layers=8, n_heads=8, n_kv_heads=2, vocab_size=6400, norm_eps=1e-5,
                              rope_theta=1e6, hidden_dim=None, multiple_of=64, use_moe=False, dropout=0.0,
                              max_seq_len=512, flash_attn=True)
    torch.manual_seed(42)
    model = ClassicReference(c)
    assert sum(p.numel() for p in model.parameters()) == 25_829_888
    X, Y, M = classic_sft_row(classic_tok, CONV, 75, "2502")
    with torch.no_grad():
        logits, _ = model(X[None])
    assert classic_masked_loss(logits, Y[None], M[None]).item() == pytest.approx(8.843006, abs=3e-6)


# ------------------------------------------------------------------------------------------------
# B2: MiniMind-3 SFT

B23_A_IDS = [1, 832, 311, 234, 75, 108, 2, 234, 1, 1388, 570, 811, 234, 1602, 36, 1114, 541, 442, 843, 66, 2, 234, 1,
             832, 311, 234, 1146, 395, 482, 46, 52, 66, 2, 234, 1, 1388, 570, 811, 234, 52, 46, 52, 64, 53, 49, 2, 234,
             0, 0, 0]
B23_A_LABELS = ([-100] * 13 + [1602, 36, 1114, 541, 442, 843, 66, 2, 234] + [-100] * 17
                + [52, 46, 52, 64, 53, 49, 2, 234] + [-100] * 3)
B23_B_IDS = [1, 832, 311, 234, 75, 108, 2, 234, 1, 1388, 570, 811, 234, 25, 234, 234, 26, 234, 234, 1602, 36, 1114, 541,
             442, 843, 66, 2, 234, 1, 832, 311, 234, 1146, 395, 482, 46, 52, 66, 2, 234, 1, 1388, 570, 811, 234, 25,
             234, 234, 26, 234, 234, 52, 46, 52, 64, 53, 49, 2, 234, 0, 0]


@needs_assets
def test_minimind3_patterns(m3_tok):
    assert m3_tok("<|im_start|>assistant\n").input_ids == [1, 1388, 570, 811, 234]
    assert m3_tok("<|im_end|>\n").input_ids == [2, 234]
    assert m3_tok("<think>\n\n</think>\n\n").input_ids == [25, 234, 234, 26, 234, 234]
    assert m3_tok("\n").input_ids == [234] and m3_tok(" ").input_ids == [256]


def test_minimind3_template_worked_example():
    assert minimind3_chat_prompt(CONV) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello! How can I help?"
        "<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "1+1=2.<|im_end|>\n")
    assert minimind3_chat_prompt(CONV[:1], add_generation_prompt=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert minimind3_chat_prompt(CONV[:1], add_generation_prompt=True, open_thinking=True).endswith(
        "<|im_start|>assistant\n<think>\n")


@needs_assets
def test_minimind3_sft_variant_a(m3_tok):
    rng = ScriptedRandom([0.5, 0.5])
    ids, labels = minimind3_sft_row(m3_tok, CONV, 50, rng)
    assert rng.calls == ["random", "random"]
    assert ids.tolist() == B23_A_IDS and labels.tolist() == B23_A_LABELS
    assert len(m3_tok(m3_tok.decode(ids[:47].tolist())).input_ids) == 47
    assert sum(l != -100 for l in labels.tolist()) == 17


@needs_assets
def test_minimind3_sft_variant_b(m3_tok):
    ids, labels = minimind3_sft_row(m3_tok, CONV, 61, ScriptedRandom([0.5, 0.2]))  # 0.2 is not > 0.2: kept
    assert ids.tolist() == B23_B_IDS
    lab = labels.tolist()
    pos = [j for j in range(61) if lab[j] != -100]
    assert pos == list(range(13, 28)) + list(range(45, 59))
    assert all(lab[j] == B23_B_IDS[j] for j in pos)


@needs_assets
def test_minimind3_random_system_prompt(m3_tok):
    rng = ScriptedRandom([0.1, 0.9], choices=[6])
    ids, labels = minimind3_sft_row(m3_tok, CONV, 80, rng)
    assert rng.calls == ["random", "choice", "random"]
    text = m3_tok.decode(ids.tolist())
    assert text.startswith("<|im_start|>system\nYou are minimind, a lightweight intelligent assistant.<|im_end|>\n"
                           "<|im_start|>user\nHi")
    assert "<think>" not in text
    # a conversation that already starts with a system message draws no system-prompt random()
    rng = ScriptedRandom([0.9])
    minimind3_sft_row(m3_tok, [{"role": "system", "content": "S"}] + CONV, 80, rng)
    assert rng.calls == ["random"]
    # with a real random.Random: same draws as a scripted replay of that generator
    for seed in range(20):
        r = random.Random(seed)
        v1 = r.random()
        script = ScriptedRandom([v1], choices=[])
        if v1 < 0.2:
            script.choices.append(SYSTEM_PROMPTS.index(r.choice(SYSTEM_PROMPTS)))
        script.values.append(r.random())
        a = minimind3_sft_row(m3_tok, CONV, 90, random.Random(seed))
        b = minimind3_sft_row(m3_tok, CONV, 90, script)
        assert all(torch.equal(p, q) for p, q in zip(a, b))


@needs_assets
def test_minimind3_tool_call_labels(m3_tok):
    tools = [{"type": "function", "function": {"name": "calc", "description": "计算数学表达式",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"]}}}]
    conv = [
        {"role": "system", "content": "", "tools": __import__("json").dumps(tools, ensure_ascii=False)},
        {"role": "user", "content": "256*37=?"},
        {"role": "assistant", "content": "", "tool_calls": '[{"name": "calc", "arguments": {"expression": "256 * 37"}}]'},
        {"role": "tool", "content": "9472"},
        {"role": "assistant", "content": "9472."},
    ]
    rng = ScriptedRandom([0.9])  # tools: no system-prompt draw; empty think removed
    ids, labels = minimind3_sft_row(m3_tok, conv, 400, rng)
    assert rng.calls == ["random"]
    lab = [l for l in labels.tolist() if l != -100]
    assert m3_tok.decode(lab) == ('<tool_call>\n{"name": "calc", "arguments": {"expression": "256 * 37"}}\n'
                                  "</tool_call><|im_end|>\n9472.<|im_end|>\n")


@needs_assets
def test_minimind3_truncated_turn_labelled_to_end(m3_tok):
    ids, labels = minimind3_sft_row(m3_tok, CONV, 17, ScriptedRandom([0.5, 0.5]))
    assert [j for j in range(17) if labels[j] != -100] == [13, 14, 15, 16]


@pytest.mark.slow
@needs_assets
def test_minimind3_fresh_model_sft_loss(m3_tok, m3_default):
    ids, labels = minimind3_sft_row(m3_tok, CONV, 50, ScriptedRandom([0.5, 0.5]))
    with torch.no_grad():
        _, _, loss = m3_default(ids[None], labels=labels[None])
    assert loss.item() == pytest.approx(8.903176, abs=3e-6)


# ------------------------------------------------------------------------------------------------
# hand-built templates vs the tokenizers' own apply_chat_template

_U = lambda c: {"role": "user", "content": c}  # noqa: E731
_A = lambda c, **k: {"role": "assistant", "content": c, **k}  # noqa: E731
_S = lambda c: {"role": "system", "content": c}  # noqa: E731
_T = lambda c: {"role": "tool", "content": c}  # noqa: E731

CLASSIC_CASES = [
    CONV,
    [_S("Be brief.")] + CONV,
    [_U("你好")],
    [_S("sys"), _U("a"), _A("b"), _T("x"), _U("c")],
    [_U("a"), _A("b"), _S("late system"), _U("c")],
]

_TOOLS = [{"type": "function", "function": {"name": "calc", "description": "计算器", "parameters": {
    "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
_CALL = [{"name": "calc", "arguments": {"expression": "256 * 37"}}]
M3_CASES = [
    (CONV, None),
    ([_S("Be brief.")] + CONV, None),
    ([_U("你好")], None),
    ([_U("q"), _A("a", reasoning_content="let me think\n"), _U("q2"), _A("b", reasoning_content="\nmore")], None),
    ([_U("q"), _A("<think>\nr1\n</think>\n\nans"), _U("q2"), _A("pre<think>r2</think>post")], None),
    ([_U("q"), _A("<think>\nr1\n</think>\n\nans", reasoning_content="explicit")], None),
    ([_S("You can call tools."), _U("256*37?"), _A("", tool_calls=_CALL), _T("9472"), _A("9472.")], _TOOLS),
    ([_U("256*37?"), _A("", tool_calls=_CALL), _T("9472"), _A("9472.")], _TOOLS),
    ([_U("two"), _A("sure", tool_calls=[{"type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
                                        {"name": "b", "arguments": {"y": "é"}}]), _T("r1"), _T("r2"), _A("done")],
     _TOOLS),
    ([_U("a"), _A("b"), _S("late system"), _U("c")], None),
    ([_U("a"), _A(None, tool_calls=_CALL), _T("1")], None),
    ([_T("orphan"), _U("a")], None),
]


@needs_assets
@pytest.mark.parametrize("case", range(len(CLASSIC_CASES)))
@pytest.mark.parametrize("gen", [False, True])
def test_classic_template_matches_tokenizer(classic_tok, case, gen):
    msgs = CLASSIC_CASES[case]
    assert classic_chat_prompt(msgs) == classic_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


@needs_assets
@pytest.mark.parametrize("case", range(len(M3_CASES)))
@pytest.mark.parametrize("gen,think", [(False, False), (True, False), (True, True)])
def test_minimind3_template_matches_tokenizer(m3_tok, case, gen, think):
    msgs, tools = M3_CASES[case]
    kw = dict(tokenize=False, add_generation_prompt=gen)
    if tools:
        kw["tools"] = tools
    if think:
        kw["open_thinking"] = True
    ours = minimind3_chat_prompt(msgs, tools=tools, add_generation_prompt=gen, open_thinking=think)
    assert ours == m3_tok.apply_chat_template(msgs, **kw)
