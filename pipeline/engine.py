"""The VQGAN+CLIP frame loop: every frame starts from the previous one, warped by the plan's
motion, and its VQGAN latents are optimised until CLIP sees the frame's prompts in it.

Per frame (DESIGN.md, "Engine per frame"):
  1. frame 0 or a cut: latents from random codebook entries, optimised `first_steps` steps;
  2. otherwise: the previous frame's image, warped by zoom/rotate/pan, encoded to latents,
     optimised `steps` steps;
  3. one step: quantise (straight-through) → decode → cutouts → CLIP → weighted spherical
     distance to the prompts (negative weights push away) → backward → Adam → clamp.
Text embeddings are computed once per distinct prompt. Each frame's randomness comes from
its own generator seeded by (seed, frame), so a resumed render repeats an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.schedule import FramePlan, Plan
from pipeline.store import (
    FrameRecord,
    FrameStore,
    Manifest,
    RenderChangedError,
    atomic_write,
    describe_changes,
    digest,
    first_changed_frame,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    width: int
    height: int
    steps: int
    first_steps: int
    cuts: int
    lr: float
    seed: int
    device: str = "cpu"


# --- the image operations ----------------------------------------------------------------


def warp(image: torch.Tensor, zoom: float, rotate: float, pan_x: float, pan_y: float):
    """Move the picture: zoom about the centre (>1 magnifies), rotate by `rotate` degrees
    counter-clockwise, and shift by (pan_x, pan_y) pixels (right and down); reflected borders.
    """
    _, _, height, width = image.shape
    angle = math.radians(rotate)
    cos, sin = math.cos(angle), math.sin(angle)
    # The forward map in centred pixel coordinates (y down): dest = zoom * R @ src + pan.
    # affine_grid wants the inverse, from output to input, in normalised coordinates.
    forward = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64) * zoom
    inverse = torch.linalg.inv(forward)
    to_pixels = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
    to_normal = torch.linalg.inv(to_pixels)
    linear = to_normal @ inverse @ to_pixels
    shift = -(to_normal @ inverse @ torch.tensor([pan_x, pan_y], dtype=torch.float64))
    theta = torch.cat([linear, shift[:, None]], dim=1)[None].to(image)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(
        image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def make_cutouts(
    image: torch.Tensor, cuts: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """`cuts` views of the image at CLIP's input size, in one batch.

    A quarter of them show the whole frame (letterboxed, so CLIP sees the full height of a
    9:16 canvas); the rest are square crops from anywhere in the frame, 35-100% of its
    width. Half are flipped and each gets a little noise, so the image can't please CLIP
    with one pixel-exact pattern.
    """
    _, channels, height, width = image.shape
    n_whole = max(1, cuts // 4)
    n_crops = cuts - n_whole

    whole_width = max(1, round(size * width / height))
    whole = F.interpolate(
        image, size=(size, whole_width), mode="bilinear", antialias=True, align_corners=False
    )
    left = (size - whole_width) // 2
    whole = F.pad(whole, (left, size - whole_width - left, 0, 0), value=0.5)
    views = [whole.expand(n_whole, -1, -1, -1)]

    if n_crops:
        rand = torch.rand(n_crops, 3, generator=generator)
        side = min(width, height) * (0.35 + 0.65 * rand[:, 0])
        scale_x, scale_y = side / width, side / height
        centre_x = (rand[:, 1] * 2 - 1) * (1 - scale_x)
        centre_y = (rand[:, 2] * 2 - 1) * (1 - scale_y)
        zeros = torch.zeros(n_crops)
        theta = torch.stack(
            [
                torch.stack([scale_x, zeros, centre_x], dim=1),
                torch.stack([zeros, scale_y, centre_y], dim=1),
            ],
            dim=1,
        ).to(image)
        grids = F.affine_grid(theta, [n_crops, channels, size, size], align_corners=False)
        # One sampling call for all crops: stack their grids vertically.
        stacked = grids.reshape(1, n_crops * size, size, 2)
        crops = F.grid_sample(
            image, stacked, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        views.append(crops.reshape(channels, n_crops, size, size).transpose(0, 1))

    batch = torch.cat(views)
    flip = (torch.rand(cuts, generator=generator) < 0.5).to(image.device)
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    noise_scale = (torch.rand(cuts, 1, 1, 1, generator=generator) * 0.1).to(image)
    noise = torch.randn(batch.shape, generator=generator).to(image)
    return (batch + noise * noise_scale).clamp(0, 1)


def spherical_distance(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between unit vectors: (N, D) x (P, D) → (N, P)."""
    chord = (images[:, None, :] - texts[None, :, :]).norm(dim=-1)
    return (chord / 2).clamp(max=1).arcsin().pow(2).mul(2)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) image in [0, 1] as an (H, W, 3) uint8 array."""
    array = image[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


# --- the engine ----------------------------------------------------------------------------


class Engine:
    """VQGAN + CLIP, loaded once, and the operations a frame is made of."""

    def __init__(self, vqgan, clip, settings: EngineSettings):
        self.vqgan = vqgan
        self.clip = clip
        self.settings = settings
        self.device = torch.device(settings.device)
        codebook = vqgan.codebook
        # Latents are kept inside the codebook's range, per channel.
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.latent_shape = (
            codebook.shape[1],
            settings.height // vqgan.downsample,
            settings.width // vqgan.downsample,
        )
        self.embeddings: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str]) -> None:
        """Compute the text embeddings not yet known (each prompt text once per render)."""
        missing = [text for text in texts if text not in self.embeddings]
        if missing:
            with torch.no_grad():
                vectors = self.clip.encode_text(missing)
            self.embeddings.update(zip(missing, vectors, strict=True))

    def random_latent(self, generator: torch.Generator) -> torch.Tensor:
        codebook = self.vqgan.codebook
        channels, rows, cols = self.latent_shape
        indices = torch.randint(codebook.shape[0], (rows * cols,), generator=generator)
        z = codebook[indices.to(codebook.device)].reshape(1, rows, cols, channels)
        return z.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def image_to_latent(self, image: torch.Tensor) -> torch.Tensor:
        return self.vqgan.encode(image * 2 - 1)

    def latent_to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (quantised with a straight-through gradient) to an image in [0, 1]."""
        return self.vqgan.decode(self.vqgan.quantize_st(z)).add(1).div(2).clamp(0, 1)

    def loss(
        self,
        image: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        cutouts = make_cutouts(image, self.settings.cuts, self.clip.input_resolution, generator)
        distances = spherical_distance(self.clip.encode_image(cutouts), targets)
        return (distances.mean(dim=0) * weights).sum()

    def targets(self, prompts: tuple[tuple[str, float], ...]):
        self.embed([text for text, _ in prompts])
        targets = torch.stack([self.embeddings[text] for text, _ in prompts])
        weights = torch.tensor([w for _, w in prompts], device=targets.device)
        return targets, weights

    def optimise(
        self,
        z: torch.Tensor,
        prompts: tuple[tuple[str, float], ...],
        steps: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, float | None]:
        """Adam on the latents for `steps` steps; returns them and the last step's loss."""
        if steps == 0 or not prompts:
            return z, None
        targets, weights = self.targets(prompts)
        z = z.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=self.settings.lr)
        loss_value = None
        for _ in range(steps):
            optimiser.zero_grad(set_to_none=True)
            loss = self.loss(self.latent_to_image(z), targets, weights, generator)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, self.z_max), self.z_min))
            loss_value = loss.item()
        return z.detach(), loss_value

    def frame(
        self, plan: FramePlan, previous: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Make one frame: (its latents, its image in [0, 1], the loss)."""
        if previous is None or plan.cut:
            z = self.random_latent(generator)
            steps = self.settings.first_steps
        else:
            moved = warp(previous, plan.zoom, plan.rotate, plan.pan_x, plan.pan_y)
            z = self.image_to_latent(moved)
            steps = self.settings.steps
        z, loss = self.optimise(z, plan.prompts, steps, generator)
        with torch.no_grad():
            image = self.latent_to_image(z)
        return z, image, loss


def frame_generator(seed: int, frame: int) -> torch.Generator:
    """Each frame's own random stream: the same for a resumed and an uninterrupted render."""
    return torch.Generator().manual_seed((seed * 1_000_003 + frame) % (2**63))


# --- the render loop -----------------------------------------------------------------------


@dataclass
class RenderResult:
    frames_done: int
    frames_total: int
    stopped: bool
    records: dict[int, FrameRecord]


def _state_path(store: FrameStore, frame: int):
    return store.frames_dir / f"state-{frame:06d}.pt"


def _save_state(store: FrameStore, frame: int, z: torch.Tensor) -> None:
    atomic_write(_state_path(store, frame), lambda tmp: torch.save({"frame": frame, "z": z}, tmp))


def _load_state(store: FrameStore, frame: int, device: torch.device) -> torch.Tensor | None:
    path = _state_path(store, frame)
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    return state["z"] if state.get("frame") == frame else None


def _resume_point(
    store: FrameStore, manifest: Manifest, fresh: bool, folder_name: str
) -> tuple[int, dict[int, FrameRecord]]:
    """How many frames are already finished, checking they were made the same way."""
    old = store.read_manifest()
    if fresh or old is None:
        if not fresh and any(store.frames_dir.glob("*.png")):
            raise RenderChangedError(
                f"{store.frames_dir} holds frames without a manifest; render with --fresh to "
                "replace them, or -o to render elsewhere"
            )
        store.clear()
        return 0, {}
    changes = describe_changes(old.settings, manifest.settings)
    if changes:
        raise RenderChangedError(
            f"the frames in {store.frames_dir} were rendered with other settings:\n  "
            + "\n  ".join(changes)
            + f"\nrun again with --fresh to start {folder_name} over (its frames are replaced), "
            "or render to another folder with -o"
        )
    done = store.finished_frames(old)
    changed = first_changed_frame(old.frame_digests, manifest.frame_digests)
    if changed is not None and changed < done:
        raise RenderChangedError(
            f"the storyboard changed at frame {changed}, which is already rendered "
            f"({done} frames are done); run again with --fresh to re-render {folder_name}"
        )
    return done, {i: r for i, r in old.records.items() if i < done}


def render_frames(
    plan: Plan,
    engine: Engine,
    store: FrameStore,
    *,
    describe: dict | None = None,
    fresh: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = True,
) -> RenderResult:
    """Render every frame of the plan into the store, continuing after finished frames."""
    from tqdm import tqdm

    settings = {**asdict(engine.settings), **(describe or {})}
    manifest = Manifest(settings, [digest(fp.to_json()) for fp in plan.frames])
    done, records = _resume_point(store, manifest, fresh, store.folder.name)
    manifest.records = records
    store.frames_dir.mkdir(parents=True, exist_ok=True)

    previous = None
    if done > 0:
        z = _load_state(store, done - 1, engine.device)
        if z is None:
            log.warning("no saved state for frame %d; rendering it again", done - 1)
            done -= 1
            manifest.records.pop(done, None)
            z = _load_state(store, done - 1, engine.device) if done > 0 else None
            if done > 0 and z is None:
                raise RenderChangedError(
                    f"cannot continue: the engine state in {store.frames_dir} is missing; "
                    "run again with --fresh"
                )
        if z is not None:
            with torch.no_grad():
                previous = engine.latent_to_image(z)
        log.info("continuing after frame %d of %d", done - 1, plan.n_frames)
    store.write_manifest(manifest)
    engine.embed(plan.prompt_texts)

    bar = tqdm(total=plan.n_frames, initial=done, unit="frame", disable=not progress, desc="frames")
    stopped = False
    try:
        for index in range(done, plan.n_frames):
            started = time.perf_counter()
            z, image, loss = engine.frame(
                plan.frames[index], previous, frame_generator(engine.settings.seed, index)
            )
            pixels = to_uint8(image)
            atomic_write(
                store.frame_path(index),
                lambda tmp, pixels=pixels: Image.fromarray(pixels).save(tmp, format="PNG"),
            )
            _save_state(store, index, z)
            manifest.records[index] = FrameRecord(loss, time.perf_counter() - started)
            store.write_manifest(manifest)
            if index > 0:
                _state_path(store, index - 1).unlink(missing_ok=True)
            previous = image
            done = index + 1
            bar.update(1)
            if loss is not None:
                bar.set_postfix(loss=f"{loss:.3f}")
            if should_stop() and done < plan.n_frames:
                stopped = True
                break
    finally:
        bar.close()
    return RenderResult(done, plan.n_frames, stopped, manifest.records)
