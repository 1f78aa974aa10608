"""The scripts under benchmarks/ still import, parse what the README tells people to run, and say
in one line what they need where a device, precision or checkout is missing.

Their full runs take minutes with networks of the official sizes, so only their set-up runs here
(and the one script that is fast at tiny sizes, in full)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# The helpers the scripts share: modules without a command line of their own.
HELPERS = {"fixtures", "official_cocosnet"}
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in HELPERS)
# Scripts that take --device, and what else each needs to get as far as the device check.
DEVICE_SCRIPTS = {
    "restore_vs_reference": [],
    "restore_cost": [],
    "exemplar_vs_official": ["--official", "{cocosnet}"],
    "invert_cost": [],
    "paired_cost": [],
    "translate_lr_vs_authors": ["--official", "{anywhere}"],
}
# Options the README quotes in its prose, apart from the script's name.
README_PROSE = [
    ("fid_small_sets", ["--images", "10", "50", "200", "1000", "--repeats", "2"]),
    ("invert_cost", ["--precision", "bf16"]),
]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is there to be used")


def load(name: str) -> ModuleType:
    """The script as a module, its ``main`` not run."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands_in(text: str) -> list[tuple[str, list[str]]]:
    """(script, arguments) for every place ``text`` names a benchmark script, up to the end of
    the command (a closing backtick, a comment, the end of the line)."""
    commands = []
    for line in text.splitlines():
        for match in re.finditer(r"benchmarks/(\w+)\.py([^`#\n]*)", line):
            arguments = shlex.split(match.group(2))
            commands.append((match.group(1), ["/nonexistent" if a == "PATH" else a for a in arguments]))
    return commands


def readme_commands() -> list[tuple[str, list[str]]]:
    return commands_in((ROOT / "README.md").read_text())


def docstring_commands() -> list[tuple[str, list[str]]]:
    """The examples each script's --help gives."""
    return [command for name in SCRIPTS for command in commands_in((BENCHMARKS / f"{name}.py").read_text().split('"""')[1])]


def fake_cocosnet_checkout(folder: Path) -> Path:
    """Enough of a CoCosNet-v2 checkout for the script to take it as one."""
    (folder / "models" / "networks").mkdir(parents=True)
    (folder / "models" / "networks" / "patch_match.py").write_text("")
    return folder


def one_line_exit(excinfo: pytest.ExceptionInfo[SystemExit]) -> str:
    message = excinfo.value.code
    assert isinstance(message, str), f"exited with {message!r} instead of a message"
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


def test_every_script_is_checked_here():
    assert SCRIPTS == sorted(["exemplar_vs_official", "fid_small_sets", "heif_read", "invert_cost", "paired_cost",
                              "restore_cost", "restore_vs_reference", "translate_lr_vs_authors"])
    assert set(DEVICE_SCRIPTS) <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_helpers_import(name):
    load(name)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as excinfo:
        load(name).main(["--help"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_readme_names_every_script():
    assert {name for name, _ in readme_commands()} == set(SCRIPTS)


@pytest.mark.parametrize("name, arguments", readme_commands() + README_PROSE,
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_readme_commands_parse(name, arguments):
    load(name).build_parser().parse_args(arguments)


@pytest.mark.parametrize("name, arguments", docstring_commands(),
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_docstring_commands_parse(name, arguments):
    load(name).build_parser().parse_args(arguments)


@NO_CUDA
@pytest.mark.parametrize("name", sorted(DEVICE_SCRIPTS))
def test_missing_cuda_is_one_line(name, tmp_path):
    cocosnet = fake_cocosnet_checkout(tmp_path / "cocosnet")
    needs = [a.format(cocosnet=cocosnet, anywhere=tmp_path) for a in DEVICE_SCRIPTS[name]]
    with pytest.raises(SystemExit) as excinfo:
        load(name).main([*needs, "--device", "cuda", "--workdir", str(tmp_path)] if name == "restore_vs_reference"
                        else [*needs, "--device", "cuda"])
    assert "CUDA" in one_line_exit(excinfo)
    assert not (tmp_path / "weights").exists()  # refused before the checkpoints are written


@pytest.mark.parametrize("name, needs", [("restore_vs_reference", []), ("exemplar_vs_official", ["--official", "{cocosnet}"])])
def test_fp16_on_cpu_is_one_line(name, needs, tmp_path):
    cocosnet = fake_cocosnet_checkout(tmp_path / "cocosnet")
    needs = [a.format(cocosnet=cocosnet) for a in needs]
    with pytest.raises(SystemExit) as excinfo:
        load(name).main([*needs, "--device", "cpu", "--precisions", "fp16", "--workdir", str(tmp_path)]
                        if name == "restore_vs_reference" else [*needs, "--device", "cpu", "--precisions", "fp16"])
    assert "fp16" in one_line_exit(excinfo)


def test_emulated_bf16_is_one_line(monkeypatch):
    from i2icli.pipelines import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(SystemExit) as excinfo:
        load("invert_cost").main(["--device", "cpu", "--precision", "bf16"])
    assert one_line_exit(excinfo).startswith("--precision bf16: ")


def test_exemplar_precisions_are_checked_when_parsed():
    with pytest.raises(SystemExit) as excinfo:
        load("exemplar_vs_official").build_parser().parse_args(["--precisions", "fp61"])
    assert excinfo.value.code == 2


def test_missing_checkouts_are_one_line(tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        load("exemplar_vs_official").main(["--official", str(tmp_path)])
    assert "CoCosNet-v2" in one_line_exit(excinfo)
    with pytest.raises(SystemExit) as excinfo:
        load("translate_lr_vs_authors").main(["--official", str(tmp_path)])
    assert str(tmp_path) in one_line_exit(excinfo) and "I2I-LR" in excinfo.value.code


@pytest.mark.parametrize("arguments", [["--batch", "3"], ["--batch", "0"], ["--dim-in", "64"]])
def test_translate_lr_refuses_sizes_it_cannot_run(arguments, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        load("translate_lr_vs_authors").main(["--official", str(tmp_path), *arguments])
    assert excinfo.value.code == 2  # a usage error, before anything is built


def test_fid_small_sets_runs(capsys):
    load("fid_small_sets").main(["--images", "3", "--features", "8", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 |")]
    assert len(rows) == 1
    relative_difference = float(rows[0].strip("| ").split("|")[-1])
    assert relative_difference < 1e-4  # the two computations agree



@pytest.fixture
def tiny_restore_weights(tiny_env, monkeypatch):
    """The tiny checkpoints under the keys the restore benchmarks use; the detector patch the
    benchmark applies for good is undone after the test."""
    from i2icli.faces.detect import FaceDetector

    monkeypatch.setattr(FaceDetector, "detect", FaceDetector.detect)
    files = tiny_env.files
    return {"model": files["gfpgan-1.4"], "bg_model": files["realesrgan-x2plus"],
            "detector": files["retinaface-resnet50"], "parser": files["parsenet"]}


def test_restore_benchmarks_time_i2i_on_a_photo_and_a_folder(tiny_restore_weights, tmp_path):
    bench, fixtures = load("restore_vs_reference"), load("fixtures")
    rgb, landmarks = fixtures.group_photo(0.01)
    landmarks = landmarks[:1]  # one face: the parser is of full size even here
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = fixtures.write_jpeg(folder / "photo.jpg", rgb)

    single = bench.run_ours(photo, landmarks, tiny_restore_weights, tmp_path / "out.png", 1, "cpu", "fp32")
    assert (tmp_path / "out.png").is_file()
    assert single["rss_mb"] > 0 and "cuda_mb" not in single
    timed = set(single["runs"][0]) - {"decode", "encode", "total"}
    assert timed == set(bench.STAGES) - {"decode", "encode"}
    assert timed == set(load("restore_cost").STAGES)  # every stage RestorePipeline times is printed

    whole = bench.folder_ours(folder, landmarks, tiny_restore_weights, tmp_path / "restored", "cpu", "fp32", overlap=True)
    assert whole["images"] == 1 and whole["folder"] > 0
    assert [path.name for path in (tmp_path / "restored").iterdir()] == ["photo.png"]
