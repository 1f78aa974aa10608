"""i2i: restore and translate photos with GAN models.

The names in ``__all__`` are the Python API, kept stable across releases: one pipeline per
command (``load`` it once, then call it on as many images as you like), its settings and result
types, image reading and writing, and the errors a user can cause. Everything else in the
package is internal and may change.

They are imported on first use, so ``import i2icli`` stays cheap: PyTorch is loaded only when a
pipeline is.
"""

from __future__ import annotations

# Not typing's: that module would be imported for this one flag (the CLI imports it later anyway,
# but a script that only reads __version__ need not). Type checkers take this name as true.
TYPE_CHECKING = False

__version__ = "0.1.0"

# The module that defines each public name.
_DEFINED_IN = {
    "i2icli.pipelines.restore": ("RestorePipeline", "RestoreSettings", "RestoreResult", "RestoredFace"),
    "i2icli.pipelines.exemplar": ("ExemplarPipeline", "ExemplarSettings", "ExemplarResult"),
    "i2icli.pipelines.invert": ("InvertPipeline", "InvertResult", "Hypothesis"),
    "i2icli.pipelines.invert_settings": ("InvertSettings",),
    "i2icli.pipelines.translate_lr": ("LRTranslator", "LRTranslation"),
    "i2icli.pipelines.paired": ("PairedTranslator", "PairedTranslation"),
    "i2icli.imageio": ("Picture", "read_image", "write_image"),
    "i2icli.errors": ("I2IError", "InputError", "WeightsError", "DeviceError"),
}
_MODULE_OF = {name: module for module, names in _DEFINED_IN.items() for name in names}

__all__ = [
    "__version__",
    "RestorePipeline", "RestoreSettings", "RestoreResult", "RestoredFace",
    "ExemplarPipeline", "ExemplarSettings", "ExemplarResult",
    "InvertPipeline", "InvertSettings", "InvertResult", "Hypothesis",
    "LRTranslator", "LRTranslation",
    "PairedTranslator", "PairedTranslation",
    "Picture", "read_image", "write_image",
    "I2IError", "InputError", "WeightsError", "DeviceError",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on demand
    from i2icli.errors import DeviceError, I2IError, InputError, WeightsError
    from i2icli.imageio import Picture, read_image, write_image
    from i2icli.pipelines.exemplar import (
        ExemplarPipeline,
        ExemplarResult,
        ExemplarSettings,
    )
    from i2icli.pipelines.invert import Hypothesis, InvertPipeline, InvertResult
    from i2icli.pipelines.invert_settings import InvertSettings
    from i2icli.pipelines.paired import PairedTranslation, PairedTranslator
    from i2icli.pipelines.restore import (
        RestoredFace,
        RestorePipeline,
        RestoreResult,
        RestoreSettings,
    )
    from i2icli.pipelines.translate_lr import LRTranslation, LRTranslator


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        # AttributeError, not ImportError: `from i2icli import weights` then finds the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
