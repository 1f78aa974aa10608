"""Checkpoints: the registry in weights.toml, where files are found, download, sha256, safe loading.

Everything that touches a checkpoint file goes through this module, so that every file used
by name has been hash-checked and every file is unpickled with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import shutil
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from i2icli.errors import WeightsError, first_line

logger = logging.getLogger(__name__)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

WEIGHTS_DIR_ENV = "I2I_WEIGHTS_DIR"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
_HASH_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    """One pretrained checkpoint as weights.toml describes it."""

    name: str
    role: str
    file: str
    bytes: int | None  # None where weights.toml knows no size (it writes 0)
    sha256: str
    hub_repo: str
    hub_file: str
    hub_revision: str
    url: str
    arch: str
    license: str
    origin: str
    params: dict[str, Any] = field(default_factory=dict)
    # Published only where i2i cannot download from and without a checksum: used by path only.
    manual: bool = False
    # torchvision's weights enum for the file (e.g. "VGG19_Weights.IMAGENET1K_V1"): torchvision
    # knows the official download address, so it is asked rather than repeated here.
    torchvision_weights: str = ""
    # For manual downloads: what to do with the file once downloaded.
    manual_hint: str = ""

    @property
    def pinned_by_prefix(self) -> bool:
        """True when only the hash prefix the publisher embeds in the file name is known.

        torchvision, basicsr and pytorch-fid name files ``<name>-<first 8 hex of sha256>.pth``
        and publish no full digest. Such a pin catches damaged and swapped files, but 32 bits
        are no defence against a deliberately forged file; `i2i weights verify` prints the full
        digest of a local copy so that it can be pinned.
        """
        return len(self.sha256) < 64

    @property
    def download_url(self) -> str:
        if self.torchvision_weights:
            from torchvision import models

            enum_name, _, member = self.torchvision_weights.partition(".")
            return getattr(getattr(models, enum_name), member).url
        return self.url


@dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint file ready to load; ``checkpoint`` is None for a user's own file."""

    path: Path
    checkpoint: Checkpoint | None

    @property
    def label(self) -> str:
        return self.checkpoint.name if self.checkpoint else str(self.path)


def _registry_path() -> Path:
    # Installed wheels carry weights.toml inside the package; a source checkout has it at the root.
    packaged = Path(__file__).with_name("weights.toml")
    return packaged if packaged.is_file() else Path(__file__).resolve().parent.parent / "weights.toml"


@lru_cache(maxsize=None)
def load_registry(path: Path | None = None) -> tuple[Checkpoint, ...]:
    """Read weights.toml (or ``path``) into checkpoint records, in file order."""
    path = path or _registry_path()
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    records = []
    for entry in data.get("checkpoint", []):
        entry = dict(entry)
        entry["params"] = dict(entry.get("params", {}))
        entry["bytes"] = entry.get("bytes") or None
        records.append(Checkpoint(**entry))
    return tuple(records)


def registry() -> tuple[Checkpoint, ...]:
    return load_registry(None)


def entry_named(name: str) -> Checkpoint | None:
    """The registry entry called ``name``, or None."""
    return next((checkpoint for checkpoint in registry() if checkpoint.name == name), None)


def find(name: str, *, path_allowed: bool = True) -> Checkpoint:
    """The registry entry called ``name``; a WeightsError lists the known names otherwise, and
    offers a file instead where the caller (a model option, not `i2i weights`) takes one."""
    if (checkpoint := entry_named(name)) is not None:
        return checkpoint
    known = ", ".join(c.name for c in registry())
    or_a_file = "; or give a path to a .pth/.safetensors file" if path_allowed else ""
    raise WeightsError(f"unknown checkpoint name {name!r}", f"known names: {known}{or_a_file}")


def looks_like_path(spec: str) -> bool:
    """True when a model option names a file rather than a registry entry.

    A registry name always means the registry's verified file, even if a file of that name sits
    in the working directory: otherwise a stray ``gfpgan-1.4`` there would be loaded unchecked.
    ``./gfpgan-1.4`` names the file.
    """
    if entry_named(spec) is not None:
        return False
    return spec.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in spec or "/" in spec or Path(spec).exists()


def weights_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def download_cache_dir() -> Path:
    """Where files fetched from an official URL are kept (never the working directory)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "i2i" / "weights"


class _HubDownloadFailed(Exception):
    """The Hub download failed with an error huggingface_hub does not name as a network or HTTP
    failure: one of its optional transfer back ends (hf_xet, hf_transfer) raises types of its own."""


def _from_hub(checkpoint: Checkpoint, *, local_only: bool) -> Path | None:
    """The Hub copy through huggingface_hub's own cache; downloads unless ``local_only``. Raises
    _HubDownloadFailed for a failure of unknown type."""
    if not checkpoint.hub_repo:
        return None
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    local_only = local_only or _hub_offline() or not _reachable(constants.ENDPOINT)
    try:
        found = hf_hub_download(
            checkpoint.hub_repo, checkpoint.hub_file, revision=checkpoint.hub_revision, local_files_only=local_only
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return None
    except Exception as error:  # only the hub call is in the try: no error of i2i's own is caught here
        raise _HubDownloadFailed(first_line(error)) from error
    return Path(found)


def _hub_download_error(checkpoint: Checkpoint, failure: _HubDownloadFailed) -> WeightsError:
    # The error's type names the back end that failed; its message, where it has one, says how.
    cause = ": ".join(part for part in (type(failure.__cause__).__name__, str(failure)) if part)
    return WeightsError(
        f"checkpoint {checkpoint.file} ({checkpoint.name}) could not be downloaded from the Hub "
        f"({checkpoint.hub_repo}): {cause}",
        f"try again; if it keeps failing, download {checkpoint.file} yourself and put it in ${WEIGHTS_DIR_ENV}",
        role=checkpoint.role,
    )


def candidate_locations(checkpoint: Checkpoint) -> list[str]:
    """Human-readable list of where a name is looked for, for error messages."""
    places = []
    if (directory := weights_dir()) is not None:
        places.append(str(directory / checkpoint.file))
    else:
        places.append(f"${WEIGHTS_DIR_ENV}/{checkpoint.file} (not set)")
    if checkpoint.hub_repo:
        places.append(f"Hub {checkpoint.hub_repo}/{checkpoint.hub_file}")
    # Named, not asked for: torchvision gives its address only once PyTorch is imported (seconds).
    places.append(checkpoint.url or f"torchvision's {checkpoint.torchvision_weights} release")
    return places


def local_copies(checkpoint: Checkpoint) -> list[Path]:
    """Every file for ``checkpoint`` already on this machine, without any network access:
    $I2I_WEIGHTS_DIR, then i2i's download cache, then the Hub cache. Not yet hash-checked."""
    if checkpoint.manual:
        return []
    found = (_in_weights_dir(checkpoint), *_in_caches(checkpoint))
    return list(dict.fromkeys(path for path in found if path is not None))  # $I2I_WEIGHTS_DIR may be the cache


def local_copy(checkpoint: Checkpoint) -> Path | None:
    """The first file for ``checkpoint`` on this machine (see ``local_copies``), or None."""
    return next(iter(local_copies(checkpoint)), None)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _in_weights_dir(checkpoint: Checkpoint) -> Path | None:
    directory = weights_dir()
    if directory is not None and directory.exists() and not directory.is_dir():
        # Ignored, it would leave "looked in: model.pth/GFPGANv1.4.pth" as the only clue.
        raise WeightsError(f"${WEIGHTS_DIR_ENV}={directory}: is a file, not a folder",
                           "point it at the folder that holds the checkpoint files")
    return directory / checkpoint.file if directory is not None and (directory / checkpoint.file).is_file() else None


def _refuse_what_stands_in_weights_dir(checkpoint: Checkpoint) -> None:
    """Something at the checkpoint's name in $I2I_WEIGHTS_DIR that is not a file (a folder, a link
    to nothing) was meant as the file: said as what it is, not passed over for "not on this machine"."""
    directory = weights_dir()
    if directory is None or not os.path.lexists(directory / checkpoint.file):
        return
    placed = directory / checkpoint.file
    if placed.is_file():  # the file itself, or a link to one: nothing stands in its way
        return
    if placed.is_dir():
        raise WeightsError(f"{placed}: is a folder, not a checkpoint file",
                           f"put the file {checkpoint.file} itself in ${WEIGHTS_DIR_ENV} in place of the folder")
    if placed.is_symlink():
        raise WeightsError(f"{placed}: is a link that leads to no file", "point the link at the checkpoint file, or remove it")
    raise WeightsError(f"{placed}: is not a regular file", f"put the file {checkpoint.file} itself in ${WEIGHTS_DIR_ENV}")


def weights_dir_stand_in(checkpoint: Checkpoint) -> WeightsError | None:
    """The error loading ``checkpoint`` by name ends with when what stands at its file name in
    $I2I_WEIGHTS_DIR is no file (a folder, a link to nothing); None when nothing or a file is there."""
    try:
        _refuse_what_stands_in_weights_dir(checkpoint)
    except WeightsError as error:
        return error
    return None


def _in_caches(checkpoint: Checkpoint) -> tuple[Path | None, Path | None]:
    """``(i2i's download cache, the Hub cache)``: each the file, or None."""
    fetched = download_cache_dir() / checkpoint.file
    try:
        hub_cached = _from_hub(checkpoint, local_only=True)
    except _HubDownloadFailed:  # a cache that cannot be read holds no copy to use
        hub_cached = None
    return (fetched if fetched.is_file() else None), hub_cached


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(checkpoint: Checkpoint, path: Path, *, shown_as: Path | None = None) -> str:
    """Refuse a file whose sha256 is not the pinned one (or does not start with the pinned prefix);
    return the file's full sha256.

    ``shown_as`` is the name a download in progress is reported under.
    """
    try:
        actual = sha256_of(path)
    except OSError as error:
        # Named as unreadable, not damaged; and a copy in a cache is then passed over like a damaged one.
        raise WeightsError(f"{path}: cannot be read ({error.strerror or error})",
                           "make it readable (chmod u+r), or delete it and run "
                           f"`i2i weights fetch {checkpoint.name}`") from None
    if not actual.startswith(checkpoint.sha256) or not checkpoint.sha256:
        if shown_as is not None:
            raise WeightsError(
                f"{shown_as}: the download's sha256 {actual[:12]}… does not match {checkpoint.name} "
                f"(expected {checkpoint.sha256[:12]}…), so it was not kept",
                f"try again later, or download {checkpoint.file} yourself and put it in ${WEIGHTS_DIR_ENV}",
            )
        # A renamed file of another entry (GFPGANv1.3.pth saved as GFPGANv1.4.pth, say) is no damage.
        other = next((c for c in registry() if c.sha256 and c is not checkpoint and actual.startswith(c.sha256)), None)
        if other is not None:
            raise WeightsError(
                f"{path}: this is {other.name}'s file ({other.file}), not {checkpoint.name}'s",
                f"rename it to {other.file} and use the name {other.name}, or delete it and run "
                f"`i2i weights fetch {checkpoint.name}`",
            )
        raise WeightsError(
            f"{path}: sha256 {actual[:12]}… does not match {checkpoint.name} (expected {checkpoint.sha256[:12]}…); "
            "the file is damaged or not the official checkpoint",
            f"delete it and run `i2i weights fetch {checkpoint.name}`, or pass the file as a path to use it unchecked",
        )
    return actual


@lru_cache(maxsize=None)
def _reachable(url: str) -> bool:
    """A quick connect to the host, so an offline machine fails in seconds, not after retries.

    Behind a proxy a direct connection says nothing (it may be blocked while the proxy works),
    so the download is simply tried: urllib and huggingface_hub both go through the proxy.
    """
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if urllib.request.getproxies().get(parsed.scheme or "https") and not urllib.request.proxy_bypass(parsed.hostname or ""):
        return True
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=3).close()
        return True
    except OSError:
        return False


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _download_from_url(checkpoint: Checkpoint, progress: Callable[[int, int], None] | None) -> Path | None:
    url = checkpoint.download_url
    if _hub_offline() or not url or not _reachable(url):
        return None
    target = download_cache_dir() / checkpoint.file
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Download next to the target and rename, so an interrupted download never looks complete.
        handle, partial = tempfile.mkstemp(prefix=f".{checkpoint.file}.", suffix=".part", dir=target.parent)
    except OSError as error:
        raise WeightsError(f"{target.parent}: cannot hold downloads ({error.strerror or error})",
                           "set XDG_CACHE_HOME to a folder that can be written, or put the file in "
                           f"${WEIGHTS_DIR_ENV}") from None
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or checkpoint.bytes or 0)
            done = 0
            while chunk := response.read(_HASH_CHUNK // 8):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
                if checkpoint.bytes and done > checkpoint.bytes:
                    break  # longer than the release, so not it: no need to fill the disk to find out
        # Checked before it takes the cache's name, so a bad download never sits there as the file.
        verify(checkpoint, Path(partial), shown_as=target)
        os.chmod(partial, 0o666 & ~_umask())  # mkstemp makes it private; a cache file is not
        os.replace(partial, target)
        return target
    except (urllib.error.URLError, ssl.SSLError, ConnectionError, TimeoutError, http.client.HTTPException):
        return None  # unreachable or cut off: the caller names the other places the file can come from
    except OSError as error:  # saving failed here (a full disk, say): not a network problem
        hint = ("free some disk space, or set XDG_CACHE_HOME to a folder on a larger disk" if error.errno == errno.ENOSPC
                else "move what is in the way, or set XDG_CACHE_HOME to another folder")
        raise WeightsError(f"{target}: the download could not be saved ({error.strerror or error})", hint) from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def missing_weights_error(checkpoint: Checkpoint) -> WeightsError:
    ways_out = f"run `i2i weights fetch {checkpoint.name}` on a connected machine, put the file in ${WEIGHTS_DIR_ENV}, "
    # A leftover HF_HUB_OFFLINE on a connected machine is otherwise indistinguishable from no network.
    why = "was not downloaded: HF_HUB_OFFLINE is set" if _hub_offline() else "could not be downloaded"
    if _hub_offline():
        ways_out = "unset HF_HUB_OFFLINE to download it, " + ways_out
    return WeightsError(
        f"checkpoint {checkpoint.file} ({checkpoint.name}) is not on this machine and {why}; "
        f"looked in: {'; '.join(candidate_locations(checkpoint))}",
        ways_out + "or pass a checkpoint path to the model option",
        role=checkpoint.role, hint_naming=ways_out + "or pass a checkpoint path with {option}",
    )


def manual_download_error(checkpoint: Checkpoint) -> WeightsError:
    return WeightsError(
        f"{checkpoint.name} is published only at {checkpoint.url}, without a checksum, so i2i does not fetch or "
        "verify it by name",
        checkpoint.manual_hint or "download it there and pass its path to the command's checkpoint option",
        role=checkpoint.role,
        hint_naming=None if checkpoint.manual_hint else "download it there and pass its path with {option}",
    )


def fetch(checkpoint: Checkpoint, *, progress: Callable[[int, int], None] | None = None) -> Path:
    """Find or download ``checkpoint`` and check its hash; raises WeightsError if it cannot be had.

    A file in $I2I_WEIGHTS_DIR was put there by hand, so a wrong one is refused at once. Any other
    copy that fails its check (a damaged cache, or a Hub mirror holding another model under the
    name, which has happened) is passed over with a warning for the next source, so one bad mirror
    does not block a name that the official release still serves."""
    if checkpoint.manual:
        raise manual_download_error(checkpoint)
    if (by_hand := _in_weights_dir(checkpoint)) is not None:
        verify(checkpoint, by_hand)
        return by_hand
    _refuse_what_stands_in_weights_dir(checkpoint)
    refused: list[WeightsError] = []

    def verified(path: Path | None) -> Path | None:
        if path is None:
            return None
        try:
            verify(checkpoint, path)
            return path
        except WeightsError as error:
            refused.append(error)
            return None

    downloaded, hub_cached = _in_caches(checkpoint)
    found = verified(downloaded) or verified(hub_cached)
    hub_failure = None
    if found is None and hub_cached is None:  # a cached Hub copy that failed would only come down again
        try:
            found = verified(_from_hub(checkpoint, local_only=False))
        except _HubDownloadFailed as failure:  # the release address may still serve it
            hub_failure = failure
    # The official download is checked before it is kept, and raises if it is wrong.
    found = found or _download_from_url(checkpoint, progress)
    if found is None and hub_failure is not None:  # what went wrong, rather than just "not downloaded"
        for error in refused:  # a damaged copy passed over is still said: deleting it is part of the remedy
            logger.warning("%s", error.message)
        raise _hub_download_error(checkpoint, hub_failure)
    if found is None and refused:  # the first refusal is the error; any other is said once, before it
        for error in refused[1:]:
            logger.warning("%s", error.message)
        raise refused[0]
    if found is None:
        raise missing_weights_error(checkpoint)
    for error in refused:
        logger.warning("%s; another copy was used (%s)", error.message, found)
    return found


@dataclass(frozen=True)
class CheckpointSource:
    """Where a model option's checkpoint would come from, found without network, hashing or loading.

    ``status`` is "here" (``path`` is the file), "download" (``origin`` says from where) or
    "missing" (``reason`` says why; ``error`` is the error the run would end with).
    """

    name: str
    file: str
    size: int | None
    status: str
    path: Path | None = None
    origin: str | None = None
    reason: str | None = None
    error: WeightsError | None = field(default=None, compare=False, repr=False)

    @classmethod
    def unobtainable(cls, spec: str, error: WeightsError, file: str | None = None) -> CheckpointSource:
        """A checkpoint the run could not have, for ``error`` (the one the run would end with)."""
        return cls(spec, file or Path(spec).name, None, "missing", reason=error.message, error=error)

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "bytes": self.size, "status": self.status,
                "path": self.path and str(self.path), "origin": self.origin, "reason": self.reason}


def checkpoint_source(spec: str) -> CheckpointSource:
    """Where ``spec`` (registry name or file path) would be had from, as ``resolve`` would look,
    but without downloading, hashing or opening anything: a copy found here is not yet verified."""
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        try:
            refuse_what_is_no_file(path)
        except WeightsError as error:
            return CheckpointSource.unobtainable(spec, error, path.name)
        return CheckpointSource(spec, path.name, path.stat().st_size, "here", path=path)
    try:
        checkpoint = find(spec)
        if checkpoint.manual:
            raise manual_download_error(checkpoint)
        # Before the caches, as fetch looks: what stands in the weights folder ends the run even
        # where a cached copy would do.
        _refuse_what_stands_in_weights_dir(checkpoint)
        here = local_copy(checkpoint)
    except WeightsError as error:
        return CheckpointSource.unobtainable(spec, error)
    if here is not None:
        return CheckpointSource(spec, checkpoint.file, checkpoint.bytes, "here", path=here)
    if _hub_offline():  # fetch would look nowhere else
        return CheckpointSource(spec, checkpoint.file, checkpoint.bytes, "missing",
                                reason="not on this machine, and HF_HUB_OFFLINE is set",
                                error=missing_weights_error(checkpoint))
    # Whether the network answers is not asked: a dry run touches none.
    origin = "the Hub" if checkpoint.hub_repo else (checkpoint.url or "torchvision's release")
    return CheckpointSource(spec, checkpoint.file, checkpoint.bytes, "download", origin=origin)


def refuse_what_is_no_file(path: Path) -> None:
    """Refuse a checkpoint path that is a folder, a link to nothing, or not there."""
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder, not a checkpoint file", "pass the checkpoint file itself")
    if path.is_symlink() and not path.exists():
        raise WeightsError(f"{path}: is a link that leads to no file", "point the link at the checkpoint file, or pass the file itself")
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file not found", "check the path, or use a name from `i2i weights list`")


def resolve(spec: str, *, progress: Callable[[int, int], None] | None = None) -> ResolvedWeights:
    """Turn a model option (registry name or file path) into a verified file."""
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        refuse_what_is_no_file(path)
        return ResolvedWeights(path, None)
    checkpoint = find(spec)
    return ResolvedWeights(fetch(checkpoint, progress=progress), checkpoint)


_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "netG", "g_ema")
_WRAPPER_DEPTH = 16


def unwrap_state_dict(loaded: Any) -> dict[str, torch.Tensor]:
    """Strip the containers and ``module.`` prefixes training scripts add around a state dict."""
    import torch

    # A pickle can nest wrappers without end, or hold a dict that contains itself ({"model":
    # <itself>}): each dict is looked into once, and only so deep as training scripts nest them.
    looked_into: dict[int, bool] = {}

    def holds_tensors(content: Any, depth: int = 0) -> bool:
        if not isinstance(content, dict) or depth > _WRAPPER_DEPTH:
            return False
        if id(content) not in looked_into:
            looked_into[id(content)] = False  # met again inside itself: adds nothing
            looked_into[id(content)] = any(
                isinstance(value, torch.Tensor) or (key in _WRAPPER_KEYS and holds_tensors(value, depth + 1))
                for key, value in content.items())
        return looked_into[id(content)]

    state, followed = loaded, set()
    # Followed even where tensors sit beside the wrapper (a step counter saved as a tensor, say);
    # a wrapper key holding no tensors (a config) is no state dict.
    while isinstance(state, dict):
        followed.add(id(state))
        inner = next((state[k] for k in _WRAPPER_KEYS
                      if id(state.get(k)) not in followed and holds_tensors(state.get(k))), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        raise ValueError("no tensors found")
    # Only names can be weights: a hand-made file may key its tensors by number.
    state = {key: value for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}
    if not state:
        raise ValueError("no tensors found")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Load a .pth/.safetensors file safely (no arbitrary unpickling) onto the CPU."""
    path = Path(path)
    import torch

    loaded = load_checkpoint_file(path)
    try:
        state = unwrap_state_dict(loaded)
    except ValueError:
        raise WeightsError(
            f"{path}: not a readable checkpoint (no tensors found)",
            f"{_download_again(path)}, or check that it is a PyTorch .pth or .safetensors file",
        ) from None
    # Sparse and nested tensors load safely but fit no network, and fail the finiteness check below.
    unusual = next((key for key, value in state.items() if value.layout != torch.strided or value.is_nested), None)
    if unusual is not None:
        raise WeightsError(f"{path}: holds a sparse or nested tensor ({unusual!r}), which no i2i network takes",
                           "save the weights as dense tensors (tensor.to_dense()), or use another checkpoint")
    # A NaN or infinite weight turns every output into NaN, written out as a black image.
    broken = next((key for key, value in state.items()
                   if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if broken is not None:
        raise WeightsError(f"{path}: holds values that are not finite (NaN or infinity), first in {broken!r}",
                           "the file is damaged or comes from a training run that diverged; use another checkpoint")
    return state


def _download_again(path: Path) -> str:
    """How to get a good copy of ``path``: `i2i weights fetch`, or, for a registry model i2i does
    not fetch (``manual``), the page it is published on."""
    # A model of several files names them all in one ``file`` ("latest_net_G.pth + latest_net_Corr.pth").
    entry = next((checkpoint for checkpoint in registry()
                  if path.name in (name.strip() for name in checkpoint.file.split("+"))), None)
    if entry is None:
        return "re-download it (`i2i weights fetch`)"
    if entry.manual:
        return f"download {entry.name} again from {entry.url}"
    return f"re-download it (`i2i weights fetch {entry.name}`)"


def load_checkpoint_file(path: Path | str, *, damaged_hint: str = "download it again, or check the file") -> Any:
    """The whole content of a .pth/.safetensors file, loaded safely onto the CPU: training
    checkpoints keep several networks and optimiser states side by side. ``damaged_hint`` is what
    to do about a file that cannot be read (one's own training run cannot be downloaded again)."""
    import torch

    path = Path(path)
    try:
        # By content, not name: a safetensors file saved as model.pth is still one.
        if _looks_like_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: checkpoint file not found") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a folder, not a checkpoint file", "pass the checkpoint file itself") from None
    except PermissionError as error:  # not damaged: downloading it again would not help
        raise WeightsError(f"{path}: cannot be read ({error.strerror or error})",
                           "make it readable (chmod u+r), or run as a user who can read it") from None
    except Exception as error:  # torch/safetensors raise many types for damaged or hostile files
        # Only a pickle (a zip archive holding one, or a legacy file starting with the pickle
        # opcode) can hold "Python objects": anything else, an image say, is simply no checkpoint.
        if "weights only load failed" in str(error).lower() and _looks_pickled(path):
            raise WeightsError(
                f"{path}: holds Python objects besides tensors, which i2i does not load (loading them could run code)",
                "re-save it as a plain state dict (torch.save(model.state_dict(), PATH)) or as .safetensors",
            ) from None
        raise WeightsError(
            f"{path}: not a readable checkpoint (damaged, cut short, or not a PyTorch .pth or .safetensors file)",
            damaged_hint,
        ) from None


def _looks_like_safetensors(path: Path) -> bool:
    """A little-endian header length, then the header's JSON; a torch file opens with a zip or
    pickle signature instead."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return path.suffix.lower() == ".safetensors"  # the load that follows names the problem
    return len(head) == 9 and head[8:9] == b"{"


def _looks_pickled(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def copy_into(directory: Path, path: Path, name: str) -> Path:
    """Copy a fetched file into ``directory`` (used by `i2i weights fetch --to`)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"{directory}: cannot be used as the destination folder ({error.strerror or error})",
                           "give --to a folder") from None
    target = directory / name
    if target.resolve() != path.resolve():
        temporary: Path | None = None
        try:
            # A name of its own: two copies into one folder at once must not write into one file.
            handle, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
            os.close(handle)
            temporary = Path(partial)
            shutil.copyfile(path, temporary)
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; a copy to carry is not
            os.replace(temporary, target)
        except OSError as error:
            raise WeightsError(f"{target}: cannot be written ({error.strerror or error})",
                               "free some disk space, or choose another --to folder") from None
        finally:  # also after Ctrl-C: no half copy is left in the user's folder
            if temporary is not None:
                temporary.unlink(missing_ok=True)
    return target
