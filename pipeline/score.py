"""How a rendered folder holds up over time, as numbers rather than taste.

For the frames a render left in a folder (with the plan its record keeps):
- **CLIP loss**: each frame's weighted spherical distance from the plan's prompts for that
  frame, words and pictures (`image: PATH`) alike, as the engine computes it, with the
  render's own CLIP (lower is closer);
- **flicker**: the mean absolute difference (0-255) between each frame and the frame before
  it moved by the plan's own camera motion, over the pixels both show; a shot's first frame
  has none;
- **colour drift**: how far (CIE76 ΔE) each frame's mean Lab colour is from its shot's
  first frame's.

Each is reported as its mean over the frames and its worst second (the highest mean over
any second of consecutive frames, and when it is). `feverdream score OUTPUT_DIR` prints
them; the bench scripts compare engines with them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline import record
from pipeline.camera import frame_motion, warp_by
from pipeline.colour import rgb_to_lab
from pipeline.engine import frame_generator
from pipeline.errors import FeverdreamError
from pipeline.guidance import make_cutouts, spherical_distance
from pipeline.models.files import file_sha256
from pipeline.record import Record
from pipeline.schedule import FramePlan
from pipeline.store import FrameStore
from pipeline.storyboard import is_picture

# What each figure is, in what unit, and which way is better: printed under the figures.
MEANINGS = {
    "clip_loss": "how far each frame is from its prompts as the render's CLIP sees them, the "
    "engine's own loss (weighted spherical distance; lower is closer, 0 would be exactly the "
    "prompts; compare only scores of the same prompts and CLIP)",
    "flicker": "how much a pixel changes from the frame before, moved by the camera, in levels "
    "of 0-255 (lower is steadier; 0: nothing but the camera's move)",
    "colour_drift": "how far the mean colour is from its shot's first frame's, in CIE76 ΔE "
    "(lower holds the palette; about 2.3 is the smallest difference an eye notices)",
}
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".gif", ".avi")
NAMES = {"clip_loss": "CLIP loss", "flicker": "flicker", "colour_drift": "colour drift"}


@dataclass(frozen=True)
class Measure:
    """One measure over a render: per frame (None where it does not apply), its mean over
    the frames it applies to, and the worst second's mean and times (None where no frame
    has a value)."""

    per_frame: list[float | None]
    mean: float | None
    worst: float | None
    worst_at: tuple[float, float] | None = None  # the worst second's start and end, seconds

    @classmethod
    def of(cls, values: Sequence[float | None], fps: int, start: float = 0.0) -> Measure:
        """`values` per frame, at `fps` frames a second, the first at `start` seconds."""
        present = [v for v in values if v is not None]
        if not present:
            return cls(list(values), None, None)
        window = max(1, min(fps, len(values)))
        known = np.array([v is not None for v in values])
        figures = np.array([0.0 if v is None else v for v in values])
        sums = np.convolve(figures, np.ones(window), mode="valid")
        counts = np.convolve(known, np.ones(window), mode="valid")
        # Each window's mean over the frames in it that have a value.
        means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
        first = int(np.argmax(means))
        at = (start + first / fps, start + (first + window) / fps)
        return cls(list(values), float(np.mean(present)), float(means[first]), at)

    def to_json(self) -> dict:
        at = None if self.worst_at is None else [round(t, 3) for t in self.worst_at]
        return {"mean": self.mean, "worst_second": self.worst, "worst_second_at": at}


@dataclass(frozen=True)
class Score:
    frames: int  # the finished frames scored
    clip_loss: Measure | None  # None when no CLIP was given
    flicker: Measure
    colour_drift: Measure
    planned: int | None = None  # the frames the render's plan has (None: as many as scored)
    fps: int = 24
    # Image prompts the CLIP loss leaves out (prompt → why): the picture is no longer there.
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.planned is None or self.frames >= self.planned

    def measures(self) -> dict[str, Measure]:
        found = {"clip_loss": self.clip_loss, "flicker": self.flicker}
        found["colour_drift"] = self.colour_drift
        return {name: measure for name, measure in found.items() if measure is not None}

    def warnings(self) -> list[str]:
        """What the figures do not cover, in words."""
        said = []
        if not self.finished:
            said.append(
                f"the render is unfinished: {self.frames} of its {self.planned} frames are "
                "made, and the figures cover those only (render it again to finish it)"
            )
        for prompt, why in self.left_out.items():
            said.append(f"the CLIP loss leaves out '{prompt}': {why}")
        for name, measure in self.measures().items():
            if measure.mean is None:
                said.append(f"no {NAMES[name]}: {self.missing(name)}")
        return said

    def missing(self, name: str) -> str:
        """Why a measure has no figure."""
        if name == "clip_loss":
            return "no frame has a prompt left to score (every one is a picture left out)"
        return "no two consecutive frames are in the same shot"

    def to_json(self) -> dict:
        """The figures for a program: never NaN; a measure without figures has null ones
        and a `missing` reason."""
        measures = {}
        for name, measure in self.measures().items():
            figures = {**measure.to_json(), "means": MEANINGS[name]}
            if measure.mean is None:
                figures["missing"] = self.missing(name)
            if name == "clip_loss" and self.left_out:
                figures["left_out"] = dict(self.left_out)
            measures[name] = figures
        return {
            "frames": self.frames,
            "planned_frames": self.planned if self.planned is not None else self.frames,
            "finished": self.finished,
            "fps": self.fps,
            **measures,
            "warnings": self.warnings(),
        }

    def describe(self) -> str:
        """The figures as a table, what each means beneath it."""
        lines = [
            f"{self.frames} frames at {self.fps} fps"
            + ("" if self.finished else f" (of {self.planned}: unfinished)"),
            f"{'':<14}{'mean':>10}{'worst second':>14}  when",
        ]
        for name, measure in self.measures().items():
            if measure.mean is None or measure.worst is None or measure.worst_at is None:
                lines.append(f"{NAMES[name]:<14}{'-':>10}{'-':>14}  ({self.missing(name)})")
                continue
            start, end = measure.worst_at
            lines.append(
                f"{NAMES[name]:<14}{measure.mean:>10.4f}{measure.worst:>14.4f}  "
                f"{start:.2f}-{end:.2f} s"
            )
        meanings = [f"{NAMES[name]}: {MEANINGS[name]}." for name in self.measures()]
        meanings.append(
            "worst second: the second of consecutive frames with the highest mean, and when it "
            "is: where to look first."
        )
        lines.append("")
        lines += [textwrap.fill(text, 88, subsequent_indent="  ") for text in meanings]
        return "\n".join(lines)


def record_of(folder: Path) -> Record:
    """What a render folder's frames were made with; an error saying what to give instead if
    it is not a render folder."""
    folder = Path(folder)
    if not folder.exists():
        raise FeverdreamError(
            f"{folder} does not exist: give the folder a render wrote, e.g. outputs/NAME"
        )
    if not folder.is_dir():
        kind = "a video file" if folder.suffix.lower() in VIDEO_SUFFIXES else "a file"
        beside = record.path(folder.parent).is_file()
        raise FeverdreamError(
            f"{folder} is {kind}, not a render folder: score reads the frames a render leaves "
            "in its folder; give that folder"
            + (f", {folder.parent}" if beside else " (outputs/NAME, or its preview/)")
        )
    made = record.read_folder(folder)
    if made is None:
        raise FeverdreamError(
            f"{folder} holds no rendered frames (no {record.path(folder)}): give the folder a "
            "render wrote, e.g. outputs/NAME"
        )
    return made


def read_frames(folder: Path) -> tuple[list[np.ndarray], list[FramePlan], int]:
    """The finished frames of a render folder (as float arrays, 0-255), their plan, fps."""
    store = FrameStore(folder)
    made = record_of(folder)
    done = store.finished_frames(made)
    if done < 2:
        raise FeverdreamError(
            f"{folder} has {done} finished frames; scoring needs at least 2 (render more of "
            "it first: the same render command continues it)"
        )
    plan = [FramePlan.from_json(values) for values in made.plan[:done]]
    frames = []
    for index in range(done):
        with Image.open(store.frame_path(index)) as picture:
            frames.append(np.asarray(picture.convert("RGB"), dtype=np.float64))
    t = plan[1].t - plan[0].t
    return frames, plan, max(1, round(1 / t)) if t > 0 else 24


def steering_pictures(
    folder: Path, images: Mapping[str, Path] | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """The pictures that steered a render's finished frames (its `image: PATH` prompts), as
    the files to embed them from again, and those left out (prompt → why: the storyboard no
    longer names it, or its file has changed since the render, by the content the record
    keeps). `images` is the storyboard's pictures (Story.plan.images); None, when it is
    not given and the frames have image prompts, is an error saying to give it: their paths
    are relative to it, and a loss without them would not be the render's."""
    folder = Path(folder)
    made = record_of(folder)
    done = FrameStore(folder).finished_frames(made)
    named = sorted({text for frame in made.plan[:done] for text in frame["prompts"]
                    if is_picture(text)})  # fmt: skip
    if not named:
        return {}, {}
    if images is None:
        only = all(is_picture(text) for frame in made.plan[:done] for text in frame["prompts"])
        raise FeverdreamError(
            f"{folder} was steered by {'pictures only' if only else 'pictures as well as words'} "
            f"({', '.join(named)}), and the CLIP loss needs them: give the storyboard it was "
            "rendered from (--storyboard FILE; the pictures' paths are relative to it), or "
            "score flicker and colour drift only (--clip none)"
        )
    recorded = made.pictures
    usable: dict[str, Path] = {}
    left_out: dict[str, str] = {}
    for name in named:
        path = images.get(name)
        if path is None:
            left_out[name] = "the storyboard given does not name this picture (any more)"
        elif not Path(path).is_file():
            left_out[name] = f"{path} is no longer there"
        elif name in recorded and file_sha256(Path(path)) != recorded[name]:
            left_out[name] = f"{path} has changed since the render (its content differs)"
        else:
            usable[name] = Path(path)
    return usable, left_out


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
        pixels = torch.from_numpy(frame).to(torch.float64).div(255).permute(2, 0, 1)[None]
        mean = rgb_to_lab(pixels).mean(dim=(0, 2, 3)).numpy()
        if index == 0 or plan[index].cut:
            reference = mean
        values.append(float(np.linalg.norm(mean - reference)))
    return values


@torch.no_grad()
def clip_losses(
    frames: Sequence[np.ndarray],
    plan: Sequence[FramePlan],
    clip,
    *,
    cuts: int = 16,
    seed: int = 0,
    images: Mapping[str, Path] | None = None,
) -> list[float | None]:
    """Each frame's CLIP loss against its prompts (the engine's measure, on its own cutouts
    with the frame's random stream; with several CLIPs, given as (model, weight) pairs, their
    weighted sum). An image prompt is embedded as the engine embeds it, from its file in
    `images`; one not there is left out (None for a frame with nothing left)."""
    from pipeline.guidance import guides, picture_embedding
    from pipeline.pictures import fit_picture

    images = images or {}
    listening = guides(clip)
    values: list[float | None] = []
    for index, (frame, frame_plan) in enumerate(zip(frames, plan, strict=True)):
        prompts = [(text, weight) for text, weight in frame_plan.prompts
                   if not is_picture(text) or text in images]  # fmt: skip
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
                if is_picture(text):  # as the engine embeds it
                    height, width = frame.shape[:2]
                    picture = fit_picture(images[text], width, height, torch.device("cpu"))
                    embeddings[text] = picture_embedding(model, picture, cuts, seed)
                else:
                    embeddings[text] = model.encode_text([text])[0]
            targets = torch.stack([embeddings[text] for text, _ in prompts])
            views = make_cutouts(image, cuts, model.input_resolution, generator)
            distances = spherical_distance(model.encode_image(views), targets)
            total += guide.weight * float((distances.mean(dim=0) * weights).sum())
        values.append(total)
    return values


def score(folder: str | Path, clip=None, *, images: Mapping[str, Path] | None = None) -> Score:
    """Score the frames a render left in `folder` (a render's output folder). With `clip` (a
    loaded CLIP model, or (model, weight) pairs), the CLIP loss too, with the render's seed
    and cutout count, its image prompts embedded from `images` (the storyboard's pictures,
    Story.plan.images; see `steering_pictures` for those it cannot use)."""
    folder = Path(folder)
    frames, plan, fps = read_frames(folder)
    made = record_of(folder)
    losses, left_out = None, {}
    if clip is not None:
        usable, left_out = steering_pictures(folder, images)
        cuts, seed = made.settings.get("cuts", 16), made.settings.get("seed", 0)
        values = clip_losses(frames, plan, clip, cuts=cuts, seed=seed, images=usable)
        losses = Measure.of(values, fps, plan[0].t)
    return Score(
        frames=len(frames),
        clip_loss=losses,
        flicker=Measure.of(flicker(frames, plan), fps, plan[0].t),
        colour_drift=Measure.of(colour_drift(frames, plan), fps, plan[0].t),
        planned=len(made.plan),
        fps=fps,
        left_out=left_out,
    )


def score_render(
    folder: Path, clip: str | None = "render", images: Mapping[str, Path] | None = None
) -> Score:
    """`score` with a CLIP by name: `clip` is a CLIP's name or path, "render" (the ones the
    frames were made with, by their recorded weights) or None (no CLIP loss); `images`, the
    storyboard's picture prompts by name, the files of its image prompts."""
    from pipeline.models.loading import load_clip_model

    if clip is not None:
        # Before any CLIP loads (or downloads): pictures the loss needs and cannot have.
        steering_pictures(folder, images)
    model: Any = None
    if clip == "render":
        recorded = record_of(folder).models
        if recorded is None:
            raise FeverdreamError(f"{folder}: no CLIP recorded for these frames; name one")
        loaded = {name: load_clip_model(name) for name in {c.name for c in recorded.clips}}
        model = [(loaded[c.name], c.weight) for c in recorded.clips]
    elif clip is not None:
        model = load_clip_model(clip)
    return score(folder, model, images=images)
