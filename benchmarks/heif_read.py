"""Reading and writing a phone-sized photo as HEIC and AVIF, against the same pixels as JPEG.

A photo-like picture (smooth shading, edges and sensor noise) is written once as a tiled HEIC (in
512x512 tiles, as iPhones store them), an AVIF, a JPEG at quality 95 and a PNG. Each read runs in a
process of its own, so its peak memory is its own:

    uv run python benchmarks/heif_read.py
    uv run python benchmarks/heif_read.py --size 8064 6048 --read-only
    uv run python benchmarks/heif_read.py --size 2016 1512 --qualities 80 85 90 95
    uv run python benchmarks/heif_read.py --photo examples/old_photo.jpg --upscale 2 --qualities 80 85 90 95

Prints two Markdown tables: reading (seconds for read_image and for image_size, peak RSS above the
process's before reading; Linux only) and writing at i2i's default quality (seconds, size, PSNR against the pixels).
With ``--qualities``, it writes HEIC and AVIF at each of them instead, against JPEG at 95: size,
PSNR, and PSNR over the sharpest tenth of the picture (its edges, where a face's crispness shows).
``--photo`` takes a picture from a file (``--upscale`` enlarges it with Lanczos, as a restored photo).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_READ_ONE = """
import json, sys, time
from i2icli.imageio import image_size, read_image

def peak_kb():  # the process's own high-water mark (ru_maxrss would carry the parent's over)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))

path = sys.argv[1]
start_rss = peak_kb()
started = time.perf_counter()
size = image_size(path)
sized = time.perf_counter() - started
started = time.perf_counter()
picture = read_image(path, max_pixels=10**9)
read = time.perf_counter() - started
peak = peak_kb() - start_rss
print(json.dumps({"size": size, "image_size_s": sized, "read_s": read, "peak_mb": peak / 1024}))
"""


def photo_like(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 97.0) * np.cos(y / 61.0)], axis=-1) * 200 + 20
    rgb[(x // 300 + y // 300) % 2 == 0] *= 0.7  # edges
    rgb += rng.normal(0, 3, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def edge_mask(pixels: np.ndarray) -> np.ndarray:
    """The tenth of the pixels with the steepest luma gradient."""
    luma = pixels.astype(np.float32).mean(axis=-1)
    gy, gx = np.gradient(luma)
    steepness = np.hypot(gx, gy)
    return steepness >= np.quantile(steepness, 0.9)


def sweep_qualities(pixels: np.ndarray, qualities: list[int]) -> None:
    from PIL import Image

    from i2icli.image_encoding import PIL_CODED_QUALITY, encode_pil_coded
    from i2icli.imageio import Picture, encode_image

    picture, edges = Picture(rgb=pixels), edge_mask(pixels)
    print(f"Writing a {pixels.shape[1]}x{pixels.shape[0]} picture at each quality (* i2i's default)\n")
    print("| output | quality | MB | PSNR dB | edge PSNR dB |\n|---|---|---|---|---|")
    runs = [(".jpg", 95, lambda _: encode_image(picture, ".jpg"))]
    for suffix, fmt in ((".heic", "HEIF"), (".avif", "AVIF")):
        runs += [(suffix, q, lambda q, fmt=fmt, suffix=suffix: encode_pil_coded(Path("sweep" + suffix), picture, fmt, q))
                 for q in qualities]
    for suffix, quality, encode in runs:
        data = encode(quality)
        with Image.open(io.BytesIO(data)) as decoded:
            back = np.asarray(decoded.convert("RGB"))
        default = suffix == ".jpg" or quality == PIL_CODED_QUALITY["HEIF" if suffix == ".heic" else "AVIF"]
        print(f"| {suffix} | {quality}{'*' if default else ''} | {len(data) / 2**20:.2f} | {psnr(back, pixels):.2f} "
              f"| {psnr(back[edges], pixels[edges]):.2f} |")


def load_photo(path: Path, upscale: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as photo:
        photo = photo.convert("RGB")
        if upscale > 1:
            photo = photo.resize((photo.width * upscale, photo.height * upscale), Image.Resampling.LANCZOS)
        return np.asarray(photo).copy()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4032, 3024), metavar=("W", "H"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--read-only", action="store_true", help="leave out the writing table")
    parser.add_argument("--qualities", type=int, nargs="+", metavar="Q",
                        help="write HEIC and AVIF at each of these qualities, against JPEG at 95, and stop")
    parser.add_argument("--photo", type=Path, help="a picture file to use in place of the synthetic one")
    parser.add_argument("--upscale", type=int, default=1, help="enlarge --photo this many times (Lanczos)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    import pillow_heif
    from PIL import Image

    from i2icli.imageio import Picture, encode_image, read_image

    pillow_heif.register_heif_opener()
    pixels = photo_like(*args.size) if args.photo is None else load_photo(args.photo, args.upscale)
    if args.qualities:
        sweep_qualities(pixels, args.qualities)
        return
    args.size = (pixels.shape[1], pixels.shape[0])
    with tempfile.TemporaryDirectory() as folder:
        files = {"HEIC": Path(folder, "photo.heic"), "JPEG": Path(folder, "photo.jpg"), "AVIF": Path(folder, "photo.avif")}
        Image.fromarray(pixels).save(files["HEIC"], "HEIF", quality=90, tile_size=512, enc_params={"preset": "fast"})
        Image.fromarray(pixels).save(files["JPEG"], "JPEG", quality=95)
        Image.fromarray(pixels).save(files["AVIF"], "AVIF", quality=90, speed=8)
        print(f"Reading a {args.size[0]}x{args.size[1]} photo\n")
        print("| file | MB | image_size s | read_image s | peak RSS MB |\n|---|---|---|---|---|")
        for name, path in files.items():
            for _ in range(args.repeats):
                run = subprocess.run([sys.executable, "-c", _READ_ONE, str(path)], capture_output=True, text=True,
                                     check=True)
                got = json.loads(run.stdout)
                print(f"| {name} | {path.stat().st_size / 2**20:.1f} | {got['image_size_s']:.3f} | {got['read_s']:.2f} "
                      f"| {got['peak_mb']:.0f} |")

        if args.read_only:
            return
        print("\nWriting it at the default quality\n")
        print("| output | s | MB | PSNR dB |\n|---|---|---|---|")
        picture = Picture(rgb=pixels)
        for suffix in (".jpg", ".heic", ".avif", ".png"):
            started = time.perf_counter()
            data = encode_image(picture, suffix)
            took = time.perf_counter() - started
            Path(folder, "out" + suffix).write_bytes(data)
            back = read_image(Path(folder, "out" + suffix), max_pixels=10**9).rgb
            print(f"| {suffix} | {took:.2f} | {len(data) / 2**20:.1f} | {psnr(back, pixels):.1f} |")


if __name__ == "__main__":
    main()
