"""Peak memory of an optimisation step per canvas size, the classic loop against a render's
default execution, with random full-size weights (VQGAN f16 16384 + CLIP ViT-B/32).

    python bench/memory_by_canvas.py --sizes 288x512,432x768,576x1024 --cuts 16

Each (canvas, engine) runs in its own process, so that its peak is its own: on a CPU the
process's peak resident size, on a GPU torch's peak allocation. Beside it: the bytes
pipeline.memory estimates for the step (what the automatic choice is made from), the free
memory and the execution it chose, and the median step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.cli_malloc import MALLOC_TUNABLES
from pipeline.storyboard import parse_size

ROOT = Path(__file__).resolve().parents[1]


def one(
    size: str,
    engine_name: str,
    cuts: int,
    device: str,
    steps: int,
    fp32: bool,
    models: tuple[str, str] = ("vqgan_imagenet_f16_16384", "ViT-B/32"),
) -> dict:
    from pipeline import memory
    from pipeline.bench import machine_info, peak_memory_gib
    from pipeline.engine import Engine, frame_generator
    from pipeline.models.loading import load_models
    from pipeline.settings import CLASSIC, EngineSettings, Execution, Speed

    width, height = parse_size(size)
    vqgan, clip = load_models(*models, device, True)
    speed = CLASSIC if engine_name == "classic" else Speed.fast(device, 5)
    if fp32:  # the default on a CPU without native bf16 (an AVX2 EPYC)
        speed = replace(speed, bf16=False)
    execution = Execution() if engine_name == "classic" else Execution.fast(device, speed)
    settings = EngineSettings(width, height, 1, 1, cuts, 0.1, 0, device, speed,
                              execution=execution)  # fmt: skip
    engine = Engine(vqgan, clip, settings)
    fitted = memory.fit(engine)
    if engine_name != "classic" and fitted.execution != execution:
        engine = Engine(vqgan, clip, replace(settings, execution=fitted.execution))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = peak_memory_gib(torch.device(device))
    z = engine.random_latent(frame_generator(0, 0, device))
    generator = frame_generator(0, 1, device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        z = engine.optimise(z, (("a narrow hallway", 1.0), ("text", -1.0)), 1, generator).z
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "size": size,
        "engine": engine_name,
        "execution": engine.execution.describe(),
        "bf16": speed.bf16,
        "peak_gib": peak_memory_gib(torch.device(device)),
        "before_steps_gib": before,
        "estimate_gib": memory.step_need(engine).total(engine.execution, cuts) / 2**30,
        "free_gib": fitted.free / 2**30,
        "step_seconds": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "machine": machine_info(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="288x512,432x768,576x1024")
    parser.add_argument("--engines", default="default,classic")
    parser.add_argument("--cuts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--fp32", action="store_true", help="the default as on a CPU without native bf16"
    )
    parser.add_argument(
        "--models",
        nargs=2,
        metavar=("VQGAN", "CLIP"),
        default=["vqgan_imagenet_f16_16384", "ViT-B/32"],
        help="the architectures, with random weights (default: the examples' full-size ones)",
    )
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = one(*args.one, args.cuts, args.device, args.steps, args.fp32, tuple(args.models))
        print(json.dumps(row))
        return
    environment = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}  # as `render` runs
    rows = []
    print("| canvas | engine | execution | peak | before the steps | estimated step | step |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        for engine in args.engines.split(","):
            command = [sys.executable, __file__, "--one", size, engine, "--cuts", str(args.cuts),
                       "--steps", str(args.steps), "--device", args.device, "--models",
                       *args.models,
                       *(["--fp32"] if args.fp32 else [])]  # fmt: skip
            done = subprocess.run(command, env=environment, capture_output=True, text=True,
                                  cwd=ROOT)  # fmt: skip
            if done.returncode:
                print(f"| {size} | {engine} | failed: {done.stderr.strip()[-300:]} |")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"| {size} | {engine}{' (bf16 VQGAN)' if row['bf16'] else ''} | "
                f"{row['execution']} | {row['peak_gib']:.2f} GiB | "
                f"{row['before_steps_gib']:.2f} GiB | {row['estimate_gib']:.2f} GiB"
                f" | {row['step_seconds']:.2f} s |",
                flush=True,
            )
    if args.json:
        report = {"command": " ".join(sys.argv), "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
