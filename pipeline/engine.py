"""The VQGAN+CLIP frame loop: every frame starts from the previous one, warped by the plan's
motion, and its VQGAN latents are optimised until CLIP sees the frame's prompts in it.

Per frame (DESIGN.md, "Engine per frame"):
  1. frame 0 or a cut: latents from random codebook entries, optimised `first_steps` steps;
  2. otherwise: the previous frame's image, warped by zoom/rotate/pan, encoded to latents,
     optimised `steps` steps (for a VQGAN that cannot hold a move smaller than a latent
     cell, the move is held over the latents until it reaches a few cells: Engine.move);
     with the 3D camera, warped through its depth, which the depth model estimates once
     for each optimised frame (Engine.move_3d);
  3. one step: quantise (straight-through) → decode → cutouts → CLIP → weighted spherical
     distance to the frame's aim (its prompts a few steps' worth ahead: Plan.aim; negative
     weights push away) → backward → Adam → clamp. Each optimised frame starts a fresh Adam.
     With several CLIPs, each cuts its own cutouts at its own resolution and the loss is
     the weighted sum of theirs.
Embeddings are computed once per distinct prompt and CLIP. Each frame's randomness comes from
its own generator seeded by (seed, frame), so a resumed render repeats an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image

from pipeline import camera3d
from pipeline import record as records
from pipeline.camera import camera_path, reach, seen_at, warp_by
from pipeline.colour import match_colours
from pipeline.guidance import (
    batched_backward,
    clip_loss,
    guides,
    make_cutouts,
    picture_embedding,
)
from pipeline.latents import Latents
from pipeline.pictures import fit_picture, to_uint8
from pipeline.record import FrameRecord, Record
from pipeline.schedule import Plan
from pipeline.settings import EngineSettings
from pipeline.store import FrameStore, atomic_write
from pipeline.storyboard import is_picture

log = logging.getLogger(__name__)


# --- the engine ----------------------------------------------------------------------------


@dataclass
class Anchor:
    """An optimised frame: where the frames after it start from."""

    index: int
    z: torch.Tensor
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    loss: float | None = None  # the last step's loss (None when no step was taken)
    # The camera's move from the latents' picture to the one shown, while it is held
    # (Engine.move); None: the image is the latents' picture.
    held: torch.Tensor | None = None
    # With the 3D camera: the image's depth (1, 1, H, W) in middle distances (camera3d).
    depth: torch.Tensor | None = None


@dataclass(frozen=True)
class Pull:
    """What keeps a shot's first frame near the picture it starts from: the loss gains
    `strength` x the mean squared distance of the latents from the picture's (the same at
    every step; 1 holds the picture's layout and colours through a prompt pulling away)."""

    z: torch.Tensor
    strength: float

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        return self.strength * F.mse_loss(z, self.z)


class Optimised(NamedTuple):
    """What `Engine.optimise` returns."""

    z: torch.Tensor
    loss: float | None  # the last step's loss
    adam: dict[str, torch.Tensor] | None  # Adam's moments after the last step


class Engine(Latents):
    """VQGAN + CLIP, loaded once, and the operations a frame is made of: the VQGAN side
    (latents.py), CLIP's guidance, the frame's steps."""

    def __init__(self, vqgan, clip, settings: EngineSettings, depth=None):
        """`clip`: one CLIP model, or (CLIP model, weight) pairs whose losses are summed;
        `depth`: the depth model the 3D camera reads (pipeline.models.depth), if it moves."""
        self.guides = guides(clip)
        self.clip = self.guides[0].model  # the first CLIP (the only one, usually)
        if settings.camera_hold is None:
            settings = replace(settings, camera_hold=getattr(vqgan, "camera_hold", 0))
        super().__init__(vqgan, settings, [guide.model for guide in self.guides])
        self.images: dict[str, Path] = {}  # the pictures `image: PATH` prompts name
        # The first frame of the shot being made, whose colours the others are matched to.
        self.reference: torch.Tensor | None = None
        self.depth_model = depth

    @property
    def embeddings(self) -> dict[str, torch.Tensor]:
        """The prompts' embeddings in the first CLIP's space."""
        return self.guides[0].embeddings

    def embed(self, texts: Sequence[str], images: Mapping[str, Path] | None = None) -> None:
        """Compute the embeddings not yet known, each prompt once per render and CLIP: a text
        by CLIP's text tower, an `image: PATH` prompt (its file in `images`) by its image
        tower."""
        self.images.update(images or {})
        for guide in self.guides:
            missing = [text for text in dict.fromkeys(texts) if text not in guide.embeddings]
            words = [text for text in missing if not is_picture(text)]
            if words:
                with torch.no_grad():
                    vectors = guide.model.encode_text(words)
                guide.embeddings.update(zip(words, vectors, strict=True))
            for name in missing:
                if is_picture(name):
                    picture = fit_picture(self.images[name], *self.canvas, self.device)
                    guide.embeddings[name] = picture_embedding(
                        guide.model, picture, self.settings.cuts, self.settings.seed
                    )

    @property
    def canvas(self) -> tuple[int, int]:
        """The frames' width and height."""
        return self.settings.width, self.settings.height

    def start_from(self, path: Path) -> torch.Tensor:
        """The latents of a picture a shot starts from, fitted to the canvas."""
        return self.image_to_latent(fit_picture(path, *self.canvas, self.device))

    def shown(self, z: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
        """The picture a frame shows: its latents decoded, moved by the held camera."""
        image = self.latent_to_image(z)
        return image if held is None else warp_by(image, held)

    def cutouts(self, image: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Each CLIP's cutouts of the image, at its own resolution, drawn in turn."""
        return [
            make_cutouts(image, self.settings.cuts, guide.model.input_resolution, generator)
            for guide in self.guides
        ]

    def clip_loss(
        self,
        cutouts: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """The loss from these cutouts (guidance.clip_loss)."""
        return clip_loss(self.guides, cutouts, targets, weights)

    def targets(
        self, prompts: tuple[tuple[str, float], ...]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The prompts' embeddings, one (P, D) stack per CLIP, and their weights."""
        self.embed([text for text, _ in prompts])
        targets = tuple(
            torch.stack([guide.embeddings[text] for text, _ in prompts]) for guide in self.guides
        )
        weights = torch.tensor([w for _, w in prompts], device=targets[0].device)
        return targets, weights

    def step(
        self,
        z: torch.Tensor,
        optimiser: torch.optim.Optimizer,
        targets: Sequence[torch.Tensor],
        weights: torch.Tensor,
        generator: torch.Generator,
        pull: Pull | None = None,
        held: torch.Tensor | None = None,
    ) -> float:
        """One optimisation step (DESIGN.md): quantise → decode (→ the held camera's move)
        → cutouts → CLIP → weighted spherical distance (+ the pull toward a start picture) →
        backward → Adam → clamp to the codebook's range. The loss. (With the execution's
        `cut_batch`, CLIP's part goes in batches: `batched_backward`.)"""
        optimiser.zero_grad(set_to_none=True)
        image = self.shown(z, held)
        if 0 < self.execution.cut_batch < self.settings.cuts:
            views = self.cutouts(image, generator)
            value = batched_backward(self.guides, views, targets, weights, self.execution.cut_batch)
            if pull is not None:
                held_back = pull.loss(z)
                held_back.backward()
                value += held_back.item()
        else:
            loss = self.clip_loss(self.cutouts(image, generator), targets, weights)
            if pull is not None:
                loss = loss + pull.loss(z)
            loss.backward()
            value = loss.item()
        self.update(z, optimiser)
        return value

    def update(self, z: torch.Tensor, optimiser: torch.optim.Optimizer) -> None:
        """Adam's move of the latents by their gradient, kept inside the codebook's range."""
        optimiser.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, self.z_max), self.z_min))

    def optimise(
        self,
        z: torch.Tensor,
        prompts: tuple[tuple[str, float], ...],
        steps: int,
        generator: torch.Generator,
        adam: dict[str, torch.Tensor] | None = None,
        pull: Pull | None = None,
        held: torch.Tensor | None = None,
    ) -> Optimised:
        """Adam on the latents for `steps` steps, starting from `adam`'s moments if given,
        kept near `pull`'s latents if given, seen through the `held` camera move if given."""
        if steps == 0 or not prompts:
            return Optimised(z, None, adam)
        targets, weights = self.targets(prompts)
        z = z.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=self.settings.lr)
        if adam is not None:
            optimiser.state[z] = {name: value.clone() for name, value in adam.items()}
        loss = None
        for _ in range(steps):
            loss = self.step(z, optimiser, targets, weights, generator, pull, held)
        return Optimised(z.detach(), loss, dict(optimiser.state[z]))

    def move(
        self, previous: Anchor, matrix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latents a frame starts from, and the camera move held over them: the previous
        optimised frame moved by the camera. The classic way decodes, warps the picture and
        encodes it again; the latent warp moves the latents themselves (no encoder; softer
        motion).

        With a camera hold (for a VQGAN whose round trip loses moves smaller than a latent
        cell), the move is held instead: the picture is encoded again unmoved, and the frame
        shows it moved by the camera so far (and is optimised as shown), until the move takes
        a corner of the canvas `camera_hold` cells away; then it is moved and encoded."""
        source, held = previous.image, None
        if self.settings.camera_hold:
            if previous.held is not None:
                matrix = matrix @ previous.held
                with torch.no_grad():
                    source = self.latent_to_image(previous.z)
            cells = reach(matrix, *self.canvas)
            if 0 < cells < self.settings.camera_hold * self.vqgan.downsample:
                matrix, held = torch.eye(3, dtype=torch.float64), matrix
        if self.speed.latent_warp:
            if held is not None:
                return previous.z, held
            return warp_by(previous.z, matrix, self.canvas), held
        moved = source if held is not None else warp_by(source, matrix)
        return self.encode_moved(moved), held

    def move_3d(self, previous: Anchor, plan: Plan, index: int) -> torch.Tensor:
        """The latents frame `index` starts from with the 3D camera: the previous optimised
        frame moved through its depth by the camera between (no camera hold: the move is
        encoded every frame)."""
        source = previous.z if self.speed.latent_warp else previous.image
        moved = camera3d.moved(plan, source, previous.depth, previous.index, index)
        return moved if self.speed.latent_warp else self.encode_moved(moved)

    def encode_moved(self, moved: torch.Tensor) -> torch.Tensor:
        """A moved picture's latents, its colours first matched to the shot's first frame's
        (with colour coherence)."""
        if self.settings.color_coherence != "off" and self.reference is not None:
            moved = match_colours(moved, self.reference, self.settings.color_coherence)
        return self.image_to_latent(moved)

    def depth_of(self, image: torch.Tensor) -> torch.Tensor:
        """The depth of a frame's picture (camera3d.depth_of), estimated by the depth model."""
        if self.depth_model is None:
            raise RuntimeError("a plan that moves the 3D camera needs an Engine with a depth model")
        with torch.no_grad():
            return camera3d.depth_of(self.depth_model(image.float()))

    def anchor(
        self, index: int, plan: Plan, previous: Anchor | None, first_frame: int = 0
    ) -> Anchor:
        """Optimise frame `index` toward its aim (Plan.aim: the plan's prompts a little ahead,
        so that the picture shows them on time), starting from `previous` moved by the frames
        between, or from random codes at the start and at a cut. `first_frame`: where `plan` begins
        in the video (a shot rendered on its own), which each frame's random stream counts
        from."""
        frame = plan.frames[index]
        generator = frame_generator(self.settings.seed, first_frame + index, self.device)
        pull = held = None
        if previous is None or frame.cut:
            if frame.init_image is not None:
                z = self.start_from(plan.image(frame.init_image))
                pull = Pull(z.clone(), frame.init_strength) if frame.init_strength else None
            else:
                z = self.random_latent(generator)
            steps = self.settings.first_steps
        elif plan.camera_3d:
            z, steps = self.move_3d(previous, plan, index), self.settings.steps
        else:
            z, held = self.move(previous, camera_path(plan, previous.index, index))
            steps = self.settings.steps
        aim = plan.engine_aim(index, self.settings.record())
        result = self.optimise(z, aim, steps, generator, None, pull, held)
        with torch.no_grad():
            image = self.shown(result.z, held)
        if previous is None or frame.cut:  # as saved, so that a resume matches to the same
            self.reference = image.mul(255).round().div(255)
        depth = self.depth_of(image) if plan.camera_3d else None
        return Anchor(index, result.z, image, result.loss, held, depth)

    def state(self, anchor: Anchor) -> dict[str, Any]:
        """What the frame store saves to continue after `anchor`."""
        state = {"z": anchor.z}
        if anchor.held is not None:
            state["held"] = anchor.held
        if anchor.depth is not None:
            state["depth"] = anchor.depth
        if self.settings.color_coherence != "off" and self.reference is not None:
            state["reference"] = self.reference.mul(255).round().to(torch.uint8)
        return state

    def restore(self, index: int, state: dict[str, Any]) -> Anchor:
        """The optimised frame `index` again, from the state the store saved."""
        if "reference" in state:
            self.reference = state["reference"].to(self.device).float().div(255)
        held = state.get("held")
        held = None if held is None else held.cpu()  # camera matrices live on the CPU
        with torch.no_grad():
            image = self.shown(state["z"], held)
        depth = state.get("depth")
        depth = None if depth is None else depth.to(self.device)
        return Anchor(index, state["z"], image, held=held, depth=depth)


def in_between(plan: Plan, a: Anchor, b: Anchor, index: int) -> torch.Tensor:
    """A frame between two optimised ones: `a` moved forward and `b` moved back by the
    plan's own motion (so the warps are exact; with the 3D camera, each through its own
    depth), blended by how near each one is."""
    forward = seen_at(plan, a.image, a.depth, a.index, index)
    backward = seen_at(plan, b.image, b.depth, b.index, index)
    weight = (index - a.index) / (b.index - a.index)
    return forward * (1 - weight) + backward * weight


# Random streams a seed owns, one per frame: a prime above any video's frame count, so that no
# two (seed, frame) pairs of a render share a stream.
FRAME_STREAMS = 1_000_003


def frame_generator(seed: int, frame: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Each frame's own random stream, on the engine's device: the same for a resumed and an
    uninterrupted render on that device."""
    return torch.Generator(device=device).manual_seed((seed * FRAME_STREAMS + frame) % (2**63))


# --- the render loop -----------------------------------------------------------------------


@dataclass(frozen=True)
class FrameProgress:
    """Where a render stands: once before the first frame (the frames a resume found made),
    then after each optimised frame and the frames before it."""

    frames_done: int
    frames_total: int
    loss: float | None  # the optimised frame's last loss


@dataclass
class RenderResult:
    frames_done: int
    frames_total: int
    stopped: bool
    records: dict[int, FrameRecord]


def render_frames(
    plan: Plan,
    engine: Engine,
    store: FrameStore,
    *,
    describe: dict | None = None,
    fresh: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[FrameProgress], None] = lambda progress: None,
    first_frame: int = 0,
) -> RenderResult:
    """Render every frame of the plan into the store, continuing after finished frames.
    With `first_frame`, the plan is a shot of a video that begins at that frame (a `Plan.span`
    from the start or a cut): its frames are the same as in a render of the whole video.

    For each frame: optimise it (every `cadence`-th frame: Plan.optimised_frames), or make it
    between the optimised frames before and after it. An optimised frame is written after
    the frames between it and the one before, with its state, so that the frames on disk
    always run without a gap from frame 0 and a render can resume from them.
    """
    settings = {**engine.settings.record(), **(describe or {})}
    record = Record(settings, plan.recorded(settings))
    state = records.start(store, record, fresh, engine.device)
    engine.embed(plan.prompt_texts, dict(plan.images))
    optimised = plan.optimised_frames(engine.speed.cadence)
    previous = None if state is None else engine.restore(state["frame"], state)
    upcoming: Anchor | None = None  # the next optimised frame, made before those between
    started = 0 if previous is None else previous.index + 1
    seconds = 0.0  # the upcoming optimised frame's time, measured when it is made
    on_progress(FrameProgress(started, plan.n_frames, None))

    for index in range(started, plan.n_frames):
        if upcoming is None or upcoming.index < index:
            following = next(i for i in optimised if i >= index)
            clock = time.perf_counter()
            upcoming = engine.anchor(following, plan, previous, first_frame)
            seconds = time.perf_counter() - clock
        if index < upcoming.index:
            clock = time.perf_counter()
            assert previous is not None  # a frame between has an optimised frame before it
            with torch.no_grad():
                _write_frame(store, index, in_between(plan, previous, upcoming, index))
            record.frames[index] = FrameRecord(None, time.perf_counter() - clock, optimised=False)
            continue
        _write_frame(store, index, upcoming.image)
        store.save_state(index, engine.state(upcoming))
        record.frames[index] = FrameRecord(upcoming.loss, seconds)
        records.write(store, record)
        if previous is not None:
            store.drop_state(previous.index)
        previous = upcoming
        on_progress(FrameProgress(index + 1, plan.n_frames, upcoming.loss))
        if should_stop() and index + 1 < plan.n_frames:
            return RenderResult(index + 1, plan.n_frames, True, record.frames)
    return RenderResult(plan.n_frames, plan.n_frames, False, record.frames)


def _write_frame(store: FrameStore, index: int, image: torch.Tensor) -> None:
    pixels = to_uint8(image)
    atomic_write(
        store.frame_path(index),
        lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"),
    )
