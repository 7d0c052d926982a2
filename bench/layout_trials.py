"""Trials of how the engine computes a whole optimisation step (engine.Execution): plain
(taming's decoder), each option alone, and options joined with `+`.

    python bench/layout_trials.py --device cuda --trials plain,lean,lean+channels_last,compile

Options: lean (the lean decoder pass), channels_last, compile (the decoder's pass through
torch.compile), checkpoint (lean only), batch4 (cutouts through CLIP 4 at a time).

Prints, for each trial, the first step (which pays any compilation) and the median of the
steps after warm-up, all in one process so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from pipeline.bench import machine_info
from pipeline.engine import Engine, frame_generator
from pipeline.models.loading import load_models
from pipeline.settings import EngineSettings, Execution, Speed
from pipeline.storyboard import parse_size


def time_steps(engine: Engine, steps: int) -> list[float]:
    z = engine.random_latent(frame_generator(0, 0, engine.device))
    generator = frame_generator(0, 1, engine.device)
    prompts = (("a narrow hallway", 1.0), ("text", -1.0))
    times = []
    for _ in range(steps):
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        z, _, _ = engine.optimise(z, prompts, 1, generator)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="288x512")
    parser.add_argument("--cuts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--trials", default="plain,channels_last,compile")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    width, height = parse_size(args.size)
    rows = {}
    for trial in args.trials.split(","):
        options = set(trial.split("+")) - {"plain"}
        execution = Execution(
            lean_decoder="lean" in options or "checkpoint" in options,
            channels_last="channels_last" in options,
            compile="compile" in options,
            checkpoint="checkpoint" in options,
            cut_batch=4 if "batch4" in options else 0,
        )
        settings = EngineSettings(width, height, 1, 1, args.cuts, 0.1, 0, args.device,
                                  Speed(bf16=args.bf16), execution=execution)  # fmt: skip
        vqgan, clip = load_models("vqgan_imagenet_f16_16384", "ViT-B/32", args.device, True)
        times = time_steps(Engine(vqgan, clip, settings), args.steps)
        rows[trial] = {"first": times[0], "median": statistics.median(times[2:])}
        ratio = rows[trial]["median"] / rows[next(iter(rows))]["median"]
        print(
            f"{trial:<14} first step {times[0]:7.3f} s, then median {rows[trial]['median']:.4f} s"
            f" ({ratio:.2f}x {next(iter(rows))})",
            flush=True,
        )
    if args.json:
        report = {"command": " ".join(sys.argv), "machine": machine_info(args.device)}
        Path(args.json).write_text(json.dumps({**report, "trials": rows}, indent=1))


if __name__ == "__main__":
    main()
