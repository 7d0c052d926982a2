"""Loading the models a render uses, by entry name or file path, or as random weights."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.models.architectures import OPENAI, CLIPVariant
from pipeline.models.catalogue import (
    TINY,
    CLIPEntry,
    DepthEntry,
    Entry,
    Source,
    VQGANEntry,
    find_entry,
    unknown_name_error,
)
from pipeline.models.files import resolve_clip, resolve_depth, resolve_vqgan
from pipeline.record import RANDOM_WEIGHTS

if TYPE_CHECKING:
    import torch

    from pipeline.models.clip import CLIPModel
    from pipeline.models.depth import DepthModel
    from pipeline.models.vqgan import VQGAN

log = logging.getLogger(__name__)

RANDOM_SEED = 0  # the random weights `--random-weights` builds


def _random_vqgan(name: str) -> VQGAN:
    from pipeline.models.vqgan import random_vqgan

    entry = find_entry("vqgan", name)
    if not isinstance(entry, VQGANEntry):
        raise unknown_name_error(name, "vqgan")
    return random_vqgan(entry.architecture, RANDOM_SEED)


def _random_clip(name: str) -> CLIPModel:
    from pipeline.models.clip import random_clip

    entry = find_entry("clip", name)
    if not isinstance(entry, CLIPEntry):
        raise unknown_name_error(name, "clip")
    config = entry.architecture
    if isinstance(config, str):
        import open_clip

        config = open_clip.get_model_config(config)
    return random_clip(config, RANDOM_SEED, entry.variant)


def _downloaded(entry: Entry | None) -> bool:
    return entry is not None and entry.source is Source.DOWNLOAD


def _warn_random(random_weights: bool, names: Sequence[str]) -> None:
    if random_weights or TINY in names:
        log.warning(
            "%s: these models have random weights and make abstract noise, not art",
            "--random-weights" if random_weights else "tiny",
        )


def load_models(
    vqgan: str,
    clip: str,
    device: str | torch.device = "cpu",
    random_weights: bool = False,
    vqgan_config: str | os.PathLike[str] | None = None,
) -> tuple[VQGAN, CLIPModel]:
    """The VQGAN and CLIP a render uses, on `device`, in eval mode with gradients off.

    Names are registry names or file paths (see resolve_vqgan / resolve_clip).
    With `random_weights`, the named registry models' full-size architectures are built with
    random weights from a fixed seed, and no file is read. Each model's `checksums` maps the
    files it was loaded from to their SHA-256 (empty for random weights), for the render's record.
    """
    vqgan_model, ((clip_model, _),) = load_all(
        vqgan, ((clip, 1.0),), device, random_weights, vqgan_config
    )
    return vqgan_model, clip_model


def load_all(
    vqgan: str,
    clips: Sequence[tuple[str, float]],
    device: str | torch.device = "cpu",
    random_weights: bool = False,
    vqgan_config: str | os.PathLike[str] | None = None,
) -> tuple[VQGAN, list[tuple[CLIPModel, float]]]:
    """The VQGAN and each (CLIP, weight) a render uses, as `load_models` loads them; every
    file is found before any is read, and a CLIP named twice is loaded once."""
    names = list(dict.fromkeys(name for name, _ in clips))
    _warn_random(random_weights, [vqgan, *names])
    if random_weights:
        vqgan_model = _random_vqgan(vqgan)
        loaded = {name: _random_clip(name) for name in names}
    else:
        from pipeline.models.clip import load_clip
        from pipeline.models.tiny import ensure_built
        from pipeline.models.vqgan import load_vqgan

        ensure_built(find_entry("vqgan", vqgan), *(find_entry("clip", name) for name in names))
        ckpt, config, vqgan_sha = resolve_vqgan(vqgan, vqgan_config)
        found = {name: resolve_clip(name) for name in names}
        # Downloaded models' names go into error messages as `feverdream models download NAME`.
        vqgan_model = load_vqgan(
            ckpt, config, vqgan_sha, vqgan if _downloaded(find_entry("vqgan", vqgan)) else ""
        )
        loaded = {}
        for name, (path, sha256) in found.items():
            entry = find_entry("clip", name)
            shown = name if _downloaded(entry) else ""
            loaded[name] = load_clip(path, sha256, shown, _variant(entry))
    entry = find_entry("vqgan", vqgan)
    if isinstance(entry, VQGANEntry):
        vqgan_model.camera_hold = entry.camera_hold
    models = {name: model.to(device) for name, model in loaded.items()}
    return vqgan_model.to(device), [(models[name], weight) for name, weight in clips]


def _variant(entry: Entry | None) -> CLIPVariant:
    """How a CLIP is run: as its entry says, else as OpenAI's (a file given by path)."""
    return entry.variant if isinstance(entry, CLIPEntry) else OPENAI


def load_clip_model(name: str, device: str | torch.device = "cpu") -> CLIPModel:
    """One CLIP, by registry name or file path, as `load_models` loads it."""
    from pipeline.models.clip import load_clip
    from pipeline.models.tiny import ensure_built

    entry = find_entry("clip", name)
    ensure_built(entry)
    path, sha256 = resolve_clip(name)
    shown = name if _downloaded(entry) else ""
    return load_clip(path, sha256, shown, _variant(entry)).to(device)


def load_depth_model(
    name: str, device: str | torch.device = "cpu", random_weights: bool = False
) -> DepthModel:
    """The depth model the 3D camera reads a picture's depth with, by registry name or file
    path, on `device`, in eval mode with gradients off; `model(pictures)` takes (N, 3, H, W)
    in [0, 1] and gives (N, 1, H, W) relative inverse depth (pipeline.models.depth).

    A downloaded model that is not here yet is not fetched (a render fetches what it names
    first, `download.ensure_downloaded`): this says how to get it. With `random_weights`, the
    named registry model's full-size architecture is built with random weights from a fixed
    seed, and no file is read. `checksums` maps the file it was loaded from to its SHA-256
    (empty for random weights), for the render's record.
    """
    from pipeline.models.depth import load_depth, random_depth
    from pipeline.models.tiny import ensure_built

    entry = find_entry("depth", name)
    if random_weights or (entry is not None and entry.source is Source.BUILT):
        log.warning(
            "%s: this depth model has random weights: its depth means nothing",
            "--random-weights" if random_weights else name,
        )
    if random_weights:
        if not isinstance(entry, DepthEntry):
            raise unknown_name_error(name, "depth")
        model = random_depth(entry.architecture, RANDOM_SEED)
    else:
        ensure_built(entry)
        path, sha256 = resolve_depth(name)
        architecture = entry.architecture if isinstance(entry, DepthEntry) else None
        model = load_depth(path, sha256, name if _downloaded(entry) else "", architecture)
    return model.to(device)


def digest(model: VQGAN | CLIPModel | DepthModel) -> str:
    """What a loaded model was made from, for a render's records: the SHA-256 of its files,
    or "random weights" when no file was read."""
    if not model.checksums:
        return RANDOM_WEIGHTS
    return ", ".join(sorted(set(model.checksums.values())))
