"""The 3D camera's storyboard keys (translate, rotate_3d, fov) as the plan reads them: they
validate with FILE:LINE errors, ease like every motion key, appear in `plan --json` only in a
storyboard that uses them, and move the camera as camera3d says, zoom, rotate and pan
included; in-betweens follow the plan's own 3D path exactly."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

from pipeline import camera3d
from pipeline.camera import motion, warp_by
from pipeline.cli import main
from pipeline.engine import Anchor, in_between
from pipeline.schedule import FramePlan, build_plan
from pipeline.storyboard import DEFAULT_FOV, load_storyboard

HEAD = """\
title: 3d
fps: 24
duration: 1s
models:
  vqgan: tiny
  clip: tiny
  depth: tiny
"""

BOARD = (
    HEAD
    + """\
keyframes:
  - at: 0s
    prompt: "a corridor"
    translate: [0, 0, 0.02]
    rotate_3d: [0, 0.5, 0]
  - at: 0.5s
    prompt: "a staircase"
    translate: [2, -1, "0.01 + 0.02 * t"]
    fov: 60
    ease: ease-in
  - at: 1s
    rotate_3d: [1, -0.5, 2]
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_3d_keys_ease_between_keyframes_like_every_motion_key(tmp_path):
    board = load_storyboard(write(tmp_path, BOARD))
    assert board.camera_3d
    plan = build_plan(board)
    assert plan.camera_3d
    first, middle, last = plan.frames[0], plan.frames[12], plan.frames[23]
    assert first.translate == (0.0, 0.0, 0.02)
    # Linear from keyframe 1 to 2: a quarter of the way at frame 3 (0.125 s of 0.5 s).
    x, y, z = plan.frames[3].translate
    assert (x, y) == pytest.approx((0.5, -0.25))
    assert z == pytest.approx(0.02 + (0.01 + 0.02 * 0.125 - 0.02) * 0.25)
    # From keyframe 2 the translate is held (no later keyframe sets it).
    assert middle.translate == pytest.approx((2.0, -1.0, 0.01 + 0.02 * 0.5))
    # rotate_3d runs from keyframe 1 to keyframe 3 (keyframe 2 does not set it), eased as
    # keyframe 1 says (linear); fov, set once, is held everywhere.
    assert first.rotate_3d == (0.0, 0.5, 0.0)
    u = 23 / 24
    assert last.rotate_3d == pytest.approx((u, 0.5 - u, 2 * u))
    assert {fp.fov for fp in plan.frames} == {60.0}


def test_plan_json_holds_the_3d_keys_only_where_the_storyboard_uses_them(tmp_path, capsys):
    assert main(["plan", str(write(tmp_path, BOARD)), "--json"]) == 0
    frames = json.loads(capsys.readouterr().out)
    assert frames[0]["translate"] == [0.0, 0.0, 0.02]
    assert frames[0]["rotate_3d"] == [0.0, 0.5, 0.0]
    assert frames[0]["fov"] == 60.0
    assert FramePlan.from_json(frames[5]).translate == tuple(frames[5]["translate"])

    flat = HEAD + 'keyframes:\n  - at: 0s\n    prompt: "a corridor"\n    zoom: 1.02\n'
    assert main(["plan", str(write(tmp_path, flat)), "--json"]) == 0
    frames = json.loads(capsys.readouterr().out)
    assert set(frames[0]) == {"frame", "t", "zoom", "rotate", "pan_x", "pan_y", "cut", "prompts"}
    assert not load_storyboard(write(tmp_path, flat)).camera_3d


def test_the_plan_table_and_plot_show_the_3d_camera(tmp_path, capsys):
    path = write(tmp_path, BOARD)
    assert main(["plan", str(path)]) == 0
    table = capsys.readouterr().out
    assert "3D  translate [0, 0, 0.02]  rotate_3d [0, 0.5, 0]°  fov 60°" in table
    out = tmp_path / "plot.png"
    assert main(["plan", str(path), "--plot", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as png:
        # Five panels, 2.5 in each: translate x and y, z, rotate_3d, fov, prompts (no 2D key
        # is set, so zoom, rotate and pan are left out).
        assert png.size[1] == pytest.approx(5 * 2.5 * 110, abs=2)


@pytest.mark.parametrize(
    ("keys", "line", "key", "words"),
    [
        ("    translate: [1, 2]\n", 11, "keyframes[1].translate", ["expected [x, y, z]"]),
        ("    rotate_3d: 3\n", 11, "keyframes[1].rotate_3d", ["expected [x, y, z]"]),
        ("    translate: [1, 2, oops]\n", 11, "keyframes[1].translate", ["oops"]),
        ("    fov: 200\n", 11, "keyframes[1].fov", ["fov is 200 degrees", "1 to 170"]),
        ("    fov: '30 + 200 * t'\n", 11, "keyframes[1].fov", ["fov is", "1 to 170"]),
        ("    translate: [0, 0, 1]\n", 11, "keyframes[1].translate", ["z is 1 ", "less than 1"]),
        ("    translate: [0, 0, '0.5 + t']\n", 11, "keyframes[1].translate", ["at 0.5"]),
        (
            "    zoom: 2\n    translate: [0, 0, 0.5]\n",
            12,
            "keyframes[1].translate",
            ["translate z 0.5 with zoom 2", "below 1"],
        ),
    ],
)
def test_bad_3d_keys_fail_at_their_line(tmp_path, capsys, keys, line, key, words):
    text = HEAD + 'keyframes:\n  - at: 0s\n    prompt: "a corridor"\n' + keys
    text += '  - at: 1s\n    prompt: "a room"\n    fov: 50\n'
    code = main(["plan", str(write(tmp_path, text))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"board.yaml:{line}: {key}: " in err, err
    for word in words:
        assert word in err, err


def test_a_dolly_too_far_with_its_zoom_is_blamed_on_the_translate_key_that_eases_it_there(
    tmp_path, capsys
):
    # z eases from 0 to 0.9 under zoom 1.5 (a dolly of 1/3): the two reach the middle
    # distance at 0.75 s, and it is the later key's z that takes them there.
    text = HEAD + textwrap.dedent("""\
        keyframes:
          - at: 0s
            prompt: "a corridor"
            zoom: 1.5
            translate: [0, 0, 0]
          - at: 1s
            translate: [0, 0, 0.9]
        """)
    assert main(["validate", str(write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "board.yaml:14: keyframes[2].translate: translate z 0.675 with zoom 1.5 at 0.750s" in err


def test_an_unknown_depth_model_fails_at_its_line(tmp_path, capsys):
    text = BOARD.replace("depth: tiny", "depth: depth-anything-v2-smal")
    code = main(["validate", str(write(tmp_path, text))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "board.yaml:7: models.depth: " in err and "depth-anything-v2-small" in err, err


WIDTH, HEIGHT = 96, 64


def smooth_picture(seed: int) -> torch.Tensor:
    coarse = torch.rand(
        1, 3, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(seed)
    )
    return torch.nn.functional.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bicubic",
                                           align_corners=False).clamp(0, 1)  # fmt: skip


def inner(image: torch.Tensor, margin: int = 8) -> torch.Tensor:
    return image[..., margin:-margin, margin:-margin]


def frame(index: int, **values) -> FramePlan:
    base = dict(frame=index, t=index / 24, zoom=1.0, rotate=0.0, pan_x=0.0, pan_y=0.0,
                cut=False, prompts=(("a", 1.0),))  # fmt: skip
    return FramePlan(**{**base, **values})


def test_zoom_rotate_and_pan_move_the_3d_camera_as_they_move_a_flat_picture():
    # In a 3D storyboard the 2D keys stay: on a flat picture at the middle distance, a frame
    # of zoom, rotate and pan moves it as the 2D camera would.
    fp = frame(1, zoom=1.04, rotate=2.0, pan_x=3.0, pan_y=-1.0,
               translate=(0.0, 0.0, 0.0), rotate_3d=(0.0, 0.0, 0.0), fov=DEFAULT_FOV)  # fmt: skip
    image = smooth_picture(0)
    moved = camera3d.warp(image, torch.ones(1, 1, HEIGHT, WIDTH), camera3d.frame_move(fp, WIDTH))
    expected = warp_by(image, motion(1.04, 2.0, 3.0, -1.0))
    assert (inner(moved) - inner(expected)).abs().max() < 1e-4


def test_a_wider_field_of_view_after_the_move_shows_a_flat_picture_smaller():
    # No move, fov 40° before and 60° after: the picture shrinks by the focal lengths' ratio.
    image = smooth_picture(1)
    moved = camera3d.warp(image, torch.ones(1, 1, HEIGHT, WIDTH), torch.eye(4, dtype=torch.float64),
                          40.0, fov_to=60.0)  # fmt: skip
    ratio = camera3d.focal(WIDTH, 60.0) / camera3d.focal(WIDTH, 40.0)
    expected = warp_by(image, motion(ratio, 0.0, 0.0, 0.0))
    assert (inner(moved, 16) - inner(expected, 16)).abs().max() < 1e-4


def test_a_move_and_its_inverse_cancel():
    move = camera3d.motion_3d((3.0, -2.0, 0.05), (1.0, -2.0, 3.0), WIDTH, 50.0)
    assert torch.allclose(camera3d.inverse(move) @ move, torch.eye(4, dtype=torch.float64),
                          atol=1e-12)  # fmt: skip


def test_depth_from_a_depth_models_disparity_has_its_median_at_one_and_near_is_nearer():
    disparity = torch.linspace(0.0, 8.0, 101).view(1, 1, 1, 101)
    depth = camera3d.depth_of(disparity)
    assert float(depth.median()) == pytest.approx(1.0)
    assert bool((depth[..., 1:] <= depth[..., :-1]).all()), "more disparity is nearer"
    assert float(depth.min()) >= camera3d.NEAREST and float(depth.max()) <= camera3d.FARTHEST


def test_an_in_between_follows_the_plans_3d_path_exactly():
    # Two optimised frames of a flat picture, three frames apart, under a dolly and a roll:
    # the frames between are those of the 2D camera's zoom and rotation of the same path
    # (the first moved forward, the second back, blended), within interpolation error.
    from pipeline.schedule import Plan

    z, turn = 0.02, 1.5
    moves = {"translate": (0.0, 0.0, z), "rotate_3d": (0.0, 0.0, turn), "fov": DEFAULT_FOV}
    plan_3d = Plan(24, 4 / 24, tuple(frame(i, **moves) for i in range(4)), (), ())
    plan_2d = Plan(24, 4 / 24, tuple(frame(i, zoom=1 / (1 - z), rotate=turn) for i in range(4)),
                   (), ())  # fmt: skip
    assert plan_3d.camera_3d and not plan_2d.camera_3d
    flat = torch.ones(1, 1, HEIGHT, WIDTH)
    a = Anchor(0, torch.zeros(1), smooth_picture(2), depth=flat)
    b = Anchor(3, torch.zeros(1), smooth_picture(3), depth=flat)
    for index in (1, 2):
        made = in_between(plan_3d, a, b, index)
        expected = in_between(plan_2d, a, b, index)
        assert (inner(made, 12) - inner(expected, 12)).abs().max() < 1e-4, index
    # Each frame's depth is its own: the second frame seen nearer moves further back.
    near = Anchor(3, torch.zeros(1), b.image, depth=flat * 0.5)
    assert (inner(in_between(plan_3d, a, near, 1), 12) - inner(in_between(plan_2d, a, b, 1), 12)
            ).abs().max() > 1e-2  # fmt: skip


def test_depth_of_a_disparity_that_sees_little_keeps_what_it_sees_at_the_middle_distance():
    # A model that sees something in one pixel of four (zero elsewhere, as ReLU gives): that
    # part is the middle distance, the rest as far as depth goes; one that sees nothing, flat.
    disparity = torch.zeros(1, 1, 4, 4)
    disparity[..., ::2, ::2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    depth = camera3d.depth_of(disparity)
    seen = depth[..., ::2, ::2].flatten().tolist()
    assert seen == pytest.approx([2.0, 1.0, 2 / 3, 0.5])  # its median (the lower middle) 2 -> 1
    assert int((depth == camera3d.FARTHEST).sum()) == 12
    assert bool((camera3d.depth_of(torch.zeros(2, 1, 3, 3)) == 1).all())


def test_an_in_between_across_a_change_of_field_of_view_zooms_as_the_focal_lengths_say():
    # No move, the view widening 40 -> 70 degrees over three frames: each frame shows a flat
    # picture smaller by the ratio of its focal length to the last frame's, forward from the
    # first and back from the second alike (the 2D camera's in-between of those zooms).
    from pipeline.schedule import Plan

    fovs = (40.0, 50.0, 60.0, 70.0)
    still = {"translate": (0.0, 0.0, 0.0), "rotate_3d": (0.0, 0.0, 0.0)}
    plan_3d = Plan(24, 4 / 24, tuple(frame(i, **still, fov=f) for i, f in enumerate(fovs)), (), ())
    zooms = [1.0] + [
        camera3d.focal(WIDTH, b) / camera3d.focal(WIDTH, a)
        for a, b in zip(fovs, fovs[1:], strict=False)
    ]
    plan_2d = Plan(24, 4 / 24, tuple(frame(i, zoom=z) for i, z in enumerate(zooms)), (), ())
    flat = torch.ones(1, 1, HEIGHT, WIDTH)
    a = Anchor(0, torch.zeros(1), smooth_picture(4), depth=flat)
    b = Anchor(3, torch.zeros(1), smooth_picture(5), depth=flat)
    for index in (1, 2):
        made, expected = in_between(plan_3d, a, b, index), in_between(plan_2d, a, b, index)
        assert (inner(made, 16) - inner(expected, 16)).abs().max() < 1e-4, index


def test_a_frames_turn_moves_the_picture_by_its_own_field_of_view():
    # rotate_3d y of 2 degrees at fov 70 turns the scene right: the middle of a flat picture
    # moves f(70)·tan(2°) pixels; at the default fov, f(40)·tan(2°).
    for fov in (70.0, DEFAULT_FOV):
        fp = frame(1, translate=(0.0, 0.0, 0.0), rotate_3d=(0.0, 2.0, 0.0), fov=fov)
        image = torch.zeros(1, 1, HEIGHT, WIDTH)
        image[..., WIDTH // 2 - 1 : WIDTH // 2 + 1] = 1.0
        move = camera3d.frame_move(fp, WIDTH)
        moved = camera3d.warp(image, torch.ones(1, 1, HEIGHT, WIDTH), move, fov)
        row = moved[0, 0, HEIGHT // 2]
        found = float((row * torch.arange(WIDTH)).sum() / row.sum()) - (WIDTH - 1) / 2
        expected = camera3d.focal(WIDTH, fov) * math.tan(math.radians(2.0))
        assert found == pytest.approx(expected, abs=0.05), fov
