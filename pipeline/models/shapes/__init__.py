"""`shapes`: a small VQGAN and CLIP that feverdream trains itself, on a world of drawn shapes.

No trained VQGAN or CLIP can reach the project's build machines, so these two are how the
engine is checked for meaning rather than plumbing: they know colours, shapes, sizes and
positions (`world.py`), nothing else. They are the classes the real models load as, in the
real file formats. Model files stay out of the repository: `feverdream models build shapes`
trains them into the models folder (`train.py`, seeded and deterministic on one CPU thread
each; the two train side by side, then CLIP goes on against the engine's own frames through
that VQGAN: about twenty minutes on two cores), and a render that names `shapes` builds them
there on first use. A `<file>.sha256` beside each file, written by the build, is checked on
every load.

Importing this module is cheap (no torch).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models.architectures import VQGANConfig

if TYPE_CHECKING:
    import torch

    from pipeline.models.shapes.train import CLIPHardening, CLIPTraining, VQGANTraining

log = logging.getLogger(__name__)

NAME = "shapes"
NOTES = (
    "trained by feverdream on drawn shapes: understands colours, shapes, sizes and positions, "
    "nothing else; built on first use (about 20 min on a 2-core CPU)"
)
# `tensor_digest` of the models the committed recipe trained (torch 2.14.1, one thread each),
# by the CPU's maker and the kernels torch picked (`cpu_kernels()`): the same recipe trains
# other weights in the last bits with other kernels (an AVX2 EPYC's build differed from an
# AVX-512 Xeon's, also with the Xeon held to AVX2, and an AVX-512 EPYC's from both: MKL and
# oneDNN take other paths on AMD's CPUs). The tests' expectations were measured on the builds
# recorded here; a build elsewhere differs in the last bits, and the engine checks have thin
# margins (bench/RESULTS.md): one may come out otherwise there.
REFERENCE_DIGESTS: dict[str, dict[str, str]] = {
    "GenuineIntel AVX512": {
        "VQGAN": "e3d060c69c7d4759a0f0bf2aa651ebaa33099e936a9c4d54fdd4979b7741d806",
        "CLIP": "0b7a32db16d0317739c8aace7eed5dc7edfda047a9ef58a9d6c0b470019cb1c5",
    },
    "AuthenticAMD AVX512": {
        "VQGAN": "8f8e55db6dcba0c30fbadcbeb8583e8804f8dd10bf5e38a24f62e61c220d8f5c",
        "CLIP": "abf34169c76f188f97fb3f1dab7c3bc4ce3f4bfb6590386bfd56da47f131e08f",
    },
}


def cpu_kernels() -> str:
    """The CPU's maker and the kernel set torch picked on it, as REFERENCE_DIGESTS keys them:
    "GenuineIntel AVX512", "AuthenticAMD AVX2"."""
    import platform

    import torch

    vendor = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{vendor} {torch.backends.cpu.get_cpu_capability()}"


def reference_digests() -> dict[str, str] | None:
    """The reference build's digests for this machine's CPU kernels, if one is recorded."""
    return REFERENCE_DIGESTS.get(cpu_kernels())


# f8 like the OpenImages VQGAN, and as light at full resolution as taming's modules allow
# (32 channels, the least its GroupNorm(32) takes): the engine decodes every step.
SHAPES_VQGAN = VQGANConfig(
    embed_dim=32,
    n_embed=256,
    ddconfig={
        "double_z": False,
        "z_channels": 32,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 1, 1],
        "num_res_blocks": 0,
        "attn_resolutions": [],
        "dropout": 0.0,
        "resamp_with_conv": False,
    },
)

# In open_clip's model-config layout: a ResNet image tower, the class OpenAI's RN50 family
# loads as (a ViT this small took thousands of steps to tell a circle from a square; the
# convolutions see it within a hundred), and a text transformer on CLIP's own tokenizer,
# vocabulary and context. Its width is 64, so the loader infers one head from the state dict.
SHAPES_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"layers": (1, 1, 1, 1), "width": 16, "image_size": 64, "patch_size": None},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@dataclass(frozen=True)
class ShapesFiles:
    vqgan_ckpt: Path
    vqgan_config: Path
    clip: Path

    @property
    def all(self) -> tuple[Path, Path, Path]:
        return (self.vqgan_ckpt, self.vqgan_config, self.clip)

    @property
    def built(self) -> bool:
        """Whether a build finished here: it records each file's hash after writing them all."""
        return all(Path(f"{path}.sha256").is_file() for path in self.all)


def shapes_files(directory: Path) -> ShapesFiles:
    """The three files of the shapes models in `directory`."""
    return ShapesFiles(
        directory / "shapes-vqgan.ckpt",
        directory / "shapes-vqgan.yaml",
        directory / "shapes-clip.pt",
    )


def ensure_shapes(directory: Path, progress: bool = True) -> ShapesFiles:
    """The shapes models' files in `directory`, trained there first unless a build finished."""
    files = shapes_files(directory)
    if files.built:
        return files
    log.warning(
        "the shapes models are not built yet: training them into %s (once; about 20 "
        "minutes on a 2-core CPU)",
        directory,
    )
    return build_shapes(directory, progress=progress)


def build_shapes(
    directory: Path,
    vqgan: VQGANTraining | None = None,
    clip: CLIPTraining | None = None,
    hardening: CLIPHardening | None = None,
    progress: bool = True,
) -> ShapesFiles:
    """Train both models from scratch (by the committed recipe unless told otherwise), side
    by side in two processes of one thread each, then CLIP's second stage against the engine
    with that VQGAN, and write them and their `.sha256` records into `directory`; returns
    their files."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.models.registry import file_sha256, record_sha256
    from pipeline.models.shapes.train import CLIPHardening, CLIPTraining, VQGANTraining

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
    for path in files.all:
        record_sha256(path, file_sha256(path))
    return files


def _train_vqgan(settings: VQGANTraining, files: ShapesFiles, progress: bool) -> None:
    from pipeline.models.shapes.train import train_vqgan
    from pipeline.models.vqgan import save_vqgan

    log.info("training the shapes VQGAN into %s", files.vqgan_ckpt)
    save_vqgan(train_vqgan(settings, progress=progress), files.vqgan_ckpt, files.vqgan_config)


def _train_clip(settings: CLIPTraining, files: ShapesFiles, progress: bool) -> None:
    from pipeline.models.clip import save_clip_torchscript
    from pipeline.models.shapes.train import train_clip

    log.info("training the shapes CLIP into %s", files.clip)
    save_clip_torchscript(train_clip(settings, progress=progress), files.clip)


def _harden_clip(settings: CLIPHardening, files: ShapesFiles, progress: bool) -> None:
    from pipeline.models.clip import load_clip, save_clip_torchscript
    from pipeline.models.shapes.train import harden_clip
    from pipeline.models.vqgan import load_vqgan

    log.info("training the shapes CLIP against the engine's frames into %s", files.clip)
    vqgan = load_vqgan(files.vqgan_ckpt, files.vqgan_config)
    clip = harden_clip(load_clip(files.clip), vqgan, settings, progress=progress)
    save_clip_torchscript(clip, files.clip)


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values, in name order: the same
    for the same weights whatever file they were saved in (a TorchScript archive carries a
    random id, so CLIP's file bytes differ between two saves of one model)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def weight_digests(files: ShapesFiles) -> dict[str, str]:
    """`tensor_digest` of each model in `files`, loaded through the real loaders."""
    from pipeline.models.clip import load_clip
    from pipeline.models.vqgan import load_vqgan

    vqgan = load_vqgan(files.vqgan_ckpt, files.vqgan_config)
    return {
        "VQGAN": tensor_digest(vqgan.state_dict()),
        "CLIP": tensor_digest(load_clip(files.clip).state_dict()),
    }
