"""The shapes world: seeded scenes of one drawn shape on a plain background, and their captions.

A scene is a background (black or grey) with one circle, square or triangle of a palette
colour, small or large, in the centre, on the left or right, or at the top or bottom of a
9:16 canvas, give or take a little jitter. Scenes are drawn with signed distance functions,
anti-aliased over one pixel, in batches on the CPU; the palette's sRGB values are exact away
from the edges. Captions say some of what a scene is in plain words: "a large red circle on a
black background", "a small blue square at the top", "a green triangle", "red".
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

PALETTE: dict[str, str] = {
    "red": "#E02020",
    "orange": "#F08020",
    "yellow": "#E8D820",
    "green": "#20C040",
    "blue": "#2050E0",
    "purple": "#9030D0",
    "white": "#F0F0F0",
}
# The grey is darker than the 0.5 grey the engine letterboxes whole-frame views with, so
# CLIP can still see where a grey canvas ends.
BACKGROUNDS: dict[str, str] = {"black": "#000000", "grey": "#606060"}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
POSITIONS = ("centre", "left", "right", "top", "bottom")

# Where each position puts the shape's centre, as fractions of the canvas width and height.
_PLACES = {
    "centre": (0.5, 0.5),
    "left": (0.28, 0.5),
    "right": (0.72, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
}
# A shape's radius as a fraction of the canvas width; a square and a triangle of radius r
# cover the same area as the circle of radius r, so size means the same for every shape.
_RADII = {"small": 0.18, "large": 0.36}
_SQUARE_HALF_SIDE = math.sqrt(math.pi) / 2
_TRIANGLE_HALF_SIDE = math.sqrt(math.pi / math.sqrt(3))
_PHRASES = {
    "centre": "in the centre",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}


def rgb(hex_colour: str) -> tuple[float, float, float]:
    """#RRGGBB as three floats in [0, 1]."""
    return tuple(int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass(frozen=True)
class Scene:
    """One picture of the world: what it shows, and exactly where (the jitter already drawn)."""

    background: str
    shape: str
    colour: str
    size: str
    position: str
    x: float  # the shape's centre, as fractions of the canvas width and height
    y: float
    radius: float  # as a fraction of the canvas width
    angle: float  # degrees, counter-clockwise; squares and triangles are turned a little


def random_scene(rng: random.Random) -> Scene:
    """A scene with every attribute drawn uniformly and a little jitter in place and size."""
    shape = rng.choice(SHAPES)
    size = rng.choice(SIZES)
    position = rng.choice(POSITIONS)
    x, y = _PLACES[position]
    # Jitter in fractions of the width for both axes, so it is the same distance either way.
    jitter_x, jitter_y = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
    return Scene(
        background=rng.choice(tuple(BACKGROUNDS)),
        shape=shape,
        colour=rng.choice(tuple(PALETTE)),
        size=size,
        position=position,
        x=x + jitter_x,
        y=y + jitter_y * 9 / 16,
        radius=_RADII[size] * rng.uniform(0.9, 1.1),
        angle=0.0 if shape == "circle" else rng.uniform(-15, 15),
    )


@dataclass(frozen=True)
class Description:
    """Some of a scene's attributes, in words; None means the caption does not say."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    background: str | None = None

    @property
    def text(self) -> str:
        if self.colour and not (self.shape or self.size or self.position or self.background):
            return self.colour
        words = ["a", self.size, self.colour, self.shape or "shape"]
        if self.position:
            words.append(_PHRASES[self.position])
        if self.background:
            words.append(f"on a {self.background} background")
        return " ".join(word for word in words if word)

    def describes(self, scene: Scene, mirrored: bool = False) -> bool:
        """Whether every attribute this says is true of the scene. With `mirrored`, left and
        right count as the same place, as they are for a view that may be flipped."""
        position = scene.position
        if mirrored and position in ("left", "right") and self.position in ("left", "right"):
            position = self.position
        said = (self.colour, self.shape, self.size, self.position, self.background)
        true = (scene.colour, scene.shape, scene.size, position, scene.background)
        return all(s is None or s == t for s, t in zip(said, true, strict=True))


# How often a caption mentions each attribute; colour and shape are what prompts mostly say.
_MENTION = {"colour": 0.8, "shape": 0.8, "size": 0.5, "position": 0.4, "background": 0.4}


def random_description(scene: Scene, rng: random.Random) -> Description:
    """A caption of the scene that says a random, non-empty part of what it shows."""
    while True:
        said = {key: getattr(scene, key) for key, p in _MENTION.items() if rng.random() < p}
        if said:
            return Description(**said)


def attribute_descriptions() -> list[list[Description]]:
    """For each attribute, a one-attribute text per value: ["red", "orange", ...], ["a circle",
    ...], ["a small shape", "a large shape"], ["a shape in the centre", ...], ...; the sets
    CLIP's zero-shot classifiers for the world's attributes are made of."""
    values = {
        "colour": tuple(PALETTE),
        "shape": SHAPES,
        "size": SIZES,
        "position": POSITIONS,
        "background": tuple(BACKGROUNDS),
    }
    return [[Description(**{key: value}) for value in options] for key, options in values.items()]


def vocabulary() -> list[str]:
    """Every word a caption can use, for telling the tokenizer's known tokens apart."""
    words = ["a", "shape", "on", "background", *PALETTE, *SHAPES, *SIZES, *BACKGROUNDS]
    words += [word for phrase in _PHRASES.values() for word in phrase.split()]
    return sorted(set(words))


def _circle(px: torch.Tensor, py: torch.Tensor, radius: float) -> torch.Tensor:
    return torch.hypot(px, py) - radius


def _square(px: torch.Tensor, py: torch.Tensor, radius: float) -> torch.Tensor:
    half = radius * _SQUARE_HALF_SIDE
    qx, qy = px.abs() - half, py.abs() - half
    return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _triangle(px: torch.Tensor, py: torch.Tensor, radius: float) -> torch.Tensor:
    """An equilateral triangle pointing up, centred on its centroid (after Inigo Quilez)."""
    side = radius * _TRIANGLE_HALF_SIDE
    k = math.sqrt(3)
    tx, ty = px.abs() - side, py + side / k
    fold = tx + k * ty > 0
    tx, ty = torch.where(fold, (tx - k * ty) / 2, tx), torch.where(fold, (-k * tx - ty) / 2, ty)
    tx = tx - tx.clamp(-2 * side, 0)
    return -torch.hypot(tx, ty) * torch.sign(ty)


_DISTANCES = {"circle": _circle, "square": _square, "triangle": _triangle}


# How far a shape reaches from its centre, in radii: the triangle's corners are furthest.
_REACH = 2 * _TRIANGLE_HALF_SIDE / math.sqrt(3)


def coverage(scenes: Sequence[Scene], width: int, height: int) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1]: how much of each pixel each scene's shape covers.

    Each shape's signed distance (negative inside) is computed only in the box around it.
    """
    alpha = torch.zeros(len(scenes), 1, height, width)
    for index, scene in enumerate(scenes):
        x, y, radius = scene.x * width, scene.y * height, scene.radius * width
        reach = radius * _REACH + 2
        left, right = max(0, math.floor(x - reach)), min(width, math.ceil(x + reach))
        top, bottom = max(0, math.floor(y - reach)), min(height, math.ceil(y + reach))
        if left >= right or top >= bottom:
            continue
        dx = torch.arange(left, right, dtype=torch.float32).view(1, -1) + 0.5 - x
        up = y - (torch.arange(top, bottom, dtype=torch.float32).view(-1, 1) + 0.5)  # y up
        angle = math.radians(scene.angle)
        cos, sin = math.cos(angle), math.sin(angle)
        px, py = cos * dx + sin * up, -sin * dx + cos * up  # into the shape's own frame
        distance = _DISTANCES[scene.shape](px, py, radius)
        alpha[index, 0, top:bottom, left:right] = (0.5 - distance).clamp(0, 1)
    return alpha


def draw(scenes: Sequence[Scene], width: int, height: int) -> torch.Tensor:
    """The scenes as (N, 3, H, W) float images in [0, 1]."""
    return paint(scenes, coverage(scenes, width, height))


def paint(scenes: Sequence[Scene], alpha: torch.Tensor) -> torch.Tensor:
    """The scenes drawn from their shapes' `coverage` (for callers that need it too)."""
    colours = torch.tensor([rgb(PALETTE[s.colour]) for s in scenes]).view(-1, 3, 1, 1)
    backgrounds = torch.tensor([rgb(BACKGROUNDS[s.background]) for s in scenes]).view(-1, 3, 1, 1)
    return backgrounds + alpha * (colours - backgrounds)
