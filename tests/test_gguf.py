"""GGUF export (`minimind export --format gguf`): the file read back with gguf's own reader, atomic
writing, the refusals, and (slow, with llama-cpp-python) llama.cpp itself running the file: the same
tokens, logits and greedy continuation as our model."""

import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.errors import CheckpointError
from minimind.families import FAMILIES
from minimind.tokenizer import load_tokenizer

gguf = pytest.importorskip("gguf", reason="the GGUF export needs the gguf package: pip install gguf")
from minimind.gguf_export import export_gguf  # noqa: E402  (after the skip: it needs gguf)

runner = CliRunner()
CLASSIC, MINIMIND3 = FAMILIES["classic"], FAMILIES["minimind3"]
# head_dim 32 (llama.cpp's CPU build also ran head sizes 10, 12, 16, 64 and 96 to float error when this was written).
MODELS = {
    "classic": (CLASSIC, dict(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=6400, max_seq_len=256)),
    "minimind3": (MINIMIND3, dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  vocab_size=6400, max_seq_len=256)),
    "minimind3-moe": (MINIMIND3, dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      vocab_size=6400, max_seq_len=256, use_moe=True, num_experts=4, num_experts_per_tok=2)),
}
ARCH = {"classic": "llama", "minimind3": "qwen3", "minimind3-moe": "qwen3moe"}


def tiny(kind: str, std: float = 0.1, **overrides):
    """A seeded tiny model; std > 0 redraws its matrices N(0, std): livelier than the 0.02 init, so greedy
    decoding goes somewhere. (0.3 as in the HF export test amplifies f16 rounding past 2e-2 in llama.cpp.)"""
    family, values = MODELS[kind]
    torch.manual_seed(0)
    model = family.build_model(family.config_class(**{**values, **overrides})).eval()
    if std:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0, std)
    return family, model


def export(kind: str, path, outtype: str = "f32", **overrides):
    family, model = tiny(kind, **overrides)
    tok = load_tokenizer(family.tokenizer_dir)
    summary = export_gguf(family, model.config, model.state_dict(), tok, path, outtype, family.tokenizer_dir)
    return family, model, tok, summary


def field(reader, key):
    return reader.fields[key].contents()


@pytest.mark.parametrize("kind", list(MODELS))
def test_gguf_reads_back_with_llama_cpp_names_metadata_and_tokenizer(tmp_path, kind):
    family, model, tok, summary = export(kind, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    arch = ARCH[kind]
    assert summary.arch == field(reader, "general.architecture") == arch
    config = model.config
    dim = getattr(config, family.size_field)
    assert field(reader, f"{arch}.embedding_length") == dim
    assert field(reader, f"{arch}.block_count") == 2
    assert field(reader, f"{arch}.attention.head_count") == 4 and field(reader, f"{arch}.attention.head_count_kv") == 2
    assert field(reader, f"{arch}.vocab_size") == 6400 and field(reader, "general.file_type") == 0
    assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(config.rope_theta)
    tensors = {t.name: t for t in reader.tensors}
    names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(2) for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm")}
    if kind == "minimind3-moe":
        names |= {f"blk.{i}.{n}.weight" for i in range(2) for n in ("ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps",
                                                                      "ffn_down_exps", "attn_q_norm", "attn_k_norm")}
        assert field(reader, "qwen3moe.expert_count") == 4 and field(reader, "qwen3moe.expert_used_count") == 2
        assert tensors["blk.1.ffn_gate_exps.weight"].shape.tolist() == [128, config.moe_intermediate, 4]  # ggml order
        assert tensors["blk.1.ffn_down_exps.weight"].shape.tolist() == [config.moe_intermediate, 128, 4]
    else:
        names |= {f"blk.{i}.{n}.weight" for i in range(2) for n in ("ffn_gate", "ffn_up", "ffn_down")}
        if kind == "minimind3":
            names |= {f"blk.{i}.{n}.weight" for i in range(2) for n in ("attn_q_norm", "attn_k_norm")}
    assert set(tensors) == names  # no output.weight: tied, llama.cpp reuses token_embd
    assert tensors["token_embd.weight"].shape.tolist() == [dim, 6400]
    # classic's adjacent-pair RoPE rows go in as they are (llama.cpp's llama rotates adjacent pairs too)
    key = "layers.0.attention.wq.weight" if kind == "classic" else "model.layers.0.self_attn.q_proj.weight"
    assert np.array_equal(tensors["blk.0.attn_q.weight"].data, model.state_dict()[key].numpy())

    assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    vocab = tok.get_vocab()
    assert len(tokens) == 6400 and all(tokens[i] == t for t, i in vocab.items())
    assert types[tok.bos_token_id] == types[tok.eos_token_id] == gguf.TokenType.CONTROL
    assert types[tok.convert_tokens_to_ids("Ġthe")] == gguf.TokenType.NORMAL
    if family is MINIMIND3:  # <think> and the tool tags are matched whole but are not special: USER_DEFINED
        assert types[tok.convert_tokens_to_ids("<think>")] == gguf.TokenType.USER_DEFINED
    assert field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert field(reader, "tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert field(reader, "tokenizer.ggml.add_bos_token") is False  # our tokenizers add no bos, as MiniMind's
    assert len(field(reader, "tokenizer.ggml.merges")) > 6000
    assert field(reader, "tokenizer.chat_template") == tok.chat_template
    if family is MINIMIND3:
        assert "<|im_start|>assistant" in field(reader, "tokenizer.chat_template")


@pytest.mark.parametrize("kind", ["classic", "minimind3-moe"])
def test_f16_halves_the_file_and_keeps_norms_and_router_f32(tmp_path, kind):
    *_, f32 = export(kind, tmp_path / "f32.gguf", "f32")
    *_, f16 = export(kind, tmp_path / "f16.gguf", "f16")
    assert f32.size == (tmp_path / "f32.gguf").stat().st_size
    assert 0.45 < f16.size / f32.size < 0.56, (f16.size, f32.size)
    reader = gguf.GGUFReader(tmp_path / "f16.gguf")
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_F16
    for t in reader.tensors:
        f32_expected = t.name.endswith(("_norm.weight", "ffn_gate_inp.weight"))
        assert t.tensor_type == (gguf.GGMLQuantizationType.F32 if f32_expected else gguf.GGMLQuantizationType.F16), t.name


def test_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"the previous export")

    def broken(self, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken)
    with pytest.raises(OSError, match="disk full"):
        export("classic", path)
    assert path.read_bytes() == b"the previous export" and os.listdir(tmp_path) == ["m.gguf"]  # no temp file left
    monkeypatch.undo()
    export("classic", path)
    assert path.read_bytes()[:4] == b"GGUF" and os.listdir(tmp_path) == ["m.gguf"]


def test_refusals_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="classic MoE models are not supported for GGUF") as moe:
        export("classic", tmp_path / "moe.gguf", use_moe=True)
    with pytest.raises(CheckpointError, match="norm_topk_prob") as unnormalised:
        export("minimind3-moe", tmp_path / "moe3.gguf", norm_topk_prob=False)
    with pytest.raises(CheckpointError, match="embedding rows") as small_vocab:
        export("classic", tmp_path / "v.gguf", vocab_size=300)
    for refusal in (moe, unnormalised, small_vocab):
        assert "\n" not in str(refusal.value)
    assert not list(tmp_path.iterdir())


def test_cli_exports_gguf_and_refuses_bad_requests_in_one_line(tmp_path):
    _, model = tiny("classic")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "w.pth")
    ok = runner.invoke(app, ["export", str(tmp_path / "w.pth"), str(tmp_path / "out" / "m.gguf"), "--format", "gguf",
                             "--outtype", "f16", "--n-heads", "4"])
    assert ok.exit_code == 0, ok.output
    assert "llama.cpp architecture llama, f16" in ok.output
    assert field(gguf.GGUFReader(tmp_path / "out" / "m.gguf"), "general.architecture") == "llama"

    _, moe = tiny("classic", use_moe=True)
    torch.save(moe.state_dict(), tmp_path / "moe.pth")
    bad = {
        "does not end in .gguf": ["export", str(tmp_path / "w.pth"), str(tmp_path / "m.bin"), "--format", "gguf"],
        "--outtype 'q4' is not one of f32, f16": ["export", str(tmp_path / "w.pth"), str(tmp_path / "m.gguf"),
                                                  "--format", "gguf", "--outtype", "q4"],
        "--outtype applies to GGUF exports only": ["export", str(tmp_path / "w.pth"), str(tmp_path / "hf"),
                                                    "--outtype", "f16"],
        "--format 'onnx' is not supported: use hf or gguf": ["export", str(tmp_path / "w.pth"), str(tmp_path / "x"),
                                                             "--format", "onnx"],
        "classic MoE models are not supported for GGUF": ["export", str(tmp_path / "moe.pth"), str(tmp_path / "moe.gguf"),
                                                          "--format", "gguf", "--n-heads", "4"],
    }
    for message, argv in bad.items():
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1
        assert "Traceback" not in result.output
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "moe.gguf").exists()


# ---- llama.cpp itself (llama-cpp-python) ----------------------------------------------------------------

TEXTS = ["从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事。",
         "The quick brown fox jumps over the lazy dog. It's 3.14, isn't it?  Two  spaces.\n\n",
         "def square(x: int) -> int:\n    return x ** 2  # 平方\n\nprint([square(i) for i in range(10)])\n"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_llama_cpp_runs_the_f16_export_as_our_model(tmp_path, kind):
    """llama.cpp's f16 export with its default f16 KV cache: our tokens, our logits to 2e-2, our greedy text."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp's Python binding is not installed: "
                                    "pip install llama-cpp-python")
    family, model, tok, _ = export(kind, tmp_path / "m.gguf", "f16")
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), logits_all=True, n_ctx=256, verbose=False)
    chat = tok.apply_chat_template([{"role": "user", "content": "你好，写一行 Python"}], tokenize=False,
                                   add_generation_prompt=True)  # special tokens (and <think> for MiniMind-3)
    for text in [*TEXTS, chat]:
        ids = tok.encode(text)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, text
        assert llm.detokenize(ids, special=True).decode() == text

    prompt = tok.encode("从前有一个小女孩，她 loves to play.")
    llm.eval(prompt)
    theirs = np.array(llm.scores[:len(prompt)])
    with torch.no_grad():
        ours = model(torch.tensor([prompt])).logits[0].numpy()
    assert np.abs(theirs - ours).max() < 2e-2

    ours_greedy = model.generate([prompt], max_new_tokens=20, temperature=0, eos_token_id=None)[0]
    theirs_greedy = []
    for token in llm.generate(prompt, temp=0.0, reset=True):
        theirs_greedy.append(token)
        if len(theirs_greedy) == 20:
            break
    assert theirs_greedy == ours_greedy and len(set(ours_greedy)) > 10


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODELS))
def test_llama_cpp_computes_the_f32_export_exactly(tmp_path, kind):
    """With f32 weights and an f32 KV cache nothing is rounded: llama.cpp's logits are ours to float error,
    with weights as lively as the HF export test's."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp's Python binding is not installed: "
                                    "pip install llama-cpp-python")
    _, model, tok, _ = export(kind, tmp_path / "m.gguf", "f32", std=0.3)
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), logits_all=True, n_ctx=256, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    prompt = tok.encode(TEXTS[0] + TEXTS[1])
    llm.eval(prompt)
    with torch.no_grad():
        ours = model(torch.tensor([prompt])).logits[0].numpy()
    assert np.abs(np.array(llm.scores[:len(prompt)]) - ours).max() < 1e-3
