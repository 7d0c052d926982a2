"""The 2D camera: a frame's zoom, rotation and pan as a 3x3 matrix in centred pixel
coordinates, moves composed along the plan, and pictures (or latents) moved by them; and a
picture as either camera (this one or camera3d's) shows it at another frame."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline import camera3d
from pipeline.schedule import FramePlan, Plan


def motion(zoom: float, rotate: float, pan_x: float, pan_y: float) -> torch.Tensor:
    """A frame's camera move as a 3x3 matrix in centred pixel coordinates (y down):
    zoom about the centre (>1 magnifies), rotate `rotate` degrees counter-clockwise, then
    shift by (pan_x, pan_y) pixels (right and down). Moves compose by matrix product."""
    angle = math.radians(rotate)
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor(
        [[zoom * cos, zoom * sin, pan_x], [-zoom * sin, zoom * cos, pan_y], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )


def frame_motion(plan: FramePlan) -> torch.Tensor:
    return motion(plan.zoom, plan.rotate, plan.pan_x, plan.pan_y)


def reach(matrix: torch.Tensor, width: int, height: int) -> float:
    """How far a move takes the farthest corner of a width x height canvas, in pixels."""
    x, y = width / 2, height / 2
    corners = torch.tensor(
        [[-x, -y, 1.0], [x, -y, 1.0], [-x, y, 1.0], [x, y, 1.0]], dtype=torch.float64
    ).T
    return float((matrix @ corners - corners)[:2].abs().max())


def warp_by(
    image: torch.Tensor,
    matrix: torch.Tensor,
    canvas: tuple[int, int] | None = None,
    padding: str = "reflection",
) -> torch.Tensor:
    """Move a picture (or latents) by a motion matrix; reflected borders (or zeros, to see
    which pixels the moved picture covers).

    `canvas` (width, height) is the size in pixels that the matrix's pans refer to; it
    defaults to the tensor's own size, and lets latents move by a canvas's motion.
    """
    height, width = image.shape[-2:]
    width_px, height_px = canvas or (width, height)
    to_pixels = torch.diag(torch.tensor([width_px / 2, height_px / 2, 1.0], dtype=torch.float64))
    # affine_grid wants the map from output to input, in normalised coordinates.
    inverse = torch.linalg.inv(to_pixels) @ torch.linalg.inv(matrix) @ to_pixels
    theta = inverse[:2][None].to(image)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def camera_path(plan: Plan, start: int, end: int) -> torch.Tensor:
    """The camera's move from frame `start` to frame `end`: each frame's motion in turn."""
    matrix = torch.eye(3, dtype=torch.float64)
    for index in range(start + 1, end + 1):
        matrix = frame_motion(plan.frames[index]) @ matrix
    return matrix


def seen_at(
    plan: Plan, image: torch.Tensor, depth: torch.Tensor | None, made: int, shown: int
) -> torch.Tensor:
    """A picture made at frame `made` as the plan's camera shows it at frame `shown`, before
    or after: moved along the 2D camera's path, or with the 3D camera through its depth
    (camera3d.moved)."""
    if plan.camera_3d:
        return camera3d.moved(plan, image, depth, made, shown)
    if made <= shown:
        return warp_by(image, camera_path(plan, made, shown))
    return warp_by(image, torch.linalg.inv(camera_path(plan, shown, made)))
