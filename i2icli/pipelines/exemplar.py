"""The exemplar pipeline (CoCosNet v2): a semantic input plus an exemplar photo give a photo with the
input's structure and the exemplar's appearance. Inference only; the networks are loaded once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2icli import weights
from i2icli.archs.cocosnet2 import (
    SIZE_MULTIPLE,
    CoCosNetConfig,
    CorrespondenceNet,
    TranslationGenerator,
    cocosnet_config_from_state_dicts,
    fold_spectral_norm,
    propagation_orders,
)
from i2icli.errors import InputError, WeightsError
from i2icli.imageio import DEFAULT_MAX_PIXELS, Picture, image_size
from i2icli.pipelines import memory_hints
from i2icli.pipelines.arguments import (
    check_picture,
    check_seed,
    check_whole,
    is_whole,
    kind_of,
)
from i2icli.pipelines.devices import AUTO, explicit_dtype, pick_device, synchronize
from i2icli.pipelines.exemplar_checkpoints import (
    CORRESPONDENCE_FILE,
    DEFAULT_CHECKPOINT,
    GENERATOR_FILE,
    checkpoint_files,
)
from i2icli.pipelines.imagetensors import to_picture
from i2icli.pipelines.memory import reports_out_of_memory
from i2icli.pixels import max_value
from i2icli.semantics.inputs import Semantics, load_semantics
from i2icli.semantics.pose import PAD_VALUE, square_frame

MIN_SIZE = 64


@dataclass(frozen=True)
class ExemplarSettings:
    """Inference knobs. ``size`` is the square working size (the official model: 512)."""

    size: int = 512
    iterations: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not is_whole(self.size) or self.size < MIN_SIZE or self.size % SIZE_MULTIPLE:
            raise ValueError(f"size must be a multiple of {SIZE_MULTIPLE}, at least {MIN_SIZE}; got {self.size}")
        check_whole("iterations", self.iterations, 1)
        check_seed(self.seed)


@dataclass
class ExemplarResult:
    """The translated photo at the exemplar's aspect ratio, and the exemplar warped at each level."""

    picture: Picture
    warps: list[Picture]  # coarsest first: size/8, size/4, size/2, size
    seconds: dict[str, float] = field(default_factory=dict)


def build_cocosnet(
    correspondence_state: dict[str, torch.Tensor],
    generator_state: dict[str, torch.Tensor],
    *,
    iterations: int = 5,
) -> tuple[CorrespondenceNet, TranslationGenerator]:
    """Both networks from official-format state dicts, strictly: every key, every shape."""
    if "conv_img.weight" in correspondence_state and "patch_match.initial_layer.0.weight" in generator_state:
        raise WeightsError(f"{CORRESPONDENCE_FILE} and {GENERATOR_FILE} are swapped", "rename the two files")
    try:
        config = cocosnet_config_from_state_dicts(correspondence_state, generator_state, iterations=iterations)
    except KeyError as error:
        raise WeightsError(f"not a CoCosNet v2 checkpoint ({error.args[0]})",
                           "pass the folder of a CoCosNet v2 model (e.g. the official DeepFashionHD one)") from None
    except ValueError as error:
        raise WeightsError(str(error)) from None
    return (
        _strict(lambda: CorrespondenceNet(config), correspondence_state, CORRESPONDENCE_FILE),
        _strict(lambda: TranslationGenerator(config), generator_state, GENERATOR_FILE),
    )


def _strict(factory, state: dict[str, torch.Tensor], what: str):  # type: ignore[no-untyped-def]
    # Built on the meta device: the checkpoint's tensors are adopted, nothing is initialised twice.
    with torch.device("meta"):
        model = factory()
    folded = fold_spectral_norm(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in folded]
    unexpected = [k for k in folded if k not in expected]
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(f"{what} does not fit CoCosNet v2: keys {', '.join(detail)}",
                           "the file is from another model or version; use the official checkpoint files")
    for key, tensor in expected.items():
        if tuple(folded[key].shape) != tuple(tensor.shape):
            raise WeightsError(f"{what} does not fit CoCosNet v2: {key} has shape {tuple(folded[key].shape)}, "
                               f"expected {tuple(tensor.shape)}", "the two files must come from the same model")
    model.load_state_dict({k: v.float() for k, v in folded.items()}, strict=True, assign=True)
    return model.eval()


def pick_exemplar_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on CUDA (the official inference runs under fp16 autocast), else fp32."""
    if precision == AUTO:
        return torch.float16 if device.type == "cuda" else torch.float32
    return explicit_dtype(precision, device)


class ExemplarPipeline:
    """CoCosNet v2 inference: load once, then :meth:`translate` any number of pairs."""

    def __init__(
        self,
        correspondence: CorrespondenceNet,
        generator: TranslationGenerator,
        *,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        settings: ExemplarSettings | None = None,
        source: str = "",
    ) -> None:
        # Channels-last convolutions were measured faster here (encoders 11.9 -> 10.6 s, generator
        # 9.1 -> 7.8 s at 512 on CPU), but their different float rounding flips near-tied PatchMatch
        # candidates; the default layout keeps the output identical to the official forward.
        self.correspondence = correspondence.to(device)
        self.generator = generator.to(device)
        self.device = device
        self.dtype = dtype
        self.settings = settings or ExemplarSettings()
        self.source = source

    @classmethod
    @reports_out_of_memory(memory_hints.LOAD)
    def load(
        cls,
        checkpoint: str | Path = DEFAULT_CHECKPOINT,
        *,
        device: str | torch.device = AUTO,
        precision: str = AUTO,
        settings: ExemplarSettings | None = None,
    ) -> ExemplarPipeline:
        """Load both networks from ``checkpoint``, the folder holding latest_net_Corr.pth and
        latest_net_G.pth (the official DeepFashionHD model is a manual download: see `i2i weights
        list`). ``device``: "auto", "cpu", "cuda", "cuda:1" or "mps"; ``precision``: "auto", "fp32",
        "fp16" (CUDA) or "bf16"."""
        settings = settings or ExemplarSettings()
        device = device if isinstance(device, torch.device) else pick_device(device)
        dtype = pick_exemplar_dtype(precision, device)
        corr_path, gen_path, label = checkpoint_files(checkpoint)
        # A file that cannot be read is named by its own path already; a mismatch needs the folder.
        corr_state, gen_state = weights.load_state_dict(corr_path), weights.load_state_dict(gen_path)
        try:
            corr, gen = build_cocosnet(corr_state, gen_state, iterations=settings.iterations)
        except WeightsError as error:
            raise WeightsError(f"{label}: {error.message}", error.hint) from None
        return cls(corr, gen, device=device, dtype=dtype, settings=settings, source=label)

    @property
    def config(self) -> CoCosNetConfig:
        return self.correspondence.config

    @property
    def semantic_channels(self) -> int:
        return self.config.semantic_nc

    def read_semantics(
        self, path: Path | str, *, frame: tuple[int, int], label_nc: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS, picture: Picture | None = None,
    ) -> Semantics:
        """A pose file, label map or edge map at this pipeline's size and channel count (``picture``:
        the map already read, from standard input say; ``path`` then only names it)."""
        if label_nc is not None:
            check_whole("label_nc", label_nc, 1)
        return load_semantics(path, size=self.settings.size, channels=self.semantic_channels, frame=frame,
                              label_nc=label_nc, max_pixels=max_pixels, picture=picture)

    def read_pair(
        self, input: Path | str | Picture, exemplar: Picture, exemplar_pose: Path | str | Picture, *,
        input_pose: Path | str | None = None, label_nc: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> tuple[Semantics, Semantics]:
        """The input's and the exemplar's semantics, as ``translate`` takes them with ``exemplar``.

        ``input`` is a pose file, a label or edge map, or with ``input_pose`` the photo that pose
        was found on (only its size is used: the frame of the pose's pixel coordinates); a pose
        file on its own is laid out in the exemplar's frame. ``exemplar_pose`` is the exemplar's
        own pose file or map. A map or photo may be a Picture already read; ``label_nc``: maps
        are label maps of that many classes, else edge maps."""
        check_picture(exemplar, "ExemplarPipeline.read_pair()", "exemplar")
        exemplar_frame = (exemplar.width, exemplar.height)
        if input_pose is not None:
            # The pose's coordinates are in that photo's pixels, so only its size is read.
            frame = ((input.width, input.height) if isinstance(input, Picture)
                     else image_size(input, max_pixels=max_pixels))
            semantic = self.read_semantics(input_pose, frame=frame, label_nc=label_nc, max_pixels=max_pixels)
        else:
            semantic = self._semantics_of(input, "input", exemplar_frame, label_nc, max_pixels)
        return semantic, self._semantics_of(exemplar_pose, "exemplar pose", exemplar_frame, label_nc, max_pixels)

    def _semantics_of(self, given: Path | str | Picture, role: str, frame: tuple[int, int], label_nc: int | None,
                      max_pixels: int) -> Semantics:
        if isinstance(given, Picture):  # named by its file ("-" for standard input), else by its role
            return self.read_semantics(given.source or role, frame=frame, label_nc=label_nc, max_pixels=max_pixels,
                                       picture=given)
        return self.read_semantics(given, frame=frame, label_nc=label_nc, max_pixels=max_pixels)

    @reports_out_of_memory(memory_hints.EXEMPLAR)
    def translate(self, semantic: Semantics, exemplar: Picture, exemplar_semantic: Semantics) -> ExemplarResult:
        """Render ``semantic``'s structure with ``exemplar``'s appearance (an RGB picture), in
        ``semantic``'s frame: the output and the warps show the input's structure, so they are
        cropped to where it is laid out (the exemplar's frame for a pose file on its own)."""
        for given, role in ((semantic, "input's"), (exemplar_semantic, "exemplar's")):
            if not isinstance(given, Semantics):
                raise TypeError(f"ExemplarPipeline.translate() takes the {role} semantics as read_pair() returns them, "
                                f"not {kind_of(given)}; call read_pair(input, exemplar, exemplar_pose) first")
        check_picture(exemplar, "ExemplarPipeline.translate()", "exemplar")
        check_pair(semantic, exemplar, exemplar_semantic)
        size = self.settings.size
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        inputs = [
            torch.from_numpy(semantic.channels)[None],
            torch.from_numpy(exemplar_tensor(exemplar, size))[None],
            torch.from_numpy(exemplar_semantic.channels)[None],
        ]
        sem, ex, ex_sem = (t.to(self.device) for t in inputs)
        orders = propagation_orders(self.settings.seed, self.settings.iterations)
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with torch.inference_mode(), autocast:
            correspondence = self.correspondence(sem, ex, ex_sem, orders)
            self._sync()
            seconds["correspondence"] = time.perf_counter() - started
            image = self.generator(sem, correspondence.warps)
            self._sync()
        seconds["generator"] = time.perf_counter() - started - seconds["correspondence"]
        frame = semantic.frame or (exemplar.width, exemplar.height)
        picture = _to_picture(image[0], frame)
        warps = [_to_picture(w[0], frame) for w in correspondence.warps]
        # Their colours are the exemplar's, in its colour space. Its EXIF is not carried: the result
        # is a new picture, in another pose, of which the exemplar's date taken, camera, exposure and
        # GPS position would be untrue.
        for shown in (picture, *warps):
            shown.icc_profile = exemplar.icc_profile
        seconds["total"] = time.perf_counter() - started
        return ExemplarResult(picture, warps, seconds)

    def _sync(self) -> None:
        synchronize(self.device)


def check_pair(semantic: Semantics, exemplar: Picture, exemplar_semantic: Semantics) -> None:
    """Refuse a pair the model would translate into nonsense without a word: an input and an
    exemplar semantics of different kinds (a pose against a label map), or an exemplar map that
    does not have the exemplar photo's shape, so that the two cannot lie on each other."""
    if semantic.kind != exemplar_semantic.kind:
        raise InputError(exemplar_semantic.source, f"is a {_KIND_NAMES[exemplar_semantic.kind]}, but the input "
                         f"{semantic.source.name} is a {_KIND_NAMES[semantic.kind]}",
                         "give the exemplar's semantics in the same kind as the input's")
    if exemplar_semantic.frame is not None and exemplar_semantic.kind != "pose":
        width, height = exemplar_semantic.frame
        if abs(width * exemplar.height - height * exemplar.width) > 0.01 * exemplar.width * exemplar.height:
            raise InputError(exemplar_semantic.source, f"is {width}x{height}, but the exemplar photo is "
                             f"{exemplar.width}x{exemplar.height}: the map cannot lie on it",
                             "give the map made for that photo (its size, or a scaled copy)")


_KIND_NAMES = {"pose": "pose", "label": "label map", "edge": "edge map"}


def exemplar_tensor(picture: Picture, size: int) -> np.ndarray:
    """(3, S, S) float32 in [-1, 1]: padded with the official grey to a square, bicubic resize."""
    rgb = picture.rgb
    if rgb.dtype != np.uint8:
        # The model saw 8-bit photos; PIL's antialiased bicubic resize wants 8-bit too.
        rgb = np.round(rgb.astype(np.float32) * (255.0 / max_value(rgb.dtype))).astype(np.uint8)
    resized = np.asarray(_padded_and_resized(rgb, size), dtype=np.float32)
    return np.ascontiguousarray((resized / 127.5 - 1.0).transpose(2, 0, 1))


def _padded_and_resized(rgb: np.ndarray, size: int, rows_at_once: int = 256) -> Image.Image:
    """PIL's bicubic resize of ``rgb`` padded to a centred square, without the square: a
    20000x300 photo padded first is 20000x20000 (1.2 GB) to give 512x512.

    PIL resizes across each row, to 8 bits, then down each column. Across, a padding row is the
    same for every row, and the photo's rows are done a band at a time; down, the columns are
    ``size`` wide already. The pixels are PIL's own, to the bit."""
    height, width = rgb.shape[:2]
    side, left, top = square_frame(width, height)
    bicubic = Image.Resampling.BICUBIC
    channels = rgb.shape[2:]
    across = np.empty((side, size, *channels), dtype=np.uint8)
    if width == side:  # padded above and below: those rows are all one padding row
        padding = np.full((1, side, *channels), PAD_VALUE, dtype=np.uint8)
        across[:] = np.asarray(Image.fromarray(padding).resize((size, 1), bicubic))
        across[top : top + height] = np.asarray(Image.fromarray(rgb).resize((size, height), bicubic))
    else:  # padded left and right: each row with its padding, a band of rows at a time
        for start in range(0, height, rows_at_once):
            band = np.full((min(rows_at_once, height - start), side, *channels), PAD_VALUE, dtype=np.uint8)
            band[:, left : left + width] = rgb[start : start + len(band)]
            across[start : start + len(band)] = np.asarray(Image.fromarray(band).resize((size, len(band)), bicubic))
    return Image.fromarray(across).resize((size, size), bicubic)


def _to_picture(image: torch.Tensor, frame: tuple[int, int]) -> Picture:
    """(3, S, S) in [-1, 1] -> 8-bit Picture cropped to the frame's aspect ratio."""
    size = image.shape[-1]
    width, height = frame
    side, left, top = square_frame(width, height)
    x0, y0 = round(left * size / side), round(top * size / side)
    w, h = max(1, round(width * size / side)), max(1, round(height * size / side))
    return to_picture(image[:, y0 : y0 + h, x0 : x0 + w])
