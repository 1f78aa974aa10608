"""Where the exemplar pipeline's two checkpoint files come from: a folder, or a registry name
refused with what to do instead.

Apart from the pipeline so that the command can show its --dry-run, and name a checkpoint folder
that is not there, without importing PyTorch, which takes seconds.
"""

from __future__ import annotations

from pathlib import Path

from i2icli import weights
from i2icli.errors import WeightsError

DEFAULT_CHECKPOINT = "cocosnet2-deepfashionhd"
GENERATOR_FILE = "latest_net_G.pth"
CORRESPONDENCE_FILE = "latest_net_Corr.pth"


def checkpoint_files(spec: str | Path) -> tuple[Path, Path, str]:
    """(correspondence file, generator file, label) for a folder, or a registry name."""
    # A name the registry does not know is taken as a folder: this option names a folder, so
    # "unknown checkpoint name … or a .pth file" would send the user the wrong way.
    if isinstance(spec, str) and (checkpoint := weights.entry_named(spec)) is not None:
        if checkpoint.manual:
            raise WeightsError(
                f"{checkpoint.name} is published only at {checkpoint.url}, without a checksum, so i2i does not "
                "fetch or verify it by name",
                f"download and unzip it, then pass the folder holding {GENERATOR_FILE} and {CORRESPONDENCE_FILE} "
                "with --checkpoint DIR",
            )
        raise WeightsError(f"{checkpoint.name} is not a CoCosNet v2 checkpoint", "pass --checkpoint DIR")
    folder = Path(spec).expanduser()
    if not folder.exists():
        raise WeightsError(f"{folder}: checkpoint folder not found",
                           f"pass the folder holding {GENERATOR_FILE} and {CORRESPONDENCE_FILE}")
    if not folder.is_dir():
        raise WeightsError(f"{folder}: --checkpoint takes a folder, not a file",
                           f"pass the folder holding {GENERATOR_FILE} and {CORRESPONDENCE_FILE}")
    missing = [name for name in (CORRESPONDENCE_FILE, GENERATOR_FILE) if not (folder / name).is_file()]
    if missing:
        raise WeightsError(f"{folder}: no {' or '.join(missing)} in this folder",
                           "CoCosNet v2 needs both files of one model; check the unzipped checkpoint folder")
    return folder / CORRESPONDENCE_FILE, folder / GENERATOR_FILE, str(folder)


def checkpoint_sources(spec: str) -> list[weights.CheckpointSource]:
    """Where ``ExemplarPipeline.load(spec)`` would have its two files from, with nothing opened."""
    try:
        correspondence, generator, _ = checkpoint_files(spec)
    except WeightsError as error:
        return [weights.CheckpointSource.unobtainable(spec, error)]
    return [weights.checkpoint_source(str(correspondence)), weights.checkpoint_source(str(generator))]
