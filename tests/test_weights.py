"""The registry, where names resolve to, hash refusal, and safe loading."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import fake_hub_cache
from safetensors.torch import save_file

from i2icli import weights
from i2icli.errors import WeightsError

# Published sizes and hashes (the product's issue tracker lists them from several sources).
PUBLISHED = {
    "gfpgan-1.3": ("GFPGANv1.3.pth", 348632874, "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70"),
    "gfpgan-1.4": ("GFPGANv1.4.pth", 348632874, "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"),
    "realesrgan-x2plus": ("RealESRGAN_x2plus.pth", 67061725, "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"),
    "realesrgan-x4plus": ("RealESRGAN_x4plus.pth", 67040989, "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1"),
    "realesr-general-x4v3": ("realesr-general-x4v3.pth", 4885111, "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292"),
    "retinaface-resnet50": ("detection_Resnet50_Final.pth", 109497761, "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d"),
    "parsenet": ("parsing_parsenet.pth", 85331193, "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2"),
}


# Files whose publishers give only the sha256 prefix in the file name (torchvision, pytorch-fid).
PREFIX_PINNED = {"vgg19-imagenet": "dcbb9e9d", "vgg16-imagenet": "397923af", "fid-inception": "6726825d"}


def test_registry_matches_published_facts():
    registry = {c.name: c for c in weights.registry() if not c.manual and not c.pinned_by_prefix}
    assert set(registry) == set(PUBLISHED)
    for name, (file, size, digest) in PUBLISHED.items():
        checkpoint = registry[name]
        assert (checkpoint.file, checkpoint.bytes, checkpoint.sha256) == (file, size, digest)
        assert checkpoint.url.startswith("https://github.com/") and checkpoint.url.endswith(file)
        assert checkpoint.hub_repo and checkpoint.hub_file and checkpoint.hub_revision
        assert checkpoint.license and checkpoint.origin and checkpoint.arch


def test_prefix_pins_are_the_publishers_file_name_prefixes():
    registry = {c.name: c for c in weights.registry() if c.pinned_by_prefix and not c.manual}
    assert set(registry) == set(PREFIX_PINNED)
    for name, prefix in PREFIX_PINNED.items():
        checkpoint = registry[name]
        assert checkpoint.sha256 == prefix and f"-{prefix}." in checkpoint.file
        assert checkpoint.download_url.startswith("https://") and checkpoint.download_url.endswith(checkpoint.file)


def test_prefix_pin_accepts_only_files_with_that_prefix(tmp_path):
    from dataclasses import replace

    blob = tmp_path / "vgg19-dcbb9e9d.pth"
    blob.write_bytes(b"not the real network")
    digest = weights.sha256_of(blob)
    good = replace(weights.find("vgg19-imagenet"), sha256=digest[:8])
    weights.verify(good, blob)
    with pytest.raises(WeightsError) as caught:
        weights.verify(weights.find("vgg19-imagenet"), blob)
    assert str(blob) in str(caught.value) and "sha256" in str(caught.value)
    with pytest.raises(WeightsError):
        weights.verify(replace(good, sha256=""), blob)


def test_registry_is_packaged_with_the_wheel():
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"weights.toml" = "i2icli/weights.toml"' in text


def test_unknown_name_lists_known_names():
    with pytest.raises(WeightsError) as caught:
        weights.find("gfpgan-9")
    assert "gfpgan-1.4" in caught.value.hint


def test_name_resolves_from_weights_dir_and_is_verified(tiny_env):
    resolved = weights.resolve("gfpgan-1.4")
    assert resolved.path == tiny_env.files["gfpgan-1.4"]
    assert resolved.checkpoint.name == "gfpgan-1.4"


def test_hash_mismatch_is_refused(tiny_env, tmp_path, monkeypatch):
    folder = tmp_path / "bad"
    folder.mkdir()
    damaged = folder / tiny_env.files["parsenet"].name
    data = bytearray(tiny_env.files["parsenet"].read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError) as caught:
        weights.resolve("parsenet")
    message = str(caught.value)
    assert str(damaged) in message and "sha256" in message and "i2i weights fetch parsenet" in message
    assert "\n" not in message


def test_name_resolves_from_offline_hub_cache(tiny_env, tmp_path, monkeypatch):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {"GFPGANv1.4.pth": tiny_env.files["gfpgan-1.4"]})
    resolved = weights.resolve("gfpgan-1.4")
    assert "models--i2i-tests--tiny" in str(resolved.path)
    assert weights.local_copy(weights.find("gfpgan-1.4")) == resolved.path


def test_missing_everywhere_says_where_and_what_to_do(tiny_env, monkeypatch):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    with pytest.raises(WeightsError) as caught:
        weights.resolve("parsenet")
    message = str(caught.value)
    for expected in ("parsing_parsenet.pth", "I2I_WEIGHTS_DIR", "Hub i2i-tests/tiny", "i2i weights fetch parsenet", "path"):
        assert expected in message
    assert "\n" not in message


class _Response:
    """What urllib.request.urlopen returns, serving ``payload``."""

    def __init__(self, payload: bytes):
        self.payload, self.offset = payload, 0
        self.headers = {"Content-Length": str(len(payload))}

    def read(self, n):
        chunk = self.payload[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _serve_official_url(monkeypatch, payload: bytes) -> None:
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "_reachable", lambda url: "example.invalid" in url)
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: _Response(payload))


def test_url_download_goes_to_cache_and_is_verified(tiny_env, monkeypatch, tmp_path):
    """The official-URL fallback: stream into the i2i cache, hash-check, rename."""
    payload = tiny_env.files["realesr-general-x4v3"].read_bytes()
    _serve_official_url(monkeypatch, payload)
    seen = []
    path = weights.fetch(weights.find("realesr-general-x4v3"), progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / "i2i" / "weights" / "realesr-general-x4v3.pth"
    assert path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert not list(path.parent.glob(".*part"))


def test_a_download_with_the_wrong_hash_is_not_kept(tiny_env, monkeypatch, tmp_path):
    """Refused before it takes the cache's name: a second run downloads again instead of
    finding the bad file and refusing it until someone deletes it by hand."""
    payload = bytearray(tiny_env.files["realesr-general-x4v3"].read_bytes())
    payload[-10] ^= 0xFF
    _serve_official_url(monkeypatch, bytes(payload))
    with pytest.raises(WeightsError) as caught:
        weights.fetch(weights.find("realesr-general-x4v3"))
    message = str(caught.value)
    assert "realesr-general-x4v3.pth" in message and "not kept" in message and "I2I_WEIGHTS_DIR" in message
    assert not list((tmp_path / "cache" / "i2i" / "weights").iterdir())


def _damaged(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    return bytes(data)


def test_a_hub_mirror_with_another_file_is_passed_over_for_the_official_release(tiny_env, monkeypatch, tmp_path, caplog):
    good = tiny_env.files["realesr-general-x4v3"]
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(_damaged(good))
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {good.name: wrong})
    _serve_official_url(monkeypatch, good.read_bytes())
    checkpoint = weights.find("realesr-general-x4v3")
    with caplog.at_level("WARNING", logger="i2icli"):
        path = weights.fetch(checkpoint)
    assert path == tmp_path / "cache" / "i2i" / "weights" / good.name and path.read_bytes() == good.read_bytes()
    [warning] = caplog.records
    assert "models--i2i-tests--tiny" in warning.getMessage() and "does not match" in warning.getMessage()
    assert f"another copy was used ({path})" in warning.getMessage()
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # a cache file, readable as any other
    # Next time the verified download is found first: no network, no warning about the mirror.
    caplog.clear()
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: pytest.fail("downloaded again"))
    with caplog.at_level("WARNING", logger="i2icli"):
        assert weights.fetch(checkpoint) == path
    assert not caplog.records


def test_a_wrong_hub_copy_with_nowhere_else_to_go_is_refused_by_path(tiny_env, monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(_damaged(tiny_env.files["parsenet"]))
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {"parsing_parsenet.pth": wrong})
    with caplog.at_level("WARNING", logger="i2icli"), pytest.raises(WeightsError) as caught:
        weights.fetch(weights.find("parsenet"))
    assert "models--i2i-tests--tiny" in caught.value.message and "does not match parsenet" in caught.value.message
    assert not caplog.records  # said once, as the error, not also as a warning before it


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_places_that_cannot_hold_weights_are_named(tiny_env, monkeypatch, tmp_path):
    import os

    checkpoint = weights.find("realesr-general-x4v3")
    # $I2I_WEIGHTS_DIR naming a file is a mistake to point out, not a folder to look into.
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tiny_env.files["parsenet"]))
    with pytest.raises(WeightsError, match=r"\$I2I_WEIGHTS_DIR=.*parsing_parsenet.pth: is a file, not a folder"):
        weights.fetch(checkpoint)
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tmp_path / "empty"))  # removed by _serve_official_url below
    # A download cache that cannot be made: one error naming it, not an OSError.
    blocker = tmp_path / "cachefile"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    _serve_official_url(monkeypatch, tiny_env.files["realesr-general-x4v3"].read_bytes())
    with pytest.raises(WeightsError, match="cannot hold downloads") as caught:
        weights.fetch(checkpoint)
    assert "XDG_CACHE_HOME" in caught.value.hint
    # A folder in the way of the file itself is no full disk.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(tmp_path / "empty"))
    _serve_official_url(monkeypatch, tiny_env.files["realesr-general-x4v3"].read_bytes())
    os.makedirs(tmp_path / "cache2" / "i2i" / "weights" / checkpoint.file / "inside")
    with pytest.raises(WeightsError, match="could not be saved") as caught:
        weights.fetch(checkpoint)
    assert "disk space" not in caught.value.hint


def test_a_damaged_download_cache_is_replaced_by_a_fresh_download(tiny_env, monkeypatch, tmp_path):
    good = tiny_env.files["realesr-general-x4v3"]
    cached = tmp_path / "cache" / "i2i" / "weights" / good.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_damaged(good))
    _serve_official_url(monkeypatch, good.read_bytes())
    assert weights.fetch(weights.find("realesr-general-x4v3")) == cached
    assert cached.read_bytes() == good.read_bytes()


def test_a_wrong_file_put_in_the_weights_folder_is_refused_even_if_a_good_copy_is_cached(tiny_env, monkeypatch, tmp_path):
    good = tiny_env.files["parsenet"]
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {good.name: good})
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / good.name).write_bytes(_damaged(good))
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError, match="mine/parsing_parsenet.pth: sha256"):
        weights.fetch(weights.find("parsenet"))


def test_a_registry_name_is_never_a_stray_file_of_that_name(tiny_env, tmp_path, monkeypatch):
    """A file called gfpgan-1.4 in the working directory must not stand in, unchecked, for the
    verified checkpoint; ./gfpgan-1.4 names the file."""
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.ones(1)}, tmp_path / "gfpgan-1.4")
    resolved = weights.resolve("gfpgan-1.4")
    assert resolved.checkpoint is not None and resolved.path == tiny_env.files["gfpgan-1.4"]
    own = weights.resolve("./gfpgan-1.4")
    assert own.checkpoint is None and own.path == Path("gfpgan-1.4")
    torch.save({"w": torch.ones(1)}, tmp_path / "my-model")
    assert weights.resolve("my-model").path == Path("my-model")


def test_behind_a_proxy_the_download_is_tried_without_a_direct_connection(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("direct connections are blocked")

    monkeypatch.setattr("socket.create_connection", refuse)
    for variable in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    weights._reachable.cache_clear()
    try:
        assert not weights._reachable("https://example.invalid/file.pth")
        weights._reachable.cache_clear()
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
        assert weights._reachable("https://example.invalid/file.pth")
    finally:
        weights._reachable.cache_clear()


def test_an_interrupted_copy_leaves_no_partial_file(tmp_path, monkeypatch):
    source = tmp_path / "source.pth"
    source.write_bytes(b"x" * 1000)
    destination = tmp_path / "to"

    def copy_then_interrupt(src, dst):
        Path(dst).write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(weights.shutil, "copyfile", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        weights.copy_into(destination, source, "model.pth")
    assert list(destination.iterdir()) == []


def test_user_path_is_loaded_without_hash(tmp_path):
    own = tmp_path / "my_finetune.pth"
    torch.save({"params": {"w": torch.ones(2)}}, own)
    resolved = weights.resolve(str(own))
    assert resolved.checkpoint is None and resolved.path == own
    with pytest.raises(WeightsError, match="not found"):
        weights.resolve(str(tmp_path / "nope.pth"))


def test_state_dict_unwrapping(tmp_path):
    tensor = torch.arange(4.0)
    cases = {
        "ema.pth": {"params_ema": {"a": tensor}, "params": {"a": tensor * 0}},
        "params.pth": {"params": {"a": tensor}},
        "module.pth": {"module.a": tensor},
        "plain.pth": {"a": tensor},
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
        assert torch.equal(weights.load_state_dict(tmp_path / name)["a"], tensor), name
    save_file({"a": tensor}, tmp_path / "model.safetensors")
    assert torch.equal(weights.load_state_dict(tmp_path / "model.safetensors")["a"], tensor)


class _Payload:
    """Unpickling this creates a marker file: it is what a hostile checkpoint runs on load."""

    marker: Path | None = None

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_unsafe_and_corrupt_files_are_refused(tmp_path):
    # torch.save's own zip format: an unsafe torch.load would accept the file and run the payload.
    _Payload.marker = tmp_path / "payload-ran"
    hostile = tmp_path / "hostile.pth"
    torch.save({"a": torch.zeros(1), "b": _Payload()}, hostile)
    with pytest.raises(WeightsError, match="holds Python objects besides tensors"):
        weights.load_state_dict(hostile)
    from i2icli.training.checkpoints import load_training_checkpoint

    with pytest.raises(WeightsError, match="not a readable training checkpoint"):
        load_training_checkpoint(hostile)
    assert not _Payload.marker.exists()
    raw_pickle = tmp_path / "raw.pth"
    with open(raw_pickle, "wb") as handle:
        pickle.dump({"a": _Payload()}, handle)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x04 definitely not a checkpoint")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (hostile, raw_pickle, corrupt, empty):
        with pytest.raises(WeightsError) as caught:
            weights.load_state_dict(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert not _Payload.marker.exists()


def test_every_torch_load_is_weights_only():
    package = Path(weights.__file__).parent
    for source in package.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", source.read_text()):
            assert "weights_only=True" in call, f"{source}: {call}"


def test_a_picture_or_a_folder_given_as_checkpoint_is_named_for_what_it_is(tmp_path):
    """Only a pickle can hold Python objects; a PNG is simply not a checkpoint, and a folder is
    not a file (not "not found")."""
    picture = tmp_path / "photo.pth"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(WeightsError) as caught:
        weights.load_state_dict(picture)
    assert "not a readable checkpoint" in str(caught.value) and "Python objects" not in str(caught.value)
    for attempt in (lambda: weights.resolve(str(tmp_path)), lambda: weights.load_state_dict(tmp_path)):
        with pytest.raises(WeightsError, match="is a folder, not a checkpoint file"):
            attempt()


def test_a_missing_training_checkpoint_names_the_training_command(tmp_path):
    from i2icli.pipelines.loading import load_trained

    with pytest.raises(WeightsError) as caught:
        load_trained(str(tmp_path / "gone.pt"), "paired", lambda content: content)
    assert "no such checkpoint file or run folder" in str(caught.value) and "i2i train paired" in str(caught.value)
    assert "weights list" not in str(caught.value)


def test_a_checkpoint_with_nan_or_infinite_weights_is_refused(tmp_path):
    """It would load and run, and write every output as a black (NaN) image."""
    import torch

    from i2icli.errors import WeightsError
    from i2icli.weights import load_state_dict

    good = {"conv.weight": torch.ones(2, 2), "steps": torch.tensor(3)}
    torch.save(good, tmp_path / "good.pth")
    assert load_state_dict(tmp_path / "good.pth").keys() == good.keys()
    for bad_value in (float("nan"), float("inf")):
        torch.save({**good, "head.bias": torch.tensor([0.0, bad_value])}, tmp_path / "bad.pth")
        with pytest.raises(WeightsError, match="not finite .* first in 'head.bias'"):
            load_state_dict(tmp_path / "bad.pth")
