"""A batch of shapes-world storyboards on a local Ray cluster against rendering them one
after another in one process, wall time measured in one sitting (issue 24).

    .venv/bin/python bench/batch_speed.py [--boards 4] [--frames 24] [--workers N]

The storyboards are written into a temporary folder: a 144x256 canvas with the shapes
models, cadence 2, half of them with a cut (two shots). Each storyboard renders twice:
`run.render` in this process (torch's default threads), then `feverdream batch`'s library
call with one-thread workers (one per core unless --workers). The ratio is sequential time
over batch time; frames are compared too (the batch's are byte-identical to a one-thread
render, not to this process's default threads, so only their count is checked here).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from pipeline import batch, run

BOARD = """\
title: batch bench {index}
seed: {index}
duration: {frames}f
render:
  size: 144x256
  steps: 3
  first_steps: 24
  cuts: 8
  cadence: 2
models:
  vqgan: shapes
  clip: shapes
keyframes:
  - at: 0s
    prompt: "a large red circle on a black background"
    zoom: 1.02
{cut}"""
CUT = """\
  - at: {at}f
    prompt: "a small blue square"
    cut: true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boards", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "boards").mkdir()
        paths = []
        for index in range(args.boards):
            cut = CUT.format(at=args.frames // 2) if index % 2 else ""
            path = folder / "boards" / f"b{index}.yaml"
            path.write_text(BOARD.format(index=index, frames=args.frames, cut=cut))
            paths.append(path)

        started = time.perf_counter()
        for path in paths:
            options = run.RenderOptions(output=folder / "alone" / path.stem, device="cpu")
            run.render(path, options)
        sequential = time.perf_counter() - started

        started = time.perf_counter()
        jobs = batch.batch(
            paths,
            run.RenderOptions(output=folder / "batch", device="cpu"),
            workers=args.workers,
        )
        together = time.perf_counter() - started
        failed = [job.error for job in jobs if job.error]
        if failed:
            raise SystemExit(f"the batch failed: {failed}")
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads",
                "storyboards": args.boards,
                "frames_each": args.frames,
                "sequential_seconds": round(sequential, 1),
                "batch_seconds": round(together, 1),
                "sequential_over_batch": round(sequential / together, 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
