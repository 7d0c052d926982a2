"""The 3D camera's geometry (issue 38): a frame's move through the picture as a rigid motion
of the camera, and a picture moved by it with a depth map, each pixel unprojected with its
depth, moved, and projected back. The storyboard's keys (`translate`, `rotate_3d`,
`fov`) reach it through the plan (FramePlan), and the engine moves its frames with it.

Coordinates, as the 2D camera's (pipeline/camera.py): pixels from the picture's centre, x
right and y down; the camera looks along +z. A pinhole of horizontal field of view `fov`
degrees: a point (X, Y, Z) shows at f·X/Z, f·Y/Z, f = (width / 2) / tan(fov / 2).

Depth is the distance along z in middle distances: 1 is the picture's middle distance (the
median depth of what the depth model sees: `depth_of`). In those units a frame's move is:

- `translate` [x, y, z]: the scene moves as `pan` moves it, x pixels right and y down at the
  middle distance (nearer things farther, farther things less), and the camera moves forward
  z of the middle distance (0.02: a fiftieth of the way to it each frame; less than 1); for a
  flat picture at the middle distance, x and y are the 2D `pan` and z the `zoom` 1 / (1 - z);
- `rotate_3d` [x, y, z] degrees: the scene turns down (about the x axis), right (about the y
  axis) and counter-clockwise (about the z axis, as the 2D `rotate`);
- `fov`: the horizontal field of view, which sets how far a turn about x or y moves the
  picture (its middle f·tan(angle) pixels: a wider view, fewer pixels a degree, and more
  perspective toward the edges). Translations are given in pixels at the middle distance, so
  they do not depend on it; a field of view that changes from frame to frame zooms (a wider
  one shows the picture smaller).

In a storyboard with a 3D key, `zoom`, `rotate` and `pan` move the 3D camera as they would
move a flat picture at the middle distance (`frame_move`): zoom z dollies forward 1 - 1/z,
rotate rolls, and pan trucks and pedestals.

The depth model gives relative inverse depth (disparity: larger is nearer, known up to a
scale and a shift); `depth_of` takes the shift as 0 and turns it into depth in these units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.schedule import FramePlan, Plan
from pipeline.storyboard import DEFAULT_FOV

# The nearest and farthest depth a picture is given, in middle distances: a disparity map's
# extremes (a sky, a blank wall, random weights) kept from making a warp tear or stand still.
NEAREST, FARTHEST = 0.1, 10.0
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


def frame_move(frame: FramePlan, width: int) -> torch.Tensor:
    """A frame's 3D move (4x4): its `translate` and `rotate_3d`, with its `zoom`, `rotate`
    and `pan` as they would move a flat picture at the middle distance."""
    x, y, z = frame.translate or (0.0, 0.0, 0.0)
    turn = frame.rotate_3d or (0.0, 0.0, 0.0)
    return motion_3d(
        (x + frame.pan_x / frame.zoom, y + frame.pan_y / frame.zoom, z + 1 - 1 / frame.zoom),
        (turn[0], turn[1], turn[2] + frame.rotate),
        width,
        frame_fov(frame),
    )


def frame_fov(frame: FramePlan) -> float:
    return DEFAULT_FOV if frame.fov is None else frame.fov


def camera_path(plan: Plan, start: int, end: int, width: int) -> tuple[torch.Tensor, float]:
    """The 3D camera's move from frame `start` to frame `end` (each frame's move in turn) in
    frame `start`'s units, and the middle distance at `end` in those units.

    Each frame moves by its keys at its own middle distance, which a dolly brings nearer: a
    dolly of z each frame takes the camera z of the way to the middle distance, then z of the
    way to the new one, so a steady dolly pushes in without end, as a steady zoom does (and a
    flat picture's dolly of k frames is the zoom 1 / (1 - z) taken k times)."""
    move, scale = torch.eye(4, dtype=torch.float64), 1.0
    for index in range(start + 1, end + 1):
        step = frame_move(plan.frames[index], width)
        forward = float(-step[2, 3])
        step[:3, 3] *= scale
        move = step @ move
        scale *= 1 - forward
    return move, scale


def depth_of(disparity: torch.Tensor) -> torch.Tensor:
    """Depth (N, 1, H, W) in middle distances from a depth model's relative inverse depth:
    the disparity scaled so that the median of what it sees (disparity above 0) is 1, its
    reciprocal kept within NEAREST and FARTHEST (nothing seen: FARTHEST; a picture in which
    nothing is seen at all, flat at 1). Float32 on the disparity's device."""
    disparity = disparity.float()
    depths = []
    for one in disparity:
        seen = one[one > 0]
        scale = seen.median() if seen.numel() else one.new_tensor(float("inf"))
        scaled = one / scale if seen.numel() else torch.ones_like(one)
        depths.append(scaled.clamp_min(1 / FARTHEST).reciprocal().clamp(NEAREST, FARTHEST))
    return torch.stack(depths)


def moved(
    plan: Plan, image: torch.Tensor, depth: torch.Tensor | None, made: int, shown: int
) -> torch.Tensor:
    """A picture (or its latents) made at frame `made`, with its depth, as the camera shows
    it at frame `shown`, before or after: moved along the plan's path between the two, in the
    units of its own depth (each optimised frame's has its middle distance at 1). Its pans
    refer to the canvas's width, which the depth map has."""
    assert depth is not None, "the 3D camera moves a picture whose depth is known"
    width = depth.shape[-1]
    move, scale = camera_path(plan, min(made, shown), max(made, shown), width)
    if shown < made:  # back from a later frame: the path in that frame's units, undone
        move[:3, 3] /= scale
        move = inverse(move)
    fov, fov_to = frame_fov(plan.frames[made]), frame_fov(plan.frames[shown])
    return warp(image, depth, move, fov, fov_to=fov_to)


def inverse(move: torch.Tensor) -> torch.Tensor:
    """The move back (rigid: turned back, then moved back)."""
    back = torch.eye(4, dtype=torch.float64)
    back[:3, :3] = move[:3, :3].T
    back[:3, 3] = -(move[:3, :3].T @ move[:3, 3])
    return back


def warp(
    image: torch.Tensor,
    depth: torch.Tensor,
    move: torch.Tensor,
    fov: float = DEFAULT_FOV,
    padding: str = "reflection",
    fov_to: float | None = None,
) -> torch.Tensor:
    """Move a picture (N, C, H, W) whose depth map (N, 1, H, W) is known by a 3D move
    (`motion_3d`, or several composed), seen over `fov` degrees before and `fov_to` (the
    same if not given) after. The depth map may be smaller than the picture (a latent
    grid's): it is read at the same places.

    Each pixel of the result looks back along its ray for the point of the picture it shows:
    the ray meets the picture where the depth there agrees with the ray's, found by looking
    the depth up again DEPTH_ROUNDS times from the depth under the pixel itself (one round for
    a flat picture). What comes into view from outside the picture is its border reflected, as
    with the 2D camera; what a near thing uncovers as it moves shows the surface behind the
    place it came from, stretched.
    """
    batch, _, height, width = image.shape
    f, f_to = focal(width, fov), focal(width, fov if fov_to is None else fov_to)
    dtype, device = torch.float64, image.device
    ys = torch.arange(height, dtype=dtype, device=device) - (height - 1) / 2
    xs = torch.arange(width, dtype=dtype, device=device) - (width - 1) / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    # Each result pixel's ray, in this frame's camera, and back in the last frame's.
    ray = torch.stack([grid_x / f_to, grid_y / f_to, torch.ones_like(grid_x)], dim=-1)
    turn, shift = move[:3, :3].to(device), move[:3, 3].to(device)
    back = ray @ turn  # R^T applied to each ray (row vectors)
    behind = shift @ turn  # R^T t
    to_norm = torch.tensor([2 / width, 2 / height], dtype=dtype, device=device)

    def source(at: torch.Tensor) -> torch.Tensor:
        """Where each ray meets the depth `at` (N, H, W) of the last frame, in its pixels."""
        along = (at + behind[2]) / back[..., 2]
        point = along[..., None] * back - behind
        return f * point[..., :2] / point[..., 2:].clamp_min(1e-6)

    def sample(values: torch.Tensor, pixels: torch.Tensor, fill: str) -> torch.Tensor:
        grid = (pixels * to_norm).to(values.dtype)
        return F.grid_sample(values, grid, mode="bilinear", padding_mode=fill,
                             align_corners=False)  # fmt: skip

    # Depth outside the picture is never 0 (a ray would meet nothing): the picture's own fill,
    # or its border where the picture is filled with zeros.
    around = "border" if padding == "zeros" else padding
    depth64 = depth.to(dtype)
    at = sample(depth64, torch.stack([grid_x, grid_y], dim=-1)[None], around)[:, 0]
    for _ in range(DEPTH_ROUNDS):
        pixels = source(at)
        at = sample(depth64, pixels, around)[:, 0]
    pixels = source(at)
    return sample(image, pixels.expand(batch, -1, -1, -1), padding)
