"""`i2i restore` against the pipeline people run today, side by side, on the same inputs and weights.

The reference is gfpgan's GFPGANer with realesrgan's RealESRGANer as background upsampler (set up
as gfpgan's inference script does: RealESRGAN_x2plus, tile 400, tile_pad 10, pre_pad 0, fp16 on
CUDA) and facexlib's FaceRestoreHelper. Both get the same randomly initialised checkpoints of the
official sizes, the same group photos (JPEG files), the same device, and the same landmarks
(random detector weights find no faces, so the detector's output is replaced after the detector
network has run, in both). Each pipeline runs in its own process so that its peak memory is its own.

    uv run python benchmarks/restore_vs_reference.py                      # 0.25 and 2 MP, CPU
    uv run python benchmarks/restore_vs_reference.py --sizes 0.25 2 12 --device cuda --repeats 5
    uv run python benchmarks/restore_vs_reference.py --sizes 24 --device cuda --max-memory 8 --repeats 1

Prints a Markdown table: median seconds per image and per stage, peak memory, and the
difference between the two outputs (8-bit levels).

With ``--folder N`` each pipeline instead works through a folder of N copies of each photo, as a
script batch-processing a folder would (gfpgan's inference script loops imread / enhance / imwrite;
``i2i restore`` runs its batch runner, once overlapping decode and encode with compute and once
not), and the table gives images per second:

    uv run python benchmarks/restore_vs_reference.py --sizes 2 --folder 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fixtures  # noqa: E402

STAGES = ("decode", "detect", "align", "faces", "parse", "background", "paste", "encode")


class StageClock:
    """Accumulates wall time per stage for one image."""

    def __init__(self, device: str):
        self.seconds: dict[str, float] = {}
        self.device = device

    def sync(self) -> None:
        from i2icli.pipelines.devices import pick_device, synchronize

        synchronize(pick_device(self.device))  # the device in use, not the current one; CUDA or MPS

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


def _loaded(device: str) -> None:
    """Start counting the CUDA peak once the models are loaded, for both pipelines alike (i2i
    resets the counter itself when it measures a face's and a tile's cost at load time)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def _untimed_runs(device: str) -> int:
    """Runs before the timed ones: on a GPU the first pays for cuDNN/cuBLAS set-up and lazy kernel
    loading (CUDA) or for compiling Metal shaders (MPS), which a folder run pays once, not per photo."""
    return 0 if device == "cpu" else 1


def _peak_memory(device: str) -> dict[str, float]:
    peaks = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        import torch

        peaks["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


def _load_ours(landmarks: list[np.ndarray], weights: dict[str, Path], device: str, precision: str,
               max_memory: float | None) -> tuple[Any, float]:
    """i2i's pipeline, its detector's output replaced by ``landmarks`` after the network has run."""
    from i2icli.faces.detect import DetectedFace, FaceDetector
    from i2icli.pipelines.restore import RestorePipeline, RestoreSettings

    detect = FaceDetector.detect

    def detect_then_use_known_faces(self, rgb, **kwargs):
        detect(self, rgb, **kwargs)
        return [DetectedFace(np.concatenate([p.min(0) - 20, p.max(0) + 20]), 0.999, p) for p in landmarks]

    FaceDetector.detect = detect_then_use_known_faces
    started = time.perf_counter()
    pipeline = RestorePipeline.load(**{k: str(v) for k, v in weights.items()}, device=device, precision=precision,
                                    max_memory=max_memory, settings=RestoreSettings(upscale=2))
    return pipeline, time.perf_counter() - started


def run_ours(photo: Path, landmarks: list[np.ndarray], weights: dict[str, Path], output: Path, repeats: int, device: str,
             precision: str = "auto", max_memory: float | None = None) -> dict:
    from i2icli.imageio import read_image, write_image

    pipeline, load = _load_ours(landmarks, weights, device, precision, max_memory)
    _loaded(device)
    runs = []
    for index in range(_untimed_runs(device) + repeats):
        clock = StageClock(device)
        started = time.perf_counter()
        with clock.stage("decode"):
            picture = read_image(photo)
        result = pipeline.restore(picture)
        with clock.stage("encode"):
            write_image(output, result.picture)
        clock.seconds.update(result.seconds)
        clock.seconds["total"] = time.perf_counter() - started
        if index >= _untimed_runs(device):
            runs.append(clock.seconds)
    return {"load": load, "runs": runs, **_peak_memory(device)}


def folder_ours(folder: Path, landmarks: list[np.ndarray], weights: dict[str, Path], output: Path, device: str,
                precision: str, overlap: bool, max_memory: float | None = None) -> dict:
    """Wall time of `i2i restore FOLDER`'s batch runner over every photo in ``folder``."""
    from i2icli.batch import plan_jobs
    from i2icli.cli.restore import restore_stages
    from i2icli.cli.runner import run_batch

    pipeline, load = _load_ours(landmarks, weights, device, precision, max_memory)
    _loaded(device)
    jobs = plan_jobs([str(folder)], output, recursive=False, ext="png")
    clock = StageClock(device)
    with clock.stage("folder"):
        records = run_batch(jobs, restore_stages(pipeline, max_pixels=10**9, save_faces=False), verb="restoring",
                            skip_existing=False, record_of=lambda job: {}, overlap_io=overlap)
    if any(record["status"] != "ok" for record in records):
        raise SystemExit(f"i2i failed on {records}")
    return {"load": load, "folder": clock.seconds["folder"], "images": len(jobs), **_peak_memory(device)}


def _reference_pipeline(weights: dict[str, Path], device: str) -> tuple[Any, Any, float]:
    """GFPGANer with RealESRGANer as gfpgan's inference script sets them up: (restorer, background, load seconds)."""
    import torch

    import i2icli._compat  # noqa: F401  (basicsr 1.4.2 on a current torchvision)
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from gfpgan import GFPGANer
    from realesrgan import RealESRGANer

    # GFPGANer looks for facexlib's detector and parser in ./gfpgan/weights.
    workdir = Path(tempfile.mkdtemp())
    facexlib_dir = workdir / "gfpgan" / "weights"
    facexlib_dir.mkdir(parents=True)
    for key in ("detector", "parser"):
        (facexlib_dir / weights[key].name).symlink_to(weights[key])
    os.chdir(workdir)

    torch_device = torch.device(device)
    half = torch_device.type == "cuda"
    started = time.perf_counter()
    background = RealESRGANer(
        scale=2, model_path=str(weights["bg_model"]),
        model=RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=2),
        tile=400, tile_pad=10, pre_pad=0, half=half, device=torch_device,
    )
    restorer = GFPGANer(model_path=str(weights["model"]), upscale=2, arch="clean", channel_multiplier=2,
                        bg_upsampler=background, device=torch_device)
    return restorer, background, time.perf_counter() - started


def _use_known_faces(restorer: Any, landmarks: list[np.ndarray], wrap: Callable[[str, Callable], Callable]) -> None:
    """Replace the reference's detector output by ``landmarks`` (after its network has run), and fix
    GFPGAN's noise as i2i does so the outputs can be compared (the compute is unchanged)."""
    helper = restorer.face_helper
    original_landmarks = type(helper).get_face_landmarks_5.__get__(helper)

    def detect_then_use_known_faces(*args, **kwargs):
        original_landmarks(*args, **kwargs)
        helper.all_landmarks_5 = [p.astype(np.float64) for p in landmarks]
        helper.det_faces = [np.concatenate([p.min(0) - 20, p.max(0) + 20, [0.999]]) for p in landmarks]
        return len(landmarks)

    helper.get_face_landmarks_5 = wrap("detect", detect_then_use_known_faces)
    network = restorer.gfpgan
    network_forward = type(network).forward
    network.forward = wrap("network", lambda x, **kw: network_forward(network, x, return_rgb=False, randomize_noise=False))


def folder_reference(folder: Path, landmarks: list[np.ndarray], weights: dict[str, Path], output: Path, device: str) -> dict:
    """Wall time of the reference looping over ``folder`` as gfpgan's inference script does."""
    import cv2

    restorer, _, load = _reference_pipeline(weights, device)
    _loaded(device)
    _use_known_faces(restorer, landmarks, lambda name, function: function)
    clock = StageClock(device)
    photos = sorted(folder.glob("*.jpg"))
    output.mkdir(parents=True, exist_ok=True)
    with clock.stage("folder"):
        for photo in photos:
            _, _, restored = restorer.enhance(cv2.imread(str(photo), cv2.IMREAD_COLOR), paste_back=True)
            cv2.imwrite(str(output / f"{photo.stem}.png"), restored)
    return {"load": load, "folder": clock.seconds["folder"], "images": len(photos), **_peak_memory(device)}


def run_reference(photo: Path, landmarks: list[np.ndarray], weights: dict[str, Path], output: Path, repeats: int,
                  device: str) -> dict:
    import cv2

    restorer, background, load = _reference_pipeline(weights, device)
    _loaded(device)
    helper = restorer.face_helper
    runs = []
    for index in range(_untimed_runs(device) + repeats):
        clock = StageClock(device)
        _use_known_faces(restorer, landmarks, clock.wrap)
        helper.align_warp_face = clock.wrap("align", type(helper).align_warp_face.__get__(helper))
        helper.paste_faces_to_input_image = clock.wrap("paste", type(helper).paste_faces_to_input_image.__get__(helper))
        helper.face_parse.forward = clock.wrap("parse", type(helper.face_parse).forward.__get__(helper.face_parse))
        background_enhance = type(background).enhance.__get__(background)
        background.enhance = clock.wrap("background", background_enhance)
        started = time.perf_counter()
        with clock.stage("decode"):
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        with clock.stage("enhance"):
            _, _, restored = restorer.enhance(image, paste_back=True)
        with clock.stage("encode"):
            cv2.imwrite(str(output), restored)
        seconds = clock.seconds
        seconds["total"] = time.perf_counter() - started
        # The reference's face loop converts each face to and from tensors around the network:
        # count all of it as the face stage, as i2i's face stage also includes its conversions.
        seconds["paste"] -= seconds.get("parse", 0.0)
        seconds["faces"] = seconds.pop("enhance") - sum(seconds.get(k, 0.0) for k in ("detect", "align", "background", "paste", "parse"))
        seconds.pop("network", None)
        if index >= _untimed_runs(device):
            runs.append(seconds)
    return {"load": load, "runs": runs, **_peak_memory(device)}


def worker(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.worker_spec).read_text())
    landmarks = [np.array(p, np.float32) for p in spec["landmarks"]]
    weights = {k: Path(v) for k, v in spec["weights"].items()}
    output, device = Path(spec["output"]), spec["device"]
    if "folder" in spec:
        folder = Path(spec["folder"])
        if args.worker == "ours":
            result = folder_ours(folder, landmarks, weights, output, device, spec["precision"], spec["overlap"],
                                 spec.get("max_memory"))
        else:
            result = folder_reference(folder, landmarks, weights, output, device)
    elif args.worker == "ours":
        result = run_ours(Path(spec["photo"]), landmarks, weights, output, spec["repeats"], device, spec["precision"],
                          spec.get("max_memory"))
    else:
        result = run_reference(Path(spec["photo"]), landmarks, weights, output, spec["repeats"], device)
    print("RESULT " + json.dumps(result))


def _launch(which: str, spec_path: Path) -> dict:
    command = [sys.executable, __file__, "--worker", which, "--worker-spec", str(spec_path)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{which} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run.get(key, 0.0) for run in runs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 2.0], help="megapixels of the test photos")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "fp32", "fp16", "bf16"],
                        help="i2i precisions to run (auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32)")
    parser.add_argument("--max-memory", type=float, default=None, metavar="GB",
                        help="i2i's GPU memory budget (its --max-memory); the reference has none")
    parser.add_argument("--folder", type=int, default=0, metavar="N",
                        help="time whole folders of N photos per size instead (images per second)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "i2i-bench")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-spec", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)

    # Before the checkpoints are written and the workers start, which each would fail on them.
    fixtures.check_precisions(args.precisions, fixtures.device_or_exit(args.device))
    args.workdir = args.workdir.resolve()  # the reference's worker changes directory
    weights = fixtures.official_size_checkpoints(args.workdir / "weights")
    if args.folder:
        return compare_folders(args, weights)

    from i2icli.imageio import read_image

    rows = []
    for megapixels in args.sizes:
        rgb, landmarks = fixtures.group_photo(megapixels)
        photo = fixtures.write_jpeg(args.workdir / f"group_{megapixels:g}mp.jpg", rgb)
        results, outputs = {}, {}
        variants = ["reference"] + [f"i2i-{p}" for p in args.precisions]
        for which in variants:
            outputs[which] = args.workdir / f"out_{which}_{megapixels:g}mp.png"
            spec = {"photo": str(photo), "landmarks": [p.tolist() for p in landmarks], "repeats": args.repeats,
                    "weights": {k: str(v) for k, v in weights.items()}, "output": str(outputs[which]), "device": args.device,
                    "precision": which.removeprefix("i2i-"), "max_memory": args.max_memory}
            spec_path = args.workdir / f"spec_{which}.json"
            spec_path.write_text(json.dumps(spec))
            results[which] = _launch("reference" if which == "reference" else "ours", spec_path)
            print(f"{megapixels:g} MP {which}: {_median(results[which]['runs'], 'total'):.2f} s/image", file=sys.stderr)
        reference = read_image(outputs["reference"]).rgb.astype(np.int16)
        differences = {}
        for which in variants[1:]:
            difference = np.abs(read_image(outputs[which]).rgb.astype(np.int16) - reference)
            differences[which] = (float(difference.max()), float(difference.mean()))
        rows.append((megapixels, rgb.shape, len(landmarks), results, differences))

    print(f"\ndevice: {args.device}, {args.repeats} repeats, median seconds per image\n")
    header = "| photo | pipeline | total | " + " | ".join(STAGES) + " | peak RSS MB | peak CUDA MB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for megapixels, shape, faces, results, differences in rows:
        for which, runs_and_memory in results.items():
            runs = runs_and_memory["runs"]
            stages = " | ".join(f"{_median(runs, s):.2f}" for s in STAGES)
            cuda = f"{runs_and_memory['cuda_mb']:.0f}" if "cuda_mb" in runs_and_memory else "-"
            print(f"| {megapixels:g} MP ({shape[1]}x{shape[0]}, {faces} faces) | {which} | {_median(runs, 'total'):.2f} | {stages} | "
                  f"{runs_and_memory['rss_mb']:.0f} | {cuda} |")
        for which, (max_diff, mean_diff) in differences.items():
            speedup = _median(results["reference"]["runs"], "total") / _median(results[which]["runs"], "total")
            print(f"| | **{which}: {speedup:.2f}x the reference**, output difference max {max_diff:.0f} / mean {mean_diff:.3f} levels | |")


def compare_folders(args: argparse.Namespace, weights: dict[str, Path]) -> None:
    import shutil

    variants = ["reference"]
    for precision in args.precisions:
        variants += [f"i2i-{precision}", f"i2i-{precision}-sequential"]
    print(f"\ndevice: {args.device}, folders of {args.folder} photos\n")
    print("| photo | pipeline | images/s | s/image | speed vs reference | peak RSS MB | peak CUDA MB |")
    print("|---|---|---|---|---|---|---|")
    for megapixels in args.sizes:
        rgb, landmarks = fixtures.group_photo(megapixels)
        folder = args.workdir / f"folder_{megapixels:g}mp"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for index in range(args.folder):
            fixtures.write_jpeg(folder / f"photo_{index:03d}.jpg", rgb)
        results = {}
        for which in variants:
            output = args.workdir / f"folder_out_{which}_{megapixels:g}mp"
            shutil.rmtree(output, ignore_errors=True)
            spec = {"folder": str(folder), "landmarks": [p.tolist() for p in landmarks], "output": str(output),
                    "weights": {k: str(v) for k, v in weights.items()}, "device": args.device,
                    "precision": which.removeprefix("i2i-").removesuffix("-sequential"),
                    "overlap": not which.endswith("-sequential"), "max_memory": args.max_memory}
            spec_path = args.workdir / f"spec_{which}.json"
            spec_path.write_text(json.dumps(spec))
            results[which] = _launch("reference" if which == "reference" else "ours", spec_path)
            per_image = results[which]["folder"] / results[which]["images"]
            print(f"{megapixels:g} MP folder {which}: {per_image:.2f} s/image", file=sys.stderr)
        reference = results["reference"]["folder"] / results["reference"]["images"]
        for which, result in results.items():
            per_image = result["folder"] / result["images"]
            cuda = f"{result['cuda_mb']:.0f}" if "cuda_mb" in result else "-"
            speed = "" if which == "reference" else f"{reference / per_image:.2f}x"
            print(f"| {megapixels:g} MP ({rgb.shape[1]}x{rgb.shape[0]}, {len(landmarks)} faces) | {which} | {1 / per_image:.3f} | "
                  f"{per_image:.2f} | {speed} | {result['rss_mb']:.0f} | {cuda} |")


if __name__ == "__main__":
    main()
