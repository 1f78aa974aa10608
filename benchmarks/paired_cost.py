"""What `i2i paired` costs: N variations as the pipeline makes them against N whole generator passes,
and a training step.

The pipeline runs the encoder and reconstruction decoder once per label map and only the residual
decoder per sample (several samples per pass on a GPU). The plain way runs the whole generator
for every sample. The generator has the default configuration (256 px, 19 classes, widths 64-512)
with random weights, so the compute is the real one. The two alternate in one process, so both
see the same machine load; the script also checks that they give the same images.

    uv run python benchmarks/paired_cost.py                      # CPU
    uv run python benchmarks/paired_cost.py --device cuda --samples 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fixtures  # noqa: E402
from i2icli.archs.grit import GRITConfig, GRITGenerator  # noqa: E402
from i2icli.imageio import Picture  # noqa: E402
from i2icli.pipelines.devices import synchronize  # noqa: E402
from i2icli.pipelines.paired import PairedTranslator, sample_seed  # noqa: E402
from i2icli.training.paired import PairedTraining, PairedTrainingOptions  # noqa: E402


def _label_picture(size: int, classes: int) -> Picture:
    import numpy as np

    rng = np.random.default_rng(0)
    blocks = rng.integers(0, classes, (size // 32, size // 32), dtype=np.uint8)
    labels = np.kron(blocks, np.ones((32, 32), np.uint8))
    return Picture(rgb=np.repeat(labels[:, :, None], 3, axis=2), grayscale=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--per-pass", type=int, default=None, help="samples per residual pass (default: by device)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = fixtures.device_or_exit(args.device)
    torch.manual_seed(0)
    config = GRITConfig(input_channels=args.classes, image_size=args.size)
    generator = GRITGenerator(config)
    with torch.no_grad():  # noise strengths start at zero; give them a value so samples differ
        for block in generator.residual_blocks:
            block.noise1.strength.fill_(0.1)
            block.noise2.strength.fill_(0.1)
    translator = PairedTranslator(generator.eval(), config, device=device, per_pass=args.per_pass)
    label = _label_picture(args.size, args.classes)
    print(f"device {device}; generator {sum(p.numel() for p in generator.parameters()) / 1e6:.1f} M parameters, "
          f"{args.size} px, {args.samples} samples per label map, {translator.per_pass} per residual pass")

    pipeline, whole = [], []
    channels = translator.prepare_label(label)
    code = translator.style_code(None)
    if device.type == "cpu":
        translator.translate(label, samples=2)  # warm-up
    else:
        # Untimed, at the timed shapes: a GPU's first pass at a batch size pays for set-up
        # (cuDNN/cuBLAS handles, lazy kernel loading) that a run pays once; the residual decoder
        # runs several samples a pass there, and the whole generator one.
        with torch.no_grad():
            translator.translate(label, samples=args.samples)
            generator(channels, code, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(args.repeats):
            synchronize(device)
            start = time.perf_counter()
            result = translator.translate(label, samples=args.samples, seed=0)
            synchronize(device)
            pipeline.append(time.perf_counter() - start)
            start = time.perf_counter()
            outputs = [generator(channels, code, torch.Generator().manual_seed(sample_seed(0, k))).image
                       for k in range(args.samples)]
            synchronize(device)
            whole.append(time.perf_counter() - start)
    gap = max(float((result.tensors["output"][k] - output[0].cpu()).abs().max()) for k, output in enumerate(outputs))
    p, w = statistics.median(pipeline), statistics.median(whole)
    print(f"{args.samples} samples: pipeline {p:.2f} s (label map prepared, written to pictures)   whole generator per "
          f"sample {w:.2f} s   ratio {w / p:.2f}x   (largest difference in the images: {gap:.1e})")

    method = PairedTraining(GRITConfig(input_channels=args.classes, image_size=args.size), PairedTrainingOptions(), seed=0)
    method.to(device)
    g = torch.Generator().manual_seed(0)
    batch = {
        "label": torch.nn.functional.one_hot(torch.randint(0, args.classes, (args.train_batch, args.size, args.size), generator=g),
                                             args.classes).permute(0, 3, 1, 2).float().to(device),
        "photo": (torch.rand(args.train_batch, 3, args.size, args.size, generator=g) * 2 - 1).to(device),
    }
    method.train_step(batch, torch.Generator().manual_seed(1))  # warm-up
    steps = []
    for step in range(args.repeats):
        synchronize(device)
        start = time.perf_counter()
        method.train_step(batch, torch.Generator().manual_seed(2 + step))
        synchronize(device)
        steps.append(time.perf_counter() - start)
    print(f"training step, batch {args.train_batch} at {args.size} px: {statistics.median(steps):.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
