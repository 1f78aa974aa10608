"""The one place that papers over breakage in the libraries i2i builds on.

Import this module before anything from ``basicsr``, ``realesrgan``, ``gfpgan`` or
``facexlib``: basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``,
which torchvision 0.17 removed. The only name basicsr takes from it,
``rgb_to_grayscale``, still lives in ``torchvision.transforms.functional``, so an alias
module is enough.
"""

from __future__ import annotations

import sys
import types


def _alias_functional_tensor() -> None:
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    alias = types.ModuleType(name)
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = alias


_alias_functional_tensor()
