"""Reads the camera's move between two frames from their pixels alone, independently of the
engine: the zoom about the centre and the shift that best carry the whole of one picture onto
the next (phase correlation over a range of zooms), not the outline of any one shape.

The pictures are blurred first: a VQGAN decodes on a fixed grid of latent cells (8 px for the
shapes models), and the edges of that grid, which do not move with the picture, would
otherwise pull the correlation towards no move at all.

Conventions are the storyboard's: a zoom above 1 magnifies (moves in), a shift is in pixels
of the frame, x to the right and y downwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

# The zooms tried, per frame pair; a step of 0.25% between them, refined by a parabola.
ZOOMS = np.arange(0.9, 1.2501, 0.0025)
# Blur, in pixels (a Gaussian's sigma): about half a latent cell of the shapes VQGAN.
BLUR = 0
# Correlate the middle of the frames only: what a zoom brings in at the edges is new.
MARGIN = 0.15


@dataclass(frozen=True)
class Move:
    zoom: float
    dx: float
    dy: float
    peak: float  # how sharply the best zoom and shift stand out (phase correlation's peak)


def _grey(pixels: np.ndarray) -> np.ndarray:
    return gaussian_filter(pixels.astype(np.float64).mean(axis=2), BLUR)


def _zoomed(grey: np.ndarray, zoom: float) -> np.ndarray:
    """The picture magnified `zoom` times about its centre, the same size."""
    height, width = grey.shape
    cx, cy = width / 2, height / 2
    image = Image.fromarray(grey.astype(np.float32), mode="F")
    # PIL maps each output pixel (x, y) to the input pixel (a x + b y + c, d x + e y + f).
    inverse = (1 / zoom, 0, cx - cx / zoom, 0, 1 / zoom, cy - cy / zoom)
    return np.asarray(image.transform(image.size, Image.AFFINE, inverse, Image.BILINEAR))


def _middle(grey: np.ndarray) -> np.ndarray:
    height, width = grey.shape
    top, left = int(height * MARGIN), int(width * MARGIN)
    return grey[top : height - top, left : width - left]


def _window(shape: tuple[int, int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def _parabola(before: float, at: float, after: float) -> float:
    """Where a parabola through three equally spaced values peaks, from -0.5 to 0.5."""
    curve = before - 2 * at + after
    return 0.0 if curve >= 0 else float(np.clip(0.5 * (before - after) / curve, -0.5, 0.5))


def _correlate(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, peak): the shift that carries `a` onto `b`, by phase correlation."""
    window = _window(a.shape)
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    cross = fb * np.conj(fa)
    surface = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    y, x = np.unravel_index(int(surface.argmax()), surface.shape)
    rows, cols = surface.shape
    dy = y + _parabola(surface[y - 1, x], surface[y, x], surface[(y + 1) % rows, x])
    dx = x + _parabola(surface[y, x - 1], surface[y, x], surface[y, (x + 1) % cols])
    # Shifts past half the window are the other way round.
    dy = dy - rows if dy > rows / 2 else dy
    dx = dx - cols if dx > cols / 2 else dx
    return float(dx), float(dy), float(surface[y, x])


def read_move(before: np.ndarray, after: np.ndarray) -> Move:
    """The zoom (about the centre) and then shift that best carry `before` onto `after`, two
    (H, W, 3) uint8 frames."""
    a, b = _grey(before), _grey(after)
    target = _middle(b)
    found = [_correlate(_middle(_zoomed(a, zoom)), target) for zoom in ZOOMS]
    peaks = [peak for _, _, peak in found]
    best = int(np.argmax(peaks))
    step = ZOOMS[1] - ZOOMS[0]
    zoom = ZOOMS[best]
    if 0 < best < len(ZOOMS) - 1:
        zoom += step * _parabola(peaks[best - 1], peaks[best], peaks[best + 1])
    dx, dy, peak = found[best]
    return Move(float(zoom), dx, dy, peak)
