"""Tests for i2icli.training.loop with a toy autoencoder: schedule, checkpoints, resume, metrics, samples, Ctrl-C."""

from __future__ import annotations

import copy
import csv
import os
import signal
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from i2icli.errors import I2IError, WeightsError
from i2icli.imageio import read_image
from i2icli.training.checkpoints import load_training_checkpoint, method_state
from i2icli.training.data import ImageFolderDataset, fixed_batch
from i2icli.training.files import find_images
from i2icli.training.loop import (
    PlannedBatchSampler,
    TrainingSettings,
    batch_plan,
    move_to,
    train,
)

SIZE = 12


class ToyAutoencoder:
    """Two convolutions, Adam and an EMA copy; uses both the step generator and the global RNG (dropout)."""

    name = "toy"

    def __init__(self, width: int = 6, lr: float = 1e-2, interrupt_at: int | None = None, sigint_at: int | None = None,
                 interrupt_after_update_at: int | None = None):
        self.width, self.lr = width, lr
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.interrupt_at, self.sigint_at = interrupt_at, sigint_at
        self.interrupt_after_update_at = interrupt_after_update_at
        self.steps_seen = 0

    def config(self) -> dict:
        return {"width": self.width, "lr": self.lr, "layers": (3, self.width, 3)}

    def state_dict(self) -> dict:
        return {"Net": self.net.state_dict(), "AverageNet": self.ema.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["Net"])
        self.ema.load_state_dict(state["AverageNet"])
        self.opt.load_state_dict(state["opt"])

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        self.steps_seen += 1
        step = int(self.opt.state_dict()["state"].get(0, {}).get("step", 0)) + 1
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        if step == self.sigint_at:
            os.kill(os.getpid(), signal.SIGINT)  # like Ctrl-C: arrives mid-step
        noise = torch.randn(batch.shape, generator=generator).to(batch.device) * 0.05  # the step generator is a CPU one
        noisy = F.dropout(batch + noise, p=0.1)  # the global RNG
        loss = F.mse_loss(self.net(noisy), batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if step == self.interrupt_after_update_at:
            raise KeyboardInterrupt  # the net and Adam are step's, the EMA still step-1's
        with torch.no_grad():
            for average, current in zip(self.ema.parameters(), self.net.parameters()):
                average.lerp_(current, 0.5)
        return {"recon": loss.item(), "noise": noise.abs().mean().item()}

    def sample_grid(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(self.ema(batch).clamp(-1, 1)), dim=2)

    def to(self, device: torch.device) -> None:
        self.net.to(device)
        self.ema.to(device)


def write_images(root: Path, count: int = 6) -> list[Path]:
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = (20, 28) if i % 2 else (28, 20)
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([x * 8 + i * 20, y * 8, (x + y) * 4 + rng.integers(0, 60)], -1)
        folder = root / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"img{i}.png"), np.clip(rgb, 0, 255).astype(np.uint8))
    return find_images(root)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return write_images(tmp_path / "data")


@pytest.fixture
def dataset(images: list[Path]) -> ImageFolderDataset:
    return ImageFolderDataset(images, SIZE)


def settings(out: Path, steps: int, **overrides) -> TrainingSettings:
    values = dict(out_dir=out, steps=steps, batch_size=3, seed=5, checkpoint_every=1000, sample_every=1000, log_every=1)
    values.update(overrides)
    return TrainingSettings(**values)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def assert_same_state(a: dict, b: dict) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def step_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


# --------------------------------------------------------------------------- schedule


def test_batch_plan_is_pure_and_covers_each_epoch_once():
    n, batch_size, seed = 7, 3, 11
    plans = [batch_plan(step, batch_size, n, seed) for step in range(1, 8)]  # 21 items = 3 epochs
    assert plans == [batch_plan(step, batch_size, n, seed) for step in range(1, 8)]
    order = [index for plan in plans for index, _ in plan]
    epochs = [order[i : i + n] for i in range(0, len(order), n)]
    assert all(sorted(epoch) == list(range(n)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 3  # a new order each epoch
    flips = [flip for plan in plans for _, flip in plan]
    assert all(isinstance(flip, bool) for flip in flips) and 0 < sum(flips) < len(flips)
    assert batch_plan(3, batch_size, n, seed + 1) != plans[2]
    # Step 3 straddles the first epoch's end (items 6, 7, 8): it carries on into epoch 2.
    assert [index for index, _ in plans[2]] == [order[6], order[7], order[8]]


def test_planned_batch_sampler_starts_at_a_step():
    sampler = PlannedBatchSampler(n=5, batch_size=2, seed=0, first_step=3, last_step=6)
    assert len(sampler) == 4
    assert list(sampler) == [batch_plan(step, 2, 5, 0) for step in range(3, 7)]


def test_move_to_walks_nested_batches():
    Pair = namedtuple("Pair", "label photo")
    batch = {"a": torch.ones(2), "b": [torch.zeros(1), (torch.ones(1), "x")], "c": Pair(torch.ones(1), 3)}
    moved = move_to(batch, torch.device("meta"))
    assert moved["a"].device.type == "meta" and moved["b"][0].device.type == "meta"
    assert moved["b"][1][0].device.type == "meta" and moved["b"][1][1] == "x"
    assert isinstance(moved["c"], Pair) and moved["c"].label.device.type == "meta" and moved["c"].photo == 3


@pytest.mark.parametrize(("device", "asynchronous"), [("cuda:1", True), ("mps", False), ("cpu", False)])
def test_move_to_copies_asynchronously_only_to_cuda(monkeypatch, device: str, asynchronous: bool):
    # Nothing is allocated: Tensor.to is replaced by a recorder. An asynchronous copy to MPS reads
    # a CPU batch the loop has already let go of, so it must wait there.
    asked = []

    def recording(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        asked.append(kwargs.get("non_blocking", False))
        return self

    monkeypatch.setattr(torch.Tensor, "to", recording)
    move_to({"label": torch.zeros(1), "photo": [torch.zeros(1)]}, torch.device(device))
    assert asked == [asynchronous, asynchronous]


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_writes_everything(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    progress = []
    result = train(
        ToyAutoencoder(),
        dataset,
        settings(out, 30, log_every=5, checkpoint_every=10, sample_every=20, keep_checkpoints=2),
        held_out_batch=fixed_batch(dataset, 2),
        on_progress=lambda step, total, losses: progress.append((step, total, sorted(losses))),
    )
    assert result.step == 30 and result.steps_run == 30 and result.resumed_from is None
    assert progress == [(step, 30, ["noise", "recon"]) for step in range(1, 31)]

    rows = read_rows(result.metrics)
    assert list(rows[0]) == ["step", "seconds", "noise", "recon"]
    assert [int(row["step"]) for row in rows] == [5, 10, 15, 20, 25, 30]
    recon = [float(row["recon"]) for row in rows]
    assert recon[-1] < 0.5 * recon[0]

    # Checkpoints: every 10 steps, pruned to the newest 2, latest.pt, no temp files left.
    assert step_files(out) == ["latest.pt", "step-0000020.pt", "step-0000030.pt"]
    assert result.checkpoint == out / "checkpoints" / "latest.pt"
    checkpoint = load_training_checkpoint(result.checkpoint)
    raw = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert raw["step"] == checkpoint["step"] == 30
    assert checkpoint["format"] == "i2i-train" and checkpoint["format_version"] == 1 and checkpoint["method"] == "toy"
    assert checkpoint["config"] == {"width": 6, "lr": 1e-2, "layers": (3, 6, 3)}
    assert checkpoint["settings"]["seed"] == 5 and checkpoint["settings"]["batch_size"] == 3
    assert set(method_state(checkpoint)) == {"Net", "AverageNet", "opt"}  # the method's keys at the top level
    assert load_training_checkpoint(out / "checkpoints" / "step-0000020.pt")["step"] == 20

    # Sample grids: every 20 steps and at the end, readable, the size sample_grid returned.
    assert sorted(p.name for p in result.samples.iterdir()) == ["step-0000020.png", "step-0000030.png"]
    picture = read_image(result.samples / "step-0000030.png")
    assert (picture.height, picture.width) == (SIZE, 2 * SIZE)
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path, dataset: ImageFolderDataset):
    # log_every=3 puts a metrics row boundary after the break: the resumed row must still match.
    straight = ToyAutoencoder()
    train(straight, dataset, settings(tmp_path / "straight", 5, log_every=3))

    first = ToyAutoencoder()
    train(first, dataset, settings(tmp_path / "split", 2, log_every=3))
    second = ToyAutoencoder(lr=1e-2)
    warnings: list[str] = []
    result = train(
        second, dataset, settings(tmp_path / "split", 5, log_every=3, num_workers=2), resume=True, on_warning=warnings.append
    )
    assert result.resumed_from == 2 and result.steps_run == 3 and second.steps_seen == 3
    assert warnings == []
    assert_same_state(straight.state_dict(), second.state_dict())
    straight_rows = read_rows(tmp_path / "straight" / "metrics.csv")
    assert [row["step"] for row in straight_rows] == ["3", "5"]
    assert without_seconds(read_rows(tmp_path / "split" / "metrics.csv")) == without_seconds(straight_rows)
    assert_same_state(
        method_state(load_training_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")),
        method_state(load_training_checkpoint(result.checkpoint)),
    )


class RecordsItsGenerator:
    """Trains nothing; records the device of the generator each step hands it and draws from it on
    the CPU, as GRIT's noise maps are drawn."""

    name = "records"

    def __init__(self) -> None:
        self.devices: list[str] = []

    def config(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def train_step(self, batch: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        self.devices.append(generator.device.type)
        return {"noise": float(torch.randn(4, generator=generator).abs().mean())}

    def sample_grid(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[0]

    def to(self, device: torch.device) -> None:
        pass


def test_the_step_generator_is_a_cpu_one_whatever_the_training_device(tmp_path: Path, dataset: ImageFolderDataset):
    # "meta" stands in for an accelerator: a generator on the training device cannot draw the CPU
    # noise a method draws (torch refuses a CUDA generator for a CPU tensor).
    method = RecordsItsGenerator()
    train(method, dataset, settings(tmp_path / "run", 2, device=torch.device("meta")))
    assert method.devices == ["cpu", "cpu"]
    on_cpu = RecordsItsGenerator()
    train(on_cpu, dataset, settings(tmp_path / "cpu", 2))
    assert without_seconds(read_rows(tmp_path / "run" / "metrics.csv")) == without_seconds(read_rows(tmp_path / "cpu" / "metrics.csv"))


def test_resume_from_an_older_checkpoint_truncates_the_metrics(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 6, checkpoint_every=2, keep_checkpoints=5))
    rows_before = read_rows(out / "metrics.csv")
    warnings: list[str] = []
    older = out / "checkpoints" / "step-0000004.pt"
    result = train(ToyAutoencoder(), dataset, settings(out, 5, checkpoint_every=2), resume=older, on_warning=warnings.append)
    assert result.resumed_from == 4 and result.step == 5
    rows = read_rows(out / "metrics.csv")
    assert [row["step"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert without_seconds(rows) == without_seconds(rows_before[:5])  # the same steps, trained again, same losses
    assert len(warnings) == 1 and "up to step 6" in warnings[0]
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 5
    assert "step-0000006.pt" in step_files(out)  # an abandoned branch's file is left until replaced


def test_resuming_a_finished_run_says_so(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 3))
    method, warnings = ToyAutoencoder(), []
    result = train(method, dataset, settings(out, 3), resume=True, on_warning=warnings.append)
    assert result.steps_run == 0 and result.step == 3 and method.steps_seen == 0
    assert len(warnings) == 1 and "already reached step 3 of 3" in warnings[0]
    assert_same_state(method.state_dict(), method_state(load_training_checkpoint(out / "checkpoints" / "latest.pt")))


def test_a_new_run_refuses_a_folder_that_holds_one(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 2))
    before = (out / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(I2IError, match="already holds a training run; pass --resume"):
        train(ToyAutoencoder(), dataset, settings(out, 2))
    assert (out / "checkpoints" / "latest.pt").read_bytes() == before


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        (lambda: ToyAutoencoder(width=4), {}, "config field 'layers' differs"),
        (lambda: ToyAutoencoder(lr=0.5), {}, "config field 'lr' differs: the checkpoint has 0.01, this run has 0.5"),
        (ToyAutoencoder, {"batch_size": 2}, "batch size 3, this run asks for 2"),
        (ToyAutoencoder, {"seed": 6}, "seed 5, this run asks for 6"),
    ],
)
def test_resume_refuses_a_different_setup(tmp_path: Path, dataset: ImageFolderDataset, method, overrides, message):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 2))
    with pytest.raises(I2IError, match=message):
        train(method(), dataset, settings(out, 4, **overrides), resume=True)


def test_resume_refuses_another_method(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 2))
    other = ToyAutoencoder()
    other.name = "translate-lr"
    with pytest.raises(I2IError, match="from method 'toy', not 'translate-lr'"):
        train(other, dataset, settings(out, 4), resume=True)


def test_resume_needs_a_checkpoint(tmp_path: Path, dataset: ImageFolderDataset):
    with pytest.raises(I2IError, match="no training run to resume"):
        train(ToyAutoencoder(), dataset, settings(tmp_path / "empty", 2), resume=True)


def test_unreadable_checkpoints_become_one_line_errors(tmp_path: Path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"PK\x03\x04 not a zip at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    cases = [
        (damaged, "not a readable training checkpoint"),
        (foreign, "not an i2i training checkpoint"),
        (tmp_path / "none.pt", "no such checkpoint"),
    ]
    for path, message in cases:
        with pytest.raises(WeightsError, match=message) as caught:
            load_training_checkpoint(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value) and caught.value.hint


def test_an_unreadable_image_is_skipped_with_one_warning(tmp_path: Path, images: list[Path]):
    bad = images[0].parent / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    files = find_images(images[0].parent.parent)
    assert bad in files
    warnings: list[str] = []
    result = train(ToyAutoencoder(), ImageFolderDataset(files, SIZE), settings(tmp_path / "run", 8), on_warning=warnings.append)
    assert result.step == 8  # 24 items = 3+ epochs of 7 files: the broken one came up several times
    assert len(warnings) == 1 and str(bad) in warnings[0] and "skipped" in warnings[0]


def resume_like_a_straight_run(out: Path, straight_out: Path, dataset: ImageFolderDataset, steps: int, **overrides) -> None:
    """Resume the run in ``out`` to ``steps``: it must end in the state of a run never interrupted."""
    resumed = ToyAutoencoder()
    train(resumed, dataset, settings(out, steps, **overrides), resume=True)
    straight = ToyAutoencoder()
    train(straight, dataset, settings(straight_out, steps, **overrides))
    assert_same_state(straight.state_dict(), resumed.state_dict())


def test_keyboard_interrupt_saves_the_last_completed_step(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    warnings: list[str] = []

    def interrupt_after_step_3(step: int, total: int, losses: dict) -> None:  # between steps, as while a sample is written
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ToyAutoencoder(), dataset, settings(out, 10, log_every=2), on_warning=warnings.append,
              on_progress=interrupt_after_step_3)
    checkpoint = load_training_checkpoint(out / "checkpoints" / "latest.pt")
    assert checkpoint["step"] == 3 and step_files(out) == ["latest.pt", "step-0000003.pt"]
    assert [row["step"] for row in read_rows(out / "metrics.csv")] == ["2", "3"]  # a partial row for step 3
    assert "interrupted after step 3" in warnings[-1]

    # The interrupted run resumes to the same state as one never interrupted.
    resume_like_a_straight_run(out, tmp_path / "straight", dataset, 6, log_every=2)
    assert without_seconds(read_rows(out / "metrics.csv")) == without_seconds(read_rows(tmp_path / "straight" / "metrics.csv"))


def test_an_interrupt_inside_a_step_saves_no_half_step(tmp_path: Path, dataset: ImageFolderDataset):
    # A second Ctrl-C while a step runs stops at once: the weights are then neither step 4's nor
    # step 5's (here the net is updated and the EMA not), so the run keeps its last checkpoint
    # (step 3) rather than save them as step 4.
    out = tmp_path / "run"
    warnings: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train(ToyAutoencoder(interrupt_after_update_at=5), dataset, settings(out, 10, checkpoint_every=3),
              on_warning=warnings.append)
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 3
    assert step_files(out) == ["latest.pt", "step-0000003.pt"]
    assert "interrupted during step 5, which is not saved; the run continues from step 3" in warnings[-1]
    resume_like_a_straight_run(out, tmp_path / "straight", dataset, 6, checkpoint_every=3)
    # Before any checkpoint, nothing is saved at all.
    warnings.clear()
    with pytest.raises(KeyboardInterrupt):
        train(ToyAutoencoder(interrupt_at=2), dataset, settings(tmp_path / "early", 10), on_warning=warnings.append)
    assert not (tmp_path / "early" / "checkpoints" / "latest.pt").exists()
    assert "before any checkpoint was saved" in warnings[-1]


def test_ctrl_c_finishes_the_step_in_progress(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    handler_before = signal.getsignal(signal.SIGINT)
    method = ToyAutoencoder(sigint_at=3)
    with pytest.raises(KeyboardInterrupt):
        train(method, dataset, settings(out, 10))
    assert method.steps_seen == 3
    assert load_training_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before


# --------------------------------------------------------------------------- runs that must not be mixed or lost


def test_the_same_ctrl_c_twice_is_one_and_the_save_is_never_cut_short(monkeypatch):
    from i2icli.training import interrupts

    clock = [100.0]
    monkeypatch.setattr(interrupts.time, "monotonic", lambda: clock[0])
    with interrupts.finish_step_on_interrupt() as request:
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)
        assert request.requested
        clock[0] += 0.2
        handler(signal.SIGINT, None)  # forwarded again by a launcher such as `uv run`: the same Ctrl-C
        request.saving = True
        clock[0] += 5
        handler(signal.SIGINT, None)  # while the checkpoint is written: ignored
        request.saving = False
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)  # a second Ctrl-C of its own


def test_a_log_without_any_checkpoint_does_not_block_a_new_run(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("step,seconds,noise,recon\n1,0.1,0.5,0.5\n")
    warnings: list[str] = []
    result = train(ToyAutoencoder(), dataset, settings(out, 2), on_warning=warnings.append)
    assert result.step == 2 and "saved no checkpoint; starting over" in warnings[0]
    assert [row["step"] for row in read_rows(out / "metrics.csv")] == ["1", "2"]


def test_one_run_at_a_time_in_a_folder(tmp_path: Path, dataset: ImageFolderDataset):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run, in progress
        with pytest.raises(I2IError, match="another training run is using this folder"):
            train(ToyAutoencoder(), dataset, settings(out, 2))
    finally:
        os.close(held)
    assert not (out / "checkpoints").exists()
    assert train(ToyAutoencoder(), dataset, settings(out, 2)).step == 2  # free again


def test_resuming_another_runs_checkpoint_into_a_run_folder_is_refused(tmp_path: Path, dataset: ImageFolderDataset):
    train(ToyAutoencoder(width=4), dataset, settings(tmp_path / "other", 2))
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 4))
    before = (out / "checkpoints" / "latest.pt").read_bytes()
    # Each value said with its own side: the run in the folder has 6 channels, the checkpoint 4.
    with pytest.raises(I2IError, match=r"holds another run than .*config field 'layers' differs: the run there has "
                                       r"\[3, 6, 3\], the checkpoint has \[3, 4, 3\]"):
        train(ToyAutoencoder(width=4), dataset, settings(out, 6), resume=tmp_path / "other" / "checkpoints" / "latest.pt")
    assert (out / "checkpoints" / "latest.pt").read_bytes() == before
    # The run's own older checkpoint is fine.
    train(ToyAutoencoder(), dataset, settings(tmp_path / "keep", 4, checkpoint_every=2, keep_checkpoints=5))
    older = tmp_path / "keep" / "checkpoints" / "step-0000002.pt"
    assert train(ToyAutoencoder(), dataset, settings(tmp_path / "keep", 5), resume=older).step == 5


def test_a_damaged_latest_checkpoint_does_not_lock_the_run_out_of_its_older_ones(tmp_path: Path,
                                                                                  dataset: ImageFolderDataset):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 3, checkpoint_every=1, keep_checkpoints=5))
    latest = out / "checkpoints" / "latest.pt"
    whole = latest.read_bytes()
    latest.unlink()  # latest.pt shares its data with the newest step file: damage only the copy
    latest.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(WeightsError, match="not a readable training checkpoint") as caught:
        train(ToyAutoencoder(), dataset, settings(out, 4), resume=True)
    assert "resume from another file in the run's checkpoints/ folder" in caught.value.hint
    # Doing as the hint says works: the run is still known by its readable step files.
    older = out / "checkpoints" / "step-0000002.pt"
    assert train(ToyAutoencoder(), dataset, settings(out, 4), resume=older).step == 4
    assert load_training_checkpoint(latest)["step"] == 4
    # ...and another run's checkpoint is still refused there.
    train(ToyAutoencoder(width=4), dataset, settings(tmp_path / "other", 1))
    latest.unlink()
    latest.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(I2IError, match="holds another run than"):
        train(ToyAutoencoder(width=4), dataset, settings(out, 6), resume=tmp_path / "other" / "checkpoints" / "latest.pt")
    # With no checkpoint there readable at all, no run is left to protect: that is said, and the resume goes on.
    for path in (out / "checkpoints").iterdir():
        path.unlink()
        path.write_bytes(b"PK\x03\x04 cut short")
    warnings: list[str] = []
    train(ToyAutoencoder(width=4), dataset, settings(out, 2), resume=tmp_path / "other" / "checkpoints" / "latest.pt",
          on_warning=warnings.append)
    assert any("latest.pt cannot be read, nor any other checkpoint in" in warning for warning in warnings)
    assert load_training_checkpoint(latest)["step"] == 2


@pytest.mark.parametrize("name, make", [
    ("checkpoints", lambda path: path.write_text("notes")),
    ("samples", lambda path: path.write_text("notes")),
    ("metrics.csv", lambda path: path.mkdir()),
])
def test_a_run_folder_entry_of_the_wrong_kind_is_refused_before_the_first_step(tmp_path: Path, dataset: ImageFolderDataset,
                                                                                name, make):
    out = tmp_path / "run"
    out.mkdir()
    make(out / name)
    model = ToyAutoencoder()
    held_out = fixed_batch(dataset, 2)
    with pytest.raises(I2IError, match=rf"{name}: is (not a folder|a folder, not a file).*\(move it aside, or choose another --out\)"):
        train(model, dataset, settings(out, 2, checkpoint_every=2, sample_every=2), held_out_batch=held_out)
    assert model.steps_seen == 0


def test_a_log_line_torn_inside_a_character_is_dropped_on_resume(tmp_path: Path, dataset: ImageFolderDataset):
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 2))
    with open(out / "metrics.csv", "ab") as log:
        log.write(b"3\xff\xfe\x00")
    assert train(ToyAutoencoder(), dataset, settings(out, 4), resume=True).step == 4
    assert [row["step"] for row in read_rows(out / "metrics.csv")] == ["1", "2", "3", "4"]


def test_a_run_folder_inside_the_data_is_not_training_data(tmp_path: Path, images: list[Path]):
    root = images[0].parent.parent
    out = root / "run"
    (out / "samples").mkdir(parents=True)
    cv2.imwrite(str(out / "samples" / "step-0000001.png"), np.zeros((8, 8, 3), np.uint8))
    assert find_images(root, exclude=out) == images
    assert len(find_images(root)) == len(images) + 1


def test_held_out_grids_skip_unreadable_files_instead_of_repeating_the_next(tmp_path: Path, images: list[Path]):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    held = ImageFolderDataset([images[0], bad, images[1], images[2]], SIZE)
    held.role = "held-out"
    batch = fixed_batch(held, 3)
    expected = torch.stack([held[(i, False)]["image"] for i in (0, 2, 3)])
    assert torch.equal(batch, expected)  # 0, 2, 3: not 0, 2 (for the bad 1), 2
    hopeless = ImageFolderDataset([bad], SIZE)
    hopeless.role = "held-out"
    with pytest.raises(I2IError, match="none of the 1 held-out examples can be read"):
        fixed_batch(hopeless, 2)


def test_a_data_loader_workers_error_is_one_line(tmp_path: Path):
    bad = []
    for index in range(3):
        bad.append(tmp_path / f"bad{index}.png")
        bad[-1].write_bytes(b"junk")
    with pytest.raises(I2IError) as caught:
        train(ToyAutoencoder(), ImageFolderDataset(bad, SIZE), settings(tmp_path / "run", 2, num_workers=1))
    message = str(caught.value)
    assert message.startswith("none of the 3 training examples can be read") and "\n" not in message
    assert "Traceback" not in message
    # The hint names what to fix (it said only "check the training folder"), and once.
    hint = f"fix or remove {bad[0]} and the 2 other unreadable training files, or train on another folder"
    assert caught.value.hint == hint and message.count(hint) == 1


def test_losses_that_are_no_longer_finite_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path: Path,
                                                                                        dataset: ImageFolderDataset):
    """A learning rate far too high ends in NaN: the run stops at once, one line says so, and the
    last checkpoint is not replaced by NaN weights."""

    class Diverging(ToyAutoencoder):
        def train_step(self, batch, generator):
            losses = super().train_step(batch, generator)
            return {name: float("nan") for name in losses} if self.steps_seen >= 5 else losses

    out = tmp_path / "run"
    with pytest.raises(I2IError) as caught:
        train(Diverging(), dataset, settings(out, 8, checkpoint_every=2))
    message = str(caught.value)
    assert "step 5: the losses are not finite (recon nan, noise nan)" in message
    assert "the last checkpoint, step 4, is kept" in message
    # Resuming keeps the learning rates, so it is not what the message suggests.
    assert "start a new run with another --out and lower learning rates (--g-lr, --d-lr)" in message
    assert "would diverge again" in message and "\n" not in message
    kept = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert kept["step"] == 4 and all(torch.isfinite(value).all() for value in kept["Net"].values())

    class DivergingAtOnce(ToyAutoencoder):
        def train_step(self, batch, generator):
            return {"recon": float("inf")}

    with pytest.raises(I2IError, match=r"step 1: the losses are not finite \(recon inf\); .* no checkpoint was saved"):
        train(DivergingAtOnce(), dataset, settings(tmp_path / "early", 3))
    assert not (tmp_path / "early" / "checkpoints" / "latest.pt").exists()


def test_a_metrics_file_with_another_header_is_refused_before_resuming(tmp_path: Path, dataset: ImageFolderDataset):
    """A spreadsheet that re-saved metrics.csv with semicolons: one line naming the file, before
    any step is taken, and the run's checkpoint is untouched."""
    out = tmp_path / "run"
    train(ToyAutoencoder(), dataset, settings(out, 2))
    metrics = out / "metrics.csv"
    metrics.write_text(metrics.read_text().replace(",", ";"))
    before = (out / "checkpoints" / "latest.pt").read_bytes()
    model = ToyAutoencoder()
    with pytest.raises(I2IError, match=r"metrics.csv: its header is not this run.s .* \(move the file aside"):
        train(model, dataset, settings(out, 4), resume=True)
    assert model.steps_seen == 0 and (out / "checkpoints" / "latest.pt").read_bytes() == before
    metrics.rename(out / "metrics-old.csv")
    assert train(ToyAutoencoder(), dataset, settings(out, 4), resume=True).step == 4


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_checkpoint_save_cut_short_leaves_the_last_one_whole(tmp_path: Path, monkeypatch, failure):
    """A save that fails half-way (a full disk, Ctrl-C) must leave latest.pt holding the last
    complete checkpoint, no half-written step file and no temp files."""
    from i2icli.training import checkpoints

    folder = checkpoints.CheckpointFolder(tmp_path / "checkpoints", keep=3)
    folder.save({"step": 1, "weights": torch.ones(4)}, 1)
    real_save = torch.save

    def cut_short(payload, file):
        file.write(b"PK\x03\x04 half a zip")  # what a cut-off torch.save leaves behind
        raise failure

    monkeypatch.setattr(checkpoints.torch, "save", cut_short)
    with pytest.raises(type(failure)):
        folder.save({"step": 2, "weights": torch.zeros(4)}, 2)
    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert sorted(path.name for path in folder.folder.iterdir()) == ["latest.pt", "step-0000001.pt"]
    latest = torch.load(folder.latest, map_location="cpu", weights_only=True)
    assert latest["step"] == 1 and torch.equal(latest["weights"], torch.ones(4))


# --------------------------------------------------------------------------- the train commands


def train_command_context(method: str, *args: str):
    """The parsed command line of `i2i train METHOD ARGS`, as a command sees it."""
    import typer

    from i2icli.cli.app import app

    command = typer.main.get_command(app).commands["train"].commands[method]
    return command.make_context(method, list(args))


@pytest.mark.parametrize("kind, typed, ignored", [
    ("edge", ["--edges", "--edge-channels", "3"], []),  # the run's own command line again
    ("edge", ["--edges", "--edge-channels", "1"], ["--edge-channels"]),
    ("edge", ["--label-nc", "3"], ["--label-nc"]),  # an edge run has no classes, whatever their number
    ("label", ["--label-nc", "3"], []),
    ("label", ["--label-nc", "3", "--edge-channels", "3"], ["--edge-channels"]),
])
def test_resuming_paired_names_only_the_input_options_that_differ_from_the_run(kind, typed, ignored):
    from i2icli.cli.train_common import warn_of_options_the_run_keeps

    stored = {"settings": {"seed": 0, "batch_size": 8},
              "config": {"model": {"input_kind": kind, "input_channels": 3, "image_size": 32}, "training": {}, "data": {}}}
    context = train_command_context("paired", "data", "--resume", "--size", "32", *typed)
    assert warn_of_options_the_run_keeps(context, stored) == ignored


def write_training_checkpoint(path: Path, method: str) -> Path:
    """A checkpoint as `i2i train METHOD` writes it, without networks: enough to be read and refused."""
    from i2icli.training.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "method": method,
                "config": {}, "step": 1, "settings": {"seed": 0, "batch_size": 2}}, path)
    return path


@pytest.mark.parametrize("command, other, options", [
    ("translate-lr", "paired", ["--resume-from"]),
    ("translate-lr", "paired", ["--eval", "--fid-model", "none", "--lpips-backbone", "none", "--eval-checkpoint"]),
    ("paired", "translate-lr", ["--label-nc", "4", "--resume-from"]),
    ("paired", "translate-lr", ["--eval", "--fid-model", "none", "--lpips-backbone", "none", "--eval-checkpoint"]),
])
def test_a_checkpoint_of_the_other_training_command_is_refused_by_name(tmp_path: Path, command, other, options):
    from conftest import CommandRunner

    from i2icli.cli.app import app

    checkpoint = write_training_checkpoint(tmp_path / "other" / "latest.pt", other)
    result = CommandRunner().invoke(app, ["train", command, str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                                          "--device", "cpu", *options, str(checkpoint)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {checkpoint}: the checkpoint is from `i2i train {other}`, not {command} — ")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command, options", [
    ("translate-lr", []),
    ("paired", ["--label-nc", "4", "--vgg-weight", "1", "--vgg", "missing-vgg19.pth"]),
])
def test_a_new_run_into_a_folder_that_holds_one_is_refused_before_the_data_is_searched(tmp_path: Path, command, options):
    from conftest import CommandRunner

    from i2icli.cli.app import app

    out = tmp_path / "run"
    write_training_checkpoint(out / "checkpoints" / "latest.pt", command)
    empty = tmp_path / "data"
    empty.mkdir()  # searching it would end in an error of its own, as loading the VGG-19 would
    result = CommandRunner().invoke(app, ["train", command, str(empty), "--out", str(out), "--device", "cpu", *options])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {out} already holds a training run; pass --resume to continue it or choose another --out"


def test_translate_lr_says_at_the_start_when_too_few_images_are_held_out_for_eval(tmp_path: Path, images: list[Path]):
    from conftest import CommandRunner

    from i2icli.cli.app import app

    runner, out = CommandRunner(), tmp_path / "run"
    tiny = ["--hr-size", "16", "--lr-size", "4", "--max-channels", "8", "--base-channels", "4", "--disc-channels", "4",
            "--disc-max-channels", "8", "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    trained = runner.invoke(app, ["train", "translate-lr", str(tmp_path / "data"), "--out", str(out), *tiny,
                                  "--steps", "1", "--held-out", "1"])
    assert trained.exit_code == 0, trained.output
    assert "warning: only 1 image is held out: --eval translates held-out images to each other and needs two" in trained.stderr
    scored = runner.invoke(app, ["train", "translate-lr", str(tmp_path / "data"), "--out", str(out), "--eval",
                                 "--fid-model", "none", "--lpips-backbone", "none", "--device", "cpu"])
    assert scored.exit_code == 1
    assert scored.stderr.strip().endswith("a run keeps its split, so start a new one with --held-out 2 or more")


def write_label_pairs(root: Path, labels: list[np.ndarray]) -> Path:
    """labels/NNN.png with photos/NNN.png of the same 16x16 size."""
    rng = np.random.default_rng(0)
    for index, values in enumerate(labels):
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "photos").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "labels" / f"{index:03d}.png"), values)
        cv2.imwrite(str(root / "photos" / f"{index:03d}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return root


def train_paired_cli(data_dir: Path, out: Path, *options: str):
    from conftest import CommandRunner

    from i2icli.cli.app import app

    tiny = ["--size", "16", "--levels", "1", "--base-channels", "4", "--max-channels", "8", "--style-dim", "2",
            "--disc-channels", "4", "--disc-scales", "1", "--disc-layers", "1", "--batch-size", "2", "--held-out", "1",
            "--workers", "0", "--device", "cpu"]
    return CommandRunner().invoke(app, ["train", "paired", str(data_dir), "--out", str(out), *tiny, *options])


def _mask_0_255() -> np.ndarray:
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    return mask


def _class_map(classes: int = 4) -> np.ndarray:
    return (np.arange(16 * 16, dtype=np.uint8).reshape(16, 16) // 7 % classes).astype(np.uint8)


def test_train_paired_refuses_label_maps_it_cannot_read_as_meant_before_the_networks_are_made(tmp_path: Path, monkeypatch):
    # 0/255 masks with --label-nc trained a model of class 0 and "unknown" alone; class-index maps
    # with --edges trained an edge model on almost black images: hours spent without a word.
    from i2icli.training import paired

    monkeypatch.setattr(paired.PairedTraining, "__init__", lambda *args, **kwargs: pytest.fail("networks were made"))
    masks = write_label_pairs(tmp_path / "masks", [_mask_0_255()] * 4)
    refused = train_paired_cli(masks, tmp_path / "run", "--label-nc", "2", "--steps", "1")
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.strip().splitlines() == [
        f"error: {masks / 'labels'}: all 3 training label maps hold only class 0 and 255, which means unknown (e.g. "
        f"{masks / 'labels' / '000.png'}), so a model of --label-nc 2 classes would learn class 0 alone — store a "
        "mask's classes as 0 and 1, or train on edge images with --edges"]
    classes = write_label_pairs(tmp_path / "classes", [_class_map()] * 4)
    refused = train_paired_cli(classes, tmp_path / "run", "--edges", "--steps", "1")
    assert refused.exit_code == 1, refused.output
    assert "but --edges trains on edge images (white lines on black) — train on class-index maps with --label-nc N" \
        in " ".join(refused.stderr.split())
    assert not (tmp_path / "run").exists()


def test_train_paired_warns_once_of_some_label_maps_it_cannot_read_as_meant(tmp_path: Path):
    data_dir = write_label_pairs(tmp_path / "data", [_class_map(), _mask_0_255(), _class_map(), _mask_0_255(),
                                                     np.full((16, 16), 255, np.uint8)])
    out = tmp_path / "run"
    trained = train_paired_cli(data_dir, out, "--label-nc", "4", "--steps", "1", "--held-out", "0")
    assert trained.exit_code == 0, trained.output
    stderr = " ".join(trained.stderr.split())
    assert stderr.count("warning:") == 2, stderr
    assert (f"warning: 2 of the 5 training label maps hold only class 0 and 255, which means unknown (e.g. "
            f"{data_dir / 'labels' / '001.png'})") in stderr
    assert f"warning: 1 of the 5 training label maps is 255 (unknown) at every pixel (e.g. {data_dir / 'labels' / '004.png'})" \
        in stderr
    # A resumed run has been trained on its maps: they are warned of again, never refused.
    for index in (0, 2):
        cv2.imwrite(str(data_dir / "labels" / f"{index:03d}.png"), _mask_0_255())
    resumed = train_paired_cli(data_dir, out, "--resume", "--steps", "2")
    assert resumed.exit_code == 0, resumed.output
    assert "warning: 4 of the 5 training label maps hold only class 0 and 255" in " ".join(resumed.stderr.split())
