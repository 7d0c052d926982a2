"""Pictures in the storyboard (an init image per shot, image prompts): checked like every
other key, FILE:LINE and exit 2 before any model loads, and shown in the plan."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_storyboard_errors import assert_error, validate

from pipeline.cli import main
from pipeline.run import load


@pytest.fixture
def pictures(tmp_path):
    Image.new("RGB", (90, 160), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (160, 90), (30, 60, 200)).save(tmp_path / "blue.jpg")
    (tmp_path / "notes.png").write_text("not a picture at all")
    good = Image.new("RGB", (64, 64), (0, 0, 0))
    good.save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut-short.png").write_bytes(data[: len(data) // 2])
    return tmp_path


BOARD = """\
title: pictures
duration: 4s
init_image: red.png
init_strength: 0.4
style: oil painting
keyframes:
  - at: 0s
    prompt: "a hallway"
  - at: 1s
    prompt:
      "image: blue.jpg": 1
      "a room": -0.5
  - at: 2s
    cut: true
    init_image: blue.jpg
    prompt: "a door"
  - at: 3s
    cut: true
    prompt: "image:   red.png"
"""


def test_each_shot_starts_from_its_picture_and_the_plan_shows_it(pictures, capsys):
    (pictures / "board.yaml").write_text(BOARD)
    assert main(["plan", "--json", str(pictures / "board.yaml")]) == 0
    frames = json.loads(capsys.readouterr().out)
    starts = {
        f["frame"]: (f["init_image"], f["init_strength"]) for f in frames if "init_image" in f
    }
    # Frame 0 and the cut at 3 s start from the storyboard's picture, the cut at 2 s from its own.
    assert starts == {0: ("red.png", 0.4), 48: ("blue.jpg", 0.4), 72: ("red.png", 0.4)}
    # An image prompt blends and weighs like words, and takes no style (that is for words).
    assert frames[24]["prompts"] == {"image: blue.jpg": 1.0, "a room, oil painting": -0.5}
    assert frames[72]["prompts"] == {"image: red.png": 1.0}
    story = load(pictures / "board.yaml")
    assert story.plan.image("image: blue.jpg") == pictures / "blue.jpg"
    assert story.plan.span(40, 80).image("blue.jpg") == pictures / "blue.jpg"


@pytest.mark.parametrize(
    "lines, line, key, words",
    [
        ("init_image: gone.png\n", 2, "init_image", ["gone.png not found", "relative to"]),
        ("init_image: notes.png\n", 2, "init_image", ["is not a picture", "PNG or JPEG"]),
        ("init_image: cut-short.png\n", 2, "init_image", ["is not a picture"]),
        ("init_image: red.png\ninit_strength: 1.5\n", 3, "init_strength", ["out of range"]),
        ("init_strength: 0.5\n", 2, "init_strength", ["no `init_image`"]),
    ],
)
def test_a_bad_init_image_is_a_storyboard_error(pictures, capsys, lines, line, key, words):
    text = "title: t\n" + lines + "keyframes:\n  - at: 0s\n    prompt: a hallway\n"
    assert_error(pictures, capsys, text, line, key, *words)


def test_a_bad_picture_in_a_keyframe_is_a_storyboard_error(pictures, capsys):
    head = "title: t\nkeyframes:\n  - at: 0s\n    prompt: a hallway\n  - at: 1s\n"
    assert_error(
        pictures, capsys, head + "    init_image: red.png\n", 6, "keyframes[2].init_image",
        "cut: true",
    )  # fmt: skip
    assert_error(
        pictures, capsys, head + '    prompt: {"image: gone.jpg": 1}\n', 6, "keyframes[2].prompt",
        "gone.jpg not found",
    )  # fmt: skip
    assert_error(
        pictures, capsys, head + '    prompt: "image: notes.png"\n', 6, "keyframes[2].prompt",
        "is not a picture",
    )  # fmt: skip
    assert_error(
        pictures, capsys, head + '    prompt: "image:"\n', 6, "keyframes[2].prompt",
        "needs the picture's path",
    )  # fmt: skip


def test_a_picture_is_checked_before_any_model_loads(pictures, capsys):
    (pictures / "board.yaml").write_text(BOARD.replace("init_image: red.png", "init_image: no.png"))
    # A render of a board whose models do not exist: the picture is what it complains about.
    code = main(["render", str(pictures / "board.yaml"), "--models", "not-a-model"])
    assert code == 2
    assert "no.png not found" in capsys.readouterr().err


def test_a_valid_picture_storyboard_passes(pictures, capsys):
    (pictures / "board.yaml").write_text(BOARD)
    code, err = validate(pictures, BOARD, capsys)
    assert code == 0, err


def test_a_negative_can_be_a_picture_and_is_checked_like_the_others(pictures, capsys):
    text = BOARD.replace("style: oil painting", 'negative: "image: blue.jpg"')
    (pictures / "board.yaml").write_text(text)
    story = load(pictures / "board.yaml")
    assert dict(story.plan.frames[0].prompts)["image: blue.jpg"] == -1.0
    assert story.plan.image("image: blue.jpg") == pictures / "blue.jpg"
    bad = text.replace('negative: "image: blue.jpg"', 'negative: "image: gone.png"')
    assert_error(pictures, capsys, bad, 5, "negative", "gone.png not found")


def test_a_span_begun_mid_shot_starts_from_its_shots_picture(pictures):
    (pictures / "board.yaml").write_text(BOARD)
    plan = load(pictures / "board.yaml").plan
    assert plan.span(10, 20).frames[0].init_image == "red.png"  # inside the first shot
    assert plan.span(50, 60).frames[0].init_image == "blue.jpg"  # inside the cut at 2 s
    assert plan.span(10, 20).frames[1].init_image is None


def test_a_path_too_long_for_the_filesystem_is_a_storyboard_error(pictures, capsys):
    text = f"title: t\ninit_image: {'x' * 300}.png\nkeyframes:\n  - at: 1s\n    prompt: a\n"
    assert_error(pictures, capsys, text, 2, "init_image", "not a usable path")


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    import torch

    from pipeline.pictures import fit_picture

    stored = Image.new("RGB", (160, 90), (0, 0, 0))  # stored landscape, left half red
    stored.paste((220, 30, 30), (0, 0, 80, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": a portrait photo, taken sideways
    stored.save(tmp_path / "phone.jpg", exif=exif)
    upright = fit_picture(tmp_path / "phone.jpg", 90, 160, torch.device("cpu"))
    # Viewed upright the red half is on top, and the 9:16 canvas needs no crop.
    assert upright[0, 0, :80].mean() > 0.6 and upright[0, 0, 80:].mean() < 0.2
