"""How a rendered folder holds up over time, as numbers rather than taste.

For the frames a render left in a folder (with the plan its manifest keeps):
- **CLIP loss**: each frame's weighted spherical distance from the plan's prompts for that
  frame, as the engine computes it, with the render's own CLIP (lower is closer);
- **flicker**: the mean absolute difference (0-255) between each frame and the frame before
  it moved by the plan's own camera motion, over the pixels both show; a shot's first frame
  has none;
- **colour drift**: how far (CIE76 ΔE) each frame's mean Lab colour is from its shot's
  first frame's.

Each is reported as its mean over the frames and its worst window (the highest mean over
any second of consecutive frames). `feverdream score OUTPUT_DIR` prints them; the bench
scripts compare engines with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.engine import frame_generator, frame_motion, make_cutouts, spherical_distance, warp_by
from pipeline.errors import FeverdreamError
from pipeline.schedule import FramePlan
from pipeline.store import FrameStore, Manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measure:
    """One measure over a render: per frame (None where it does not apply), its mean over
    the frames it applies to, and the worst window's mean."""

    per_frame: list[float | None]
    mean: float
    worst: float

    @classmethod
    def of(cls, values: Sequence[float | None], window: int) -> Measure:
        present = [v for v in values if v is not None]
        if not present:
            return cls(list(values), float("nan"), float("nan"))
        window = max(1, min(window, len(present)))
        sums = np.convolve(present, np.ones(window), mode="valid") / window
        return cls(list(values), float(np.mean(present)), float(sums.max()))


@dataclass(frozen=True)
class Score:
    frames: int
    clip_loss: Measure | None  # None when no CLIP was given
    flicker: Measure
    colour_drift: Measure

    def to_json(self) -> dict:
        measures = {"flicker": self.flicker, "colour_drift": self.colour_drift}
        if self.clip_loss is not None:
            measures["clip_loss"] = self.clip_loss
        return {
            "frames": self.frames,
            **{name: {"mean": m.mean, "worst_second": m.worst} for name, m in measures.items()},
        }

    def describe(self) -> str:
        rows = [("CLIP loss", self.clip_loss), ("flicker", self.flicker)]
        rows.append(("colour drift", self.colour_drift))
        lines = [f"{self.frames} frames          mean   worst second"]
        lines += [f"{name:<16} {m.mean:>8.4f} {m.worst:>10.4f}" for name, m in rows if m]
        return "\n".join(lines)


def manifest_of(folder: Path) -> Manifest:
    """What a render folder's frames were made with; an error if it holds none."""
    store = FrameStore(folder)
    manifest = store.read_manifest()
    if manifest is None:
        raise FeverdreamError(
            f"{folder} holds no rendered frames (no {store.manifest_path}): give the folder a "
            "render wrote, e.g. outputs/NAME"
        )
    return manifest


def read_frames(folder: Path) -> tuple[list[np.ndarray], list[FramePlan], int]:
    """The finished frames of a render folder (as float arrays, 0-255), their plan, fps."""
    store = FrameStore(folder)
    manifest = manifest_of(folder)
    done = store.finished_frames(manifest)
    if done < 2:
        raise FeverdreamError(f"{folder} has {done} finished frames; scoring needs at least 2")
    plan = [FramePlan.from_json(values) for values in manifest.plan[:done]]
    frames = []
    for index in range(done):
        with Image.open(store.frame_path(index)) as picture:
            frames.append(np.asarray(picture.convert("RGB"), dtype=np.float64))
    t = plan[1].t - plan[0].t
    return frames, plan, max(1, round(1 / t)) if t > 0 else 24


def flicker(frames: Sequence[np.ndarray], plan: Sequence[FramePlan]) -> list[float | None]:
    """Each frame's mean absolute difference from the one before moved by its camera."""
    values: list[float | None] = [None]
    for index in range(1, len(frames)):
        if plan[index].cut:
            values.append(None)
            continue
        before = torch.from_numpy(frames[index - 1]).permute(2, 0, 1)[None]
        matrix = frame_motion(plan[index])
        moved = warp_by(before, matrix)[0].permute(1, 2, 0).numpy()
        covered = warp_by(torch.ones_like(before[:, :1]), matrix, padding="zeros")[0, 0] > 0.999
        difference = np.abs(frames[index] - moved).mean(axis=2)[covered.numpy()]
        values.append(float(difference.mean()) if difference.size else None)
    return values


def colour_drift(frames: Sequence[np.ndarray], plan: Sequence[FramePlan]) -> list[float | None]:
    """Each frame's mean Lab colour's distance (ΔE) from its shot's first frame's."""
    values: list[float | None] = []
    reference = None
    for index, frame in enumerate(frames):
        mean = srgb_to_lab(frame / 255).reshape(-1, 3).mean(axis=0)
        if index == 0 or plan[index].cut:
            reference = mean
        values.append(float(np.linalg.norm(mean - reference)))
    return values


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) → CIE Lab (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)  # fmt: skip
_WHITE = np.array([0.95047, 1.0, 1.08883])


@torch.no_grad()
def clip_losses(
    frames: Sequence[np.ndarray],
    plan: Sequence[FramePlan],
    clip,
    *,
    cuts: int = 16,
    seed: int = 0,
    images: dict[str, Path] | None = None,
) -> list[float | None]:
    """Each frame's CLIP loss against its prompts (the engine's measure, on its own cutouts
    with the frame's random stream; with several CLIPs, given as (model, weight) pairs, their
    weighted sum); image prompts whose files are unknown are left out."""
    from pipeline.engine import fit_picture, guides

    images = images or {}
    listening = guides(clip)
    values: list[float | None] = []
    for index, (frame, frame_plan) in enumerate(zip(frames, plan, strict=True)):
        prompts = [(text, weight) for text, weight in frame_plan.prompts
                   if not text.startswith("image:") or text in images]  # fmt: skip
        if not prompts:
            values.append(None)
            continue
        image = torch.from_numpy(frame / 255).permute(2, 0, 1)[None].float()
        weights = torch.tensor([weight for _, weight in prompts])
        generator = frame_generator(seed, index)
        total = 0.0
        for guide in listening:
            model, embeddings = guide.model, guide.embeddings
            for text, _ in prompts:
                if text in embeddings:
                    continue
                if text.startswith("image:"):
                    height, width = frame.shape[:2]
                    picture = fit_picture(images[text], width, height, torch.device("cpu"))
                    views = make_cutouts(picture, cuts, model.input_resolution,
                                         torch.Generator().manual_seed(seed))  # fmt: skip
                    vector = F.normalize(model.encode_image(views), dim=-1).mean(0)
                    embeddings[text] = F.normalize(vector, dim=-1)
                else:
                    embeddings[text] = model.encode_text([text])[0]
            targets = torch.stack([embeddings[text] for text, _ in prompts])
            views = make_cutouts(image, cuts, model.input_resolution, generator)
            distances = spherical_distance(model.encode_image(views), targets)
            total += guide.weight * float((distances.mean(dim=0) * weights).sum())
        values.append(total)
    return values


def score(folder: str | Path, clip=None, *, images: dict[str, Path] | None = None) -> Score:
    """Score the frames a render left in `folder` (a render's output folder). With `clip` (a
    loaded CLIP model, or (model, weight) pairs), the CLIP loss too, with the render's seed
    and cutout count."""
    frames, plan, fps = read_frames(Path(folder))
    losses = None
    if clip is not None:
        settings = manifest_of(Path(folder)).settings
        cuts, seed = settings.get("cuts", 16), settings.get("seed", 0)
        losses = Measure.of(
            clip_losses(frames, plan, clip, cuts=cuts, seed=seed, images=images), fps
        )
    return Score(
        frames=len(frames),
        clip_loss=losses,
        flicker=Measure.of(flicker(frames, plan), fps),
        colour_drift=Measure.of(colour_drift(frames, plan), fps),
    )
