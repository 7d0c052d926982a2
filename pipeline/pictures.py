"""Pictures in and out: a file fitted to the canvas as an image tensor, and an image tensor
as the pixels a frame's PNG holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps


def fit_picture(path: Path, width: int, height: int, device: torch.device) -> torch.Tensor:
    """A picture as a (1, 3, height, width) image in [0, 1]: the largest centred part with
    the canvas's aspect (a cover crop), resized to the canvas."""
    with Image.open(path) as opened:
        # A phone photo's pixels are stored sideways, with the turn in its EXIF data.
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    scale = max(width / picture.width, height / picture.height)
    crop_w, crop_h = width / scale, height / scale
    left, top = (picture.width - crop_w) / 2, (picture.height - crop_h) / 2
    picture = picture.resize(
        (width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h)
    )
    pixels = torch.from_numpy(np.asarray(picture).copy()).to(device)
    return pixels.permute(2, 0, 1)[None].float().div(255)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) image in [0, 1] as an (H, W, 3) uint8 array."""
    array = image[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()
