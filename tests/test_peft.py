"""Our Hugging Face export under PEFT: a LoRA trained on it merges into a plain Llama checkpoint that
transformers saves and reloads with the LoRA model's logits."""

import pytest
import torch

from minimind.families import FAMILIES, LMConfig
from minimind.interop import export_hf
from minimind.tokenizer import load_tokenizer


@pytest.mark.slow
def test_lora_on_the_hf_export_trains_merges_and_reloads(tmp_path):
    peft = pytest.importorskip("peft", reason="PEFT is not installed: pip install peft")
    from transformers import AutoModelForCausalLM

    classic = FAMILIES["classic"]
    torch.manual_seed(0)
    ours = classic.build_model(LMConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=6400, max_seq_len=64))
    tok = load_tokenizer(classic.tokenizer_dir)
    export_hf(classic, ours.config, ours.state_dict(), tok, tmp_path / "base", classic.tokenizer_dir)

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                             task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, config)
    assert model.get_nb_trainable_parameters()[0] == 2 * 4 * ((64 + 64) + (64 + 32))  # 2 layers, r=4; q: 64->64, v: 64->32
    texts = ["从前有座山，山里有座庙。", "The quick brown fox jumps over the lazy dog."]
    batch = [tok(tok.bos_token + t, add_special_tokens=False, return_tensors="pt").input_ids for t in texts]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    model.train()
    for step in range(8):
        ids = batch[step % 2]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-2] < losses[0] and losses[-1] < losses[1]  # it learned
    model.eval()
    ids = torch.randint(0, 6400, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        lora_logits = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        assert type(merged).__name__ == "LlamaForCausalLM"
        merged.save_pretrained(tmp_path / "merged")
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        assert (reloaded(ids).logits - lora_logits).abs().max() <= 1e-5
        assert (ours(ids).logits - lora_logits).abs().max() > 1e-3  # the LoRA changed the model
