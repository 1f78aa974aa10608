"""What `i2i restore` costs per image, stage by stage, with models of the official sizes.

The checkpoints are randomly initialised but have the official architectures and shapes
(GFPGAN v1.4, RealESRGAN_x2plus, RetinaFace-ResNet50, ParseNet), so the compute is the real
one. Random detector weights find no faces, so the detector's output is replaced by the
landmarks of the portrait in examples/old_photo.jpg (the detector network itself still runs and
is timed).

    uv run python benchmarks/restore_cost.py --sizes 341 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fixtures  # noqa: E402
from fixtures import ROOT, conftest  # noqa: E402
from i2icli.faces.detect import DetectedFace, FaceDetector  # noqa: E402
from i2icli.imageio import Picture, read_image  # noqa: E402
from i2icli.pipelines.restore import RestorePipeline, RestoreSettings  # noqa: E402


# Every stage RestorePipeline.restore reports, in the order it runs them (parse: the face masks).
STAGES = ("detect", "background", "align", "faces", "parse", "paste")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[341, 1024], help="long side of the test photos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = fixtures.device_or_exit(args.device)

    photo = read_image(ROOT / "examples" / "old_photo.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        paths = fixtures.official_size_checkpoints(Path(tmp))
        started = time.perf_counter()
        pipeline = RestorePipeline.load(**{k: str(v) for k, v in paths.items()}, device=device,
                                        settings=RestoreSettings(upscale=2))
        print(f"model load: {time.perf_counter() - started:.2f} s (device {pipeline.device}, {torch.get_num_threads()} threads)")

    detect = FaceDetector.detect
    print(f"{'size':>9} {'total':>8} " + " ".join(f"{s:>10}" for s in STAGES))
    for size in args.sizes:
        scale = size / photo.width
        rgb = cv2.resize(photo.rgb, (size, size), interpolation=cv2.INTER_CUBIC)
        landmarks = conftest.OLD_PHOTO_LANDMARKS * scale

        def with_landmarks(self, image, **kwargs):
            detect(self, image, **kwargs)  # the network still runs and is timed
            return [DetectedFace(np.array([0, 0, size, size], np.float32), 0.999, landmarks)]

        FaceDetector.detect = with_landmarks
        picture = Picture(rgb=rgb, alpha=None, grayscale=False, source=None)
        if pipeline.device.type != "cpu":
            # Untimed: a GPU's first pass at a size pays for set-up (cuDNN/cuBLAS handles, kernel
            # loading, Metal shader compilation) that a folder run pays once.
            pipeline.restore(picture)
        totals, stages = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = pipeline.restore(picture)
            totals.append(time.perf_counter() - started)
            stages.append(result.seconds)
        median = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in STAGES}
        print(f"{size:>4}x{size:<4} {statistics.median(totals):>7.2f}s " + " ".join(f"{median[k]:>9.2f}s" for k in STAGES))


if __name__ == "__main__":
    main()
