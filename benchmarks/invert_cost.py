"""What `i2i invert` costs: every hypothesis in one batch against a single hypothesis, per Adam step.

The networks have the official architectures and sizes with random weights (a StyleGAN2 of the
published FFHQ configurations, VGG-19, VGG-16, FID Inception), so the compute is the real one.
The two runs alternate step by step in one process, so both see the same machine load.

Every Adam step costs the same, so the seconds for a whole image at the default settings are
the measured fixed stages (warp, scoring) plus ``--steps`` times the measured per-step time;
the output says which figures are measured and which are multiplied out.

    uv run python benchmarks/invert_cost.py                      # 512 px generator, CPU
    uv run python benchmarks/invert_cost.py --generator-size 1024 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fixtures  # noqa: E402
from feature_checkpoints import random_fid_inception_state_dict, random_vgg_state_dict  # noqa: E402
from i2icli.archs.stylegan2 import StyleGAN2Generator  # noqa: E402
from i2icli.imageio import read_image  # noqa: E402
from i2icli.pipelines.devices import synchronize  # noqa: E402
from i2icli.pipelines.imagetensors import square_resize, to_tensor  # noqa: E402
from i2icli.pipelines.invert import (  # noqa: E402
    DEFAULT_LAYERS,
    InvertPipeline,
    InvertSettings,
    build_scorer,
    build_vgg,
)

# The published FFHQ generators: GFPGAN's 512 px prior (channel multiplier 1), basicsr's 1024 px config-f.
CONFIGS = {512: {"channel_multiplier": 1}, 1024: {"channel_multiplier": 2}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator-size", type=int, choices=sorted(CONFIGS), default=512)
    parser.add_argument("--codes", type=int, default=InvertSettings.codes)
    parser.add_argument("--size", type=int, default=InvertSettings.size)
    parser.add_argument("--steps", type=int, default=InvertSettings.steps, help="steps of a whole image (multiplied out)")
    parser.add_argument("--timed-steps", type=int, default=4, help="measured steps per configuration")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = fixtures.device_or_exit(args.device)
    fixtures.check_precisions([args.precision], device, "--precision")  # bf16 where it would be emulated
    torch.manual_seed(0)
    generator = StyleGAN2Generator(args.generator_size, **CONFIGS[args.generator_size], resample="fir").eval()
    generator.scale_activations().requires_grad_(False)
    networks = (
        generator,
        build_vgg(19)(random_vgg_state_dict(19, seed=1)),
        build_vgg(16)(random_vgg_state_dict(16, seed=2)),
        build_scorer(random_fid_inception_state_dict(seed=3)),
    )

    def pipeline(layers: tuple[int, ...], steps: int) -> InvertPipeline:
        settings = InvertSettings(layers=layers, codes=args.codes, steps=steps, size=args.size, aligned=True,
                                  batch_hypotheses=True, precision=args.precision)
        return InvertPipeline(*networks, detector=None, device=device, settings=settings)

    photo = read_image(ROOT / "examples" / "old_photo.jpg")
    source = to_tensor(square_resize(photo.rgb, args.size), device)

    runs = {"all": pipeline(DEFAULT_LAYERS, args.timed_steps + 1)}
    for layer in DEFAULT_LAYERS:
        runs[f"layer {layer}"] = pipeline((layer,), args.timed_steps + 1)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"device {device} ({threads} threads), generator {args.generator_size} px, {args.codes} codes, "
          f"working size {args.size}, {args.precision}")

    every = runs["all"]
    # Untimed first: a device's first pass through a network pays for its set-up (cuDNN/cuBLAS
    # handles, kernel loading, Metal shader compilation), which a run pays once, not per image.
    every.warp(source, source)
    synchronize(device)
    started = time.perf_counter()
    with torch.no_grad():
        warped = every.warp(source, source)
    synchronize(device)
    warp_seconds = time.perf_counter() - started

    # Each run times the gaps between its step callbacks (the first step, which also warms up,
    # is dropped); the configurations take turns, twice, so all see the same machine load.
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, int] = {}
    for _ in range(2):
        for name, runner in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            stamps: list[float] = []

            def stamp(step: int, total: int, losses: object) -> None:
                synchronize(device)
                stamps.append(time.perf_counter())

            runner.fit(warped, on_step=stamp)
            times[name] += [later - earlier for earlier, later in zip(stamps, stamps[1:])]
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device))

    from i2icli.pipelines.frechet import single_image_frechet

    renders = torch.zeros(len(DEFAULT_LAYERS), 3, args.generator_size, args.generator_size, device=device)
    single_image_frechet(every.scorer, renders, source)  # untimed, as the warp's first pass
    started = time.perf_counter()
    single_image_frechet(every.scorer, renders, source)
    synchronize(device)
    score_seconds = time.perf_counter() - started

    step = {name: statistics.median(values) for name, values in times.items()}
    singles = [name for name in runs if name != "all"]
    print(f"{'configuration':<28}{'s / step':>10}{'peak GiB':>10}   (measured, median of {len(times['all'])} steps)")
    for name in runs:
        label = f"all {len(DEFAULT_LAYERS)} layers in one batch" if name == "all" else f"{name} alone"
        peak = f"{peaks[name] / 2**30:.2f}" if name in peaks else "-"
        print(f"{label:<28}{step[name]:>10.3f}{peak:>10}")
    sequential = sum(step[name] for name in singles)
    costliest = max(singles, key=step.get)
    print(f"one batch vs the layers one after another: {step['all']:.3f} vs {sequential:.3f} s "
          f"({sequential / step['all']:.2f}x faster)")
    print(f"one batch vs the costliest single layer ({costliest}): {step['all'] / step[costliest]:.2f}x its cost")
    print(f"warp {warp_seconds:.2f} s, scoring {score_seconds:.2f} s (measured)")
    # What `i2i invert` does by default: one batch on a GPU, one layer after another on a CPU.
    chosen = step["all"] if device.type != "cpu" else sequential
    total = warp_seconds + score_seconds + args.steps * chosen
    print(f"one image at --steps {args.steps} ({'one batch' if device.type != 'cpu' else 'one layer after another'}, "
          f"the default here): about {total:.0f} s (= warp + scoring + {args.steps} x the measured steps)")


if __name__ == "__main__":
    main()
