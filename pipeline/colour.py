"""Colour: CIE Lab, and matching a picture's colours to a reference's (colour coherence).
The engine and `score` use the same conversion."""

from __future__ import annotations

import torch


def match_colours(image: torch.Tensor, reference: torch.Tensor, space: str) -> torch.Tensor:
    """`image` with each channel's distribution made the reference's (histogram matching, as
    Deforum's colour coherence does), in Lab or RGB; both (1, 3, H, W) in [0, 1]."""
    source, target = image, reference
    if space == "lab":
        source, target = rgb_to_lab(image), rgb_to_lab(reference)
    flat, wanted = source.flatten(2), target.flatten(2)
    ranks = flat.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    quantiles = ranks.to(torch.float64) * (wanted.shape[-1] - 1) / max(flat.shape[-1] - 1, 1)
    matched = wanted.sort(dim=-1, stable=True).values.gather(-1, quantiles.round().long())
    matched = matched.reshape(source.shape)
    return (lab_to_rgb(matched) if space == "lab" else matched).clamp(0, 1)


_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)  # fmt: skip
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_DELTA = 6 / 29


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N, 3, H, W) → CIE Lab (D65), same layout."""
    linear = torch.where(image <= 0.04045, image / 12.92, ((image + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(image), linear)
    xyz = xyz / _WHITE.to(image)[None, :, None, None]
    f = torch.where(
        xyz > _DELTA**3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29
    )
    return torch.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1
    )


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) (N, 3, H, W) → sRGB in [0, 1] (out-of-gamut colours clipped)."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29))
    xyz = xyz * _WHITE.to(lab)[None, :, None, None]
    linear = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab), xyz).clamp(0, 1)
    return torch.where(
        linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp(min=1e-12) ** (1 / 2.4) - 0.055
    )
