"""basicsr 1.4.2 imports a torchvision module that torchvision 0.17 removed; i2icli._compat restores it."""

import subprocess
import sys


def test_basicsr_imports_after_compat():
    code = (
        "import i2icli._compat\n"
        "import basicsr.archs.rrdbnet_arch, realesrgan, facexlib.detection, gfpgan\n"
        "from torchvision.transforms.functional_tensor import rgb_to_grayscale\n"
        "from torchvision.transforms.functional import rgb_to_grayscale as current\n"
        "assert rgb_to_grayscale is current\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pipeline_modules_import_basicsr_safely():
    """Every module that reaches basicsr must get the guard first, whatever is imported first."""
    for module in ("i2icli.pipelines.upscale", "i2icli.pipelines.restore", "i2icli.faces.detect"):
        subprocess.run([sys.executable, "-c", f"import {module}; import basicsr.archs.rrdbnet_arch"], check=True)
