"""How much memory an optimisation step needs, and the execution that fits the device.

A step keeps, for its backward, what the decoder and each CLIP save in their forward. Those
bytes are counted, not guessed: the engine's own decode and CLIP run on a small grid of
latents and on one cutout under torch's saved-tensor hooks, and the decoder's count grows
with the canvas's latent cells. When the step would not fit the device's free memory, the
cutouts go through CLIP in smaller batches, then the decoder's blocks are checkpointed
(Execution.cut_batch, Execution.checkpoint): each trades time for memory (bench/RESULTS.md,
"Speed and memory"). The 3D camera's depth estimate is not added: it runs after a frame's
steps, once their saved tensors are freed, and needs far less than a step (about 0.3 GiB at
9:16 canvases from 144x256 to 576x1024, measured on a CPU: bench/depth_memory.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from pipeline.engine import Engine
    from pipeline.settings import Execution

GIB = 2**30
# The backward's own buffers (each activation's gradient, convolution workspaces, a
# checkpointed block run again) and the allocator's slack, over the bytes the forward keeps:
# a share of those bytes, and some of the largest activation (the decoder's last level).
# Set so that the estimate is at or above the growth in resident memory that every engine's
# step measured on a CPU at 288x512, 432x768 and 576x1024 (bench/RESULTS.md).
SLACK = 1.25
WORKING_ACTIVATIONS = 20
HEADROOM = 0.9  # of the free memory, the share a step may plan to use


@dataclass(frozen=True)
class Need:
    """Bytes one step keeps for its backward: the decoder's at the engine's canvas (and with
    its blocks checkpointed), CLIP's per cutout (summed over the CLIPs), and the largest
    single activation."""

    decoder: int
    checkpointed: int
    clip_per_cut: int
    largest: int

    def total(self, execution: Execution, cuts: int) -> int:
        decoder = self.checkpointed if execution.checkpoint else self.decoder
        batch = min(execution.cut_batch or cuts, cuts)
        kept = decoder + self.clip_per_cut * batch
        return int(SLACK * kept + WORKING_ACTIVATIONS * self.largest)


def saved_bytes(run: Callable[[], object], exclude: set[int]) -> int:
    """Bytes of the distinct tensors `run`'s forward keeps for the backward, leaving out those
    whose storage is in `exclude` (the models' weights)."""
    sizes: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            sizes[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(sizes.values())


def step_need(engine: Engine) -> Need:
    """What a step of this engine keeps, from its decode at 2x2 and 4x4 latent cells (a line
    through the two, at the canvas's cells: every activation but the attention's grows with
    the cells) and one cutout through each CLIP."""
    models = [engine.vqgan, *(guide.model for guide in engine.guides)]
    weights = {p.untyped_storage().data_ptr() for m in models for p in m.parameters()}
    weights |= {b.untyped_storage().data_ptr() for m in models for b in m.buffers()}
    channels, rows, cols = engine.latent_shape

    def decoder_bytes(side: int, checkpoint: bool) -> int:
        z = torch.zeros(1, channels, side, side, device=engine.device, requires_grad=True)

        def decode() -> None:  # as Engine.latent_to_image does, never compiled
            z_q = engine.layout(engine.vqgan.quantize_st(z))
            lean = engine.execution.lean_decoder
            with engine.vqgan_precision():
                engine.vqgan.decode(z_q, lean=lean, checkpoint=checkpoint and lean)

        return saved_bytes(decode, weights)

    def at_canvas(checkpoint: bool) -> int:
        small, large = decoder_bytes(2, checkpoint), decoder_bytes(4, checkpoint)
        return int(small + (large - small) / 12 * (rows * cols - 4))

    clip = 0
    for guide in engine.guides:
        size = guide.model.input_resolution
        view = torch.rand(1, 3, size, size, device=engine.device, requires_grad=True)
        clip += saved_bytes(functools.partial(guide.model.encode_image, view), weights)
    decoder_channels = engine.vqgan.decoder.conv_out.in_channels
    largest = decoder_channels * engine.settings.width * engine.settings.height * 4
    return Need(at_canvas(False), at_canvas(True), clip, largest)


def free_bytes(device: torch.device | str) -> int:
    """Memory free for a step: on a GPU what the driver reports free (the models are loaded
    by then) and what torch holds cached but unused (a studio's or notebook's earlier render
    left it there); on a CPU the kernel's MemAvailable, or what a cgroup limit leaves if
    less."""
    device = torch.device(device)
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + cached
    available = _meminfo("MemAvailable")
    limit, used = _cgroup("memory.max"), _cgroup("memory.current")
    if limit is not None and used is not None:
        available = min(available, max(0, limit - used))
    return available


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/meminfo has no {field}")


def _cgroup(name: str) -> int | None:
    try:
        text = (Path("/sys/fs/cgroup") / name).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class Fitted:
    """The execution chosen, what its step needs, and the free memory it was chosen for."""

    execution: Execution
    need: int
    free: int
    fits: bool
    allowed: bool = False  # `free` is what the user allowed (--memory), not what is free

    @property
    def room(self) -> str:
        """What `free` is, in words."""
        return "allowed (--memory)" if self.allowed else "free"

    def describe(self) -> str:
        line = (
            f"a step needs about {amount(self.need)} of the {amount(self.free)} {self.room} "
            f"({self.execution.describe()})"
        )
        if not self.fits:
            line += (
                "; it may not fit even so: render a smaller canvas (--preview, or width and "
                "height in the storyboard) or fewer cutouts"
            )
        return line


def amount(count: int) -> str:
    """Memory as a person reads it: 0.7 GiB, or 50 MB below a gigabyte."""
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / 1e6:.0f} MB"


def fits(engine: Engine, free: int | None = None) -> Fitted:
    """Whether the engine's own execution fits `free` bytes (default: what the device has
    free now): for a render that goes on under the execution it began with."""
    need = step_need(engine).total(engine.execution, engine.settings.cuts)
    free, allowed = _room(engine, free)
    return Fitted(engine.execution, need, free, need <= HEADROOM * free, allowed)


def _room(engine: Engine, free: int | None) -> tuple[int, bool]:
    """The bytes a step may plan for: those allowed (True), or else what the device has free."""
    return (free_bytes(engine.device), False) if free is None else (free, True)


def fit(engine: Engine, free: int | None = None) -> Fitted:
    """The engine's execution, or the first of these that fits `free` bytes (default: what
    the device has free now): cutouts through CLIP in halves, quarters... of the batch down
    to 4 at a time, then the same with the decoder checkpointed, then 1 at a time."""
    need = step_need(engine)
    free, allowed = _room(engine, free)
    execution, cuts = engine.execution, engine.settings.cuts
    candidates = [execution]
    batch = cuts // 2
    while batch >= 4:
        candidates.append(replace(execution, cut_batch=batch))
        batch //= 2
    if execution.lean_decoder:  # checkpointing is the lean pass's
        candidates.append(replace(candidates[-1], checkpoint=True))
    candidates.append(replace(candidates[-1], cut_batch=1))
    for candidate in candidates:
        if need.total(candidate, cuts) <= HEADROOM * free:
            return Fitted(candidate, need.total(candidate, cuts), free, True, allowed)
    return Fitted(candidates[-1], need.total(candidates[-1], cuts), free, False, allowed)
