"""FID's Fréchet distance on held-out-sized sets: i2i's cross-product form against pytorch-fid's.

`i2i train ... --eval` compares a few dozen held-out images through 2048 Inception features.
pytorch-fid takes a 2048x2048 matrix root of the covariances' product; with fewer images than
features i2i takes the singular values of the images' small cross product instead, which gives
the same trace exactly. Both run here, on the same seeded features, in one process:

    uv run python benchmarks/fid_small_sets.py
    uv run python benchmarks/fid_small_sets.py --images 10 50 200 --repeats 3

Prints a Markdown table: seconds for each, the speed-up, and their relative difference.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def _seconds(function, repeats: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - started)
    return min(times), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10, 50, 200], help="images per set")
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    from pytorch_fid.fid_score import calculate_frechet_distance

    from i2icli.pipelines.frechet import frechet_distance_of_samples

    print("| images per set | pytorch-fid (s) | i2i (s) | speed-up | relative difference |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(args.features, args.features)) / np.sqrt(args.features)
    for count in args.images:
        # Non-negative, correlated features, as pool3 activations are.
        real = np.abs(rng.normal(size=(count, args.features)) @ mixing)
        fake = np.abs(0.8 * rng.normal(size=(count, args.features)) @ mixing + 0.1)

        def reference() -> float:
            statistics = [(x.mean(axis=0), np.cov(x, rowvar=False)) for x in (real, fake)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sqrtm warns about the singular product
                return float(calculate_frechet_distance(*statistics[0], *statistics[1]))

        theirs, expected = _seconds(reference, args.repeats)
        ours, value = _seconds(lambda: frechet_distance_of_samples(real, fake), args.repeats)
        print(f"| {count} | {theirs:.2f} | {ours:.4f} | {theirs / ours:.0f}x | {abs(value - expected) / expected:.1e} |")


if __name__ == "__main__":
    main()
