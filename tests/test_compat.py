"""basicsr 1.4.2 imports a torchvision module that torchvision 0.17 removed; i2icli._compat restores it."""

import subprocess
import sys

FRESH_INTERPRETER_CHECKS = {
    "the guard restores the module": (
        "import i2icli._compat\n"
        "import basicsr.archs.rrdbnet_arch, realesrgan, facexlib.detection, gfpgan\n"
        "from torchvision.transforms.functional_tensor import rgb_to_grayscale\n"
        "from torchvision.transforms.functional import rgb_to_grayscale as current\n"
        "assert rgb_to_grayscale is current\n"
    ),
    # Every module that reaches basicsr must get the guard first, whatever is imported first.
    **{
        f"{module} imports first": f"import {module}; import basicsr.archs.rrdbnet_arch"
        for module in ("i2icli.pipelines.upscale", "i2icli.pipelines.restore", "i2icli.faces.detect")
    },
}


def test_basicsr_imports_safely_whatever_comes_first():
    # Each check needs a fresh interpreter; they run side by side because importing basicsr is slow.
    running = {
        name: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, code in FRESH_INTERPRETER_CHECKS.items()
    }
    outputs = {name: process.communicate()[0] for name, process in running.items()}
    failed = {name: outputs[name][-2000:] for name, process in running.items() if process.returncode != 0}
    assert not failed, failed
