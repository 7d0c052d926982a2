"""Issue 36: when the picture follows the plan, on the shapes world. A green circle held to
1 s, then to a yellow square at END s, held a second more: a linear morph, a hard switch at
END s (`ease: hold`, as on a beat) or a cut there. Each line: the frame where yellow first
outweighs green (tests/shapes_checks.crossing), the frame where the plan's weights cross (a
morph's midpoint; a switch's or cut's own frame), and the lag in seconds ("never": still
green a second after).

    .venv/bin/python bench/keyframes_on_time.py [--ends 2,3,4] [--engines classic,fast]
        [--shape morph|switch|cut] [--steps 3] [--cadence 2] [--bf16] [--lag-steps N] [--sharpen P]

`--lag-steps` and `--sharpen` replace the engine's pipeline.schedule.LAG_STEPS and SHARPEN
for the run (0 and 1: the plan followed as it is, as the engine did before issue 36, but
without carried Adam). "steps taken": every optimisation step of the render. The
figures from before the engine aimed ahead came from this file's predecessor,
`git show a82c8b6:bench/morph_candidates.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
import shapes_checks as checks  # noqa: E402

from pipeline import schedule  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.models.loading import load_models  # noqa: E402
from pipeline.settings import CLASSIC, Speed  # noqa: E402


def keyframes(shape: str, end: int, zoom: float = 1.0) -> str:
    """The storyboard's keyframes for this shape, changing at (or morphing until) `end` s,
    with the camera zooming by `zoom` a frame throughout."""
    if shape == "morph":
        return checks.morph_keyframes(end, zoom)
    change = "cut: true" if shape == "cut" else "ease: linear"
    return f"""\
        - at: 0s
          prompt: "a large green circle"
          ease: hold
          zoom: {zoom}
        - at: {end}s
          prompt: "a large yellow square"
          {change}
        """


STEPS_TAKEN = [0]
plain_step = Engine.step


def counted_step(self, *args, **kwargs):
    STEPS_TAKEN[0] += 1
    return plain_step(self, *args, **kwargs)


def shares(models, folder: Path, speed: Speed, board: str) -> tuple[list, list]:
    """The green and yellow shares of each frame of this storyboard."""
    frames = checks.render(models, folder, board, speed)
    return (
        [frame.shares.get("green", 0.0) for frame in frames],
        [frame.shares.get("yellow", 0.0) for frame in frames],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ends", default="2,3,4")
    parser.add_argument("--engines", default="classic,fast")
    parser.add_argument("--shape", choices=("morph", "switch", "cut"), default="morph")
    parser.add_argument("--steps", type=int, default=checks.MORPH_STEPS)
    parser.add_argument("--cadence", type=int, default=checks.ENGINES["fast"].cadence)
    parser.add_argument("--lag-steps", type=int, default=schedule.LAG_STEPS)
    parser.add_argument("--sharpen", type=float, default=schedule.SHARPEN)
    parser.add_argument("--zoom", type=float, default=1.0, help="the camera's zoom a frame")
    parser.add_argument("--bf16", action="store_true", help="the fast engine's VQGAN in bf16")
    args = parser.parse_args()
    schedule.LAG_STEPS, schedule.SHARPEN = args.lag_steps, args.sharpen
    Engine.step = counted_step
    engines = {"classic": CLASSIC, "fast": Speed(cadence=args.cadence, bf16=args.bf16)}
    models = load_models("shapes", "shapes", "cpu")
    print(f"torch kernels: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    for name in args.engines.split(","):
        speed = engines[name]
        for end in (int(end) for end in args.ends.split(",")):
            started, STEPS_TAKEN[0] = time.perf_counter(), 0
            board = checks.storyboard(
                3, f"{end + 1}s", keyframes(args.shape, end, args.zoom), steps=args.steps
            )
            with tempfile.TemporaryDirectory() as scratch:
                green, yellow = shares(models, Path(scratch), speed, board)
            crossed = checks.crossing(green, yellow)
            planned = (24 + end * 24) / 2 if args.shape == "morph" else end * 24
            row = {
                "engine": name,
                "cadence": speed.cadence,
                "bf16": speed.bf16,
                "steps": args.steps,
                "lead frames": schedule.lead(args.steps, speed.cadence),
                "sharpen": args.sharpen,
                "zoom": args.zoom,
                args.shape: f"1-{end} s" if args.shape == "morph" else f"at {end} s",
                "crossed": crossed,
                "plan crosses": planned,
                "lag s": None if crossed is None else round((crossed - planned) / 24, 2),
                "last yellow-green": round(yellow[-1] - green[-1], 3),
                "steps taken": STEPS_TAKEN[0],
                "seconds": round(time.perf_counter() - started),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
