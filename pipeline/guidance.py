"""CLIP's guidance: the cutouts a frame is seen through, and the prompts' weighted spherical
distance from what each CLIP sees in them (the loss the engine descends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


def make_cutouts(
    image: torch.Tensor, cuts: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """`cuts` views of the image at CLIP's input size, in one batch.

    A quarter of them show the whole frame (letterboxed, so CLIP sees the full height of a
    9:16 canvas); the rest are square crops from anywhere in the frame, 35-100% of its
    width. Half are flipped and each gets a little noise, so the image can't please CLIP
    with one pixel-exact pattern.
    """
    _, channels, height, width = image.shape
    n_whole = max(1, cuts // 4)
    n_crops = cuts - n_whole

    whole_width = max(1, round(size * width / height))
    whole = F.interpolate(
        image, size=(size, whole_width), mode="bilinear", antialias=True, align_corners=False
    )
    left = (size - whole_width) // 2
    whole = F.pad(whole, (left, size - whole_width - left, 0, 0), value=0.5)
    views = [whole.expand(n_whole, -1, -1, -1)]

    if n_crops:
        rand = torch.rand(n_crops, 3, generator=generator, device=image.device)
        side = min(width, height) * (0.35 + 0.65 * rand[:, 0])
        scale_x, scale_y = side / width, side / height
        centre_x = (rand[:, 1] * 2 - 1) * (1 - scale_x)
        centre_y = (rand[:, 2] * 2 - 1) * (1 - scale_y)
        zeros = torch.zeros_like(scale_x)
        theta = torch.stack(
            [
                torch.stack([scale_x, zeros, centre_x], dim=1),
                torch.stack([zeros, scale_y, centre_y], dim=1),
            ],
            dim=1,
        ).to(image.dtype)
        grids = F.affine_grid(theta, [n_crops, channels, size, size], align_corners=False)
        # One sampling call for all crops: stack their grids vertically.
        stacked = grids.reshape(1, n_crops * size, size, 2)
        crops = F.grid_sample(
            image, stacked, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        views.append(crops.reshape(channels, n_crops, size, size).transpose(0, 1))

    batch = torch.cat(views)
    # All random numbers are drawn on the image's device: no copies between host and GPU.
    flip = torch.rand(cuts, generator=generator, device=image.device) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    noise_scale = torch.rand(cuts, 1, 1, 1, generator=generator, device=image.device) * 0.1
    noise = torch.randn(batch.shape, generator=generator, device=image.device)
    return (batch + noise * noise_scale).clamp(0, 1)


def spherical_distance(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors: (N, D) x (P, D) → (N, P)."""
    chord = (images[:, None, :] - texts[None, :, :]).norm(dim=-1)
    return (chord / 2).clamp(max=1).arcsin().pow(2).mul(2)


@torch.no_grad()
def picture_embedding(clip: Any, picture: torch.Tensor, cuts: int, seed: int) -> torch.Tensor:
    """What a CLIP sees in a picture fitted to the canvas: cut out as the frames are (with
    the render's seed), each cutout's embedding averaged, as a unit vector."""
    generator = torch.Generator(device=picture.device).manual_seed(seed)
    views = make_cutouts(picture, cuts, clip.input_resolution, generator)
    vectors = F.normalize(clip.encode_image(views).float(), dim=-1)
    return F.normalize(vectors.mean(dim=0), dim=-1)


@dataclass
class Guide:
    """One CLIP the loss listens to: its weight in the sum, and the prompts' embeddings in
    its space (shared by guides that are the same model)."""

    model: Any
    weight: float = 1.0
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)


def guides(clip: Any) -> tuple[Guide, ...]:
    """A CLIP model, or a sequence of (CLIP model, weight), as guides; a model listed twice
    computes each embedding once."""
    pairs = [(clip, 1.0)] if hasattr(clip, "encode_image") else list(clip)
    if not pairs:
        raise ValueError("the engine needs at least one CLIP")
    shared: dict[int, dict[str, torch.Tensor]] = {}
    return tuple(
        Guide(model, float(weight), shared.setdefault(id(model), {})) for model, weight in pairs
    )


def guide_loss(
    guide: Guide, views: torch.Tensor, aims: torch.Tensor, weights: torch.Tensor, cuts: int
) -> torch.Tensor:
    """One CLIP's share of the loss from `views`, some of its `cuts` cutouts: the prompts'
    weighted spherical distance, summed over these views and divided by all of them."""
    distances = spherical_distance(guide.model.encode_image(views), aims)
    mean = distances.mean(dim=0) if len(views) == cuts else distances.sum(dim=0) / cuts
    loss = (mean * weights).sum()
    return loss * guide.weight if guide.weight != 1 else loss


def clip_loss(
    guides: Sequence[Guide],
    cutouts: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    weights: torch.Tensor,
) -> torch.Tensor:
    """The prompts' weighted spherical distance from what each CLIP sees in its cutouts,
    averaged over the cutouts (negative weights push away), summed over the CLIPs by their
    weights."""
    total = None
    for guide, views, aims in zip(guides, cutouts, targets, strict=True):
        loss = guide_loss(guide, views, aims, weights, len(views))
        total = loss if total is None else total + loss
    assert total is not None
    return total


def batched_backward(
    guides: Sequence[Guide],
    views: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    weights: torch.Tensor,
    batch: int,
) -> float:
    """`clip_loss(...).backward()` with the cutouts `views` through CLIP `batch` at a time,
    each batch's backward before the next batch's forward, so CLIP keeps one batch's
    activations rather than all of them; the same gradient (up to the order of a float sum).
    The loss."""
    leaves = [view.detach().requires_grad_(True) for view in views]
    total = 0.0
    for guide, leaf, aims in zip(guides, leaves, targets, strict=True):
        for start in range(0, len(leaf), batch):
            part = guide_loss(guide, leaf[start : start + batch], aims, weights, len(leaf))
            part.backward()
            total += part.item()
    torch.autograd.backward(views, [leaf.grad for leaf in leaves])
    return total
