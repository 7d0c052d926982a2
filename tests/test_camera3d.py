"""The 3D camera's geometry (pipeline/camera3d.py) on depth maps whose answer is known: a flat
picture moves exactly as the 2D camera's zoom, pan and rotation it equals (the two sample the
same points: measured within 1.4e-6 of each other on AVX-512, AVX2 and default kernels, and
asserted within 1e-4); two planes show parallax, the near one moving farther, by the ratio of
their depths; a turn moves the middle of the picture by the pixels a pinhole says."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.camera import motion, warp_by
from pipeline.camera3d import focal, motion_3d, warp

WIDTH, HEIGHT = 96, 64


def picture(seed: int = 0) -> torch.Tensor:
    """A smooth random picture: interpolation error stays small against the moves checked."""
    coarse = torch.rand(
        1, 3, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(seed)
    )
    return torch.nn.functional.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bicubic",
                                           align_corners=False).clamp(0, 1)  # fmt: skip


def plane(depth: float) -> torch.Tensor:
    return torch.full((1, 1, HEIGHT, WIDTH), depth)


def inner(image: torch.Tensor, margin: int = 8) -> torch.Tensor:
    """Away from the border, where what comes into view is filled, not moved."""
    return image[..., margin:-margin, margin:-margin]


@pytest.mark.parametrize(
    ("translate", "rotate", "zoom", "turn", "pan"),
    [
        ((0, 0, 0.03), (0, 0, 0), 1 / (1 - 0.03), 0, (0, 0)),  # a dolly is a zoom
        ((2.5, -1.5, 0), (0, 0, 0), 1, 0, (2.5, -1.5)),  # a truck and pedestal is a pan
        ((0, 0, 0), (0, 0, 3), 1, 3, (0, 0)),  # a roll is a rotation
        ((1, 2, 0.02), (0, 0, -2), 1 / (1 - 0.02), -2, (1, 2)),  # all at once
    ],
)
def test_a_flat_picture_at_the_middle_distance_moves_as_the_2d_camera(
    translate, rotate, zoom, turn, pan
):
    image = picture()
    moved = warp(image, plane(1.0), motion_3d(translate, rotate, WIDTH))
    # The 2D camera zooms and turns, then pans; the 3D one turns, then moves: for a plane,
    # a pan after the zoom and turn is the same shift at the same depth.
    expected = warp_by(image, motion(zoom, turn, pan[0] * zoom, pan[1] * zoom))
    assert (inner(moved) - inner(expected)).abs().max() < 1e-4


def test_a_flat_picture_farther_away_moves_less():
    # At depth d, a truck of x pixels (at the middle distance) moves it x / d pixels, and a
    # dolly of z zooms it d / (d - z).
    image, d = picture(1), 2.0
    moved = warp(image, plane(d), motion_3d((3, 0, 0.05), (0, 0, 0), WIDTH))
    zoom = d / (d - 0.05)
    expected = warp_by(image, motion(zoom, 0, 3 / d * zoom, 0))
    assert (inner(moved) - inner(expected)).abs().max() < 1e-4


def test_two_planes_show_parallax_the_near_one_moving_farther():
    # A bright bar on the near plane (depth 1, left half) and one on the far plane (depth 3,
    # right half); the camera trucks 6 px: the near bar moves 6 px, the far one 2 px, both
    # the same way.
    image = torch.zeros(1, 1, HEIGHT, WIDTH)
    near_at, far_at = 20, 70
    image[..., near_at] = 1.0
    image[..., far_at] = 1.0
    depth = torch.full((1, 1, HEIGHT, WIDTH), 3.0)
    depth[..., : WIDTH // 2] = 1.0
    moved = warp(image, depth, motion_3d((6, 0, 0), (0, 0, 0), WIDTH))

    def centre(columns: torch.Tensor) -> float:
        weights = columns.clamp_min(0)
        return float((weights * torch.arange(len(columns))).sum() / weights.sum())

    row = moved[0, 0, HEIGHT // 2]
    near = centre(row[: WIDTH // 2]) - near_at
    far = centre(torch.cat([torch.zeros(WIDTH // 2), row[WIDTH // 2 :]])) - far_at
    assert near == pytest.approx(6, abs=0.05) and far == pytest.approx(2, abs=0.05)
    assert near / far == pytest.approx(3, rel=0.05)


def test_a_turn_moves_the_middle_of_the_picture_by_what_a_pinhole_says():
    # Turning the scene 2 degrees right moves what was at the centre f * tan(2 degrees)
    # pixels right, whatever its depth (a turn has no parallax); turning down moves it down.
    image = torch.zeros(1, 1, HEIGHT, WIDTH)
    image[..., HEIGHT // 2 - 1 : HEIGHT // 2 + 1, WIDTH // 2 - 1 : WIDTH // 2 + 1] = 1.0
    expected = focal(WIDTH) * math.tan(math.radians(2))
    for depth in (0.5, 1.0, 4.0):
        for rotate, axis in (((0, 2, 0), -1), ((2, 0, 0), -2)):
            moved = warp(image, plane(depth), motion_3d((0, 0, 0), rotate, WIDTH))
            weights = moved[0, 0]
            coords = torch.arange(weights.shape[axis], dtype=torch.float32)
            profile = weights.sum(dim=0 if axis == -1 else 1)
            found = float((profile * coords).sum() / profile.sum())
            centre = (weights.shape[axis] - 1) / 2
            assert found - centre == pytest.approx(expected, abs=0.05), (depth, rotate)


def test_moves_compose_as_matrices():
    # Two frames' moves in one warp, as the product of their matrices, move a flat picture as
    # the two 2D moves they equal, composed: the second at the depth the first's dolly left the
    # plane at (0.98), where its pan is 1 / 0.98 px and its zoom 0.98 / 0.97.
    image = picture(2)
    first = motion_3d((1, 0, 0.02), (0, 0, 1), WIDTH)
    second = motion_3d((0, 1, 0.01), (0, 0, -1), WIDTH)
    once = warp(image, plane(1.0), second @ first)
    zoom1, zoom2 = 1 / 0.98, 0.98 / 0.97
    as_2d = motion(zoom2, -1, 0, 1 / 0.98 * zoom2) @ motion(zoom1, 1, zoom1, 0)
    assert (inner(once) - inner(warp_by(image, as_2d))).abs().max() < 1e-4


def test_a_picture_filled_with_zeros_has_its_border_depth_around_it():
    # What comes into view is 0 with zeros padding, and the rest moves as with the reflected
    # fill: a ray that leaves the picture meets the depth at its border, not 0 (which would
    # bring it back to the centre of the picture).
    image = picture(3) + 0.1
    turn = motion_3d((0, 0, 0), (0, 3, 0), WIDTH)
    zeros = warp(image, plane(1.0), turn, padding="zeros")
    reflected = warp(image, plane(1.0), turn)
    assert bool((zeros[..., :4] == 0).all()), "the left edge comes into view: 0"
    # Inside (the turn brings in f·tan 3° ≈ 7 px), the two are the same.
    assert (inner(zeros, 12) - inner(reflected, 12)).abs().max() < 1e-6
