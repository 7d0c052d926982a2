"""Render a storyboard's frames with random full-size weights and time them, for each engine
configuration in turn in one process, so the ratios between them are measured together.

    python bench/render_speed.py storyboards/anxiety.yaml --frames 0:60 --engines classic,fast

Prints one line per configuration: wall time, frames per hour, and the ratio to the first
configuration. Frames go to a temporary folder (nothing is encoded: see RESULTS.md for the
encoding cost, which is the same for every configuration).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.bench import machine_info
from pipeline.engine import Engine, render_frames
from pipeline.models.loading import load_all
from pipeline.run import load as load_story
from pipeline.settings import CLASSIC, EngineSettings, Speed
from pipeline.store import FrameStore

CONFIGS = {
    "classic": lambda device, cadence: CLASSIC,
    "fast": Speed.fast,
    "fast-fp32": lambda device, cadence: replace(Speed.fast(device, cadence), bf16=False),
    "fast-latent-warp": lambda device, cadence: replace(
        Speed.fast(device, cadence), latent_warp=True
    ),
    "cadence1": lambda device, cadence: Speed.fast(device, 1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storyboard")
    parser.add_argument("--frames", help="A:B, frames A to B-1 (default: all)")
    parser.add_argument("--engines", default="classic,fast", help=",".join(CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()

    board, _, plan = load_story(args.storyboard)
    if args.frames:
        start, end = (int(x) for x in args.frames.split(":"))
        plan = plan.span(start, end)
    vqgan, clip = load_all(board.models.vqgan, board.models.clips, args.device, True)
    base = EngineSettings.for_render(board.render, board.seed, args.device)
    rows = []
    for name in args.engines.split(","):
        settings = replace(base, speed=CONFIGS[name](args.device, board.render.cadence))
        with tempfile.TemporaryDirectory() as folder:
            if args.device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            render_frames(plan, Engine(vqgan, clip, settings), FrameStore(Path(folder)))
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        rows.append(
            {
                "engine": name,
                "settings": settings.record(),
                "frames": plan.n_frames,
                "seconds": seconds,
                "frames_per_hour": plan.n_frames * 3600 / seconds,
            }
        )
        print(
            f"{name:<18} {plan.n_frames} frames in {seconds:7.1f} s  "
            f"{rows[-1]['frames_per_hour']:8.0f} frames/hour  "
            f"{rows[-1]['frames_per_hour'] / rows[0]['frames_per_hour']:5.2f}x {rows[0]['engine']}",
            flush=True,
        )
    report = {"command": " ".join(sys.argv), "machine": machine_info(args.device), "runs": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
