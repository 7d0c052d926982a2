"""Reads a frame of the shapes world from its pixels alone, independently of CLIP: the colour
of its shape (the hue of its saturated pixels), how much of the frame it covers, where it is,
and its form (circularity and how well a turned box fits it)."""

from __future__ import annotations

import colorsys
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

# The palette's exact sRGB values (the world's, written out again here so that the test's
# idea of "red" does not come from the code under test).
PALETTE = {
    "red": (0xE0, 0x20, 0x20),
    "orange": (0xF0, 0x80, 0x20),
    "yellow": (0xE8, 0xD8, 0x20),
    "green": (0x20, 0xC0, 0x40),
    "blue": (0x20, 0x50, 0xE0),
    "purple": (0x90, 0x30, 0xD0),
}
HUES = {
    name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360 for name, rgb in PALETTE.items()
}
# A pixel belongs to a shape if it is clearly coloured, or nearly white; the backgrounds are
# black and a dark grey, neither saturated nor bright.
SATURATED, BRIGHT, WHITE = 0.4, 0.3, 0.75


@dataclass(frozen=True)
class Reading:
    shares: dict[str, float]  # each colour's share of the shape pixels ("white" included)
    area: float  # the largest shape's share of the frame
    centre: tuple[float, float]  # its centroid, as fractions of the width and height
    circularity: float  # 4π·area/perimeter²: 1 for a disc, about 0.8 for a square
    box_fill: float  # its area over that of the tightest turned rectangle: disc π/4, square 1

    @property
    def colour(self) -> str | None:
        """The colour most of the shape's pixels have, or None when nothing stands out."""
        if not self.shares:
            return None
        return max(self.shares, key=self.shares.get)

    @property
    def form(self) -> str | None:
        """circle, square or triangle, whichever the measures are nearest; None for no shape."""
        if self.area < 0.002:
            return None
        prototypes = {"circle": (1.0, math.pi / 4), "square": (0.87, 1.0), "triangle": (0.65, 0.5)}
        return min(
            prototypes,
            key=lambda name: (
                (self.circularity - prototypes[name][0]) ** 2
                + (self.box_fill - prototypes[name][1]) ** 2
            ),
        )


def hsv(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value of an (H, W, 3) uint8 image."""
    rgb = pixels.astype(np.float64) / 255
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    spread = high - low
    safe = np.where(spread > 0, spread, 1)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(
        high == r, (g - b) / safe % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    saturation = np.where(high > 0, spread / np.where(high > 0, high, 1), 0)
    return hue * 60 % 360, saturation, high


def colour_names(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's colour name: a palette colour, "white", or "" for background."""
    hue, saturation, value = hsv(pixels)
    names = np.full(hue.shape, "", dtype=object)
    coloured = (saturation >= SATURATED) & (value >= BRIGHT)
    table = np.array(list(HUES.values()))
    gap = np.abs((hue[..., None] - table + 180) % 360 - 180)
    nearest = np.array(list(HUES), dtype=object)[gap.argmin(axis=-1)]
    names[coloured] = nearest[coloured]
    names[(value >= WHITE) & (saturation < SATURATED)] = "white"
    return names


def colour_shares(pixels: np.ndarray) -> dict[str, float]:
    names = colour_names(pixels)
    shape = names[names != ""]
    if shape.size == 0:
        return {}
    found, counts = np.unique(shape.astype(str), return_counts=True)
    return {str(name): count / shape.size for name, count in zip(found, counts, strict=True)}


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    height, width = mask.shape
    best, best_size, label = 0, 0, 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        label += 1
        labels[start] = label
        size, queue = 0, deque([start])
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else np.zeros_like(mask)


def perimeter(mask: np.ndarray) -> float:
    """The boundary's length by Crofton's formula: crossings counted in four directions."""
    padded = np.pad(mask, 1).astype(np.int8)
    straight = np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum()
    diagonal = (
        np.abs(padded[1:, 1:] - padded[:-1, :-1]).sum()
        + np.abs(padded[1:, :-1] - padded[:-1, 1:]).sum()
    )
    return math.pi / 8 * (straight + diagonal / math.sqrt(2))


def box_fill(mask: np.ndarray) -> float:
    """Area over the smallest area of a rectangle around the region, turned in 3° steps."""
    ys, xs = np.nonzero(mask)
    points = np.stack([xs - xs.mean(), ys - ys.mean()])
    smallest = math.inf
    for degrees in range(0, 90, 3):
        angle = math.radians(degrees)
        turned = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        u, v = turned @ points
        smallest = min(smallest, (np.ptp(u) + 1) * (np.ptp(v) + 1))
    return len(xs) / smallest


def read_frame(pixels: np.ndarray) -> Reading:
    """What an (H, W, 3) uint8 frame shows, from its pixels."""
    height, width, _ = pixels.shape
    shares = colour_shares(pixels)
    blob = largest_blob(colour_names(pixels) != "")
    area = float(blob.sum())
    if area == 0:
        return Reading(shares, 0.0, (0.5, 0.5), 0.0, 0.0)
    ys, xs = np.nonzero(blob)
    centre = (float(xs.mean() + 0.5) / width, float(ys.mean() + 0.5) / height)
    circularity = 4 * math.pi * area / perimeter(blob) ** 2
    return Reading(shares, area / (height * width), centre, circularity, box_fill(blob))
