"""The figures behind tests/test_shapes_engine.py's checks, printed rather than asserted, so
that each check's margin (how far its figure is from its threshold) can be measured and
recorded in bench/RESULTS.md: on this CPU, and with torch's kernels held to other instruction
sets, which changes the arithmetic's last bits as another CPU would.

    .venv/bin/python bench/shapes_margins.py [--checks red morph negative camera]
        [--engines classic fast]

    # the same with other kernels (slower):
    ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \\
        .venv/bin/python bench/shapes_margins.py
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

from pipeline.models.loading import load_models  # noqa: E402

# The rhythm each engine's on-time checks run at (checks.ON_TIME_RHYTHMS).
RHYTHM = {"classic": "classic", "fast": "examples", "fast-bf16": "examples-bf16"}


def measure(check: str, models, folder: Path, engine: str) -> dict:
    options = checks.ENGINES[engine]
    if check == "red":
        # Ten seeds, as measured before the check came down to six (tests/shapes_checks.py).
        colours = checks.red_seeds(models, folder, options, seeds=range(10))
        return {"red": sum(c == "red" for c in colours.values()), "colours": colours}
    if check == "morph":
        # Keyframes on time: the morph's and the switch's crossings, from where the plan's
        # cross, against the checks' ON_TIME, at the engine's rhythm for them.
        options, steps = checks.ON_TIME_RHYTHMS[RHYTHM[engine]]
        green, yellow = checks.morph(models, folder / "morph", options, steps=steps)
        crossed = checks.crossing(green, yellow)
        middle = (1 + checks.MORPH_END) / 2 * 24
        green_, yellow_ = checks.switch(models, folder / "switch", options, steps=steps)
        switched = checks.crossing(green_, yellow_)
        return {
            "rhythm": RHYTHM[engine],
            "morph lag s": None if crossed is None else round((crossed - middle) / 24, 2),
            "switch lag s": None if switched is None else round(switched / 24 - checks.SWITCH, 2),
            "asserted within s": checks.ON_TIME,
            "frame 23 green-yellow": round(green[23] - yellow[23], 3),
            "last yellow-green": round(yellow[-1] - green[-1], 3),
        }
    if check == "negative":
        without, with_negative = checks.negative_red(models, folder, options)
        return {"red without": round(without, 3), "red with": round(with_negative, 3)}
    readings = {}
    for name, (move, asked) in {**checks.CAMERA, **checks.MEASURED_MOVES}.items():
        median, _ = checks.camera(models, folder / name, move, options)
        readings[name] = [round(median.zoom, 4), round(median.dx, 2), round(median.dy, 2)]
        readings[name].append(asked)  # per frame, to read these against
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checks", nargs="+", default=["red", "morph", "negative", "camera"],
        choices=["red", "morph", "negative", "camera"],
    )  # fmt: skip
    parser.add_argument("--engines", nargs="+", default=list(checks.ENGINES))
    parser.add_argument(
        "--models", type=Path, help="a folder with another build's files (default: the package's)"
    )
    args = parser.parse_args()
    if args.models:
        models = load_models(
            str(args.models / "shapes-vqgan.ckpt"), str(args.models / "shapes-clip.pt"), "cpu"
        )
    else:
        models = load_models("shapes", "shapes", "cpu")
    print(f"torch kernels: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    for check in args.checks:
        for engine in args.engines:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as scratch:
                figures = measure(check, models, Path(scratch), engine)
            seconds = time.perf_counter() - started
            print(f"{check} {engine} ({seconds:.0f} s): {json.dumps(figures)}", flush=True)


if __name__ == "__main__":
    main()
