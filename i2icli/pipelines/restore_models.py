"""The checkpoints ``restore`` uses unless told otherwise, by registry name.

Apart from the pipeline so that the command can name them (its defaults, and what ``--dry-run``
would download) without importing PyTorch, which takes seconds.
"""

from __future__ import annotations

DEFAULT_FACE_MODEL = "gfpgan-1.4"
DEFAULT_DETECTOR = "retinaface-resnet50"
DEFAULT_PARSER = "parsenet"


def background_model_for(upscale: float) -> str:
    """Real-ESRGAN x2plus up to 2x, x4plus above; other factors are reached by resizing after."""
    return "realesrgan-x2plus" if upscale <= 2 else "realesrgan-x4plus"
