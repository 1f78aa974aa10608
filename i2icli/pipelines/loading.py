"""Loading checkpoints into models, and timing pipeline stages: shared by every pipeline."""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from i2icli import weights
from i2icli.errors import WeightsError, first_line

if TYPE_CHECKING:  # imported where a model is built: a --dry-run asks where checkpoints are without it
    import torch

CHECKPOINT_IN_RUN = Path("checkpoints") / "latest.pt"
DownloadProgress = Callable[[str, int, int], None]  # (file, bytes done, bytes total)


Built = TypeVar("Built")

# The registry architectures each kind of model accepts (``arch`` in weights.toml), so that a
# name given to the wrong option is refused before a download, not after.
_ARCHITECTURES = {
    "GFPGAN": {"gfpgan-v1-clean"},
    "RetinaFace": {"retinaface"},
    "ParseNet": {"parsenet"},
    "Real-ESRGAN": {"rrdbnet", "srvgg"},
    "StyleGAN2 generator": {"stylegan2-fused"},
    "VGG-19": {"vgg19"},
    "VGG-16": {"vgg16"},
    "FID Inception": {"fid-inception"},
}


def _kind(arch: str) -> str:
    """The model kind a registry architecture is, as messages name it ("GFPGAN", not "gfpgan-v1-clean")."""
    return next((kind for kind, archs in _ARCHITECTURES.items() if arch in archs), arch)


def load_checkpoint(
    spec: str | os.PathLike[str],
    what: str,
    builder: Callable[[dict[str, torch.Tensor]], Built],
    progress: DownloadProgress | None = None,
) -> Built:
    """Resolve ``spec`` (name or path), load it safely and build a model with ``builder``.

    Any failure to build becomes one WeightsError naming the file, whatever the builder raised.
    """
    spec = os.fspath(spec)  # a script's Path names a file as its string does
    _refuse_another_kind(spec, what)
    report = (lambda done, total: progress(spec, done, total)) if progress else None
    resolved = weights.resolve(spec, progress=report)
    return _built(builder, weights.load_state_dict(resolved.path), resolved.path, what,
                  f"pass a {what} checkpoint, or a name from `i2i weights list`")


def _refuse_another_kind(spec: str, what: str) -> None:
    expected = _ARCHITECTURES.get(what)
    if expected and not weights.looks_like_path(spec):
        entry = weights.find(spec)
        if entry.arch not in expected:
            names = " or ".join(c.name for c in weights.registry() if c.arch in expected)
            raise WeightsError(f"{spec} is a {_kind(entry.arch)} checkpoint, not a {what} one",
                               f"use {names}, or the path of a {what} checkpoint file")


def checkpoint_source(spec: str, what: str) -> weights.CheckpointSource:
    """Where ``load_checkpoint(spec, what, ...)`` would have its file from, with nothing downloaded or opened."""
    try:
        _refuse_another_kind(spec, what)
    except WeightsError as error:
        return weights.CheckpointSource.unobtainable(spec, error)
    return weights.checkpoint_source(spec)


def _built(build: Callable[[Any], Built], content: Any, path: Path, what: str, hint: str) -> Built:
    """``build(content)``, with whatever it raises about the content turned into one WeightsError naming ``path``."""
    try:
        return build(content)
    except WeightsError as error:
        raise WeightsError(f"{path}: {error.message}", error.hint) from None
    except (RuntimeError, KeyError, ValueError, IndexError, TypeError) as error:
        raise WeightsError(f"{path}: not a {what} checkpoint ({_reason(error)})", hint) from None


def _reason(error: Exception) -> str:
    """The informative line of a build error. torch's load_state_dict opens with "Error(s) in
    loading state_dict for NAME:", which says nothing; the next line names the missing,
    unexpected or misshapen keys."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return first_line(lines[1], 200)
    return first_line(error, 200)


def instantiate(factory: Callable[[], torch.nn.Module], state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Build on the meta device and adopt the checkpoint's tensors: random initialisation of a
    large model only to overwrite it costs about a second per model."""
    import torch

    with torch.device("meta"):
        model = factory()
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


def training_checkpoint_file(spec: str) -> str:
    """A training run's folder stands for its latest checkpoint; files and registry names pass through."""
    path = Path(spec).expanduser()
    if path.is_dir():
        # The run's checkpoints/ folder itself stands for its latest too.
        for latest in (path / CHECKPOINT_IN_RUN, path / Path(CHECKPOINT_IN_RUN).name):
            if latest.is_file():
                return str(latest)
        own_steps = sorted(path.glob("step-*.pt"))
        steps = own_steps or sorted(path.glob("checkpoints/step-*.pt"))
        hint = (f"pass a checkpoint file such as {steps[-1]}" if steps
                else "pass a checkpoint file or a training run's --out folder")
        if own_steps or path.name == CHECKPOINT_IN_RUN.parent.name:
            # The run's checkpoints/ folder: it holds latest.pt itself, not a checkpoints/ inside it.
            raise WeightsError(f"{path}: no {CHECKPOINT_IN_RUN.name} in this checkpoints folder", hint)
        raise WeightsError(f"{path}: no {CHECKPOINT_IN_RUN} in this folder", hint)
    return spec


def load_trained(checkpoint: str | os.PathLike[str], method: str, build: Callable[[object], Built]) -> Built:
    """Build a model from a training checkpoint (a run folder stands for its latest), loaded safely.

    Whatever ``build`` raises about the content becomes one WeightsError naming the file and the
    training command that makes the right kind.
    """
    hint = _trained_hint(method)
    spec = _trained_spec(os.fspath(checkpoint), method)  # a script's Path names a file as its string does
    resolved = weights.resolve(spec)
    # A file of one's own run is not downloaded: an older checkpoint of the run is what there is.
    damaged = ("pass another checkpoint from the run's checkpoints/ folder (step-NNNNNNN.pt), or a whole copy of the file"
               if weights.looks_like_path(spec) else "download it again, or check the file")
    return _built(build, weights.load_checkpoint_file(resolved.path, damaged_hint=damaged), resolved.path, method, hint)


def _trained_hint(method: str) -> str:
    return f"pass a checkpoint (or run folder) from `i2i train {method}`"


def _trained_spec(checkpoint: str, method: str) -> str:
    """The file or registry name ``checkpoint`` (a run folder stands for its latest) comes to,
    refused as ``load_trained`` refuses it before anything is downloaded or opened."""
    hint = _trained_hint(method)
    spec = training_checkpoint_file(checkpoint)
    if weights.looks_like_path(spec) and not Path(spec).expanduser().exists():
        if Path(spec).expanduser().is_symlink():
            weights.refuse_what_is_no_file(Path(spec).expanduser())  # named as the link it is
        raise WeightsError(f"{spec}: no such checkpoint file or run folder", hint)
    if not weights.looks_like_path(spec):
        # A registry name is only good for a model of this method (the registry has none yet):
        # refused before any download, and a plain word is a file that is not there.
        entry = weights.entry_named(spec)
        if entry is None:
            raise WeightsError(f"{spec}: no such checkpoint file or run folder", hint)
        if entry.arch != method:
            raise WeightsError(f"{spec} is a {_kind(entry.arch)} checkpoint, not a {method} one", hint)
    return spec


def trained_checkpoint_source(checkpoint: str, method: str) -> weights.CheckpointSource:
    """Where ``load_trained(checkpoint, method, ...)`` would have its file from (a run folder's
    latest checkpoint), with nothing downloaded or opened; named as the option gave it."""
    try:
        spec = _trained_spec(checkpoint, method)
    except WeightsError as error:
        return weights.CheckpointSource.unobtainable(checkpoint, error)
    found = weights.checkpoint_source(spec)
    return dataclasses.replace(found, name=checkpoint)
