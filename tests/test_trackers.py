import sys

import pytest
from typer.testing import CliRunner

from minimind.cli import app
from minimind.engine.control import RunControl
from minimind.engine.trainer import Trainer
from minimind.events import StepLogged
from minimind.storage.run_store import RunStore
from tests.helpers import tiny_config, tiny_flags

runner = CliRunner()


def scalars(log_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_tracker_logs_the_seed_scalars_and_continues_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    config = tiny_config(tmp_path, tracker="tensorboard", epochs=2)
    control = RunControl()
    ended = Trainer(config, control=control,
                    observers=[lambda e: isinstance(e, StepLogged) and e.global_step == 5 and control.stop()]).run()
    Trainer(resume=ended.run_dir).run()
    store = RunStore(ended.run_dir)
    metrics = store.read_metrics()
    log_dir = store.path / "tensorboard"
    loss = scalars(log_dir, "train/loss")
    assert [s for s, _ in loss] == [m["global_step"] for m in metrics] == list(range(1, 13))
    assert all(abs(v - m["loss"]) < 1e-6 for (_, v), m in zip(loss, metrics))
    lr = scalars(log_dir, "train/learning_rate")
    assert all(abs(v - m["lr"]) < 1e-9 for (_, v), m in zip(lr, metrics))
    for tag in ("train/logits_loss", "train/aux_loss", "train/epoch_time", "train/tokens_per_s", "train/grad_norm"):
        assert len(scalars(log_dir, tag)) == 12


def test_runs_export_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    ended = Trainer(tiny_config(tmp_path, epochs=1)).run()
    result = runner.invoke(app, ["runs", "export", ended.run_dir, "--to", "tensorboard", "--out", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    metrics = RunStore(ended.run_dir).read_metrics()
    assert [v for _, v in scalars(tmp_path / "tb", "train/loss")] == pytest.approx([m["loss"] for m in metrics])


@pytest.mark.parametrize("flags,package", [(["--tracker", "wandb"], "wandb"), (["--use_wandb"], "wandb"),
                                          (["--tracker", "swanlab"], "swanlab")])
def test_missing_tracker_package_is_one_line_with_the_install_command(tmp_path, monkeypatch, flags, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "1", *flags)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: --tracker {package} needs the {package} package, which is not "
                                     f'installed: pip install "minimind-tui[{package}]"')
    assert not (tmp_path / "out" / "runs").exists() or not any((tmp_path / "out" / "runs").iterdir())  # no run left


def test_use_wandb_conflicts_with_another_tracker(tmp_path):
    result = runner.invoke(app, ["train", *tiny_flags(tmp_path, "--epochs", "1", "--use_wandb", "--tracker", "tensorboard")])
    assert result.exit_code == 2 and "use_wandb: conflicts with --tracker tensorboard" in result.output


def test_wandb_offline_run_and_resume_keep_one_run_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_config(tmp_path, use_wandb=True, epochs=1)
    control = RunControl()
    ended = Trainer(config, control=control,
                    observers=[lambda e: isinstance(e, StepLogged) and e.global_step == 3 and control.stop()]).run()
    import json
    first_id = json.loads((RunStore(ended.run_dir).path / "tracker.json").read_text())["wandb"]
    Trainer(resume=ended.run_dir).run()
    assert json.loads((RunStore(ended.run_dir).path / "tracker.json").read_text())["wandb"] == first_id
    runs = list((RunStore(ended.run_dir).path / "wandb").glob("offline-run-*"))
    assert runs and all(first_id in p.name for p in runs)


def test_swanlab_offline_run_and_resume_keep_one_run_id(tmp_path, monkeypatch):
    pytest.importorskip("swanlab")
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    config = tiny_config(tmp_path, tracker="swanlab", epochs=1)
    control = RunControl()
    ended = Trainer(config, control=control,
                    observers=[lambda e: isinstance(e, StepLogged) and e.global_step == 3 and control.stop()]).run()
    import json
    ids = lambda: json.loads((RunStore(ended.run_dir).path / "tracker.json").read_text())["swanlab"]
    first_id = ids()
    assert Trainer(resume=ended.run_dir).run().status == "finished"
    assert ids() == first_id
    runs = list((RunStore(ended.run_dir).path / "swanlog").glob("run-*"))
    assert len(runs) == 2 and all(r.name.endswith(first_id) for r in runs)
