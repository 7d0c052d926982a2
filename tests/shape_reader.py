"""Reads a frame of the shapes world from its pixels alone, independently of CLIP: the colour
of its shape (the hue of its saturated pixels), how much of the frame it covers, where it is,
and its form (which of a circle, square or triangle of its area, turned, covers it best)."""

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
# Edge slivers narrower than 2 * OPENING + 1 pixels are not part of a shape's form.
OPENING = 2


@dataclass(frozen=True)
class Reading:
    shares: dict[str, float]  # each colour's share of the shape pixels ("white" included)
    area: float  # the shape's share of the frame: the largest region of the main colour
    centre: tuple[float, float]  # its centroid, as fractions of the width and height
    fits: dict[str, float]  # how well a circle, square and triangle of its area fit it (IoU)

    @property
    def colour(self) -> str | None:
        """The colour most of the shape's pixels have, or None when nothing stands out."""
        return main_colour(self.shares)

    @property
    def form(self) -> str | None:
        """circle, square or triangle, whichever fits best; None for no shape."""
        if self.area < 0.002 or not self.fits:
            return None
        return max(self.fits, key=self.fits.get)


def main_colour(shares: dict[str, float]) -> str | None:
    return max(shares, key=shares.get) if shares else None


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


def colour_shares(names: np.ndarray) -> dict[str, float]:
    """Each colour's share of the pixels that are not background, from `colour_names`."""
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


def opened(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological opening with a (2r+1)-square: removes the slivers and specks narrower
    than that along a region's edge (a decoder's edge artefacts) and keeps its body."""
    offsets = range(-radius, radius + 1)

    def shifted(image: np.ndarray, dy: int, dx: int, fill: bool) -> np.ndarray:
        padded = np.pad(image, radius, constant_values=fill)
        height, width = image.shape
        return padded[radius + dy : radius + dy + height, radius + dx : radius + dx + width]

    shifts = [(dy, dx) for dy in offsets for dx in offsets]
    eroded = np.logical_and.reduce([shifted(mask, dy, dx, True) for dy, dx in shifts])
    return np.logical_or.reduce([shifted(eroded, dy, dx, False) for dy, dx in shifts])


def template_fits(region: np.ndarray) -> dict[str, float]:
    """The best intersection-over-union of the region with a circle, a square and an
    equilateral triangle of the same area on the same centroid, each turned every 3°."""
    ys, xs = np.nonzero(region)
    area = len(xs)
    height, width = region.shape
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    px, py = grid_x - xs.mean(), grid_y - ys.mean()
    radius = math.sqrt(area / math.pi)
    half_side = math.sqrt(area) / 2
    inradius = math.sqrt(area / (3 * math.sqrt(3)))  # of the triangle with that area

    def iou(template: np.ndarray) -> float:
        both = np.logical_and(template, region).sum()
        return float(both / np.logical_or(template, region).sum())

    fits = {"circle": iou(np.hypot(px, py) <= radius)}
    squares = []
    for degrees in range(0, 90, 3):
        a = math.radians(degrees)
        u, v = px * math.cos(a) + py * math.sin(a), -px * math.sin(a) + py * math.cos(a)
        squares.append(iou((np.abs(u) <= half_side) & (np.abs(v) <= half_side)))
    fits["square"] = max(squares)
    triangles = []
    for degrees in range(0, 120, 3):
        # Inside: within the inradius of the centroid along each of the three edge normals.
        normals = [math.radians(degrees + 120 * k) for k in range(3)]
        inside = np.logical_and.reduce(
            [px * math.cos(n) + py * math.sin(n) <= inradius for n in normals]
        )
        triangles.append(iou(inside))
    fits["triangle"] = max(triangles)
    return fits


def read_frame(pixels: np.ndarray) -> Reading:
    """What an (H, W, 3) uint8 frame shows, from its pixels: the colours of everything that
    is not background, and the position and form of the largest region of the main colour."""
    height, width, _ = pixels.shape
    names = colour_names(pixels)
    shares = colour_shares(names)
    main = main_colour(shares)
    if main is None:
        return Reading(shares, 0.0, (0.5, 0.5), {})
    region = largest_blob(opened(names == main, OPENING))
    if not region.any():
        region = largest_blob(names == main)
    ys, xs = np.nonzero(region)
    centre = (float(xs.mean() + 0.5) / width, float(ys.mean() + 0.5) / height)
    return Reading(shares, len(xs) / (height * width), centre, template_fits(region))
