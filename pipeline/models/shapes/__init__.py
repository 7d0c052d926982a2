"""`shapes`: a small VQGAN and CLIP that feverdream trains itself, on a world of drawn shapes.

No trained VQGAN or CLIP can reach the project's build machines, so these two are how the
engine is checked for meaning rather than plumbing: they know colours, shapes, sizes and
positions (`world.py`), nothing else. They are the classes the real models load as, in the
real file formats, and ship with the package in `weights/` (their SHA-256 below, checked on
every load). `feverdream models build shapes` trains them again from scratch into the models
folder (`train.py`, seeded and deterministic on one CPU thread, about fifteen minutes each).

Importing this module is cheap (no torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models.architectures import VQGANConfig

if TYPE_CHECKING:
    from pipeline.models.shapes.train import CLIPTraining, VQGANTraining

log = logging.getLogger(__name__)

NAME = "shapes"
NOTES = (
    "trained by feverdream on drawn shapes: understands colours, shapes, sizes and positions, "
    "nothing else"
)
WEIGHTS = Path(__file__).parent / "weights"
# What `feverdream models build shapes` wrote on the machine the committed files were made on.
SHA256 = {
    "shapes-vqgan.ckpt": "82d9a41a305f009a4905d280d1082d1a76bebc9e2de4aae4975dcc47864975eb",
    "shapes-vqgan.yaml": "ca6836470a3ad5e0b950c05f53b11851eba87d9ea8e09a4fb289c2f348565064",
    "shapes-clip.pt": "b393a421bd5fd8bd2bfae3f23a6791ea7c91a784d31bc313c7c82d56b7703c27",
}


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


def shapes_files(directory: Path = WEIGHTS) -> ShapesFiles:
    """The three files of the shapes models in `directory` (default: the package's own)."""
    return ShapesFiles(
        directory / "shapes-vqgan.ckpt",
        directory / "shapes-vqgan.yaml",
        directory / "shapes-clip.pt",
    )


def build_shapes(
    directory: Path,
    vqgan: VQGANTraining | None = None,
    clip: CLIPTraining | None = None,
    progress: bool = True,
) -> ShapesFiles:
    """Train both models from scratch (by the committed recipe unless told otherwise) and
    write them into `directory`; returns their files."""
    from pipeline.models.clip import save_clip_torchscript
    from pipeline.models.shapes.train import CLIPTraining, VQGANTraining, train_clip, train_vqgan
    from pipeline.models.vqgan import save_vqgan

    files = shapes_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log.info("training the shapes VQGAN into %s", files.vqgan_ckpt)
    model = train_vqgan(vqgan or VQGANTraining(), progress=progress)
    save_vqgan(model, files.vqgan_ckpt, files.vqgan_config)
    log.info("training the shapes CLIP into %s", files.clip)
    save_clip_torchscript(train_clip(clip or CLIPTraining(), progress=progress), files.clip)
    return files


def same_weights(built: ShapesFiles, shipped: ShapesFiles) -> dict[str, bool]:
    """Whether each model in `built` has exactly the tensors of the one in `shipped` (a
    TorchScript archive carries a random id, so CLIP's files never match byte for byte)."""
    import torch

    from pipeline.models.clip import load_clip
    from pipeline.models.vqgan import load_vqgan

    def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)

    vqgans = [load_vqgan(f.vqgan_ckpt, f.vqgan_config).state_dict() for f in (built, shipped)]
    clips = [load_clip(f.clip).state_dict() for f in (built, shipped)]
    return {"VQGAN": equal(*vqgans), "CLIP": equal(*clips)}
