"""Classic loop, fast paths, and fast paths with colour coherence on one long zoom in the
shapes world, side by side on the three temporal measures of pipeline/score.py (CLIP loss,
flicker, colour drift), each as mean and worst second, averaged over seeds. This is what
keeps speed work honest (bench/RESULTS.md, "Colour that holds").

    .venv/bin/python bench/colour_coherence.py [--seconds 6] [--seeds 0 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
import shapes_checks as checks  # noqa: E402

from pipeline.models.loading import load_models  # noqa: E402
from pipeline.score import score  # noqa: E402
from pipeline.settings import CLASSIC, Speed  # noqa: E402

FAST = Speed(cadence=5, bf16=False)
RUNS = {
    "classic": (CLASSIC, "off"),
    "fast (cadence 5)": (FAST, "off"),
    "fast + lab": (FAST, "lab"),
    "fast + rgb": (FAST, "rgb"),
}
PROMPT = "a large red circle on a black background"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--zoom", type=float, default=1.03)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = load_models("shapes", "shapes", "cpu")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="feverdream-coherence-") as folder:
        for name, (speed, coherence) in RUNS.items():
            sums: dict[str, float] = {}
            started = time.perf_counter()
            for seed in args.seeds:
                keyframes = f'- at: 0s\n  prompt: "{PROMPT}"\n  zoom: {args.zoom}\n'
                board = checks.storyboard(seed, f"{args.seconds}s", keyframes)
                board = board.replace("  lr:", f"  color_coherence: {coherence}\n  lr:")
                out = Path(folder) / f"{name}-{seed}"
                checks.render(models, out, board, speed, read=lambda pixels: None)
                result = score(out / "out", models[1])
                for measure in ("clip_loss", "flicker", "colour_drift"):
                    figures = getattr(result, measure)
                    sums[f"{measure} mean"] = sums.get(f"{measure} mean", 0) + figures.mean
                    sums[f"{measure} worst"] = sums.get(f"{measure} worst", 0) + figures.worst
            rows[name] = {key: value / len(args.seeds) for key, value in sums.items()}
            rows[name]["seconds"] = time.perf_counter() - started
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    keys = [k for k in next(iter(rows.values())) if k != "seconds"]
    print(f"{'':18}" + "".join(f"{key:>20}" for key in keys) + f"{'seconds':>10}")
    for name, row in rows.items():
        print(f"{name:18}" + "".join(f"{row[k]:>20.3f}" for k in keys) + f"{row['seconds']:>10.0f}")


if __name__ == "__main__":
    main()
