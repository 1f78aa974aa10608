"""Checkpoints a careless or hostile user hands i2i: each refused with one line naming the file
and what to do, or loaded as meant."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import CommandRunner, fake_hub_cache, tiny_rrdb_state_dict

from i2icli import weights
from i2icli.cli.app import app
from i2icli.errors import WeightsError


def _deny_reading(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Reading ``denied`` fails as it does without read permission (the tests may run as root,
    whom chmod does not stop)."""
    import builtins

    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


def test_a_tensor_beside_the_wrapper_does_not_hide_the_weights(tmp_path):
    """A training script that saves its step count as a tensor next to params_ema."""
    state = tiny_rrdb_state_dict(2)
    torch.save({"params_ema": state, "iter": torch.tensor(5000)}, tmp_path / "wrapped.pth")
    loaded = weights.load_state_dict(tmp_path / "wrapped.pth")
    assert loaded.keys() == state.keys()
    # A wrapper key that holds no tensors (a config) is no state dict: the weights beside it are.
    torch.save({**state, "model": {"arch": "RRDBNet"}}, tmp_path / "with_config.pth")
    assert weights.load_state_dict(tmp_path / "with_config.pth").keys() == state.keys()


def test_tensors_keyed_by_number_are_no_state_dict(tmp_path):
    torch.save({0: torch.ones(2), 1: torch.zeros(2)}, tmp_path / "numbered.pth")
    with pytest.raises(WeightsError) as caught:
        weights.load_state_dict(tmp_path / "numbered.pth")
    assert str(tmp_path / "numbered.pth") in str(caught.value) and "no tensors found" in str(caught.value)
    torch.save({"a": torch.ones(2), 7: torch.zeros(2)}, tmp_path / "mixed.pth")
    assert list(weights.load_state_dict(tmp_path / "mixed.pth")) == ["a"]


def test_a_checkpoint_keyed_by_number_given_to_a_command_is_one_line(tiny_env, tmp_path):
    torch.save({0: torch.ones(2)}, tmp_path / "numbered.pth")
    photo = Path(__file__).resolve().parent.parent / "examples" / "old_photo.jpg"
    result = CommandRunner().invoke(app, ["restore", str(photo), "-o", str(tmp_path / "out.png"),
                                          "--model", str(tmp_path / "numbered.pth")])
    assert result.exit_code == 1
    assert "numbered.pth: not a readable checkpoint" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()


def test_an_unreadable_checkpoint_is_not_called_damaged(tmp_path, monkeypatch):
    own = tmp_path / "mine.pth"
    torch.save({"a": torch.ones(1)}, own)
    monkeypatch.setattr(torch, "load", lambda path, **kwargs: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(path))))
    with pytest.raises(WeightsError) as caught:
        weights.load_state_dict(own)
    assert caught.value.message == f"{own}: cannot be read (Permission denied)"
    assert "chmod" in caught.value.hint and "download" not in caught.value.hint


def test_an_unreadable_copy_is_named_and_passed_over(tiny_env, tmp_path, monkeypatch, caplog):
    good = tiny_env.files["parsenet"]
    checkpoint = weights.find("parsenet")
    cached = tmp_path / "cache" / "i2i" / "weights" / good.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(good.read_bytes())
    fake_hub_cache(tmp_path / "hub", "i2i-tests/tiny", {good.name: good})
    # In $I2I_WEIGHTS_DIR: refused, said as unreadable.
    _deny_reading(monkeypatch, good)
    with pytest.raises(WeightsError) as caught:
        weights.fetch(checkpoint)
    assert caught.value.message == f"{good}: cannot be read (Permission denied)" and "chmod" in caught.value.hint
    # In i2i's download cache: passed over for the good Hub copy, with a warning.
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    _deny_reading(monkeypatch, cached)
    with caplog.at_level("WARNING", logger="i2icli"):
        found = weights.fetch(checkpoint)
    assert "models--i2i-tests--tiny" in str(found)
    assert any("cannot be read" in record.getMessage() for record in caplog.records)


def test_verify_reports_an_unreadable_copy_and_goes_on(tiny_env, monkeypatch):
    _deny_reading(monkeypatch, tiny_env.files["parsenet"])
    result = CommandRunner().invoke(app, ["weights", "verify", "parsenet", "gfpgan-1.4", "--json"])
    assert result.exit_code == 1
    import json

    document = json.loads(result.stdout)
    statuses = {record["name"]: record["status"] for record in document["files"]}
    assert statuses == {"parsenet": "failed", "gfpgan-1.4": "ok"}
    assert "cannot be read" in document["files"][0]["error"]


@pytest.mark.parametrize("stand_in", ["folder", "dangling link", "link loop"])
def test_what_is_not_a_file_in_the_weights_folder_is_named_for_what_it_is(tiny_env, tmp_path, monkeypatch, stand_in):
    """Not "not on this machine, looked in: DIR/FILE" while the user can see DIR/FILE there."""
    folder = tmp_path / "my weights é"
    folder.mkdir()
    placed = folder / "GFPGANv1.4.pth"
    if stand_in == "folder":
        placed.mkdir()
    elif stand_in == "dangling link":
        placed.symlink_to(tmp_path / "moved-away.pth")
    else:
        placed.symlink_to(placed)
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    result = CommandRunner().invoke(app, ["weights", "fetch", "gfpgan-1.4"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    expected = "is a folder, not a checkpoint file" if stand_in == "folder" else "is a link that leads to no file"
    assert f"{placed}: {expected}" in result.output.replace("\n", "")


def _stand_in_weights_folder(tmp_path: Path, stand_in: str) -> tuple[Path, Path, str]:
    """A weights folder whose GFPGANv1.4.pth is a folder, a link to nothing or a link to itself."""
    folder = tmp_path / "my weights"
    folder.mkdir()
    placed = folder / "GFPGANv1.4.pth"
    if stand_in == "folder":
        placed.mkdir()
    elif stand_in == "dangling link":
        placed.symlink_to(tmp_path / "moved-away.pth")
    else:
        placed.symlink_to(placed)
    expected = "is a folder, not a checkpoint file" if stand_in == "folder" else "is a link that leads to no file"
    return folder, placed, f"{placed}: {expected}"


@pytest.mark.parametrize("stand_in", ["folder", "dangling link", "link loop"])
def test_weights_list_and_verify_name_what_stands_in_the_weights_folder(tiny_env, tmp_path, monkeypatch, stand_in):
    """As loading the name says it, not "not on this machine"; and before a cached copy, which
    the run would not reach."""
    import json

    folder, placed, expected = _stand_in_weights_folder(tmp_path, stand_in)
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    cached = Path(os.environ["XDG_CACHE_HOME"]) / "i2i" / "weights" / "GFPGANv1.4.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_env.files["gfpgan-1.4"].read_bytes())
    runner = CommandRunner()

    listed = {e["name"]: e for e in json.loads(runner.invoke(app, ["weights", "list", "--json"]).stdout)}
    assert listed["gfpgan-1.4"]["local_error"] == expected
    assert listed["parsenet"]["local_error"] is None
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    [row] = [line for line in runner.invoke(app, ["weights", "list"]).stdout.splitlines() if "gfpgan-1.4" in line]
    assert expected in row

    verified = runner.invoke(app, ["weights", "verify", "gfpgan-1.4", "--json"])
    assert verified.exit_code == 1 and "Traceback" not in verified.output
    document = json.loads(verified.stdout)
    assert document["files"][0] == {"name": "gfpgan-1.4", "path": str(placed), "status": "failed",
                                    "error": document["files"][0]["error"]}
    assert document["files"][0]["error"].startswith(expected)
    assert [r["status"] for r in document["files"][1:]] == ["ok"]  # the cached copy is still checked
    assert (document["present"], document["failed"]) == (1, 1)
    plain_text = runner.invoke(app, ["weights", "verify", "gfpgan-1.4"])
    assert plain_text.exit_code == 1 and expected in plain_text.stderr.replace("\n", "")


def test_a_dry_run_names_what_stands_in_the_weights_folder_before_a_cached_copy(tiny_env, tmp_path, monkeypatch):
    """fetch stops at the folder and never reaches the cache; --dry-run said the cached copy was "here"."""
    folder, _, expected = _stand_in_weights_folder(tmp_path, "folder")
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    cached = Path(os.environ["XDG_CACHE_HOME"]) / "i2i" / "weights" / "GFPGANv1.4.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_env.files["gfpgan-1.4"].read_bytes())
    with pytest.raises(WeightsError, match="is a folder"):
        weights.fetch(weights.find("gfpgan-1.4"))
    source = weights.checkpoint_source("gfpgan-1.4")
    assert (source.status, source.reason) == ("missing", expected)


def test_concurrent_copies_into_one_folder_do_not_share_a_file(tmp_path, monkeypatch):
    """Two `i2i weights fetch --to DIR` at once: neither may write into, or remove, the other's copy."""
    source = tmp_path / "source.pth"
    source.write_bytes(os.urandom(4096))
    destination = tmp_path / "carry"
    nested: list[Path] = []

    def copy_while_another_copies(src, dst):
        data = Path(src).read_bytes()
        with open(dst, "wb") as out:
            out.write(data[:1000])
            if not nested:  # the other run starts and finishes while this one is halfway
                nested.append(destination)
                nested[0] = weights.copy_into(destination, source, "model.pth")
            out.write(data[1000:])

    monkeypatch.setattr(weights.shutil, "copyfile", copy_while_another_copies)
    target = weights.copy_into(destination, source, "model.pth")
    assert nested == [target] and target.read_bytes() == source.read_bytes()
    assert [path.name for path in destination.iterdir()] == ["model.pth"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_safetensors_file_named_pth_is_read_as_one(tmp_path):
    """A safetensors file named .pth was called damaged."""
    from safetensors.torch import save_file

    tensor = torch.arange(3.0)
    save_file({"a": tensor}, tmp_path / "converted.pth")
    assert torch.equal(weights.load_state_dict(tmp_path / "converted.pth")["a"], tensor)
    # Content that is neither is still refused, whatever its name.
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "text.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops}")
    for name in ("empty.safetensors", "text.safetensors"):
        with pytest.raises(WeightsError, match="not a readable checkpoint"):
            weights.load_state_dict(tmp_path / name)


@pytest.mark.parametrize("odd", ["sparse", "nested"])
def test_a_sparse_or_nested_tensor_is_refused_in_one_line(tmp_path, odd):
    """torch loads them with weights_only=True; the finiteness check then raised a bare error."""
    tensor = torch.ones(2, 2).to_sparse() if odd == "sparse" else torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    torch.save({"conv.weight": torch.ones(2), "odd": tensor}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError) as caught:
        weights.load_state_dict(tmp_path / "odd.pth")
    assert caught.value.message.startswith(f"{tmp_path / 'odd.pth'}: holds a sparse or nested tensor ('odd')")


@pytest.mark.parametrize("command", ["fetch", "verify"])
def test_an_unknown_name_given_to_i2i_weights_offers_no_path(tiny_env, command):
    """`i2i weights` takes names only: "or give a path to a .pth file" sent the user nowhere."""
    result = CommandRunner().invoke(app, ["weights", command, "gfpgan-9"])
    assert result.exit_code == 1
    output = result.output.replace("\n", " ")
    assert "unknown checkpoint name 'gfpgan-9'" in output and "known names: gfpgan-1.4" in output
    assert "path" not in output


def test_another_entrys_file_under_this_name_is_named_for_what_it_is(tiny_env, tmp_path, monkeypatch):
    """The x2 model saved as RealESRGAN_x4plus.pth is not "damaged": the message says whose it is."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "RealESRGAN_x4plus.pth").write_bytes(tiny_env.files["realesrgan-x2plus"].read_bytes())
    monkeypatch.setenv("I2I_WEIGHTS_DIR", str(folder))
    with pytest.raises(WeightsError) as caught:
        weights.fetch(weights.find("realesrgan-x4plus"))
    assert caught.value.message == (f"{folder / 'RealESRGAN_x4plus.pth'}: this is realesrgan-x2plus's file "
                                    "(RealESRGAN_x2plus.pth), not realesrgan-x4plus's")
    assert "rename it to RealESRGAN_x2plus.pth" in caught.value.hint


def test_a_missing_checkpoint_under_hf_hub_offline_says_downloads_are_off(tiny_env, monkeypatch):
    """A leftover HF_HUB_OFFLINE=1 on a connected machine read as "no network": nothing said why."""
    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    result = CommandRunner().invoke(app, ["weights", "fetch", "parsenet"])
    assert result.exit_code == 1
    output = result.output.replace("\n", " ")
    assert "parsing_parsenet.pth (parsenet) is not on this machine and was not downloaded: HF_HUB_OFFLINE is set" in output
    assert "unset HF_HUB_OFFLINE to download it" in output
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "_reachable", lambda url: False)
    with pytest.raises(WeightsError) as caught:
        weights.fetch(weights.find("parsenet"))
    assert "could not be downloaded" in caught.value.message and "HF_HUB_OFFLINE" not in str(caught.value)


@pytest.mark.parametrize("loop", [False, True])
def test_a_link_to_nothing_given_as_checkpoint_is_named_for_what_it_is(tmp_path, loop):
    """Not "not found": the user can see the name in the folder."""
    from i2icli.pipelines.loading import load_trained

    link = tmp_path / "model.pth"
    link.symlink_to(link if loop else tmp_path / "moved-away.pth")
    for attempt in (lambda: weights.resolve(str(link)), lambda: load_trained(str(link), "paired", lambda content: content)):
        with pytest.raises(WeightsError) as caught:
            attempt()
        assert caught.value.message == f"{link}: is a link that leads to no file"


def test_a_dict_that_contains_itself_is_refused_not_followed_forever(tmp_path):
    """torch.save keeps the cycle and weights_only loads it; following "model" never ended."""
    looped: dict = {}
    looped["model"] = looped
    torch.save(looped, tmp_path / "looped.pth")
    with pytest.raises(WeightsError, match="no tensors found"):
        weights.load_state_dict(tmp_path / "looped.pth")
    # The same cycle beside real weights does not hide them.
    wrapped: dict = {"params_ema": {"a": torch.ones(2)}}
    wrapped["params_ema"]["net"] = wrapped
    torch.save(wrapped, tmp_path / "wrapped.pth")
    assert list(weights.load_state_dict(tmp_path / "wrapped.pth")) == ["a"]


def test_wrappers_nested_without_end_are_refused_in_one_line(tmp_path):
    """Looking into them recursively ended in a RecursionError traceback."""
    import sys

    nested: dict = {"a": torch.ones(1)}
    for _ in range(3000):
        nested = {"model": nested}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # for torch.save's pickler only: loading is not recursive
    try:
        torch.save(nested, tmp_path / "deep.pth")
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(WeightsError, match="no tensors found"):
        weights.load_state_dict(tmp_path / "deep.pth")


def test_a_download_longer_than_the_release_is_cut_off_and_not_kept(tiny_env, tmp_path, monkeypatch):
    """A server that sends more than the registry's size (without end, say) must not fill the disk."""
    good = tiny_env.files["realesr-general-x4v3"]
    served = []

    class EndlessResponse:
        headers: dict = {}

        def read(self, n):
            if len(served) > 64:  # the end, so that a download that is never cut off still ends here
                return b""
            served.append(n)
            return b"\0" * n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.delenv("I2I_WEIGHTS_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "_reachable", lambda url: "example.invalid" in url)
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: EndlessResponse())
    with pytest.raises(WeightsError, match="not kept"):
        weights.fetch(weights.find("realesr-general-x4v3"))
    assert sum(served) <= good.stat().st_size + served[0]
    assert not list((tmp_path / "cache" / "i2i" / "weights").iterdir())
