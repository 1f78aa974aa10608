"""`i2i exemplar` against the official CoCosNet v2 forward, side by side, at 512x512.

Both get the same seeded random weights at the official DeepFashionHD widths (written once as
official-format latest_net_Corr.pth / latest_net_G.pth, which i2i loads from the folder), the
same inputs and the same propagation orders. Each run is its own process, so peak memory is
its own. The official code needs a checkout of microsoft/CoCosNet-v2:

    uv run python benchmarks/exemplar_vs_official.py --official ~/src/CoCosNet-v2
    uv run python benchmarks/exemplar_vs_official.py --official ... --precisions fp32 bf16 --repeats 2

Prints a Markdown table: seconds per pair (correspondence, generator, total), peak RSS (and
CUDA peak), and the difference between the outputs in 8-bit levels (against the official fp32
output). On CUDA the official forward runs in fp32 (TF32 off, as for i2i's fp32) and in fp16
autocast, each i2i precision is timed against the official one at the same precision (else fp32),
and one untimed run comes first.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fixtures  # noqa: E402
import official_cocosnet  # noqa: E402
from i2icli.pipelines.devices import PRECISIONS, explicit_dtype, pick_device, synchronize  # noqa: E402

SIZE = official_cocosnet.SIZE


def _peaks(device: str) -> dict[str, float]:
    peaks = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        peaks["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


def _untimed_runs(device: str) -> int:
    """On a GPU, one run first: it pays for cuDNN/cuBLAS set-up and lazy kernel loading on CUDA,
    for compiling its Metal shaders on MPS."""
    return 0 if pick_device(device).type == "cpu" else 1


def _sync(device: str) -> None:
    synchronize(pick_device(device))  # the device in use, not the current one; CUDA or MPS


def worker(spec: dict) -> dict:
    from i2icli.archs.cocosnet2 import CoCosNetConfig, propagation_orders

    torch.set_grad_enabled(False)
    inputs = torch.load(spec["inputs"], weights_only=True)
    device = spec["device"]
    config = CoCosNetConfig(iterations=spec["iterations"])
    orders = propagation_orders(spec["seed"], config.iterations)
    runs = []
    if spec["which"] == "official":
        root = Path(spec["official"])
        corr, gen = official_cocosnet.build_official(root, config, seed=0)
        corr, gen = corr.to(device), gen.to(device)
        tensors = [inputs[k].to(device) for k in ("semantic", "exemplar", "exemplar_semantic")]
        amp = spec["precision"] == "fp16"
        if not amp:
            # Float32 arithmetic, as i2i's fp32 it is timed against: PyTorch otherwise runs
            # cuDNN's convolutions in TF32 on Ampere and later GPUs (a no-op on the CPU).
            explicit_dtype("fp32", pick_device(device))
        for index in range(_untimed_runs(device) + spec["repeats"]):
            _sync(device)  # the copies to the device, or the run before, are not this run's time
            started = time.perf_counter()
            with torch.autocast("cuda", enabled=amp) if device.startswith("cuda") else torch.no_grad():
                warps, image = official_cocosnet.official_forward(root, corr, gen, *tensors, orders)
            _sync(device)
            if index >= _untimed_runs(device):
                runs.append({"total": time.perf_counter() - started})
        warp_levels = [((w.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) for w in warps]
    else:
        from i2icli.imageio import Picture
        from i2icli.pipelines.exemplar import ExemplarPipeline, ExemplarSettings
        from i2icli.semantics.inputs import Semantics

        settings = ExemplarSettings(size=SIZE, iterations=config.iterations, seed=spec["seed"])
        pipeline = ExemplarPipeline.load(spec["checkpoint"], device=device, precision=spec["precision"], settings=settings)
        semantic = Semantics(inputs["semantic"][0].numpy(), "pose", Path("input"))
        exemplar_semantic = Semantics(inputs["exemplar_semantic"][0].numpy(), "pose", Path("exemplar"))
        photo = Picture(inputs["photo"].numpy())
        for index in range(_untimed_runs(device) + spec["repeats"]):
            result = pipeline.translate(semantic, photo, exemplar_semantic)
            if index >= _untimed_runs(device):
                runs.append({k: result.seconds[k] for k in ("correspondence", "generator", "total")})
        image = torch.from_numpy(result.picture.rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
        warp_levels = [torch.from_numpy(w.rgb).permute(2, 0, 1)[None] for w in result.warps]
    levels = ((image.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    torch.save({"image": levels, "warps": warp_levels}, spec["output"])
    return {"runs": runs, **_peaks(device)}


def _launch(spec: dict, folder: Path) -> dict:
    spec_path = folder / f"{spec['label']}.json"
    spec_path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, __file__, "--worker", str(spec_path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{spec['label']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _inputs(folder: Path) -> Path:
    """A smooth random 20-channel label pair and a photo, saved for every worker."""
    from i2icli.imageio import Picture
    from i2icli.pipelines.exemplar import exemplar_tensor

    g = torch.Generator().manual_seed(1)

    def smooth(channels: int, cells: int = 16) -> torch.Tensor:
        return F.interpolate(torch.rand(1, channels, cells, cells, generator=g), size=SIZE, mode="bilinear")

    photo = (smooth(3, 32)[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    exemplar = torch.from_numpy(exemplar_tensor(Picture(photo.numpy()), SIZE))[None]
    path = folder / "inputs.pt"
    torch.save({"semantic": smooth(20), "exemplar_semantic": smooth(20), "photo": photo, "exemplar": exemplar}, path)
    return path


def _checkpoint(folder: Path, official: Path) -> Path:
    from i2icli.archs.cocosnet2 import CoCosNetConfig

    corr, gen = official_cocosnet.build_official(official, CoCosNetConfig(), seed=0)
    target = folder / "checkpoint"
    target.mkdir()
    torch.save(corr.state_dict(), target / "latest_net_Corr.pth")
    torch.save(gen.state_dict(), target / "latest_net_G.pth")
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help=f"CoCosNet-v2 checkout (default: ${official_cocosnet.OFFICIAL_ENV})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS,
                        help="i2i precisions to run (auto: fp16 on CUDA, else fp32)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(Path(args.worker).read_text()))))
        return
    official = official_cocosnet.official_root(args.official)
    if official is None:
        raise SystemExit("pass --official PATH to a microsoft/CoCosNet-v2 checkout")
    fixtures.check_precisions(args.precisions, fixtures.device_or_exit(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        common = {"inputs": str(_inputs(folder)), "device": args.device, "iterations": args.iterations,
                  "seed": args.seed, "repeats": args.repeats, "official": str(official),
                  "checkpoint": str(_checkpoint(folder, official))}
        # On CUDA the official code runs in fp32 and under its fp16 autocast, so that each i2i
        # precision is timed against the official one at the same precision.
        rows = []
        for precision in ["fp32", "fp16"] if args.device.startswith("cuda") else ["fp32"]:
            label = "official" if precision == "fp32" else f"official-{precision}"
            rows.append((label, precision, _launch({**common, "which": "official", "label": label,
                                                    "precision": precision, "output": str(folder / f"{label}.pt")},
                                                   folder)))
        for precision in args.precisions:
            label = f"i2i-{precision}"
            rows.append((label, precision, _launch({**common, "which": "ours", "label": label, "precision": precision,
                                                    "output": str(folder / f"{label}.pt")}, folder)))
        reference = torch.load(folder / "official.pt", weights_only=True)
        print(f"CoCosNet v2 at {SIZE}x{SIZE}, {args.iterations} iterations, device {args.device}, "
              f"median of {args.repeats} run(s)\n")
        print("| pipeline | precision | correspondence s | generator s | total s | peak RSS MB | CUDA peak MB "
              "| speed vs official | warp difference per level, mean levels | output difference (levels) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        official_seconds = {precision: statistics.median(r["total"] for r in result["runs"])
                            for label, precision, result in rows if label.startswith("official")}
        for label, precision, result in rows:
            def median(key: str) -> str:
                values = [r[key] for r in result["runs"] if key in r]
                return f"{statistics.median(values):.2f}" if values else "—"

            total = statistics.median(r["total"] for r in result["runs"])
            out = torch.load(folder / f"{label}.pt", weights_only=True)
            diff = (out["image"].int() - reference["image"].int()).abs().float()
            difference = "" if label == "official" else f"mean {diff.mean():.2f}, max {int(diff.max())}"
            warps = "" if label == "official" else " / ".join(
                f"{(a.int() - b.int()).abs().float().mean():.2f}" for a, b in zip(out["warps"], reference["warps"]))
            named = "fp16" if precision == "auto" and args.device.startswith("cuda") else precision
            same = named if named in official_seconds else "fp32"
            speed = "" if label.startswith("official") else (
                f"{official_seconds[same] / total:.2f}× (vs official {same})")
            cuda = f"{result['cuda_mb']:.0f}" if "cuda_mb" in result else "—"
            print(f"| {label} | {precision} | {median('correspondence')} | {median('generator')} | {total:.2f} | "
                  f"{result['rss_mb']:.0f} | {cuda} | {speed} | {warps} | {difference} |")


if __name__ == "__main__":
    main()
