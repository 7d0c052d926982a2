"""A render's wall time with its MP4 encoded after the frames and while they are made
(`RenderOptions.encode_while_rendering`), on one storyboard, in one run, alternating so that
both see the same machine; checks the two videos are the same bytes (bench/RESULTS.md,
"Encoding while rendering").

    .venv/bin/python bench/encode_while_rendering.py [--storyboard storyboards/demo-shapes.yaml]
        [--models NAME] [--device cpu|cuda] [--repeats 2] [--preview] [--random-weights]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from pipeline import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storyboard", default="storyboards/demo-shapes.yaml")
    parser.add_argument("--models", help="override the storyboard's models (e.g. tiny)")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--preview", action="store_true")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="the storyboard's architectures with random weights (no download; same compute)",
    )
    args = parser.parse_args()

    story = run.load(args.storyboard)
    device = run.pick_device(args.device)
    print(f"{args.storyboard}: {story.plan.n_frames} frames, {device}, {machine()}")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    videos: dict[bool, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="feverdream-bench-") as tmp:
        for repeat in range(args.repeats):
            for during in (False, True):
                options = run.RenderOptions(
                    output=Path(tmp) / f"{during}-{repeat}",
                    preview=args.preview,
                    device=device,
                    vqgan=args.models,
                    clip=args.models,
                    random_weights=args.random_weights,
                    encode_while_rendering=during,
                )
                started = time.perf_counter()
                result = run.render(story, options)
                wall = time.perf_counter() - started
                seconds[during].append(wall)
                videos[during] = result.video.read_bytes()
                print(
                    f"  {'while rendering' if during else 'after the frames'}: {wall:.1f} s "
                    f"(frames {result.seconds['frames']:.1f} s, then "
                    f"{result.seconds['encoding']:.1f} s to finish the video)",
                    flush=True,
                )
    after, during = min(seconds[False]), min(seconds[True])
    print(f"best of {args.repeats}: after {after:.1f} s, while rendering {during:.1f} s, "
          f"ratio {during / after:.2f}")  # fmt: skip
    print("same video bytes:", videos[False] == videos[True])


def machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
