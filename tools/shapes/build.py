"""Builds the shapes world's model files from the recipe, and says how far they are from the
reference build that ships with the package (pipeline/assets/models/).

The package never trains: renders that name `shapes` load the committed reference files by
name, hash-checked. This is for whoever changes the recipe (world.py, train.py) or wants to
see it reproduce: both models train side by side in two processes of one thread each, then
CLIP's second stage goes on against the engine with that VQGAN (about thirty minutes on two
cores). torch picks other kernels on other CPUs, so the same recipe trains weights that differ
in the last bits from machine to machine; the report says by how much, not just whether.

    make shapes [OUT=DIR]        (or, in a checkout: python -m tools.shapes.build [DIR])

To make a new build the reference: copy its three files into pipeline/assets/models/, put
their SHA-256 (printed here) into SHAPES_FILES in pipeline/models/catalogue.py, and measure
the checks of tests/test_shapes_engine.py on it again.
"""

from __future__ import annotations

import logging
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from tools.shapes.train import CLIPHardening, CLIPTraining, VQGANTraining

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapesFiles:
    vqgan_ckpt: Path
    vqgan_config: Path
    clip: Path

    @property
    def all(self) -> tuple[Path, Path, Path]:
        return (self.vqgan_ckpt, self.vqgan_config, self.clip)


def shapes_files(directory: Path) -> ShapesFiles:
    """The three files of the shapes models in `directory`, named as the package's are."""
    return ShapesFiles(
        directory / "shapes-vqgan.ckpt",
        directory / "shapes-vqgan.yaml",
        directory / "shapes-clip.pt",
    )


def build_shapes(
    directory: Path,
    vqgan: VQGANTraining | None = None,
    clip: CLIPTraining | None = None,
    hardening: CLIPHardening | None = None,
    progress: bool = True,
) -> ShapesFiles:
    """Train both models from scratch (by the committed recipe unless told otherwise), side
    by side in two processes of one thread each, then CLIP's second stage against the engine
    with that VQGAN, and write them, compacted, with their `.sha256` records into `directory`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.models.files import file_sha256, record_sha256
    from tools.shapes.train import CLIPHardening, CLIPTraining, VQGANTraining

    files = shapes_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Until the new records are written, the folder does not count as built.
    for path in files.all:
        Path(f"{path}.sha256").unlink(missing_ok=True)
    # spawn, not fork: the parent may already hold torch's thread pools.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        jobs = [
            pool.submit(_train_vqgan, vqgan or VQGANTraining(), files, progress),
            pool.submit(_train_clip, clip or CLIPTraining(), files, progress),
        ]
        for job in jobs:
            job.result()
        pool.submit(_harden_clip, hardening or CLIPHardening(), files, progress).result()
    for path in (files.vqgan_ckpt, files.clip):
        deflate(path)
    for path in files.all:
        record_sha256(path, file_sha256(path))
    return files


def deflate(path: Path) -> None:
    """Store a checkpoint's zip entries compressed. Most of the CLIP file is its token
    embedding, 49,408 rows of which the world uses about thirty (the rest are zero), so it
    shrinks from about 19 MB to well under one; the real loaders read it as before (they read
    zips with Python's zipfile, which inflates as it reads)."""
    from pipeline.store import atomic_write

    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as target:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(info, data, compresslevel=9)

    atomic_write(path, write)


def _train_vqgan(settings: VQGANTraining, files: ShapesFiles, progress: bool) -> None:
    from pipeline.models.vqgan import save_vqgan
    from tools.shapes.train import train_vqgan

    log.info("training the shapes VQGAN into %s", files.vqgan_ckpt)
    save_vqgan(train_vqgan(settings, progress=progress), files.vqgan_ckpt, files.vqgan_config)


def _train_clip(settings: CLIPTraining, files: ShapesFiles, progress: bool) -> None:
    from pipeline.models.clip import save_clip_torchscript
    from tools.shapes.train import train_clip

    log.info("training the shapes CLIP into %s", files.clip)
    save_clip_torchscript(train_clip(settings, progress=progress), files.clip)


def _harden_clip(settings: CLIPHardening, files: ShapesFiles, progress: bool) -> None:
    from pipeline.models.clip import load_clip, save_clip_torchscript
    from pipeline.models.vqgan import load_vqgan
    from tools.shapes.train import harden_clip

    log.info("training the shapes CLIP against the engine's frames into %s", files.clip)
    vqgan = load_vqgan(files.vqgan_ckpt, files.vqgan_config)
    clip = harden_clip(load_clip(files.clip), vqgan, settings, progress=progress)
    save_clip_torchscript(clip, files.clip)


def weights(files: ShapesFiles) -> dict[str, dict[str, torch.Tensor]]:
    """Each model's state dict, loaded through the real loaders."""
    from pipeline.models.clip import load_clip
    from pipeline.models.vqgan import load_vqgan

    vqgan = load_vqgan(files.vqgan_ckpt, files.vqgan_config)
    return {"VQGAN": vqgan.state_dict(), "CLIP": load_clip(files.clip).state_dict()}


@dataclass(frozen=True)
class Distance:
    """How far one model's weights are from another's of the same architecture."""

    identical: bool
    relative: float  # |new - old| / |old| over all weights together (L2)
    largest: float  # the largest change of any one weight
    tensor: str  # the tensor that changed most, relative to its own size

    def __str__(self) -> str:
        if self.identical:
            return "identical weights"
        return (
            f"relative L2 distance {self.relative:.3g}, largest change of one weight "
            f"{self.largest:.3g} (most changed, relatively: {self.tensor})"
        )


def distance(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> Distance | None:
    """How far `new` is from `old`; None when they are not the same architecture (the recipe
    changed it)."""
    import torch

    if new.keys() != old.keys() or any(new[k].shape != old[k].shape for k in old):
        return None
    difference = total = 0.0
    largest, worst, worst_name = 0.0, -1.0, ""
    for name, value in old.items():
        a, b = new[name].double(), value.double()
        change = float((a - b).square().sum())
        difference += change
        total += float(b.square().sum())
        if a.numel():
            largest = max(largest, float((a - b).abs().max()))
        relative = (change / max(float(b.square().sum()), 1e-30)) ** 0.5
        if relative > worst:
            worst, worst_name = relative, name
    identical = all(torch.equal(new[name], old[name]) for name in old)
    return Distance(identical, (difference / max(total, 1e-30)) ** 0.5, largest, worst_name)


def compare_with_reference(files: ShapesFiles) -> dict[str, Distance | None]:
    """How far the models in `files` are from the reference build the package ships."""
    from pipeline.models.files import packaged_dir

    reference = weights(shapes_files(packaged_dir()))
    built = weights(files)
    return {model: distance(built[model], reference[model]) for model in reference}


def main(directory: Path) -> None:
    from pipeline.models.files import file_sha256

    print(f"training the shapes models into {directory} (about 30 minutes on two cores)")
    files = build_shapes(directory)
    for path in files.all:
        print(f"{path}  {path.stat().st_size / 1e6:.2f} MB  sha256 {file_sha256(path)}")
    for model, far in compare_with_reference(files).items():
        said = far or "another architecture (the recipe changed it), so not comparable"
        print(f"the {model}, against the reference build the package ships: {said}")
    print(
        f"render with them by path: models: {{vqgan: {files.vqgan_ckpt}, clip: {files.clip}}}; "
        "to make them the reference, see tools/shapes/build.py"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/shapes-build"))
