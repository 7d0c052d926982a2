"""The 3D camera's geometry (issue 38): a frame's move through the picture as a rigid motion
of the camera, and a picture moved by it with a depth map, each pixel unprojected with its
depth, moved, and projected back. The storyboard's keys, the depth model and the engine come
to it in later steps; this is the arithmetic they share, checked against the 2D camera.

Coordinates, as the 2D camera's (pipeline/camera.py): pixels from the picture's centre, x
right and y down; the camera looks along +z. A pinhole of horizontal field of view `fov`
degrees: a point (X, Y, Z) shows at f·X/Z, f·Y/Z, f = (width / 2) / tan(fov / 2).

Depth is the distance along z, normalised so that 1 is the picture's middle distance (its
median depth: `normalised`). In those units a frame's move is:

- `translate` [x, y, z]: the scene moves as `pan` moves it, x pixels right and y down at the
  middle distance (nearer things farther, farther things less), and the camera moves forward
  z of the middle distance (0.02: a fiftieth of the way to it each frame); for a flat picture
  at the middle distance, x and y are the 2D `pan` and z the `zoom` 1 / (1 - z);
- `rotate_3d` [x, y, z] degrees: the scene turns down (about the x axis), right (about the y
  axis) and counter-clockwise (about the z axis, as the 2D `rotate`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_FOV = 40.0  # degrees, horizontal (Deforum's default)
# How often a pixel's depth is looked up again where its ray meets the picture (see `warp`):
# exact for one plane at the first, within a hundredth of a pixel of the true point for the
# steps between planes the checks use.
DEPTH_ROUNDS = 3


def focal(width: int, fov: float = DEFAULT_FOV) -> float:
    """The focal length in pixels of a picture `width` wide seen over `fov` degrees."""
    return (width / 2) / math.tan(math.radians(fov) / 2)


def rotation(x: float, y: float, z: float) -> torch.Tensor:
    """The 3x3 rotation that turns the scene `x` degrees down, `y` right and `z`
    counter-clockwise (in that order: about x, then y, then z)."""
    ax, ay, az = (math.radians(angle) for angle in (x, y, z))
    about_x = torch.tensor(
        [[1, 0, 0], [0, math.cos(ax), math.sin(ax)], [0, -math.sin(ax), math.cos(ax)]],
        dtype=torch.float64,
    )
    about_y = torch.tensor(
        [[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]],
        dtype=torch.float64,
    )
    about_z = torch.tensor(
        [[math.cos(az), math.sin(az), 0], [-math.sin(az), math.cos(az), 0], [0, 0, 1]],
        dtype=torch.float64,
    )
    return about_z @ about_y @ about_x


def motion_3d(
    translate: tuple[float, float, float],
    rotate: tuple[float, float, float],
    width: int,
    fov: float = DEFAULT_FOV,
) -> torch.Tensor:
    """A frame's 3D move as a 4x4 matrix taking a point in the last frame's camera
    coordinates (depth units) to this frame's: turned, then moved. Moves compose by matrix
    product, as the 2D camera's do."""
    f = focal(width, fov)
    x, y, z = translate
    move = torch.eye(4, dtype=torch.float64)
    move[:3, :3] = rotation(*rotate)
    move[:3, 3] = torch.tensor([x / f, y / f, -z], dtype=torch.float64)
    return move


def normalised(depth: torch.Tensor) -> torch.Tensor:
    """A depth map (N, 1, H, W) of positive distances scaled so that its median is 1."""
    median = depth.flatten(1).median(dim=1).values.clamp_min(1e-6)
    return depth / median.view(-1, 1, 1, 1)


def warp(
    image: torch.Tensor,
    depth: torch.Tensor,
    move: torch.Tensor,
    fov: float = DEFAULT_FOV,
    padding: str = "reflection",
) -> torch.Tensor:
    """Move a picture (N, C, H, W) whose depth map (N, 1, H, W) is known by a 3D move
    (`motion_3d`, or several composed).

    Each pixel of the result looks back along its ray for the point of the picture it shows:
    the ray meets the picture where the depth there agrees with the ray's, found by looking
    the depth up again DEPTH_ROUNDS times from the depth under the pixel itself (one round for
    a flat picture). What comes into view from outside the picture is its border reflected, as
    with the 2D camera; what a near thing uncovers as it moves shows the surface behind the
    place it came from, stretched.
    """
    batch, _, height, width = image.shape
    f = focal(width, fov)
    dtype, device = torch.float64, image.device
    ys = torch.arange(height, dtype=dtype, device=device) - (height - 1) / 2
    xs = torch.arange(width, dtype=dtype, device=device) - (width - 1) / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    # Each result pixel's ray, in this frame's camera, and back in the last frame's.
    ray = torch.stack([grid_x / f, grid_y / f, torch.ones_like(grid_x)], dim=-1)
    turn, shift = move[:3, :3].to(device), move[:3, 3].to(device)
    back = ray @ turn  # R^T applied to each ray (row vectors)
    behind = shift @ turn  # R^T t
    to_norm = torch.tensor([2 / width, 2 / height], dtype=dtype, device=device)

    def source(at: torch.Tensor) -> torch.Tensor:
        """Where each ray meets the depth `at` (N, H, W) of the last frame, in its pixels."""
        along = (at + behind[2]) / back[..., 2]
        point = along[..., None] * back - behind
        return f * point[..., :2] / point[..., 2:].clamp_min(1e-6)

    def sample(values: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        grid = (pixels * to_norm).to(values.dtype)
        return F.grid_sample(values, grid, mode="bilinear", padding_mode=padding,
                             align_corners=False)  # fmt: skip

    depth64 = depth.to(dtype)
    at = depth64[:, 0]
    for _ in range(DEPTH_ROUNDS):
        pixels = source(at)
        at = sample(depth64, pixels)[:, 0]
    pixels = source(at)
    return sample(image, pixels.expand(batch, -1, -1, -1))
