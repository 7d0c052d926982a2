"""The VQGAN+CLIP frame loop: every frame starts from the previous one, warped by the plan's
motion, and its VQGAN latents are optimised until CLIP sees the frame's prompts in it.

Per frame (DESIGN.md, "Engine per frame"):
  1. frame 0 or a cut: latents from random codebook entries, optimised `first_steps` steps;
  2. otherwise: the previous frame's image, warped by zoom/rotate/pan, encoded to latents,
     optimised `steps` steps (for a VQGAN that cannot hold a move smaller than a latent
     cell, the move is held over the latents until it reaches a few cells: Engine.move);
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
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from pipeline.schedule import LAG_STEPS, MAX_LEAD, SHARPEN, FramePlan, Plan
from pipeline.store import (
    FrameRecord,
    FrameStore,
    Manifest,
    atomic_write,
)
from pipeline.storyboard import IMAGE_PROMPT

if TYPE_CHECKING:
    from pipeline.storyboard import RenderSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speed:
    """The engine's speed options (issue 6). `Speed()` is the classic loop every peer runs:
    every frame optimised, fp32, the picture warped and encoded. (Every optimised frame starts
    a fresh Adam: Adam's moments carried from frame to frame made the picture follow a new
    prompt later and sped nothing up; bench/RESULTS.md, "Keyframes on time".)"""

    cadence: int = 1  # optimise every k-th frame; warp and blend the frames between
    bf16: bool = False  # run the VQGAN (encoder and decoder) under bfloat16 autocast
    latent_warp: bool = False  # move the latents instead of decode → warp → encode

    @classmethod
    def fast(cls, device: str, cadence: int) -> Speed:
        """What a render uses unless told otherwise: what measurably helps here."""
        return cls(cadence=cadence, bf16=bf16_helps(device))


CLASSIC = Speed()


@dataclass(frozen=True)
class Execution:
    """How the engine computes a step: choices that change its time and memory, and its
    pictures only in the last bits of a float (as another CPU's kernels do). A render records
    the one it chose in its manifest and continues under that one, so that a resumed render
    makes the frames an uninterrupted one would. `Execution()` is the classic loop's: taming's
    own decoder forward, every cutout through CLIP at once."""

    lean_decoder: bool = False  # decode through models.vqgan.lean_decode
    channels_last: bool = False  # both models and their inputs in NHWC
    compile: bool = False  # the decoder's pass through torch.compile (a minute's first step)
    checkpoint: bool = False  # decoder blocks keep only their inputs, run again in backward
    cut_batch: int = 0  # cutouts through CLIP at once, a backward after each batch; 0: all

    @classmethod
    def fast(cls, device: str, speed: Speed, vqgan: Any = None) -> Execution:
        """What measurably helps (bench/RESULTS.md, "Speed and memory"): the lean decoder
        everywhere; channels_last on a CPU whose VQGAN runs in bf16 and is full-width (128
        channels at the top, as every downloaded one; `vqgan` None: assumed so). There a
        step took 0.73x; in fp32 0.97x for 0.2 GiB more, with the 32-channel shapes VQGAN
        twice as long; not yet measured on a GPU."""
        wide = vqgan is None or vqgan.decoder.conv_out.in_channels >= 128
        return cls(
            lean_decoder=True, channels_last=device.startswith("cpu") and speed.bf16 and wide
        )

    def describe(self) -> str:
        parts = [
            "lean decoder" if self.lean_decoder else "taming's decoder",
            "channels_last" if self.channels_last else "",
            "compiled" if self.compile else "",
            "checkpointed" if self.checkpoint else "",
            f"cutouts {self.cut_batch} at a time" if self.cut_batch else "",
        ]
        return ", ".join(part for part in parts if part)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Execution:
        """The execution a manifest records (`EngineSettings.record`)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})


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
    speed: Speed = CLASSIC
    color_coherence: str = "off"  # "lab", "rgb": match colours to the shot's first frame
    # Latent cells the camera may move the shown picture before it is encoded again
    # (Engine.move); None: as the VQGAN's registry entry says (0 for every downloaded one).
    camera_hold: int | None = None
    execution: Execution = Execution()

    @classmethod
    def for_render(
        cls,
        render: RenderSettings,
        seed: int,
        device: str = "cpu",
        speed: Speed = CLASSIC,
        execution: Execution | None = None,
    ) -> EngineSettings:
        """A storyboard's `render:` block as engine settings, with these speed options."""
        return cls(
            width=render.width,
            height=render.height,
            steps=render.steps,
            first_steps=render.first_steps,
            cuts=render.cuts,
            lr=render.lr,
            seed=seed,
            device=device,
            speed=speed,
            color_coherence=render.color_coherence,
            execution=execution or Execution(),
        )

    def record(self) -> dict[str, Any]:
        """The settings as one flat dict, speed options included, the execution under its
        own key (a render's manifest). Colour coherence and the camera hold are left out when
        off, as manifests from before them have them."""
        flat = {
            key: value for key, value in asdict(self).items() if key not in ("speed", "execution")
        }
        if self.color_coherence == "off":
            del flat["color_coherence"]
        if not self.camera_hold:
            del flat["camera_hold"]
        return {**flat, **asdict(self.speed), "aim": AIM, "execution": asdict(self.execution)}


# How the engine aims ahead of the plan (pipeline.schedule, LAG_STEPS), as a manifest records
# it: frames made under another aim are not continued under this one (store.FrameStore).
AIM = {"lag_steps": LAG_STEPS, "sharpen": SHARPEN, "max_lead": MAX_LEAD}


def bf16_helps(device: str) -> bool:
    """Whether a bf16 VQGAN is faster here: on CPUs with native bf16 (AVX-512 BF16 or AMX).

    Not on CUDA: on an H100 the decoder's fp32 convolutions already run on TF32 tensor
    cores, and bf16 autocast made a step slower (bench/RESULTS.md).
    """
    if not device.startswith("cpu"):
        return False
    if hasattr(torch.cpu, "get_capabilities"):
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    # torch before 2.11 does not say; Linux's flags do (elsewhere: assume not, as fp32 is safe).
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# --- the image operations ----------------------------------------------------------------


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


def match_colours(image: torch.Tensor, reference: torch.Tensor, space: str) -> torch.Tensor:
    """`image` with each channel's distribution made the reference's (histogram matching, as
    Deforum's colour coherence does), in Lab or RGB; both (1, 3, H, W) in [0, 1]."""
    source, target = image, reference
    if space == "lab":
        source, target = rgb_to_lab(image), rgb_to_lab(reference)
    flat, wanted = source.flatten(2), target.flatten(2)
    ranks = flat.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    quantiles = ranks.to(torch.float64) * (wanted.shape[-1] - 1) / max(flat.shape[-1] - 1, 1)
    matched = wanted.sort(dim=-1, stable=True).values.gather(-1, quantiles.round().long())
    matched = matched.reshape(source.shape)
    return (lab_to_rgb(matched) if space == "lab" else matched).clamp(0, 1)


_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)  # fmt: skip
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_DELTA = 6 / 29


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N, 3, H, W) → CIE Lab (D65), same layout."""
    linear = torch.where(image <= 0.04045, image / 12.92, ((image + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(image), linear)
    xyz = xyz / _WHITE.to(image)[None, :, None, None]
    f = torch.where(
        xyz > _DELTA**3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29
    )
    return torch.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1
    )


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) (N, 3, H, W) → sRGB in [0, 1] (out-of-gamut colours clipped)."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], 1)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29))
    xyz = xyz * _WHITE.to(lab)[None, :, None, None]
    linear = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab), xyz).clamp(0, 1)
    return torch.where(
        linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp(min=1e-12) ** (1 / 2.4) - 0.055
    )


def warp(image: torch.Tensor, zoom: float, rotate: float, pan_x: float, pan_y: float):
    """Move the picture by one frame's zoom, rotation and pan (see `motion`)."""
    return warp_by(image, motion(zoom, rotate, pan_x, pan_y))


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
        rand = torch.rand(n_crops, 3, generator=generator, device=image.device)
        side = min(width, height) * (0.35 + 0.65 * rand[:, 0])
        scale_x, scale_y = side / width, side / height
        centre_x = (rand[:, 1] * 2 - 1) * (1 - scale_x)
        centre_y = (rand[:, 2] * 2 - 1) * (1 - scale_y)
        zeros = torch.zeros_like(scale_x)
        theta = torch.stack(
            [
                torch.stack([scale_x, zeros, centre_x], dim=1),
                torch.stack([zeros, scale_y, centre_y], dim=1),
            ],
            dim=1,
        ).to(image.dtype)
        grids = F.affine_grid(theta, [n_crops, channels, size, size], align_corners=False)
        # One sampling call for all crops: stack their grids vertically.
        stacked = grids.reshape(1, n_crops * size, size, 2)
        crops = F.grid_sample(
            image, stacked, mode="bilinear", padding_mode="reflection", align_corners=False
        )
        views.append(crops.reshape(channels, n_crops, size, size).transpose(0, 1))

    batch = torch.cat(views)
    # All random numbers are drawn on the image's device: no copies between host and GPU.
    flip = torch.rand(cuts, generator=generator, device=image.device) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    noise_scale = torch.rand(cuts, 1, 1, 1, generator=generator, device=image.device) * 0.1
    noise = torch.randn(batch.shape, generator=generator, device=image.device)
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


@dataclass(frozen=True)
class Pull:
    """What keeps a shot's first frame near the picture it starts from: the loss gains
    `strength` x the mean squared distance of the latents from the picture's (the same at
    every step; 1 holds the picture's layout and colours through a prompt pulling away)."""

    z: torch.Tensor
    strength: float

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        return self.strength * F.mse_loss(z, self.z)


def fit_picture(path: Path, width: int, height: int, device: torch.device) -> torch.Tensor:
    """A picture as a (1, 3, height, width) image in [0, 1]: the largest centred part with
    the canvas's aspect (a cover crop), resized to the canvas."""
    with Image.open(path) as opened:
        # A phone photo's pixels are stored sideways, with the turn in its EXIF data.
        picture = ImageOps.exif_transpose(opened).convert("RGB")
    scale = max(width / picture.width, height / picture.height)
    crop_w, crop_h = width / scale, height / scale
    left, top = (picture.width - crop_w) / 2, (picture.height - crop_h) / 2
    picture = picture.resize(
        (width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h)
    )
    pixels = torch.from_numpy(np.asarray(picture).copy()).to(device)
    return pixels.permute(2, 0, 1)[None].float().div(255)


@dataclass
class Guide:
    """One CLIP the loss listens to: its weight in the sum, and the prompts' embeddings in
    its space (shared by guides that are the same model)."""

    model: Any
    weight: float = 1.0
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)


def guides(clip: Any) -> tuple[Guide, ...]:
    """A CLIP model, or a sequence of (CLIP model, weight), as guides; a model listed twice
    computes each embedding once."""
    pairs = [(clip, 1.0)] if hasattr(clip, "encode_image") else list(clip)
    if not pairs:
        raise ValueError("the engine needs at least one CLIP")
    shared: dict[int, dict[str, torch.Tensor]] = {}
    return tuple(
        Guide(model, float(weight), shared.setdefault(id(model), {})) for model, weight in pairs
    )


class Optimised(NamedTuple):
    """What `Engine.optimise` returns."""

    z: torch.Tensor
    loss: float | None  # the last step's loss
    adam: dict[str, torch.Tensor] | None  # Adam's moments after the last step


class Engine:
    """VQGAN + CLIP, loaded once, and the operations a frame is made of."""

    def __init__(self, vqgan, clip, settings: EngineSettings):
        """`clip`: one CLIP model, or (CLIP model, weight) pairs whose losses are summed."""
        self.vqgan = vqgan
        self.guides = guides(clip)
        self.clip = self.guides[0].model  # the first CLIP (the only one, usually)
        if settings.camera_hold is None:
            settings = replace(settings, camera_hold=getattr(vqgan, "camera_hold", 0))
        self.settings = settings
        self.speed = settings.speed
        self.execution = settings.execution
        self.device = torch.device(settings.device)
        self.decode = self._decoder()
        codebook = vqgan.codebook
        # Latents are kept inside the codebook's range, per channel.
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.latent_shape = (
            codebook.shape[1],
            settings.height // vqgan.downsample,
            settings.width // vqgan.downsample,
        )
        self.images: dict[str, Path] = {}  # the pictures `image: PATH` prompts name
        # The first frame of the shot being made, whose colours the others are matched to.
        self.reference: torch.Tensor | None = None

    def _decoder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The VQGAN's decode as this engine's execution asks: the models laid out in memory
        (the engine owns their layout: a classic engine on the same models lays them back),
        the lean pass, checkpointing, compilation."""
        layout = torch.channels_last if self.execution.channels_last else torch.contiguous_format
        for model in (self.vqgan, *(guide.model for guide in self.guides)):
            if isinstance(model, torch.nn.Module):
                model.to(memory_format=layout)
        lean, checkpoint = self.execution.lean_decoder, self.execution.checkpoint
        vqgan = self.vqgan

        def decode(z_q: torch.Tensor) -> torch.Tensor:
            return vqgan.decode(z_q, lean=lean, checkpoint=checkpoint)

        if self.execution.compile:
            return torch.compile(decode, dynamic=False)
        return decode

    def layout(self, image: torch.Tensor) -> torch.Tensor:
        """`image` in the memory layout the models are in."""
        if self.execution.channels_last and image.dim() == 4:
            return image.contiguous(memory_format=torch.channels_last)
        return image

    def vqgan_precision(self):
        """The context the VQGAN runs in: bf16 autocast when the speed options ask for it.
        Only around the VQGAN: the nearest-code search and CLIP stay in fp32, where bf16
        gained nothing and would blur the distances the loss is made of."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.bf16)

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
            words = [text for text in missing if not text.startswith(IMAGE_PROMPT)]
            if words:
                with torch.no_grad():
                    vectors = guide.model.encode_text(words)
                guide.embeddings.update(zip(words, vectors, strict=True))
            for name in missing:
                if name.startswith(IMAGE_PROMPT):
                    guide.embeddings[name] = self.embed_picture(self.images[name], guide.model)

    @torch.no_grad()
    def embed_picture(self, path: Path, clip: Any = None) -> torch.Tensor:
        """What a CLIP (default: the first) sees in a picture: fitted to the canvas and cut
        out as the frames are (with the render's seed), each cutout's embedding averaged, as
        a unit vector."""
        clip = clip or self.clip
        picture = fit_picture(path, self.settings.width, self.settings.height, self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.settings.seed)
        cutouts = make_cutouts(picture, self.settings.cuts, clip.input_resolution, generator)
        vectors = F.normalize(clip.encode_image(cutouts).float(), dim=-1)
        return F.normalize(vectors.mean(dim=0), dim=-1)

    def start_from(self, path: Path) -> torch.Tensor:
        """The latents of a picture a shot starts from, fitted to the canvas."""
        picture = fit_picture(path, self.settings.width, self.settings.height, self.device)
        return self.image_to_latent(picture)

    def random_latent(self, generator: torch.Generator) -> torch.Tensor:
        codebook = self.vqgan.codebook
        channels, rows, cols = self.latent_shape
        indices = torch.randint(
            codebook.shape[0], (rows * cols,), generator=generator, device=generator.device
        )
        z = codebook[indices.to(codebook.device)].reshape(1, rows, cols, channels)
        return z.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def image_to_latent(self, image: torch.Tensor) -> torch.Tensor:
        with self.vqgan_precision():
            return self.vqgan.encode(self.layout(image * 2 - 1)).float().contiguous()

    def latent_to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (quantised with a straight-through gradient) to an image in [0, 1]."""
        z_q = self.layout(self.vqgan.quantize_st(z))
        with self.vqgan_precision():
            image = self.decode(z_q)
        return image.float().add(1).div(2).clamp(0, 1).contiguous()

    def shown(self, z: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
        """The picture a frame shows: its latents decoded, moved by the held camera."""
        image = self.latent_to_image(z)
        return image if held is None else warp_by(image, held)

    def loss(
        self,
        image: torch.Tensor,
        targets: Sequence[torch.Tensor],
        weights: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return self.clip_loss(self.cutouts(image, generator), targets, weights)

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
        """The prompts' weighted spherical distance from what each CLIP sees in its cutouts,
        averaged over the cutouts (negative weights push away), summed over the CLIPs by
        their weights."""
        total = None
        for guide, views, aims in zip(self.guides, cutouts, targets, strict=True):
            loss = _guide_loss(guide, views, aims, weights, len(views))
            total = loss if total is None else total + loss
        assert total is not None
        return total

    def batched_backward(
        self,
        image: torch.Tensor,
        targets: Sequence[torch.Tensor],
        weights: torch.Tensor,
        generator: torch.Generator,
    ) -> float:
        """The loss's backward with the cutouts through CLIP `cut_batch` at a time, each
        batch's backward before the next batch's forward, so CLIP keeps one batch's
        activations rather than all of them; the same gradient as `loss(...).backward()`
        (up to the order of a float sum). The loss."""
        views = self.cutouts(image, generator)
        leaves = [view.detach().requires_grad_(True) for view in views]
        batch, total = self.execution.cut_batch, 0.0
        for guide, leaf, aims in zip(self.guides, leaves, targets, strict=True):
            for start in range(0, len(leaf), batch):
                part = _guide_loss(guide, leaf[start : start + batch], aims, weights, len(leaf))
                part.backward()
                total += part.item()
        torch.autograd.backward(views, [leaf.grad for leaf in leaves])
        return total

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
            value = self.batched_backward(image, targets, weights, generator)
            if pull is not None:
                held_back = pull.loss(z)
                held_back.backward()
                value += held_back.item()
        else:
            loss = self.loss(image, targets, weights, generator)
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
            cells = reach(matrix, self.settings.width, self.settings.height)
            if 0 < cells < self.settings.camera_hold * self.vqgan.downsample:
                matrix, held = torch.eye(3, dtype=torch.float64), matrix
        if self.speed.latent_warp:
            if held is not None:
                return previous.z, held
            return warp_by(previous.z, matrix, (self.settings.width, self.settings.height)), held
        moved = source if held is not None else warp_by(source, matrix)
        if self.settings.color_coherence != "off" and self.reference is not None:
            moved = match_colours(moved, self.reference, self.settings.color_coherence)
        return self.image_to_latent(moved), held

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
        else:
            z, held = self.move(previous, camera_path(plan, previous.index, index))
            steps = self.settings.steps
        aim = plan.engine_aim(index, self.settings.record())
        result = self.optimise(z, aim, steps, generator, None, pull, held)
        with torch.no_grad():
            image = self.shown(result.z, held)
        if previous is None or frame.cut:  # as saved, so that a resume matches to the same
            self.reference = image.mul(255).round().div(255)
        return Anchor(index, result.z, image, result.loss, held)

    def state(self, anchor: Anchor) -> dict[str, Any]:
        """What the frame store saves to continue after `anchor`."""
        state = {"z": anchor.z}
        if anchor.held is not None:
            state["held"] = anchor.held
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
        return Anchor(index, state["z"], image, held=held)


def _guide_loss(
    guide: Guide, views: torch.Tensor, aims: torch.Tensor, weights: torch.Tensor, cuts: int
) -> torch.Tensor:
    """One CLIP's share of the loss from `views`, some of its `cuts` cutouts: the prompts'
    weighted spherical distance, summed over these views and divided by all of them."""
    distances = spherical_distance(guide.model.encode_image(views), aims)
    mean = distances.mean(dim=0) if len(views) == cuts else distances.sum(dim=0) / cuts
    loss = (mean * weights).sum()
    return loss * guide.weight if guide.weight != 1 else loss


def camera_path(plan: Plan, start: int, end: int) -> torch.Tensor:
    """The camera's move from frame `start` to frame `end`: each frame's motion in turn."""
    matrix = torch.eye(3, dtype=torch.float64)
    for index in range(start + 1, end + 1):
        matrix = frame_motion(plan.frames[index]) @ matrix
    return matrix


def in_between(plan: Plan, a: Anchor, b: Anchor, index: int) -> torch.Tensor:
    """A frame between two optimised ones: `a` moved forward and `b` moved back by the
    plan's own motion (so the warps are exact), blended by how near each one is."""
    forward = warp_by(a.image, camera_path(plan, a.index, index))
    backward = warp_by(b.image, torch.linalg.inv(camera_path(plan, index, b.index)))
    weight = (index - a.index) / (b.index - a.index)
    return forward * (1 - weight) + backward * weight


def anchor_frames(plan: Plan, cadence: int) -> list[int]:
    """The frames that are optimised: every `cadence`-th frame from the start and from each
    cut, and the last frame before each cut and of the video, so every other frame lies
    between two optimised frames of the same shot."""
    starts = [0] + [fp.frame for fp in plan.frames if fp.cut]
    ends = starts[1:] + [plan.n_frames]
    anchors: set[int] = set()
    for start, end in zip(starts, ends, strict=True):
        anchors.update(range(start, end, cadence))
        anchors.add(end - 1)
    return sorted(anchors)


def frame_generator(seed: int, frame: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Each frame's own random stream, on the engine's device: the same for a resumed and an
    uninterrupted render on that device."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + frame) % (2**63))


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

    For each frame: optimise it (every `cadence`-th frame, see anchor_frames), or make it
    between the optimised frames before and after it. An optimised frame is written after
    the frames between it and the one before, with its state, so that the frames on disk
    always run without a gap from frame 0 and a render can resume from them.
    """
    settings = {**engine.settings.record(), **(describe or {})}
    manifest = Manifest(settings, plan.recorded(settings))
    state = store.start(manifest, fresh, engine.device)
    engine.embed(plan.prompt_texts, dict(plan.images))
    optimised = anchor_frames(plan, engine.speed.cadence)
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
            manifest.records[index] = FrameRecord(
                None, time.perf_counter() - clock, optimised=False
            )
            continue
        _write_frame(store, index, upcoming.image)
        store.save_state(index, engine.state(upcoming))
        manifest.records[index] = FrameRecord(upcoming.loss, seconds)
        store.write_manifest(manifest)
        if previous is not None:
            store.drop_state(previous.index)
        previous = upcoming
        on_progress(FrameProgress(index + 1, plan.n_frames, upcoming.loss))
        if should_stop() and index + 1 < plan.n_frames:
            return RenderResult(index + 1, plan.n_frames, True, manifest.records)
    return RenderResult(plan.n_frames, plan.n_frames, False, manifest.records)


def _write_frame(store: FrameStore, index: int, image: torch.Tensor) -> None:
    pixels = to_uint8(image)
    atomic_write(
        store.frame_path(index),
        lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"),
    )
