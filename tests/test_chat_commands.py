"""Chat commands, parsed once for `minimind chat` and the TUI: a mistyped /word is answered in one line
and never sent to the model; a line that merely starts with a slash is a message."""

import pytest
from typer.testing import CliRunner

from minimind.chat import parse_line
from minimind.cli import app
from minimind.engine.trainer import Trainer
from tests.helpers import tiny_config

UNKNOWN = "unknown command {}: try /reset, /system TEXT, /exit"


@pytest.mark.parametrize("line,parsed", [
    ("/reset", ("reset", "")),
    ("  /reset  ", ("reset", "")),
    ("/exit", ("exit", "")),
    ("/system Be brief.", ("system", "Be brief.")),
    ("/system\tBe brief.", ("system", "Be brief.")),
    ("/system", ("system", "")),  # clears the system prompt
    ("/rest", ("note", UNKNOWN.format("/rest"))),
    ("/bogus with words", ("note", UNKNOWN.format("/bogus"))),
    ("/systemx hi", ("note", UNKNOWN.format("/systemx"))),
    ("/Reset", ("note", UNKNOWN.format("/Reset"))),
    ("/reset now", ("note", "/reset takes no text: send /reset alone")),
    ("hello", ("message", "hello")),
    ("/ hi", ("message", "/ hi")),
    ("/3 apples", ("message", "/3 apples")),
    ("/usr/bin/env python", ("message", "/usr/bin/env python")),
    ("//", ("message", "//")),
    ("/", ("message", "/")),
])
def test_parse_line(line, parsed):
    assert parse_line(line) == parsed


def test_the_cli_chat_answers_mistyped_commands_and_sends_slash_messages(tmp_path):
    base = Trainer(tiny_config(tmp_path, epochs=1, save_interval=0, run_name="base")).run()
    lines = ["/rest", "/system Be brief.", "/bogus x", "/ hi", "/exit"]
    result = CliRunner().invoke(app, ["chat", base.run_dir, "--max-new-tokens", "2", "--seed", "0"],
                                input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert f"({UNKNOWN.format('/rest')})" in result.output and f"({UNKNOWN.format('/bogus')})" in result.output
    assert "(system prompt set; conversation cleared)" in result.output
    assert result.output.count("ai> ") == 1  # only "/ hi" reached the model
