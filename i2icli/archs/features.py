"""Frozen, pretrained feature networks: VGG-16/19 trunks and the FID Inception-v3 stem.

* :class:`VGGFeatures` is the convolutional trunk (``features``) of torchvision's VGG-16 or
  VGG-19, cut after the deepest activation asked for, returning named activations
  (``relu3_4``, ``pool2``, ...). It loads torchvision's ImageNet files
  (``vgg16-397923af.pth``, ``vgg19-dcbb9e9d.pth``) unchanged.
* :class:`FIDInceptionFeatures` is the Inception-v3 that pytorch-fid uses for FID (weights
  ported from TensorFlow, ``pt_inception-2015-12-05-6726825d.pth``), cut after its second
  max-pool: pytorch-fid's output block 1, 192 channels at 35x35 for the 299x299 input.

Both take images in [-1, 1], shaped (b, 3, h, w); both are frozen (no parameter requires a
gradient) and stay in eval mode, while gradients still flow to the input, so they can serve
as losses inside an optimisation loop.

The modules are assembled from torchvision's and pytorch-fid's own classes, so their key
names and arithmetic are those of the originals. Loading is strict: a state dict is checked
against the *whole* official layout (classifier and fully connected layers included, although
the cut trunks never use them) before the trunk's tensors are copied, because a file with the
right trunk but the wrong head is a sign that it is some other network.

Nothing here touches the file system or the network: callers load (and verify) the files and
hand over the state dicts.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping, Sequence

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "VGGFeatures",
    "FIDInceptionFeatures",
    "vgg_layer_names",
    "VGG_DEPTHS",
    "FID_INPUT_SIZE",
    "FID_CHANNELS",
]

VGG_DEPTHS = (16, 19)
# Convolutions per torchvision VGG depth: lets a loader tell which VGG a file holds.
_VGG_DEPTH_BY_CONVS = {8: 11, 10: 13, 13: 16, 16: 19}
_VGG_BUILDERS = {16: torchvision.models.vgg16, 19: torchvision.models.vgg19}

# torchvision's ImageNet weights expect images normalised with these statistics.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

FID_INPUT_SIZE = 299
FID_CHANNELS = 192
# The modules of the FID Inception up to (and including) its second max-pool, in order; the
# names are the attribute names of torchvision's Inception3, hence the state-dict keys.
_FID_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2")
# On to pytorch-fid's last block, whose average-pooled 2048 channels are what FID scores compare.
_FID_POOL3_TRUNK = (*_FID_TRUNK, "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
_FID_CLASSES = 1008
_TORCHVISION_CLASSES = 1000


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _materialise(module: nn.Module) -> nn.Module:
    """A copy, on the CPU and freshly initialised, of a module built on the meta device.

    Building on the meta device costs nothing, so a trunk can be cut from a full torchvision
    model without allocating (and randomly initialising) the 120M-parameter classifier it drops.
    The copy leaves the cached meta network untouched.
    """
    module = copy.deepcopy(module).to_empty(device="cpu")
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _check_state_dict(
    state_dict: Mapping[str, Tensor],
    layout: Mapping[str, torch.Size],
    what: str,
    optional: frozenset[str] = frozenset(),
) -> None:
    """Raise ValueError unless ``state_dict`` has exactly ``layout``'s keys and shapes.

    Keys in ``optional`` may be absent (BatchNorm's ``num_batches_tracked``, which files saved
    by older PyTorch lack and which inference never reads).
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"The {what} weights must be a state dict (a mapping of names to tensors), not {type(state_dict).__name__}.")
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"The {what} state dict holds a non-tensor value under {not_tensors[0]!r}; expected a plain state dict of tensors.")
    missing = [k for k in layout if k not in state_dict and k not in optional]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"The {what} state dict is missing {missing[0]!r}{more}, so it is not the expected file.")
    unexpected = [k for k in state_dict if k not in layout]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"The {what} state dict has an unexpected key {unexpected[0]!r}{more}, so it is not the expected file.")
    for key, expected in layout.items():
        if key not in state_dict:
            continue
        value = state_dict[key]
        if value.shape != expected:
            raise ValueError(f"The {what} state dict has {key!r} of shape {_shape(value.shape)} where {_shape(expected)} is expected.")
        if not key.endswith("num_batches_tracked") and not value.is_floating_point():
            raise ValueError(f"The {what} state dict has {key!r} of dtype {value.dtype} where floating-point weights are expected.")


def _check_images(images: Tensor, who: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = _shape(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{who} expects images shaped (b, 3, h, w) in [-1, 1], got {shape}.")


class _Frozen(nn.Module):
    """A module that never trains: parameters frozen, always in eval mode.

    ``train()`` is overridden because these networks often sit inside a model that a training
    loop switches to train mode; the Inception's BatchNorm would then normalise with batch
    statistics instead of its stored ones and change the features.
    """

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:  # noqa: ARG002 - the mode is deliberately ignored
        return super().train(False)


# --------------------------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------------------------


@functools.cache
def _vgg_meta(depth: int) -> nn.Module:
    if depth not in _VGG_BUILDERS:
        raise ValueError(f"VGG depth must be one of {', '.join(map(str, VGG_DEPTHS))}, got {depth!r}.")
    with torch.device("meta"):
        return _VGG_BUILDERS[depth](weights=None)


@functools.cache
def _vgg_layout(depth: int) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in _vgg_meta(depth).state_dict().items()}


@functools.cache
def _vgg_names(depth: int) -> dict[str, int]:
    """Standard layer names (``conv3_4``, ``relu3_4``, ``pool3``) -> index in ``features``.

    Blocks are the runs of convolutions between max-pools, counted from 1, and convolutions are
    counted from 1 within a block; a ReLU takes the name of the convolution it follows.
    """
    names: dict[str, int] = {}
    block, conv = 1, 0
    for index, module in enumerate(_vgg_meta(depth).features):
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = index
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{conv}"] = index
        elif isinstance(module, nn.MaxPool2d):
            names[f"pool{block}"] = index
            block, conv = block + 1, 0
    return names


def vgg_layer_names(depth: int) -> tuple[str, ...]:
    """Every activation name :class:`VGGFeatures` of this depth accepts, shallowest first."""
    return tuple(_vgg_names(depth))


class VGGFeatures(_Frozen):
    """torchvision's VGG-16/19 convolutional trunk, returning named activations.

    ``layers`` are standard names: ``conv{block}_{n}`` (before the ReLU), ``relu{block}_{n}``
    and ``pool{block}``; e.g. ``relu1_2, relu2_2, relu3_4, relu4_4`` for VGG-19 or ``relu3_3,
    relu4_3`` for VGG-16. The trunk is cut right after the deepest one, so deeper weights are
    neither kept nor computed.

    Input: images (b, 3, h, w) in [-1, 1]; ImageNet mean/std normalisation is applied here.
    Output: ``{name: activation}`` in the order of ``layers``. Frozen and in eval mode; the
    output is differentiable with respect to the input.
    """

    def __init__(self, depth: int, layers: Sequence[str]) -> None:
        super().__init__()
        if depth not in VGG_DEPTHS:
            raise ValueError(f"VGG depth must be one of {', '.join(map(str, VGG_DEPTHS))}, got {depth!r}.")
        if isinstance(layers, str):
            layers = [layers]
        layers = tuple(dict.fromkeys(layers))  # drop repeats, keep order
        if not layers:
            raise ValueError("VGGFeatures needs at least one layer name, e.g. 'relu3_4'.")
        names = _vgg_names(depth)
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(
                f"VGG-{depth} has no layer named {unknown[0]!r}; its names are {', '.join(n for n in names if not n.startswith('conv'))} "
                "(and conv*_* for the pre-activation outputs)."
            )
        self.depth = depth
        self.layers = layers
        self._index = {name: names[name] for name in layers}
        last = max(self._index.values())
        # Cut torchvision's own trunk (built on the meta device, then materialised) so that the
        # indices, and hence the state-dict keys features.N.*, are torchvision's.
        self.features = _materialise(_vgg_meta(depth).features[: last + 1])
        for module in self.features:
            if isinstance(module, nn.ReLU):
                # torchvision's ReLUs work in place, which would overwrite a returned conv output.
                module.inplace = False
        self.channels = {name: self._channels_at(index) for name, index in self._index.items()}
        # Not saved with the weights: they are constants of torchvision's ImageNet training.
        self.register_buffer("_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    def _channels_at(self, index: int) -> int:
        for module in reversed(self.features[: index + 1]):
            if isinstance(module, nn.Conv2d):
                return module.out_channels
        raise AssertionError("every VGG layer name follows a convolution")

    def load_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a torchvision ``vgg16`` / ``vgg19`` ImageNet state dict (strict).

        The whole file is checked against torchvision's layout for this depth (all
        ``features.N.*`` keys and the ``classifier.*`` head, with shapes); only the kept
        trunk's tensors are copied. Raises ValueError naming the problem otherwise.
        """
        what = f"VGG-{self.depth}"
        if isinstance(state_dict, Mapping):
            self._check_vgg_kind(state_dict)
        _check_state_dict(state_dict, _vgg_layout(self.depth), what)
        own = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        self.load_state_dict({key: state_dict[key] for key in own}, strict=True)

    def _check_vgg_kind(self, state_dict: Mapping[str, Tensor]) -> None:
        """Name the network when the file is some other VGG, before the generic key check."""
        keys = [k for k in state_dict if isinstance(k, str)]
        if any(re.fullmatch(r"features\.\d+\.running_mean", k) for k in keys):
            raise ValueError(
                f"This state dict is a batch-normalised VGG (torchvision's vgg*_bn), not the plain VGG-{self.depth} this network needs."
            )
        convs = [
            k for k in keys if re.fullmatch(r"features\.\d+\.weight", k) and isinstance(state_dict[k], Tensor) and state_dict[k].ndim == 4
        ]
        if not convs:
            raise ValueError(f"This state dict has no features.N.weight convolutions, so it is not a torchvision VGG-{self.depth} file.")
        expected = sum(isinstance(m, nn.Conv2d) for m in _vgg_meta(self.depth).features)
        if len(convs) != expected:
            other = _VGG_DEPTH_BY_CONVS.get(len(convs))
            kind = f"a VGG-{other}" if other else "no torchvision VGG"
            raise ValueError(
                f"This state dict has {len(convs)} convolutions ({kind}), but VGG-{self.depth} has {expected}; use the matching vgg{self.depth} file."
            )
        if not any(k.startswith("classifier.") for k in keys):
            raise ValueError(
                f"This state dict has no classifier.* keys, so it is not a complete torchvision VGG-{self.depth} file (vgg{self.depth}-*.pth)."
            )

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        _check_images(images, "VGGFeatures")
        # [-1, 1] -> [0, 1] -> ImageNet-normalised, in the same steps as torchvision's
        # ToTensor + Normalize preprocessing, so the result matches it bit for bit.
        x = ((images + 1) * 0.5 - self._mean) / self._std
        wanted = {index: name for name, index in self._index.items()}
        found: dict[str, Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                found[wanted[index]] = x
        return {name: found[name] for name in self.layers}


# --------------------------------------------------------------------------------------------
# FID Inception-v3
# --------------------------------------------------------------------------------------------


def _assemble_fid_inception() -> nn.Module:
    """The network ``pytorch_fid.inception.fid_inception_v3`` builds, minus its download.

    pytorch-fid starts from torchvision's Inception-v3 with a 1008-way classifier and no
    auxiliary branch, then swaps in its patched Mixed blocks (TensorFlow's pooling). Only the
    forward passes differ from torchvision's blocks, but using the same classes keeps the
    layout exactly the one the official file was saved from.
    """
    from pytorch_fid.inception import (
        FIDInceptionA,
        FIDInceptionC,
        FIDInceptionE_1,
        FIDInceptionE_2,
    )

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=_FID_CLASSES, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


@functools.cache
def _fid_meta() -> nn.Module:
    with torch.device("meta"):
        return _assemble_fid_inception()


@functools.cache
def _fid_layout() -> dict[str, torch.Size]:
    return {k: v.shape for k, v in _fid_meta().state_dict().items()}


class FIDInceptionFeatures(_Frozen):
    """pytorch-fid's FID Inception-v3, cut after the second max-pool (its output block 1), or with
    ``pooled=True`` run to the end and average-pooled (its block 3: the 2048 features of FID).

    Input: images (b, 3, h, w) in [-1, 1], resized to 299x299 bilinearly (align_corners=False)
    exactly as ``pytorch_fid.inception.InceptionV3(resize_input=True, normalize_input=False)``
    does. Output: (b, 192, 35, 35), or (b, 2048) pooled. Frozen and in eval mode.
    """

    def __init__(self, *, pooled: bool = False) -> None:
        super().__init__()
        full = _fid_meta()
        self.pooled = pooled
        self._trunk = _FID_POOL3_TRUNK if pooled else _FID_TRUNK
        for name in self._trunk:
            self.add_module(name, _materialise(getattr(full, name)))
        self._freeze()

    def load_fid_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` state dict (strict).

        The whole file is checked against the full FID Inception layout (every Mixed block,
        ``fc`` of shape (1008, 2048)); only the trunk's tensors are copied. Raises ValueError
        naming the problem otherwise, in particular for torchvision's ImageNet Inception-v3.
        """
        if isinstance(state_dict, Mapping):
            fc = state_dict.get("fc.weight")
            aux = any(isinstance(k, str) and k.startswith("AuxLogits.") for k in state_dict)
            if aux or (isinstance(fc, Tensor) and fc.ndim == 2 and fc.shape[0] == _TORCHVISION_CLASSES):
                raise ValueError(
                    "This state dict is torchvision's ImageNet Inception-v3 (1000-class fc"
                    f"{' and an AuxLogits branch' if aux else ''}), not the FID Inception network "
                    "(pytorch-fid's pt_inception-2015-12-05 weights, 1008 classes) that FID scores need."
                )
        layout = _fid_layout()
        optional = frozenset(k for k in layout if k.endswith("num_batches_tracked"))
        _check_state_dict(state_dict, layout, "FID Inception-v3", optional)
        own = self.state_dict()
        # A file without num_batches_tracked keeps the module's own counter (unused in eval).
        self.load_state_dict({key: state_dict.get(key, value) for key, value in own.items()}, strict=True)

    def forward(self, images: Tensor) -> Tensor:
        _check_images(images, "FIDInceptionFeatures")
        x = F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        for name in self._trunk:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3)) if self.pooled else x

