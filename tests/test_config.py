import json
import subprocess
import sys

import pytest

from minimind.config import LMConfig, RunConfig, TrainConfig, field_specs, parse_value
from minimind.errors import ConfigError


def test_importable_without_torch():
    code = "import sys; import minimind.config; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_classic_defaults():
    c = LMConfig()
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len) == (512, 8, 8, 2, 6400, 8192)
    assert (c.hidden_dim, c.multiple_of, c.norm_eps, c.rope_theta, c.dropout, c.flash_attn) == (None, 64, 1e-5, 1e6, 0.0, True)
    assert (c.use_moe, c.num_experts_per_tok, c.n_routed_experts, c.n_shared_experts) == (False, 2, 4, True)
    assert (c.scoring_func, c.aux_loss_alpha, c.seq_aux, c.norm_topk_prob) == ("softmax", 0.1, True, True)
    assert LMConfig(dim=512).ffn_hidden_dim == 1408 and LMConfig(dim=768).ffn_hidden_dim == 2048


def test_seed_training_defaults():
    r = RunConfig()
    t = r.train
    assert (r.model.dim, r.model.n_layers, r.model.max_seq_len, r.model.use_moe) == (512, 2, 512, False)
    assert (t.epochs, t.batch_size, t.learning_rate, t.dtype, t.accumulation_steps) == (5, 2, 5e-4, "bfloat16", 1)
    assert (t.grad_clip, t.warmup_iters, t.log_interval, t.save_interval, t.seed) == (1.0, 0, 1, 1, 42)
    assert (t.data_path, t.save_dir, t.save_weight) == ("./toydata/pretrain_data.jsonl", "./output", "minimind_pretrain")


@pytest.mark.parametrize("kw,field,words", [
    (dict(dim=500), "dim", "divisible by n_heads"),
    (dict(dim=24, n_heads=8, n_kv_heads=2), "dim", "even"),
    (dict(n_kv_heads=3), "n_kv_heads", "divisible"),
    (dict(n_layers=0), "n_layers", "at least 1"),
    (dict(vocab_size=-1), "vocab_size", "at least 1"),
    (dict(max_seq_len=0), "max_seq_len", "at least 1"),
    (dict(use_moe=True, num_experts_per_tok=5), "num_experts_per_tok", "above the number of experts"),
    (dict(dropout=1.0), "dropout", "[0, 1)"),
    (dict(dim="big"), "dim", "whole number"),
    (dict(hidden_dim=0), "hidden_dim", "positive"),
])
def test_lmconfig_validation_names_field_and_fix(kw, field, words):
    with pytest.raises(ConfigError) as e:
        LMConfig(**kw)
    assert e.value.field == field
    assert words in str(e.value) and str(e.value).startswith(field)


@pytest.mark.parametrize("kw,field", [
    (dict(batch_size=0), "batch_size"), (dict(learning_rate=0), "learning_rate"),
    (dict(learning_rate=-1e-3), "learning_rate"), (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(save_interval=-1), "save_interval"), (dict(log_interval=0), "log_interval"),
    (dict(warmup_iters=-5), "warmup_iters"), (dict(epochs=0), "epochs"),
    (dict(accumulation_steps=0), "accumulation_steps"), (dict(dtype="fp8"), "dtype"),
    (dict(device="tpu"), "device"), (dict(save_weight="a/b"), "save_weight"), (dict(run_name="../x"), "run_name"),
])
def test_trainconfig_validation(kw, field):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kw)
    assert e.value.field == field


def test_max_seq_len_below_two_cannot_train():
    with pytest.raises(ConfigError, match="max_seq_len"):
        RunConfig().replace(max_seq_len=1)


def test_flat_roundtrip_and_unknown_keys(tmp_path):
    r = RunConfig().replace(dim=256, epochs=2, use_moe=True)
    assert RunConfig.from_flat(r.flat()) == r
    p = tmp_path / "c.json"
    p.write_text(json.dumps(r.to_dict()))
    assert RunConfig.load(p) == r
    p.write_text(json.dumps({"dim": 256, "epochs": 2}))  # flat files work too; missing keys take seed defaults
    assert RunConfig.load(p) == RunConfig().replace(dim=256, epochs=2)
    p.write_text(json.dumps({"train": {"epocs": 3}}))
    with pytest.raises(ConfigError, match="epocs: unknown setting"):
        RunConfig.load(p)
    p.write_text(json.dumps({"format": 99}))
    with pytest.raises(ConfigError, match="newer"):
        RunConfig.load(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.load(p)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.json")


def test_field_specs_cover_every_setting_once():
    specs = field_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {"dim", "n_layers", "max_seq_len", "use_moe", "epochs", "batch_size", "learning_rate", "device",
            "dtype", "num_workers", "accumulation_steps", "grad_clip", "warmup_iters", "log_interval",
            "data_path", "save_dir", "save_weight", "save_interval", "tokenizer", "seed", "init_from"} <= set(names)
    by = {s.name: s for s in specs}
    assert by["n_layers"].default == 2 and by["max_seq_len"].default == 512  # the seed's, not LMConfig's
    assert all(s.help and s.group for s in specs)


def test_parse_value():
    by = {s.name: s for s in field_specs()}
    assert parse_value(by["dim"], " 256 ") == 256
    assert parse_value(by["learning_rate"], "1e-3") == 1e-3
    assert parse_value(by["use_moe"], "yes") is True
    assert parse_value(by["hidden_dim"], "") is None
    with pytest.raises(ConfigError, match="dim: 'x' is not a whole number"):
        parse_value(by["dim"], "x")


@pytest.mark.parametrize("arch", ["classic", "minimind3"])
def test_command_for_reproduces_every_setting(arch):
    """A non-default value for every field of a family goes through `command_for` and back through the
    CLI parser."""
    import shlex

    import typer

    from minimind.cli import app
    from minimind.config import defaults_for, field_specs
    from minimind.options import command_for

    odd = {int: 3, float: 0.25, bool: None, str: "x"}
    base = defaults_for(arch, "pretrain")
    specs = [s for s in field_specs() if arch in s.families and s.name not in ("arch", "stage")]
    changes = {}
    for spec in specs:
        if spec.choices:
            changes[spec.name] = next(c for c in spec.choices if c != base[spec.name])
        elif spec.type is bool:
            changes[spec.name] = not base[spec.name]
        else:
            changes[spec.name] = odd[spec.type] if base[spec.name] != odd[spec.type] else 5
    if arch == "classic":
        changes.update(dim=64, n_heads=4, n_kv_heads=1, max_seq_len=64, hidden_dim=128, num_experts_per_tok=1,
                       n_routed_experts=3)
    else:
        changes.update(hidden_size=64, num_attention_heads=4, num_key_value_heads=1, max_seq_len=64,
                       intermediate_size=128, num_experts=3, num_experts_per_tok=2, moe_intermediate_size=96)
    changes.update(dropout=0.25, tracker="wandb", use_wandb=True, device="cpu", dtype="float32", run_name="a-run",
                   data_path="some file.jsonl", wandb_project="p q", init_from=None, from_weight="pre-trained",
                   eval_data=None, eval_split=0.25)
    config = RunConfig.from_flat({"arch": arch, **changes})
    # every setting differs but the two that exclude another (init_from / from_weight, eval_data / eval_split)
    assert [s.name for s in specs if config.flat()[s.name] == base[s.name]] == ["init_from", "eval_data"]
    words = shlex.split(command_for(config))
    assert words[:2] == ["minimind", "train"] and (arch == "classic") == ("--arch" not in words)
    command = typer.main.get_command(app).commands["train"]
    ctx = command.make_context("train", words[2:])
    skip = ("config", "resume", "from_resume", "allow_changed_data", "quiet", "verbose")  # not settings
    parsed = {k: v for k, v in ctx.params.items() if v is not None and k not in skip}
    assert RunConfig.from_flat(parsed) == config


@pytest.mark.parametrize("use_moe", [False, True])
def test_switching_the_stage_keeps_the_family_and_its_model(use_moe):
    """The family's own default (arch=minimind3 in a MiniMind-3 config) must not read as "unchanged,
    drop it" when the stage moves: that made an SFT of a MiniMind-3 run a classic one."""
    pretrain = RunConfig().replace(arch="minimind3", hidden_size=64, num_hidden_layers=1, use_moe=use_moe)
    sft = pretrain.replace(stage="sft")
    assert (sft.train.arch, sft.train.stage) == ("minimind3", "sft")
    assert (sft.model.hidden_size, sft.model.num_hidden_layers, sft.model.use_moe) == (64, 1, use_moe)
    assert RunConfig().replace(stage="sft").train.arch == "classic"
