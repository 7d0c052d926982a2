"""What a render will cost, said before it starts and while it runs: the models it reads
(and which of them its first run downloads, how big), and its time, in one model for the
plan's estimate and the running render: the seconds per optimisation step measured on this
machine × the optimisation steps still to take."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import run


class Timing:
    """Seconds per optimisation step measured by the studio's renders, kept per `timing_key`
    in the studio's folder, so that the plan's time estimate is this machine's."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> float | None:
        return self.read().get(key)

    def put(self, key: str, seconds_per_step: float) -> None:
        with self.lock:
            data = self.read()
            data[key] = round(seconds_per_step, 4)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            run.atomic_write_json(self.path, data)


def timing_key(story: run.Story, options: run.RenderOptions, device: str) -> str:
    """What a step's time depends on: the models, the device, the canvas and the cutouts."""
    settings = run.render_settings(story, options)
    clips = "+".join(name for name, _ in run.clip_names(story, options))
    canvas = f"{settings.width}x{settings.height}"
    return f"{run.model_name(story, options)}|{clips}|{device}|{canvas}|{settings.cuts} cuts"


# --- the time a render takes: one model for the plan's estimate and the running render ----


def steps_left(steps: dict[int, int], frames_done: int) -> int:
    """The optimisation steps still to take once `frames_done` frames are made: those of the
    optimised frames from there on (run.optimised_steps; a shot's first takes first_steps)."""
    return sum(n for index, n in steps.items() if index >= frames_done)


def seconds_left(
    seconds_per_step: float | None, steps: dict[int, int], frames_done: int = 0
) -> float | None:
    """The frames' time left: seconds per step measured on this machine × the steps left
    (None until a render has measured it). The frames between optimised ones, and each
    frame's saving, cost time too: measured as part of the steps' time, they are counted in
    it."""
    return None if seconds_per_step is None else seconds_per_step * steps_left(steps, frames_done)


class Clock:
    """One render's time per optimisation step: the one measured on this machine before
    (`stored`, or None) until the render has made a frame, then its own, measured from its
    first frames report (once the models are loaded and the prompts embedded)."""

    def __init__(self, steps: dict[int, int], stored: float | None):
        self.steps, self.stored = steps, stored
        self.start: float | None = None
        self.first = 0  # the frames made when this render's frames began
        self.made_steps = 0  # the steps this render has taken since
        self.seconds: float | None = None  # and the time they took

    def frames(self, done: int) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start, self.first = now, done
        self.made_steps = sum(n for i, n in self.steps.items() if self.first <= i < done)
        if self.made_steps:
            self.seconds = now - self.start

    @property
    def measured(self) -> float | None:
        return self.seconds / self.made_steps if self.seconds is not None else None

    @property
    def per_step(self) -> float | None:
        measured = self.measured
        return measured if measured is not None else self.stored

    def left(self, frames_done: int) -> float | None:
        return seconds_left(self.per_step, self.steps, frames_done)

    def activity(self, done: int, total: int) -> str:
        """The frames stage in words: the long first frame named, as it can take minutes."""
        upcoming = [index for index in sorted(self.steps) if index >= done]
        if not self.made_steps and upcoming:
            which = "the first frame" if upcoming[0] == 0 else f"frame {upcoming[0] + 1}"
            return f"{which} ({self.steps[upcoming[0]]} steps), {done} of {total} frames made"
        return f"frames: {done} of {total} made"


def say_seconds(seconds: float) -> str:
    """A time as the page writes it (studio.js formatSeconds)."""
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# --- the models a render needs ----------------------------------------------------------------


@dataclass(frozen=True)
class NeededModel:
    """A model a render reads: where it comes from, whether it is here, and its size (on
    disk when here, else as the registry states it; None when unknown)."""

    name: str
    role: str  # "VQGAN" or "CLIP"
    source: str  # "download", "packaged" (shipped: shapes), "built" (on first use: tiny), "file"
    present: bool
    bytes: int | None

    @property
    def downloads(self) -> bool:
        """The first render downloads it."""
        return self.source == "download" and not self.present


def needed_models(story: run.Story, options: run.RenderOptions) -> list[NeededModel]:
    """The models a render with these options reads, as the registry knows them."""
    named = [("vqgan", run.model_name(story, options))]
    named += [("clip", name) for name, _ in run.clip_names(story, options)]
    depth = run.depth_name(story, options)  # a storyboard that moves the 3D camera
    named += [("depth", depth)] if depth is not None else []
    roles = {"vqgan": "VQGAN", "clip": "CLIP", "depth": "depth model"}
    needed = []
    for kind, name in dict.fromkeys(named):
        here = run.model_on_disk(kind, name)  # located, not built, by a plan's view
        needed.append(NeededModel(name, roles[kind], here.source, here.present, here.size))
    return needed


def say_bytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{round(size / 1e6)} MB"
