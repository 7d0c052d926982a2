"""The 3D camera's depth estimate's memory beside a step's, per canvas, with random full-size
weights (Depth Anything V2 Small; VQGAN f16 16384 + CLIP ViT-B/32).

    python bench/depth_memory.py --sizes 288x512,576x1024 [--cuts 32] [--device cuda]

pipeline.memory fits a render's execution to what one optimisation step needs and does not
add the depth model's forward pass: the engine estimates a frame's depth after its steps,
when what they kept for the backward is gone, so a render's peak is the larger of the two,
not their sum. This measures whether the depth estimate stays below the step: its peak
growth (on a CPU the process's resident size, on a GPU torch's allocation) against
pipeline.memory's estimate for the step at the same canvas. The depth model's weights are
loaded before a render's free memory is measured, so they are counted already.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pipeline import camera3d, memory
from pipeline.bench import machine_info
from pipeline.engine import Engine
from pipeline.models.architectures import DEPTH_ANYTHING_V2_SMALL
from pipeline.models.depth import random_depth
from pipeline.models.loading import load_models
from pipeline.settings import EngineSettings, Execution, Speed
from pipeline.storyboard import parse_size

FULL_MODELS = ("vqgan_imagenet_f16_16384", "ViT-B/32")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def depth_peak(model, width: int, height: int, device: str) -> int:
    """Bytes the depth estimate of one width x height picture adds at its peak."""
    image = torch.rand(1, 3, height, width, device=device)
    with torch.no_grad():
        camera3d.depth_of(model(image))  # once untimed: first-call allocations are not its own
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident size starts again here
        before = _status("VmRSS")
    with torch.no_grad():
        camera3d.depth_of(model(image))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return _status("VmHWM") - before


def step_need(vqgan, clip, width: int, height: int, cuts: int, device: str) -> int:
    """pipeline.memory's estimate of one step at this canvas, under a render's default
    execution (before fitting it to the free memory)."""
    speed = Speed.fast(device, 5)
    settings = EngineSettings(width, height, 1, 1, cuts, 0.1, 0, device, speed,
                              execution=Execution.fast(device, speed, vqgan))  # fmt: skip
    engine = Engine(vqgan, clip, settings)
    return memory.step_need(engine).total(engine.execution, cuts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="288x512,576x1024")
    parser.add_argument("--cuts", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    depth = random_depth(DEPTH_ANYTHING_V2_SMALL).eval().to(args.device)
    weights = sum(p.numel() * p.element_size() for p in depth.parameters())
    vqgan, clip = load_models(*FULL_MODELS, args.device, True)
    rows = []
    for size in args.sizes.split(","):
        width, height = parse_size(size)
        rows.append({
            "size": size,
            "depth_peak_gib": depth_peak(depth, width, height, args.device) / 2**30,
            "step_need_gib": step_need(vqgan, clip, width, height, args.cuts, args.device) / 2**30,
        })  # fmt: skip
    print(json.dumps({"machine": machine_info(args.device), "cuts": args.cuts,
                      "depth_weights_gib": weights / 2**30, "rows": rows}, indent=1))  # fmt: skip
    for row in rows:
        print(f"{row['size']}: depth estimate {row['depth_peak_gib']:.2f} GiB at its peak, "
              f"a step {row['step_need_gib']:.2f} GiB ({args.cuts} cutouts)")  # fmt: skip


if __name__ == "__main__":
    main()
