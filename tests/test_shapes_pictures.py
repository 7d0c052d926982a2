"""Pictures steer the engine, read by pixels with the `shapes` models (tests/shape_reader.py
knows nothing of CLIP): a shot that starts from a drawn picture keeps it, init_strength keeps
a frame near it against a prompt that pulls away, and an image prompt pulls its colour in
(or, weighted below 0, pushes it away).

Measured on the reference build (classic loop, 3 frames, 24 first steps, 8 cutouts):
- a red circle drawn at (0.35, 0.3) as the init image, prompted toward a red circle: red,
  its centre read 0.04 from where it was drawn (the check allows 0.1);
- prompted toward "a large blue square" instead, the first frame's mean absolute difference
  from the picture was 68 (of 255) without init_strength and 34 with init_strength 1 (the
  check asks for less than 0.8 of it);
- an image prompt of a drawn blue square, seeds 0-2: blue was the main colour each time
  (0.28-0.37 of the shape's pixels; "a large square" in words gave red, blue 0.12-0.24);
- "a large circle", seeds 0-2: red 0.80 in all; with the red circle as an image prompt at
  -1, 0.37 (the text prompt's negative "red" gives 0.80 against 0.48 over the same seeds).
"""

from __future__ import annotations

import numpy as np
import pytest
import shapes_checks as checks
from PIL import Image, ImageDraw

from pipeline.pictures import fit_picture
from pipeline.settings import CLASSIC

CIRCLE_AT = (0.35, 0.3)


def draw(path, shape: str, colour, centre=(0.5, 0.5), size=(288, 512)):
    picture = Image.new("RGB", size, "black")
    cx, cy, r = centre[0] * size[0], centre[1] * size[1], 0.25 * size[0]
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(picture)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    picture.save(path)
    return path


def board(seed: int, prompt: str, top: str = "") -> str:
    keyframes = f"- at: 0s\n  prompt: {prompt}\n"
    return checks.storyboard(seed, "3f", keyframes).replace("keyframes:\n", top + "keyframes:\n")


@pytest.fixture
def red_circle(tmp_path):
    return draw(tmp_path / "red.png", "circle", (220, 30, 30), CIRCLE_AT)


def test_a_shot_that_starts_from_a_picture_keeps_its_place_and_colour(
    shapes_models, tmp_path, red_circle
):
    text = board(0, '"a large red circle on a black background"', f"init_image: {red_circle}\n")
    first = checks.render(shapes_models, tmp_path / "init", text, CLASSIC)[0]
    assert first.colour == "red", first
    assert np.hypot(first.centre[0] - CIRCLE_AT[0], first.centre[1] - CIRCLE_AT[1]) < 0.1, first


def test_init_strength_keeps_the_frame_near_its_picture(shapes_models, tmp_path, red_circle):
    picture = fit_picture(red_circle, 144, 256, "cpu")[0].permute(1, 2, 0).numpy() * 255
    distances = []
    for strength in ("", "init_strength: 1\n"):
        top = f"init_image: {red_circle}\n{strength}"
        frames = checks.render(
            shapes_models,
            tmp_path / f"s{len(strength)}",
            board(0, '"a large blue square"', top),
            CLASSIC,
            read=lambda pixels: pixels.astype(float),
        )
        distances.append(float(np.abs(frames[0] - picture).mean()))
    free, kept = distances
    assert kept < free * 0.8, distances


def test_an_image_prompt_pulls_its_colour_in(shapes_models, tmp_path):
    square = draw(tmp_path / "blue.png", "square", (30, 60, 220))
    readings = [
        checks.render(shapes_models, tmp_path / f"s{seed}", board(seed, f'"image: {square}"'),
                      CLASSIC)[-1]
        for seed in range(3)
    ]  # fmt: skip
    assert sum(reading.colour == "blue" for reading in readings) >= 2, readings


def test_a_negative_image_prompt_pushes_its_colour_away(shapes_models, tmp_path, red_circle):
    # As the negative text prompt "red" does (tests/test_shapes_engine.py), with a picture.
    red = []
    for prompt in ('"a large circle"', f'{{"a large circle": 1, "image: {red_circle}": -1}}'):
        red.append(
            sum(
                checks.render(
                    shapes_models, tmp_path / f"{len(red)}-{seed}", board(seed, prompt), CLASSIC
                )[-1].shares.get("red", 0.0)
                for seed in range(3)
            )  # fmt: skip
        )
    without, with_negative = red
    assert with_negative < without, red
