import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.config import LMConfig
from minimind.errors import CheckpointError
from minimind.families.classic import CLASSIC
from minimind.interop import classic_to_minimind2, detect_layout, export_hf, minimind2_to_classic, to_classic
from minimind.models.classic import MiniMindLM
from minimind.tokenizer import load_tokenizer

runner = CliRunner()
CONFIG = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=6400, max_seq_len=64)


def model(**kw) -> MiniMindLM:
    torch.manual_seed(0)
    return MiniMindLM(LMConfig(**{**CONFIG, **kw})).eval()


@pytest.mark.parametrize("use_moe", [False, True])
def test_round_trip_through_minimind2_is_exact(use_moe):
    state = model(use_moe=use_moe).state_dict()
    v2 = classic_to_minimind2(state, head_dim=16)
    assert detect_layout(v2) == "minimind2"
    assert "model.layers.0.self_attn.q_proj.weight" in v2 and "lm_head.weight" in v2
    if use_moe:
        assert "model.layers.1.mlp.experts.3.down_proj.weight" in v2 and "model.layers.0.mlp.gate.weight" in v2
        assert "model.layers.0.mlp.shared_experts.0.up_proj.weight" in v2
    else:
        assert "model.layers.0.mlp.gate_proj.weight" in v2
    assert not torch.equal(v2["model.layers.0.self_attn.q_proj.weight"], state["layers.0.attention.wq.weight"])
    back = minimind2_to_classic(v2, head_dim=16)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_hf_llama_export_gives_the_same_logits_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM

    ours = model()
    export_hf(CLASSIC, ours.config, ours.state_dict(), load_tokenizer(CLASSIC.tokenizer_dir), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=False).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ids = torch.randint(0, 6400, (2, 40))
    with torch.no_grad():
        diff = (hf(ids).logits - ours(ids).logits).abs().max().item()
    assert diff < 1e-4
    prompt = torch.tensor([[1, 300, 301, 302]])
    out = hf.generate(prompt, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 9)
    assert out[0, 4:].tolist() == ours.generate([[1, 300, 301, 302]], max_new_tokens=5, temperature=0,
                                                eos_token_id=None)[0]


def test_moe_export_is_refused(tmp_path):
    moe = model(use_moe=True)
    with pytest.raises(CheckpointError, match="not supported for the Hugging Face Llama format"):
        export_hf(CLASSIC, moe.config, moe.state_dict(), load_tokenizer(CLASSIC.tokenizer_dir), tmp_path)


def test_cli_convert_export_and_minimind2_weights_everywhere(tmp_path):
    classic = model()
    torch.save({k: v.half() for k, v in classic.state_dict().items()}, tmp_path / "classic.pth")
    out = runner.invoke(app, ["convert", str(tmp_path / "classic.pth"), str(tmp_path / "v2.pth"), "--to", "minimind2",
                              "--n-heads", "4"])
    assert out.exit_code == 0, out.output
    back = runner.invoke(app, ["convert", str(tmp_path / "v2.pth"), str(tmp_path / "back.safetensors"), "--to",
                               "classic", "--n-heads", "4"])
    assert back.exit_code == 0, back.output
    from minimind.interop import load_state
    original, again = load_state(tmp_path / "classic.pth"), load_state(tmp_path / "back.safetensors")
    assert all(torch.equal(original[k], again[k]) for k in original)
    # generate and --init-from read MiniMind2 weights directly
    gen = runner.invoke(app, ["generate", str(tmp_path / "v2.pth"), "-p", "hi", "--max-new-tokens", "3",
                              "--temperature", "0", "--n-heads", "4"])
    assert gen.exit_code == 0, gen.output
    from minimind.engine.trainer import Trainer
    from tests.helpers import tiny_config
    trainer = Trainer(tiny_config(tmp_path, dim=64, n_heads=4, init_from=str(tmp_path / "v2.pth"), max_seq_len=64))
    assert torch.equal(trainer.model.layers[0].attention.wq.weight, original["layers.0.attention.wq.weight"].float())
    exported = runner.invoke(app, ["export", str(tmp_path / "v2.pth"), str(tmp_path / "hf"), "--n-heads", "4"])
    assert exported.exit_code == 0 and (tmp_path / "hf" / "model.safetensors").is_file()
    bad = runner.invoke(app, ["convert", str(tmp_path / "classic.pth"), str(tmp_path / "x.pth"), "--to", "gguf"])
    assert bad.exit_code == 2 and "is not classic or minimind2" in bad.output


def test_unknown_layouts_are_named():
    with pytest.raises(CheckpointError, match="unknown weights layout"):
        to_classic({"foo": torch.zeros(1)}, 8)
    with pytest.raises(CheckpointError, match="q_norm"):
        detect_layout({"model.embed_tokens.weight": torch.zeros(1), "model.layers.0.self_attn.q_norm.weight": torch.zeros(1)})
