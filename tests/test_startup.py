"""What a command does before any network runs (its preview, its planning errors) must not wait
for PyTorch, whose import takes seconds: a script's `--dry-run` over a folder, or a typo in a path,
answers at once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OLD_PHOTO = REPO / "examples" / "old_photo.jpg"

# Runs the command as `i2i` does and says on stderr's last line which heavy modules it imported.
_RUN_AND_REPORT = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\n" + json.dumps(sorted({"torch", "cv2"} & set(sys.modules))) + "\\n"))
from i2icli.cli.app import app
sys.argv = ["i2i", *sys.argv[1:]]
app()
"""


def heavy_modules_imported(args: list[str], cwd: Path) -> tuple[list[str], subprocess.CompletedProcess]:
    done = subprocess.run([sys.executable, "-c", _RUN_AND_REPORT, *args], cwd=cwd, capture_output=True, text=True,
                          env={"I2I_WEIGHTS_DIR": str(cwd / "no-weights"), "HF_HUB_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    return json.loads(done.stderr.strip().splitlines()[-1]), done


@pytest.mark.parametrize("args", [
    ["restore", str(OLD_PHOTO), "--dry-run"],
    ["restore", str(OLD_PHOTO), "--dry-run", "--upscale", "4"],
    ["restore", "missing.jpg"],
])
def test_restore_plans_without_torch(args: list[str], tmp_path: Path):
    imported, done = heavy_modules_imported(args, tmp_path)
    assert "torch" not in imported, done.stderr
    assert done.stderr.count("Traceback") == 0, done.stderr


def _inputs(folder: Path) -> None:
    """Tiny inputs the other commands plan with, named as the cases below name them."""
    keypoints = [value for index in range(18) for value in (10.0 + index, 20.0 + index, 0.9)]
    (folder / "pose.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": keypoints}]}))
    Image.new("L", (32, 32)).save(folder / "label.png")
    (folder / "run").mkdir()  # a run folder with no checkpoint yet
    for name in ("vgg19.pth", "vgg16.pth"):
        (folder / name).write_bytes(b"")


_VGG_FILES = ["--correspondence-model", "vgg19.pth", "--perceptual-model", "vgg16.pth"]


@pytest.mark.parametrize("args, said", [
    (["invert", str(OLD_PHOTO), str(OLD_PHOTO), "--dry-run", *_VGG_FILES], "fid-inception"),
    (["invert", "missing.jpg", str(OLD_PHOTO)], "missing.jpg"),
    (["invert", str(OLD_PHOTO), str(OLD_PHOTO), "--size", "36"], "--size must be a multiple of 8"),
    (["invert", str(OLD_PHOTO), str(OLD_PHOTO), "--layers", "8-4"], "--layers takes numbers and ranges"),
    (["exemplar", "pose.json", str(OLD_PHOTO), "--exemplar-pose", "pose.json", "--dry-run"], "cocosnet2-deepfashionhd"),
    (["exemplar", "pose.json", str(OLD_PHOTO), "--exemplar-pose", "pose.json", "--dry-run", "--checkpoint", "no-run"],
     "checkpoint folder not found"),
    (["exemplar", "missing.json", str(OLD_PHOTO), "--exemplar-pose", "pose.json"], "missing.json"),
    (["paired", "label.png", "-c", "run", "--dry-run"], "no checkpoints/latest.pt"),
    (["paired", "label.png", "-c", "no-run", "--dry-run"], "no such checkpoint file or run folder"),
    (["paired", "missing.png", "-c", "run"], "missing.png"),
    (["translate-lr", str(OLD_PHOTO), str(OLD_PHOTO), "-c", "run", "--dry-run"], "no checkpoints/latest.pt"),
    (["translate-lr", str(OLD_PHOTO), str(OLD_PHOTO), "-c", "no-run", "--dry-run"], "no such checkpoint file or run folder"),
    (["translate-lr", "missing.jpg", str(OLD_PHOTO), "-c", "run"], "missing.jpg"),
])
def test_other_commands_plan_without_torch(args: list[str], said: str, tmp_path: Path):
    _inputs(tmp_path)
    imported, done = heavy_modules_imported(args, tmp_path)
    assert "torch" not in imported, done.stderr
    assert done.stderr.count("Traceback") == 0, done.stderr
    assert said in done.stderr, done.stderr


def test_invert_previews_default_feature_networks_without_torch(tmp_path: Path):
    imported, done = heavy_modules_imported(["invert", str(OLD_PHOTO), str(OLD_PHOTO), "--dry-run"], tmp_path)
    assert "torch" not in imported, done.stderr


def _training_inputs(folder: Path) -> None:
    """Tiny training folders the refusals below name."""
    for name in ("images/a.png", "pairs/labels/a.png", "pairs/photos/a.png", "unpaired/labels/a.png",
                 "unpaired/photos/b.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16)).save(folder / name)
    (folder / "empty").mkdir()
    (folder / "a-file").write_bytes(b"")
    (folder / "old-run" / "checkpoints").mkdir(parents=True)
    (folder / "old-run" / "checkpoints" / "latest.pt").write_bytes(b"")


@pytest.mark.parametrize("args, said", [
    (["train", "translate-lr", "missing"], "missing: no such folder"),
    (["train", "translate-lr", "empty"], "holds no training images"),
    (["train", "translate-lr", "images", "--out", "a-file"], "a-file: is a file, not a folder"),
    (["train", "translate-lr", "images", "--out", "empty", "--resume"], "no training run to resume"),
    (["train", "translate-lr", "images", "--out", "old-run"], "already holds a training run"),
    (["train", "translate-lr", "images", "--batch-size", "3"], "--batch-size 3: must be even"),
    (["train", "translate-lr", "images", "--held-out", "x"], "--held-out x: give a fraction"),
    (["train", "translate-lr", "images", "--held-out", "1"], "holding out 1 would leave none to train on"),
    (["train", "paired", "missing", "--edges"], "missing: no such folder"),
    (["train", "paired", "empty", "--edges"], "has no label maps folder"),
    (["train", "paired", "unpaired", "--edges"], "no label map here has a photo of the same name"),
    (["train", "paired", "pairs"], "say what the label maps are"),
    (["train", "paired", "pairs", "--edges", "--size", "100000"], "--size 100000"),
    (["train", "paired", "pairs", "--edges", "--out", "a-file"], "a-file: is a file, not a folder"),
    (["train", "paired", "pairs", "--edges", "--out", "empty", "--resume"], "no training run to resume"),
    (["train", "paired", "pairs", "--edges", "--out", "old-run"], "already holds a training run"),
    (["train", "paired", "pairs", "--edges", "--held-out", "x"], "--held-out x: give a fraction"),
    (["train", "translate-lr", "images", "--hr-size", "96"], "high-resolution size 96 must be the low-resolution size 8"),
    (["train", "translate-lr", "images", "--lr-size", "32", "--hr-size", "32"], "times a power of two"),
    (["train", "paired", "pairs", "--edges", "--size", "48", "--levels", "5"], "image size 48 must be a multiple of 32"),
    (["train", "paired", "pairs", "--edges", "--size", "34"], "image size 34 must be a multiple of 4"),
    (["train", "translate-lr", "images", "--eval", "--out", "empty"], "latest.pt: no such checkpoint file"),
    (["train", "paired", "pairs", "--eval", "--out", "empty"], "latest.pt: no such checkpoint file"),
])
def test_training_refuses_without_torch(args: list[str], said: str, tmp_path: Path):
    _training_inputs(tmp_path)
    imported, done = heavy_modules_imported(args, tmp_path)
    assert done.returncode != 0
    assert "torch" not in imported, done.stderr
    assert done.stderr.count("Traceback") == 0, done.stderr
    assert said in done.stderr, done.stderr


@pytest.mark.parametrize("args", [
    ["paired", "label.png", "-c", "no-run"],
    ["paired", "label.png", "-c", "no-run", "--device", "cpu"],
    ["translate-lr", str(OLD_PHOTO), str(OLD_PHOTO), "-c", "no-run", "-o", "out.png"],
])
def test_a_missing_run_is_refused_without_torch(args: list[str], tmp_path: Path):
    _inputs(tmp_path)
    imported, done = heavy_modules_imported(args, tmp_path)
    assert done.returncode != 0
    assert "torch" not in imported, done.stderr
    assert done.stderr.count("Traceback") == 0, done.stderr
    assert "no-run: no such checkpoint file or run folder" in done.stderr, done.stderr


def test_a_device_the_machine_may_lack_is_still_named_before_a_missing_run(tmp_path: Path):
    """The order of errors stays: loading the model checks --device before the checkpoint."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has the device")
    _inputs(tmp_path)
    _, done = heavy_modules_imported(["paired", "label.png", "-c", "no-run", "--device", "cuda"], tmp_path)
    assert "no CUDA GPU is available" in done.stderr, done.stderr


@pytest.mark.parametrize("args, said, not_said", [
    (["train", "translate-lr", "missing", "--hr-size", "96"], "high-resolution size 96", "missing"),
    (["train", "paired", "missing", "--edges", "--size", "48", "--levels", "5"], "image size 48", "missing"),
])
def test_a_bad_model_shape_is_named_before_a_missing_data_folder(args: list[str], said: str, not_said: str,
                                                                 tmp_path: Path):
    """An option error needs no folder scan: it is named even when the data folder is missing too."""
    imported, done = heavy_modules_imported(args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "torch" not in imported, done.stderr
    assert done.stderr.count("Traceback") == 0, done.stderr
    assert said in done.stderr and not_said not in done.stderr, done.stderr


# TAB runs `i2i` with the shell's line in the environment: the entry point answers, then reports
# which heavy modules it imported (NumPy too: its import alone is felt on every TAB).
_COMPLETE_AND_REPORT = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\n" + json.dumps(sorted({"torch", "cv2", "numpy"} & set(sys.modules))) + "\\n"))
from i2icli.cli.app import main
sys.argv = ["i2i"]
main()
"""


@pytest.mark.parametrize("line, offered", [
    ("i2i ", "restore"),
    ("i2i restore --m", "--model"),
    ("i2i restore --model ", "gfpgan-1.4"),
    ("i2i restore --bg-model ", "none"),
    ("i2i restore --device ", "cuda"),
    ("i2i restore --ext ", "webp"),
    ("i2i invert --generator ", "stylegan2-ffhq-512"),
    ("i2i train paired --vgg ", "vgg19-imagenet"),
    ("i2i weights fetch ", "parsenet"),
    ("i2i restore -o ", ""),  # nothing: the shell completes file names
])
def test_completion_answers_without_torch_opencv_or_numpy(line: str, offered: str, tmp_path: Path):
    words = line.split()
    done = subprocess.run([sys.executable, "-c", _COMPLETE_AND_REPORT], cwd=tmp_path, capture_output=True, text=True,
                          env={"_I2I_COMPLETE": "complete_bash", "COMP_WORDS": line,
                               "COMP_CWORD": str(len(words) if line.endswith(" ") else len(words) - 1),
                               "I2I_WEIGHTS_DIR": str(tmp_path / "no-weights"), "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1]) == [], done.stderr
    answer = done.stdout.split()
    assert (offered in answer) if offered else answer == [], done.stdout


def test_the_heif_library_loads_only_when_an_image_is_read(tmp_path: Path):
    """libheif and its codecs take time to load: a command's start, and one that reads no image,
    go without them; the first image read registers pillow-heif's opener."""
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    code = ("import sys, i2icli.cli.app, i2icli.imageio as io; assert 'pillow_heif' not in sys.modules; "
            f"io.read_image({str(tmp_path / 'photo.png')!r}); assert 'pillow_heif' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
