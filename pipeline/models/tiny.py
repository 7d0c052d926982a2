"""`tiny`: a small VQGAN, CLIP and depth model with random weights, for smoke tests, CI and
`make demo-tiny`.

They are the same classes as the real models, written on first use into the models folder in
the real file formats (a Lightning-style checkpoint with a taming model.yaml; a TorchScript
archive like OpenAI's; a state dict like Depth Anything's) and then loaded through the real
loaders, so every run of the tiny models also exercises the loading code. Their weights come
from fixed seeds: the same weights every time on the same torch version. They produce abstract
noise, not art, and a depth that means nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.models.architectures import TINY_CLIP, TINY_DEPTH, TINY_VQGAN
from pipeline.models.catalogue import Entry, Source, TinyFiles, tiny_depth_file, tiny_files
from pipeline.models.clip import random_clip, save_clip_torchscript
from pipeline.models.depth import DepthModel, random_depth, save_depth
from pipeline.models.files import models_dir
from pipeline.models.vqgan import random_vqgan, save_vqgan

log = logging.getLogger(__name__)

VQGAN_SEED = 1312
CLIP_SEED = 1313
DEPTH_SEED = 1314


def ensure_built(*entries: Entry | None) -> None:
    """Write the files of those entries that are built on first use (`tiny`) into the
    models folder, if they are not there yet."""
    built = {entry.kind for entry in entries if entry is not None and entry.source is Source.BUILT}
    if built & {"vqgan", "clip"}:
        ensure_tiny(models_dir())
    if "depth" in built:
        ensure_tiny_depth(models_dir())


def ensure_tiny(directory: Path) -> TinyFiles:
    """The tiny models' files in `directory`, written there first if they are not yet."""
    files = tiny_files(directory)
    if not (files.vqgan_ckpt.is_file() and files.vqgan_config.is_file()):
        log.info("writing the tiny VQGAN to %s", files.vqgan_ckpt)
        save_vqgan(random_vqgan(TINY_VQGAN, VQGAN_SEED), files.vqgan_ckpt, files.vqgan_config)
    if not files.clip.is_file():
        log.info("writing the tiny CLIP to %s", files.clip)
        save_clip_torchscript(random_clip(TINY_CLIP, CLIP_SEED), files.clip)
    return files


def ensure_tiny_depth(directory: Path) -> Path:
    """The tiny depth model's file in `directory`, written there first if it is not yet."""
    path = tiny_depth_file(directory)
    if not path.is_file():
        log.info("writing the tiny depth model to %s", path)
        save_depth(tiny_depth(), path)
    return path


# Drawn from its seed, the tiny depth model's last layer is below 0 almost everywhere, so its
# ReLU said nothing was seen but in a few pixels; this bias puts all of a picture in view, with
# a depth that varies across it (by about a fifth), as the 3D camera's tests need.
TINY_DEPTH_BIAS = 0.2


def tiny_depth() -> DepthModel:
    """The tiny depth model, from its seed."""
    model = random_depth(TINY_DEPTH, DEPTH_SEED)
    model.depth_head.scratch.output_conv2[2].bias.fill_(TINY_DEPTH_BIAS)
    return model
