import json
import os

import numpy as np
import pytest
import torch

from minimind.data import JsonlTexts, PackedDataset, TokenCache
from minimind.engine.control import RunControl
from minimind.engine.trainer import Trainer
from minimind.events import StepLogged
from tests.helpers import tiny_config, write_jsonl


def test_rows_cover_every_target_once_and_pad_only_the_last():
    tokens = np.arange(1, 24, dtype=np.uint16)  # 23 tokens -> 22 targets
    ds = PackedDataset(tokens, max_length=8, pad_id=0)  # stride 7 -> rows of 7 targets: 7 + 7 + 7 + 1
    assert len(ds) == 4
    targets = []
    for i in range(len(ds)):
        X, Y, mask = ds[i]
        assert X.shape == Y.shape == mask.shape == (7,) and X.dtype == torch.int64
        assert torch.equal(X[1:], Y[:-1])
        targets += Y[mask.bool()].tolist()
    assert targets == list(range(2, 24))
    X, Y, mask = ds[3]
    assert X.tolist()[:2] == [22, 23] and Y.tolist()[:2] == [23, 0] and mask.tolist() == [1, 0, 0, 0, 0, 0, 0]


def test_token_cache_is_built_once_and_rebuilt_when_inputs_change(tmp_path, shipped_tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", [json.dumps({"text": "hello world"}), json.dumps({"text": "第二篇"})])
    cache = TokenCache(JsonlTexts(path), shipped_tokenizer, tmp_path / "cache")
    tokens = cache.load()
    assert cache.built
    expected = shipped_tokenizer("<s>hello world</s>").input_ids + shipped_tokenizer("<s>第二篇</s>").input_ids
    assert tokens.tolist() == expected and tokens.dtype == np.uint16
    again = TokenCache(JsonlTexts(path), shipped_tokenizer, tmp_path / "cache")
    again.load()
    assert not again.built and again.path == cache.path
    path.write_text(json.dumps({"text": "changed"}) + "\n")
    os.utime(path, ns=(1, 1))
    changed = TokenCache(JsonlTexts(path), shipped_tokenizer, tmp_path / "cache")
    assert changed.path != cache.path and changed.load().tolist() == shipped_tokenizer("<s>changed</s>").input_ids


def test_packed_training_uses_every_token_and_resumes_exactly(tmp_path):
    config = tiny_config(tmp_path, packing=True, shuffle=True, epochs=2, save_interval=0)
    events = []
    full = Trainer(config, observers=[events.append])
    full.run()
    epoch1 = [e.tokens for e in events if isinstance(e, StepLogged) and e.epoch == 1]
    assert sum(epoch1) == full.data.rows.n_targets  # every token is a target once per epoch
    assert sum(t != 2 * 47 for t in epoch1) == 1  # only the one short row is not a full row
    control = RunControl()
    first = Trainer(config, control=control,
                    observers=[lambda e: isinstance(e, StepLogged) and e.global_step == 5 and control.stop()])
    ended = first.run()
    second = Trainer(resume=ended.run_dir)
    second.run()
    for a, b in zip(full.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.skipif(not __import__("minimind.engine.environment", fromlist=["x"]).cpu_has_fast_bf16(),
                    reason="this CPU has no fast bfloat16")
def test_cpu_bfloat16_autocast_tracks_float32(tmp_path):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        events = []
        (tmp_path / dtype).mkdir()
        trainer = Trainer(tiny_config(tmp_path / dtype, dtype=dtype, epochs=2, save_interval=0), observers=[events.append])
        trainer.run()
        losses[dtype] = [e.loss for e in events if isinstance(e, StepLogged)]
        started = next(e for e in events if type(e).__name__ == "RunStarted")
        assert started.precision == ("bfloat16 autocast" if dtype == "bfloat16" else "float32")
    diffs = [abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"])]
    assert max(diffs) < 0.05 and losses["float32"] != losses["bfloat16"]
