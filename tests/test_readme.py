"""README.md against the program: the options its tables and examples name, and the defaults it states."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from i2icli.cli.app import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = ["restore", "exemplar", "invert", "translate-lr", "paired"]
TRAIN_COMMANDS = ["translate-lr", "paired"]
_OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z0-9-]*)")


def _command(*path: str) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _options(command: Any) -> dict[str, Any]:
    # Typer carries its own copy of click: its parameters are told apart by kind, not by class.
    return {name: parameter for parameter in command.params if parameter.param_type_name == "option"
            for name in (*parameter.opts, *parameter.secondary_opts)}


def _section(command: str) -> str:
    """The README section of ``i2i COMMAND``, up to the next second-level heading."""
    start = README.index(f"\n## `i2i {command}`")
    return README[start:README.index("\n## ", start + 1)]


def _option_rows(text: str) -> list[list[str]]:
    """The cells of the table rows whose first cell names options."""
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in text.replace("\\|", "/").splitlines() if line.startswith("| `-")]


def _options_table(command: str) -> str:
    """The command's own options table: the first in its section (translate-lr's is followed by the train one's)."""
    section = _section(command)
    start = section.index("\n| option")
    return section[start:section.index("\n\n", start)]


def _train_table() -> str:
    start = README.index("**Options of both `train` commands**")
    return README[start:README.index("\n\n", README.index("| option", start))]


def _named(cell: str) -> set[str]:
    return set(_OPTION.findall(cell))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_in_a_commands_table_exists_and_every_option_is_in_it(command):
    options = _options(_command(command))
    in_table = set().union(*(_named(row[0]) for row in _option_rows(_options_table(command))))
    assert sorted(in_table - options.keys()) == []
    assert sorted(set(options) - in_table - {"-h", "--help"}) == []


def test_the_train_table_names_options_both_train_commands_have():
    in_table = set().union(*(_named(row[0]) for row in _option_rows(_train_table())))
    for command in TRAIN_COMMANDS:
        assert sorted(in_table - _options(_command("train", command)).keys()) == [], command


def _stated_default(cell: str) -> object | None:
    """A default the table states plainly (a number, a backticked value, on/off), or None."""
    cell = cell.strip()
    if cell in ("required", "none"):  # no default value
        return None
    if cell in ("off", ""):
        return False if cell == "off" else None
    if re.fullmatch(r"`[^`]+`", cell):
        cell = cell.strip("`")
    number = cell.replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", number):
        return float(number)
    return cell if re.fullmatch(r"[a-z0-9][a-z0-9.-]*", cell) else None


@pytest.mark.parametrize("command", COMMANDS)
def test_defaults_in_a_commands_table_are_the_commands(command):
    options = _options(_command(command))
    checked = 0
    for row in _option_rows(_options_table(command)):
        names = [name for name in _named(row[0]) if name.startswith("--")]
        stated = _stated_default(row[1])
        if len(names) != 1 or stated is None:
            continue  # several options in one row, or a default said in words
        parameter = options[names[0]]
        actual = parameter.default
        if stated is False:
            assert parameter.is_flag and actual is False, names[0]
        elif isinstance(stated, float):
            assert float(actual) == stated, names[0]
        else:
            assert str(actual) == stated, names[0]
        checked += 1
    assert checked >= 3


def _command_lines() -> list[str]:
    """Every `i2i ...` command line in the README's shell examples, each stage of a pipe on its own."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for stage in line.split("|"):
                words = stage.split()
                if "i2i" in words:
                    lines.append(" ".join(words[words.index("i2i"):]))
    return lines


def test_the_readme_shows_examples_of_every_command():
    shown = {" ".join(line.split()[:2]) for line in _command_lines()}
    assert {f"i2i {command}" for command in COMMANDS} <= shown


@pytest.mark.parametrize("line", _command_lines())
def test_every_example_names_a_command_and_options_it_has(line):
    words = shlex.split(line.split("<")[0].split(">")[0])[1:]
    group = typer.main.get_command(app)
    path = []
    while hasattr(group, "commands") and words and not words[0].startswith("-"):
        assert words[0] in group.commands, f"{line}: no command {words[0]!r}"
        group = group.commands[words.pop(0)]
        path.append(group.name)
    options = _options(group)
    options.update({"-h": None, "--help": None, "--version": None})
    for word in words:
        if word.startswith("-") and word != "-":
            assert word.split("=")[0] in options, f"{line}: i2i {' '.join(path)} has no option {word}"
