"""Does the optimisation still converge with the VQGAN under bf16? The loss curve of one
frame's steps, from the same start and the same random cutouts, in fp32 and in bf16.

    python bench/bf16_convergence.py --device cuda --steps 50

Prints both curves (every 5th step), the largest gap between them and the final losses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from pipeline.bench import machine_info
from pipeline.engine import Engine, frame_generator
from pipeline.models.loading import load_models
from pipeline.settings import EngineSettings, Speed
from pipeline.storyboard import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vqgan", default="vqgan_imagenet_f16_16384")
    parser.add_argument("--clip", default="ViT-B/32")
    parser.add_argument("--size", default="288x512")
    parser.add_argument("--cuts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    width, height = parse_size(args.size)
    vqgan, clip = load_models(args.vqgan, args.clip, args.device, random_weights=True)
    settings = EngineSettings(width, height, 1, 1, args.cuts, 0.1, 0, args.device)
    prompts = (("a narrow hallway that keeps stretching", 1.0), ("text, watermark", -1.0))
    curves = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        # Adam's moments travel between the one-step calls, as one long optimisation.
        engine = Engine(vqgan, clip, dataclasses.replace(settings, speed=Speed(bf16=bf16)))
        curves[name] = loss_curve(engine, args.steps, prompts)
    gap = max(abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"], strict=True))
    drop = curves["fp32"][0] - curves["fp32"][-1]
    for step in range(0, args.steps, 5):
        print(f"step {step:3d}  fp32 {curves['fp32'][step]:.4f}  bf16 {curves['bf16'][step]:.4f}")
    print(
        f"final: fp32 {curves['fp32'][-1]:.4f}, bf16 {curves['bf16'][-1]:.4f}; largest gap "
        f"{gap:.4f} = {100 * gap / drop:.1f}% of fp32's drop over the run ({drop:.4f})"
    )
    if args.json:
        report = {"command": " ".join(sys.argv), "machine": machine_info(args.device)}
        Path(args.json).write_text(json.dumps({**report, "curves": curves}, indent=1))


def loss_curve(engine: Engine, steps: int, prompts) -> list[float]:
    """One optimisation of `steps` steps, recording the loss of every step."""
    z = engine.random_latent(frame_generator(0, 0, engine.device))
    generator = frame_generator(0, 1, engine.device)
    adam = None
    curve = []
    for _ in range(steps):
        z, loss, adam = engine.optimise(z, prompts, 1, generator, adam)
        curve.append(loss)
    return curve


if __name__ == "__main__":
    main()
