"""translate-lr's networks next to the authors' (Medabid1/I2I-LR), on the same weights, in one run.

Needs a checkout of that repository (it is not a package):

    uv run python benchmarks/translate_lr_vs_authors.py --official ~/src/I2I-LR
    uv run python benchmarks/translate_lr_vs_authors.py --official ... --hr 256 --batch 4 --device cuda

Both generators and discriminators get the same seeded weights at the paper's widths; each
measurement alternates between them, and the table gives medians, their ratio, and the largest
output difference. Also times one whole i2i training step (four generator passes, discriminator
with R1, generator update, EMA).
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
from i2icli.archs.lr_conditioned import (  # noqa: E402
    LRConditionedGenerator,
    LRDifferenceDiscriminator,
    config_from_state_dicts,
)
from i2icli.pipelines.devices import synchronize  # noqa: E402
from i2icli.training.translate_lr import LRTrainingOptions, TranslateLRTraining  # noqa: E402


def authors_networks(root: Path):
    if not (root / "networks" / "networks.py").is_file():
        raise SystemExit(f"{root}: not a checkout of Medabid1/I2I-LR (no networks/networks.py); pass --official PATH to one")
    sys.path.insert(0, str(root))
    import networks.modules as modules

    # networks.py imports a block the published modules.py no longer defines (and never uses).
    modules.SPAdaInResBlk01 = getattr(modules, "SPAdaInResBlk01", modules.SPAdaInResBlk)
    from networks.networks import Discriminator, PonoSPadaInGenerator

    return PonoSPadaInGenerator, Discriminator


def timed(function, device: torch.device) -> float:
    synchronize(device)  # the device in use (cuda:1 is not the current one), CUDA or MPS
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="checkout of Medabid1/I2I-LR")
    parser.add_argument("--hr", type=int, default=128)
    parser.add_argument("--lr", type=int, default=8)
    parser.add_argument("--dim-in", type=int, default=512,
                        help="the authors' widest encoder width, at least 128 (their first block is 128 wide)")
    parser.add_argument("--batch", type=int, default=8, help="an even number (a training step pairs two halves)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dim_in < 128:
        # Below that the authors' encoder narrows after its first block: a network i2i's
        # configuration (widths that only grow) does not describe.
        parser.error(f"--dim-in {args.dim_in}: the authors' networks need at least 128")
    if args.batch < 2 or args.batch % 2:
        parser.error(f"--batch {args.batch}: a training step splits the batch in two halves; give an even number")
    device = fixtures.device_or_exit(args.device)

    generator_class, discriminator_class = authors_networks(args.official)
    torch.manual_seed(0)
    theirs_g = generator_class(args.dim_in, img_size=args.hr, low_size=args.lr).to(device)
    theirs_d = discriminator_class(img_size=args.hr, low_size=args.lr).to(device)
    config = config_from_state_dicts(theirs_g.state_dict(), theirs_d.state_dict())
    ours_g, ours_d = LRConditionedGenerator(config).to(device), LRDifferenceDiscriminator(config).to(device)
    ours_g.load_state_dict(theirs_g.state_dict())
    ours_d.load_state_dict(theirs_d.state_dict())
    for module in (theirs_g, theirs_d, ours_g, ours_d):
        module.eval()

    source = torch.rand(args.batch, 3, args.hr, args.hr, device=device) * 2 - 1
    target = torch.rand(args.batch, 3, args.lr, args.lr, device=device) * 2 - 1
    with torch.no_grad():
        difference = (ours_g(source, target) - theirs_g(source, target)).abs().max().item()

    def generator_pass(network):
        def run():
            network(source, target).square().mean().backward()
        return run

    def discriminator_pass(network):
        def run():
            network(source, target.abs()).mean().backward()
        return run

    rows = []
    for name, ours, theirs in (("generator fwd+bwd", generator_pass(ours_g), generator_pass(theirs_g)),
                               ("discriminator fwd+bwd", discriminator_pass(ours_d), discriminator_pass(theirs_d))):
        ours(), theirs()  # warm-up
        times = {"i2i": [], "authors": []}
        for _ in range(args.repeats):
            times["i2i"].append(timed(ours, device))
            times["authors"].append(timed(theirs, device))
        i2i, authors = statistics.median(times["i2i"]), statistics.median(times["authors"])
        rows.append((name, i2i, authors))

    method = TranslateLRTraining(config, LRTrainingOptions(), seed=0)
    method.to(device)
    batch = torch.rand(args.batch, 3, args.hr, args.hr, device=device) * 2 - 1
    generator = torch.Generator().manual_seed(0)  # a CPU one on every device, as the training loop hands it
    method.train_step(batch, generator)
    step = statistics.median(timed(lambda: method.train_step(batch, generator), device) for _ in range(max(args.repeats // 2, 1)))

    print(f"\n{args.hr} px / {args.lr} px, dim_in {args.dim_in}, batch {args.batch}, {device}; max |output difference| {difference:.1e}\n")
    print("| pass | i2i s | authors s | authors / i2i |")
    print("|---|---|---|---|")
    for name, i2i, authors in rows:
        print(f"| {name} | {i2i:.3f} | {authors:.3f} | {authors / i2i:.2f}x |")
    print(f"| i2i training step (4 G passes, D + R1, G, EMA) | {step:.3f} | | |")


if __name__ == "__main__":
    main()
