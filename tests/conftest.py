"""Shared fixtures: tiny, randomly initialised checkpoints in the official file formats, and a
registry (weights.toml) that points at them, so every loading path runs without downloads."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import i2icli._compat  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test suite never touches the network

# Five landmarks of the astronaut's face in examples/old_photo.jpg (341x341), read off the image.
OLD_PHOTO_LANDMARKS = np.array([[135, 66], [163, 66], [150, 80], [138, 92], [161, 92]], dtype=np.float32)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

TINY_GFPGAN = dict(out_size=512, num_style_feat=32, channel_multiplier=1, narrow=0.0625, sft_half=True, different_w=True, num_mlp=2)


def tiny_gfpgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from i2icli.archs.gfpgan import GFPGANv1Clean

    torch.manual_seed(seed)
    return GFPGANv1Clean(**TINY_GFPGAN).state_dict()


def tiny_rrdb_state_dict(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    from basicsr.archs.rrdbnet_arch import RRDBNet

    torch.manual_seed(seed)
    return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=scale).state_dict()


def tiny_srvgg_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    torch.manual_seed(seed)
    return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4, act_type="prelu").state_dict()


def retinaface_state_dict(network: str = "mobile0.25", seed: int = 0) -> dict[str, torch.Tensor]:
    """Official detector files keep DataParallel's ``module.`` prefix; so do these."""
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(seed)
    model = RetinaFace(network_name=network, half=False, device=torch.device("cpu"))
    return {f"module.{k}": v for k, v in model.state_dict().items()}


def parsenet_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(seed)
    return ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict()


def fake_hub_cache(root: Path, repo: str, files: dict[str, Path]) -> None:
    """The layout huggingface_hub itself writes: blobs, a snapshot per commit, refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)


class CommandRunner(CliRunner):
    """A CliRunner that lets an unexpected exception fail the test. Typer's default catches it and
    reports exit 1 with empty output, which a "clear error, no traceback" check cannot tell apart."""

    def invoke(self, *args, **kwargs):
        kwargs.setdefault("catch_exceptions", False)
        return super().invoke(*args, **kwargs)


def restore_without_background(*args: str):
    """`i2i restore ARGS` on the CPU with the face model alone (no background model, no face
    parser): what the metadata tests need of a run."""
    from i2icli.cli.app import app

    return CommandRunner().invoke(app, ["restore", *args, "--device", "cpu", "--bg-model", "none", "--parser", "none"])


def traced_peak(call):
    """``call()``'s result, and the most bytes Python's allocators (NumPy's arrays among them) held
    while it ran."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class TinyWeights:
    """Files on disk, by registry name, plus the weights.toml that pins their hashes."""

    folder: Path
    files: dict[str, Path]
    registry: Path


_ENTRIES = {
    # name: (file, role, arch)
    "gfpgan-1.4": ("GFPGANv1.4.pth", "face", "gfpgan-v1-clean"),
    "realesrgan-x2plus": ("RealESRGAN_x2plus.pth", "background", "rrdbnet"),
    "realesrgan-x4plus": ("RealESRGAN_x4plus.pth", "background", "rrdbnet"),
    "realesr-general-x4v3": ("realesr-general-x4v3.pth", "background", "srvgg"),
    "retinaface-resnet50": ("detection_Resnet50_Final.pth", "detector", "retinaface"),
    "parsenet": ("parsing_parsenet.pth", "parser", "parsenet"),
}


def write_registry(path: Path, files: dict[str, Path], hub_repo: str = "i2i-tests/tiny") -> Path:
    lines = []
    for name, file in files.items():
        _, role, arch = _ENTRIES[name]
        lines += [
            "[[checkpoint]]",
            f'name = "{name}"',
            f'role = "{role}"',
            f'file = "{file.name}"',
            f"bytes = {file.stat().st_size}",
            f'sha256 = "{sha256(file)}"',
            f'hub_repo = "{hub_repo}"',
            f'hub_file = "{file.name}"',
            'hub_revision = "main"',
            f'url = "https://example.invalid/{file.name}"',
            f'arch = "{arch}"',
            'license = "test"',
            'origin = "made by the test suite"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(autouse=True)
def messages_routed_as_before():
    """A CLI run routes the package's log and Python's warnings to the console for the rest of the
    process: undone after each test, so that no test sees what an earlier one set up."""
    import logging
    import warnings

    logger = logging.getLogger("i2icli")
    handlers, show = list(logger.handlers), warnings.showwarning
    yield
    logger.handlers[:] = handlers
    warnings.showwarning = show


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> TinyWeights:
    folder = tmp_path_factory.mktemp("weights")
    # The detector entry holds a mobilenet0.25 RetinaFace: same loading path, 60x smaller than resnet50.
    contents = {
        "gfpgan-1.4": {"params_ema": tiny_gfpgan_state_dict()},
        "realesrgan-x2plus": {"params_ema": tiny_rrdb_state_dict(2)},
        "realesrgan-x4plus": {"params_ema": tiny_rrdb_state_dict(4)},
        "realesr-general-x4v3": {"params": tiny_srvgg_state_dict()},
        "retinaface-resnet50": retinaface_state_dict("mobile0.25"),
        "parsenet": parsenet_state_dict(),
    }
    files = {}
    for name, content in contents.items():
        files[name] = folder / _ENTRIES[name][0]
        torch.save(content, files[name])
    registry = write_registry(tmp_path_factory.mktemp("registry") / "weights.toml", files)
    return TinyWeights(folder, files, registry)


@pytest.fixture
def use_registry(monkeypatch: pytest.MonkeyPatch):
    """Point i2icli.weights at another weights.toml for one test."""
    from i2icli import weights

    def apply(path: Path) -> None:
        monkeypatch.setattr(weights, "_registry_path", lambda: path)
        weights.load_registry.cache_clear()

    yield apply
    weights.load_registry.cache_clear()


@pytest.fixture
def tiny_env(tiny_weights: TinyWeights, use_registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TinyWeights:
    """The tiny registry in use and its files in $I2I_WEIGHTS_DIR; caches isolated in tmp_path."""
    use_registry(tiny_weights.registry)
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tiny_weights.folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tiny_weights


@pytest.fixture
def landmarks_detector(monkeypatch: pytest.MonkeyPatch):
    """Random detector weights find no faces; this makes the detector report given landmarks instead."""
    from i2icli.faces.detect import DetectedFace, FaceDetector

    def apply(landmark_sets: list[np.ndarray]) -> None:
        def detect(self, rgb, *, threshold=0.97, nms_threshold=0.4):
            faces = []
            for points in landmark_sets:
                lo, hi = points.min(0), points.max(0)
                pad = (hi - lo).max()
                faces.append(DetectedFace(np.concatenate([lo - pad, hi + pad]), 0.999, points.astype(np.float32)))
            return faces

        monkeypatch.setattr(FaceDetector, "detect", detect)

    return apply
