"""TAB completion through the protocol the shells' scripts speak: `_I2I_COMPLETE=complete_bash`
with COMP_WORDS/COMP_CWORD (bash), `_TYPER_COMPLETE_ARGS` (zsh and fish)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import shellingham
from conftest import CommandRunner

from i2icli import weights
from i2icli.cli.app import app

runner = CommandRunner()


def _answer(line: str, shell: str, **env: str):
    if shell == "bash":
        words = line.split()
        env |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) if line.endswith(" ") else len(words) - 1)}
    else:
        env |= {"_TYPER_COMPLETE_ARGS": line}
    return runner.invoke(app, [], prog_name="i2i", env={"_I2I_COMPLETE": f"complete_{shell}", **env})


def completions(line: str) -> list[str]:
    """What bash is offered for the last word of ``line`` (a trailing space: a new word)."""
    done = _answer(line, "bash")
    assert done.exit_code == 0, done.output
    return done.stdout.rstrip("\n").splitlines()  # as $(...) in the bash script drops the newlines


def names_for(role: str) -> list[str]:
    return [checkpoint.name for checkpoint in weights.registry() if checkpoint.role == role]


def test_commands_complete():
    assert completions("i2i ") == ["restore", "exemplar", "invert", "translate-lr", "paired", "weights", "train"]
    assert completions("i2i tr") == ["translate-lr", "train"]
    assert completions("i2i weights ") == ["list", "fetch", "verify"]
    assert completions("i2i train ") == ["translate-lr", "paired"]


def test_option_names_complete():
    assert {"--version", "--install-completion", "--show-completion", "--help"} <= set(completions("i2i --"))
    assert completions("i2i restore --m") == ["--model", "--min-face-size", "--max-memory", "--max-pixels"]
    assert "--fid-model" in completions("i2i train paired --")


@pytest.mark.parametrize("line, role, extra", [
    ("i2i restore --model ", "face", []),
    ("i2i restore --bg-model ", "background", ["auto", "none"]),
    ("i2i restore --detector ", "detector", []),
    ("i2i restore --parser ", "parser", ["none"]),
    ("i2i invert --generator ", "generator", []),
    ("i2i invert --correspondence-model ", "correspondence", []),
    ("i2i invert --perceptual-model ", "perceptual", []),
    ("i2i invert --score-model ", "score", []),
    ("i2i invert --detector ", "detector", []),
    ("i2i translate-lr --detector ", "detector", []),
    ("i2i exemplar --checkpoint ", "exemplar", []),
    ("i2i train translate-lr --fid-model ", "score", ["none"]),
    ("i2i train translate-lr --lpips-backbone ", "perceptual", ["none"]),
    ("i2i train paired --vgg ", "correspondence", ["none"]),
    ("i2i train paired --fid-model ", "score", ["none"]),
])
def test_model_options_offer_their_roles_checkpoints(line: str, role: str, extra: list[str]):
    assert names_for(role), f"weights.toml has no {role} checkpoint"
    assert completions(line) == names_for(role) + extra


def test_names_are_filtered_by_what_was_typed():
    assert completions("i2i restore --bg-model realesrgan-x") == ["realesrgan-x2plus", "realesrgan-x4plus"]
    assert completions("i2i restore --model gfpgan-1.4") == ["gfpgan-1.4"]
    assert completions("i2i restore --bg-model n") == ["none"]


@pytest.mark.parametrize("line, expected", [
    ("i2i restore --device ", ["auto", "cpu", "cuda", "mps"]),
    ("i2i train paired --device c", ["cpu", "cuda"]),
    ("i2i restore --ext ", ["auto", "png", "jpg", "jpeg", "webp", "heic", "heif", "avif", "tif", "tiff", "bmp"]),
    ("i2i restore --ext t", ["tif", "tiff"]),
    ("i2i train paired --eval-style ", ["photo", "mean"]),
])
def test_fixed_choices_complete(line: str, expected: list[str]):
    assert completions(line) == expected


def test_weights_commands_offer_registry_names_once_each():
    every = [checkpoint.name for checkpoint in weights.registry()]
    downloadable = [checkpoint.name for checkpoint in weights.registry() if not checkpoint.manual]
    assert downloadable != every  # some are manual downloads, which `fetch` refuses
    assert completions("i2i weights verify ") == every
    assert completions("i2i weights fetch ") == downloadable
    assert completions("i2i weights fetch gfpgan-1.4 gfpgan") == ["gfpgan-1.3"]
    assert "parsenet" not in completions("i2i weights verify parsenet ")


@pytest.mark.parametrize("line", [
    "i2i restore ",  # INPUTS
    "i2i restore photo.jpg -o ",
    "i2i restore --model ./",  # a path: no name matches
    "i2i restore --model my",
    "i2i weights fetch --to ",
    "i2i train translate-lr ",  # DATA_DIR
    "i2i train translate-lr photos --out ",
    "i2i train paired pairs --resume-from ",
    "i2i translate-lr source.png target.png -c ",
])
def test_paths_are_left_to_the_shells_file_completion(line: str):
    """An empty answer is how Typer's scripts hand over to file completion: bash's
    `complete -o default`, zsh's `_files`, fish's answer that the word is not one of ours."""
    assert completions(line) == []
    zsh = _answer(line, "zsh")
    assert zsh.stdout.strip() == "_files", zsh.output
    fish = _answer(line, "fish", _TYPER_COMPLETE_FISH_ACTION="is-args")
    assert fish.exit_code == 1, fish.output


def test_zsh_and_fish_get_the_names_too():
    zsh = _answer("i2i restore --parser ", "zsh")
    assert zsh.stdout.startswith("_arguments") and '"parsenet"' in zsh.stdout and '"none"' in zsh.stdout, zsh.output
    fish = _answer("i2i restore --parser ", "fish", _TYPER_COMPLETE_FISH_ACTION="get-args")
    assert fish.stdout.splitlines() == ["parsenet", "none"], fish.output
    assert _answer("i2i restore --parser ", "fish", _TYPER_COMPLETE_FISH_ACTION="is-args").exit_code == 0


def test_completing_after_version_does_not_print_the_version():
    offered = completions("i2i --version ")
    assert not any("i2i" in word for word in offered), offered
    assert "restore" in offered


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_the_script_for_the_shell_in_use(shell: str, monkeypatch):
    monkeypatch.setattr(shellingham, "detect_shell", lambda *args, **kwargs: (shell, f"/bin/{shell}"))
    done = runner.invoke(app, ["--show-completion"], prog_name="i2i")
    assert done.exit_code == 0, done.output
    assert f"_I2I_COMPLETE=complete_{shell}" in done.stdout
    assert {"bash": "complete -o default -F _i2i_completion i2i", "zsh": "compdef _i2i_completion i2i",
            "fish": "complete --command i2i"}[shell] in done.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_named_shells_script_is_printed_without_detection(shell: str, monkeypatch):
    """README's way to get another shell's script: `_I2I_COMPLETE=source_zsh i2i`."""
    def no_detection(*args, **kwargs):
        raise AssertionError("the shell was named")

    monkeypatch.setattr(shellingham, "detect_shell", no_detection)
    done = runner.invoke(app, [], prog_name="i2i", env={"_I2I_COMPLETE": f"source_{shell}"})
    assert done.exit_code == 0, done.output
    assert f"_I2I_COMPLETE=complete_{shell}" in done.stdout


def test_bash_itself_completes_with_the_shown_script():
    """The script bash sources, run by bash: names in COMPREPLY, and for a path option an empty
    COMPREPLY under `complete -o default`, which is bash's own file completion."""
    bash, bin_folder = shutil.which("bash"), Path(sys.executable).parent
    if bash is None or not (bin_folder / "i2i").exists():
        pytest.skip("needs bash and the installed i2i command")
    session = """eval "$(_I2I_COMPLETE=source_bash i2i)"
complete -p i2i
COMP_WORDS=(i2i restore --bg-model real); COMP_CWORD=3; _i2i_completion i2i; echo "${COMPREPLY[*]}"
COMP_WORDS=(i2i restore -o ''); COMP_CWORD=3; _i2i_completion i2i; echo "${#COMPREPLY[@]} for -o"
"""
    done = subprocess.run([bash, "--norc", "--noprofile", "-c", session], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert done.stdout.splitlines() == ["complete -o default -F _i2i_completion i2i",
                                        "realesrgan-x2plus realesrgan-x4plus realesr-general-x4v3", "0 for -o"], done.stderr
