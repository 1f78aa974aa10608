"""What a command does before any network runs (its preview, its planning errors) must not wait
for PyTorch, whose import takes seconds: a script's `--dry-run` over a folder, or a typo in a path,
answers at once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
