"""Where a model can come from (a run, its weights file, a Hugging Face export folder) and the one-line
refusals of export, convert, eval and the run tools found by a user walkthrough."""

import json

import gguf
import pytest
import torch
from typer.testing import CliRunner

from minimind.cli import app
from minimind.engine.control import RunControl
from minimind.engine.trainer import Trainer
from minimind.events import StepLogged
from minimind.weights import load_model
from tests.helpers import tiny_config, tiny_corpus, write_jsonl

runner = CliRunner()


def one_line_refusal(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert words in result.output, result.output


def finished_run(tmp_path, arch: str = "classic"):
    """A finished tiny run (fp32 resume state) and its run directory."""
    config = tiny_config(tmp_path, arch=arch, epochs=1, save_interval=100, run_name="r")
    return config, Trainer(config).run().run_dir


def greedy(source, *extra: str) -> str:
    result = runner.invoke(app, ["generate", str(source), "-p", "The", "--max-new-tokens", "6", "--temperature", "0",
                                 *extra])
    assert result.exit_code == 0, result.output
    return result.output


def held_out_loss(source, held, *extra: str) -> dict:
    result = runner.invoke(app, ["eval", str(source), "--data", str(held), "--max-seq-len", "48", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("arch", ["classic", "minimind3"])
def test_an_hf_export_folder_is_read_wherever_a_run_is(tmp_path, arch):
    """generate, eval, chat, export and --init-from take the folder `export --format hf` wrote and give the
    run's results (the tiny model has 4 heads: the folder's config.json tells the classic head count)."""
    _, run = finished_run(tmp_path, arch)
    folder = tmp_path / "hf"
    assert runner.invoke(app, ["export", str(run), str(folder), "--format", "hf"]).exit_code == 0
    held = tiny_corpus(tmp_path, 20, "held.jsonl")

    assert greedy(folder) == greedy(run) == greedy(folder / "model.safetensors")
    assert held_out_loss(folder, held) == held_out_loss(run, held)

    chat = runner.invoke(app, ["chat", str(folder), "--temperature", "0"], input="/exit\n")
    assert chat.exit_code == 0 and "tokenizer: the one bundled" not in chat.output, chat.output

    again = runner.invoke(app, ["export", str(folder), str(tmp_path / "m.gguf"), "--format", "gguf"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "m.gguf").is_file()

    started = Trainer(tiny_config(tmp_path, arch=arch, epochs=1, init_from=str(folder), run_name="from-hf"))
    trained = load_model(run)[0].state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in started.model.state_dict().items())


def test_a_folder_that_is_neither_a_run_nor_an_export_is_named(tmp_path):
    one_line_refusal(runner.invoke(app, ["generate", str(tmp_path), "-p", "x"]),
                     "is neither a run directory (no config.json) nor a Hugging Face export")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    one_line_refusal(runner.invoke(app, ["generate", str(tmp_path), "-p", "x"]),
                     "holds a Hugging Face config.json but no model.safetensors")


def test_export_takes_its_format_from_the_name_and_checks_the_source_first(tmp_path):
    _, run = finished_run(tmp_path)
    written = runner.invoke(app, ["export", str(run), str(tmp_path / "m.gguf")])
    assert written.exit_code == 0, written.output
    assert (tmp_path / "m.gguf").is_file()  # a GGUF file, not an HF folder named m.gguf
    arch = gguf.GGUFReader(tmp_path / "m.gguf").fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"

    (tmp_path / "taken.gguf").mkdir()
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    cases = {
        "ends in .gguf but --format hf writes a folder": [str(run), str(tmp_path / "x.gguf"), "--format", "hf"],
        "does not end in .gguf": [str(run), str(tmp_path / "x"), "--format", "gguf"],
        "--outtype 'q4' is not one of f32, f16": [str(run), str(tmp_path / "taken.gguf"), "--outtype", "q4"],
        "nope does not exist": [str(tmp_path / "nope"), str(tmp_path / "taken.gguf"), "--format", "gguf"],
        "afile is a file, not a folder": [str(run), str(tmp_path / "afile" / "x.gguf")],
        "taken.gguf is a folder": [str(run), str(tmp_path / "taken.gguf")],
        "afile is a file: --format hf writes a folder": [str(run), str(tmp_path / "afile"), "--force"],
    }
    for words, argv in cases.items():
        one_line_refusal(runner.invoke(app, ["export", *argv]), words)
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x").exists()


def test_eval_float16_on_cpu_gives_evals_reason(tmp_path):
    _, run = finished_run(tmp_path)
    result = runner.invoke(app, ["eval", str(run), "--data", str(tiny_corpus(tmp_path)), "--dtype", "float16"])
    one_line_refusal(result, "float16 autocast")
    assert "gradient scaling" not in result.output


def test_convert_says_what_it_accepts(tmp_path):
    config, _ = finished_run(tmp_path, "minimind3")
    minimind3 = tmp_path / "out" / config.family.weights_name(config.train.save_weight, config.model)
    result = runner.invoke(app, ["convert", str(minimind3), str(tmp_path / "v2.pth"), "--to", "minimind2"])
    one_line_refusal(result, "convert rewrites classic weights between the classic and MiniMind2 layouts only")
    assert "--arch" not in result.output

    (tmp_path / "c").mkdir()
    config, _ = finished_run(tmp_path / "c")
    classic = tmp_path / "c" / "out" / config.family.weights_name(config.train.save_weight, config.model)
    one_line_refusal(runner.invoke(app, ["convert", str(classic), str(tmp_path / "v2.txt"), "--to", "minimind2"]),
                     "v2.txt does not end in .pth or .safetensors")
    assert not (tmp_path / "v2.pth").exists() and not (tmp_path / "v2.txt").exists()


def test_eval_refuses_an_arch_that_contradicts_the_run(tmp_path):
    _, run = finished_run(tmp_path)
    one_line_refusal(runner.invoke(app, ["eval", str(run), "--data", str(tiny_corpus(tmp_path)), "--arch",
                                         "minimind3"]), "is a classic run, not minimind3: drop --arch")


def test_malformed_json_names_the_column_once(tmp_path):
    _, run = finished_run(tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"text": "ok"}', '{"text": "broken'])
    result = runner.invoke(app, ["eval", str(run), "--data", str(bad)])
    one_line_refusal(result, "bad.jsonl:2: malformed JSON (Unterminated string starting at column 10)")


def test_resume_takes_a_run_id_and_the_run_tools_say_a_run_finished(tmp_path):
    control = RunControl()

    def stop_at_step_2(event):
        if isinstance(event, StepLogged) and event.global_step == 2:
            control.stop("test")

    config = tiny_config(tmp_path, epochs=1, run_name="r2")
    Trainer(config, control=control, observers=[stop_at_step_2]).run()
    save_dir = str(tmp_path / "out")
    one_line_refusal(runner.invoke(app, ["train", "--resume", "nope", "--save_dir", save_dir]),
                     f"nope is not a run directory (no config.json) nor a run id under {save_dir}/runs")
    resumed = runner.invoke(app, ["train", "--resume", "r2", "--save_dir", save_dir])
    assert resumed.exit_code == 0 and "finished 6/6 steps" in resumed.output, resumed.output
    for command in ("pause", "stop"):
        result = runner.invoke(app, [command, "r2", "--save-dir", save_dir])
        one_line_refusal(result, "run r2 is not running (state: finished): it has finished")
        assert "--resume" not in result.output
