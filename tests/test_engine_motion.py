"""The camera moves the picture the way the storyboard says, checked on drawn images."""

from __future__ import annotations

import pytest
import torch

from pipeline.camera import motion, warp_by
from pipeline.guidance import make_cutouts, spherical_distance

H, W = 128, 72


def dot_image(x: int, y: int, radius: int = 3) -> torch.Tensor:
    """A black (1, 3, H, W) image with a white dot centred at pixel (x, y)."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    mask = ((xx - x) ** 2 + (yy - y) ** 2 <= radius**2).float()
    return mask.expand(1, 3, H, W).clone()


def centroid(image: torch.Tensor) -> tuple[float, float]:
    weights = image[0, 0]
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    total = weights.sum()
    return float((xx * weights).sum() / total), float((yy * weights).sum() / total)


def test_still_camera_leaves_the_image_alone():
    image = torch.rand(1, 3, H, W)
    assert torch.allclose(warp_by(image, motion(1.0, 0.0, 0.0, 0.0)), image, atol=1e-5)


def test_zoom_in_magnifies_the_centre():
    # A dot 20 px right of centre moves outwards by the zoom factor and grows.
    image = dot_image(W // 2 + 20, H // 2, radius=4)
    zoomed = warp_by(image, motion(1.5, 0.0, 0.0, 0.0))
    x, y = centroid(zoomed)
    assert abs(x - (W / 2 + 20 * 1.5)) < 1.5
    assert abs(y - H / 2) < 1.0
    assert zoomed[0, 0].sum() > image[0, 0].sum() * 1.8  # area grows by about 1.5²


def test_zoom_out_shrinks_towards_the_centre():
    # Reflected borders fill the edges with mirrored copies, so look where the dot should be.
    image = dot_image(W // 2, H // 2 - 30, radius=4)
    zoomed = warp_by(image, motion(0.5, 0.0, 0.0, 0.0))[0, 0]
    assert zoomed[H // 2 - 15, W // 2] > 0.5
    assert zoomed[H // 2 - 30, W // 2] < 0.1


def test_rotate_turns_counter_clockwise():
    # A dot right of centre, turned 90° counter-clockwise, ends up above the centre.
    image = dot_image(W // 2 + 20, H // 2)
    turned = warp_by(image, motion(1.0, 90.0, 0.0, 0.0))[0, 0]
    assert turned[H // 2 - 20, W // 2] > 0.5
    assert turned[H // 2, W // 2 + 20] < 0.1
    assert turned[H // 2 + 20, W // 2] < 0.1  # not clockwise


def test_pan_moves_right_and_down():
    image = dot_image(W // 2, H // 2)
    x, y = centroid(warp_by(image, motion(1.0, 0.0, 5.0, -8.0)))
    assert abs(x - (W / 2 + 5)) < 0.6
    assert abs(y - (H / 2 - 8)) < 0.6


def test_cutouts_cover_the_full_height_of_a_tall_canvas():
    # A tall image with a red top and a blue bottom: the whole-frame views show both.
    image = torch.zeros(1, 3, 256, 144)
    image[:, 0, :20] = 1.0
    image[:, 2, -20:] = 1.0
    cutouts = make_cutouts(image, 8, 32, torch.Generator().manual_seed(0))
    assert cutouts.shape == (8, 3, 32, 32)
    whole = cutouts[0]
    assert whole[0, :3].mean() > 0.5  # red along its top rows
    assert whole[2, -3:].mean() > 0.5  # blue along its bottom rows


def test_cutouts_are_reproducible_from_the_generator():
    image = torch.rand(1, 3, 64, 36)
    a = make_cutouts(image, 6, 16, torch.Generator().manual_seed(3))
    b = make_cutouts(image, 6, 16, torch.Generator().manual_seed(3))
    c = make_cutouts(image, 6, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_spherical_distance_is_zero_for_the_same_direction_and_grows_apart():
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    d = spherical_distance(a, a[:1])
    assert d[0, 0] < 1e-6
    assert abs(float(d[1, 0]) - 2 * (torch.pi / 4) ** 2) < 1e-5  # 90° apart


def plan_with(frames: list[dict]):
    """A plan of frames with the given motion (and cuts), for testing the cadence logic."""
    from pipeline.schedule import FramePlan, Plan

    plans = tuple(
        FramePlan(i, i / 24, f.get("zoom", 1.0), f.get("rotate", 0.0), f.get("pan_x", 0.0),
                  f.get("pan_y", 0.0), f.get("cut", False), (("a", 1.0),))
        for i, f in enumerate(frames)
    )  # fmt: skip
    return Plan(24, len(frames) / 24, plans, (), ())


def test_cadence_optimises_every_kth_frame_and_the_frames_around_cuts():

    plan = plan_with([{} for _ in range(5)] + [{"cut": True}] + [{} for _ in range(6)])
    assert plan.optimised_frames(1) == list(range(12))
    assert plan.optimised_frames(3) == [0, 3, 4, 5, 8, 11]


def test_the_camera_path_is_the_frames_moves_in_turn():
    from pipeline.camera import camera_path

    plan = plan_with([{}, {"zoom": 1.1, "rotate": 5}, {"pan_x": 3.0, "rotate": -2}])
    image = dot_image(W // 2 + 10, H // 2 - 12, radius=5)
    step_by_step = warp_by(warp_by(image, motion(1.1, 5, 0, 0)), motion(1.0, -2, 3.0, 0))
    at_once = warp_by(image, camera_path(plan, 0, 2))
    assert centroid(at_once) == pytest.approx(centroid(step_by_step), abs=0.3)


def test_in_between_frames_follow_the_known_motion_from_both_sides():
    from pipeline.camera import camera_path, warp_by
    from pipeline.engine import Anchor, in_between

    plan = plan_with([{"pan_x": 4.0} for _ in range(4)])
    a_image = dot_image(W // 2, H // 2)
    b_image = warp_by(a_image, camera_path(plan, 0, 3))  # what 3 frames of pan make of a
    a, b = Anchor(0, torch.zeros(1), a_image, None), Anchor(3, torch.zeros(1), b_image, None)
    middle = in_between(plan, a, b, 1)
    x, y = centroid(middle)
    assert x == pytest.approx(W / 2 + 4, abs=0.5) and y == pytest.approx(H / 2, abs=0.5)
    assert middle.max() > 0.9  # both sides agree, so the blend stays sharp
