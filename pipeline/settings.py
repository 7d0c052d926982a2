"""The engine's settings: what a render computes (`EngineSettings`, from the storyboard's
`render:` block), how fast (`Speed`: the options that change its pictures), and how
(`Execution`: the options that change only its time and memory, and the last bits). A render's
record keeps all three (`EngineSettings.record`, pipeline/record.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.schedule import LAG_STEPS, MAX_LEAD, SHARPEN

if TYPE_CHECKING:
    from pipeline.storyboard import RenderSettings


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
    the one it chose in its record and continues under that one, so that a resumed render
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
        """The execution a render's record keeps (`EngineSettings.record`)."""
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
        own key, as a render's record keeps them (pipeline/record.py)."""
        flat = {
            key: value for key, value in asdict(self).items() if key not in ("speed", "execution")
        }
        return {**flat, **asdict(self.speed), "aim": AIM, "execution": asdict(self.execution)}


# How the engine aims ahead of the plan (pipeline.schedule, LAG_STEPS), as a render's record
# keeps it: frames made under another aim are not continued under this one (record.start).
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
