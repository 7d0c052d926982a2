"""Issue 36, first measurements: when a linear morph's colour crosses over on the shapes
world, for the engine as it is and for candidate changes tried from outside it (nothing here
changes the engine; a candidate that earns its place goes into pipeline/engine.py).

    .venv/bin/python bench/morph_candidates.py VARIANT [ENDS] [ENGINES] [morph|switch|cut]
    .venv/bin/python bench/morph_candidates.py base 2,3,4 classic,fast
    .venv/bin/python bench/morph_candidates.py base 2 classic,fast switch

The morph is tests/shapes_checks.py's: a green circle held to 1 s, then linearly to a yellow
square at END s, held a second more. Each line: the frame where yellow first outweighs green
(tests/shapes_checks.crossing), the plan's midpoint (where its weights cross), the lag in
seconds. `switch`: green until END s (`ease: hold`), then yellow, read against END s; `cut`:
the same with `cut: true`. Variants:
  base       the engine as it is
  blend      one target, the weighted blend of the positive prompts' embeddings (normalised),
             instead of the weighted sum of distances to each
  sharpN     the positive prompts' weights raised to the power N (renormalised): the new
             prompt outweighs the old one sooner after the midpoint
  nocarry    the fast engine without carried Adam (each optimised frame a fresh Adam)
  aheadK     the plan read K frames ahead (here: the morph's keyframes K frames earlier), as
             an engine that looks ahead by its measured lag would
Variants join with +: sharp4+ahead12.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
import shapes_checks as checks  # noqa: E402

from pipeline import engine as engine_module  # noqa: E402
from pipeline.models.registry import load_models  # noqa: E402

plain_targets = engine_module.Engine.targets


def blended(self, prompts):
    targets, weights = plain_targets(self, prompts)
    positive = weights > 0
    if positive.sum() <= 1:
        return targets, weights
    blends = []
    for stack in targets:
        blend = (weights[positive][:, None] * stack[positive]).sum(0)
        blends.append(torch.cat([(blend / blend.norm())[None], stack[~positive]]))
    return tuple(blends), torch.cat([weights[positive].sum()[None], weights[~positive]])


def sharpened(power: float):
    def targets(self, prompts):
        stacks, weights = plain_targets(self, prompts)
        positive = weights > 0
        if positive.sum() <= 1:
            return stacks, weights
        raised = weights[positive] ** power
        weights = weights.clone()
        weights[positive] = raised / raised.sum() * weights[positive].sum()
        return stacks, weights

    return targets


def switch(models, folder: Path, speed, end: int, ahead: int, cut: bool) -> tuple[list, list]:
    """A green circle that switches to a yellow square at `end` s (`ease: hold`: a hard
    switch, as on a beat; or a cut), read `ahead` frames early, held a second more."""
    change = "cut: true" if cut else "ease: linear"
    keyframes = f"""\
        - at: 0s
          prompt: "a large green circle"
          ease: hold
        - at: {end * 24 - ahead}f
          prompt: "a large yellow square"
          {change}
        """
    return green_and_yellow(models, folder, speed, end, keyframes)


def morph(models, folder: Path, speed, end: int, ahead: int) -> tuple[list, list]:
    """tests/shapes_checks.morph, its keyframes `ahead` frames earlier."""
    if not ahead:
        return checks.morph(models, folder, speed, end)
    held = f"""\
        - at: {24 - ahead}f
          prompt: "a large green circle"
""" if ahead < 24 else ""  # fmt: skip
    keyframes = f"""\
        - at: 0s
          prompt: "a large green circle"
{held}        - at: {end * 24 - ahead}f
          prompt: "a large yellow square"
        - at: {end * 24 + 24}f
          prompt: "a large yellow square"
        """
    return green_and_yellow(models, folder, speed, end, keyframes)


def green_and_yellow(models, folder: Path, speed, end: int, keyframes: str) -> tuple[list, list]:
    """The green and yellow shares of each frame of these keyframes, rendered as the morph
    check renders (its seed and steps) to a second after `end` s."""
    board = checks.storyboard(3, f"{end + 1}s", keyframes, steps=checks.MORPH_STEPS)
    shares = [frame.shares for frame in checks.render(models, folder, board, speed)]
    return [s.get("green", 0.0) for s in shares], [s.get("yellow", 0.0) for s in shares]


def main() -> None:
    variant = sys.argv[1]
    ends = [int(end) for end in (sys.argv[2] if len(sys.argv) > 2 else "2,3,4").split(",")]
    engines = (sys.argv[3] if len(sys.argv) > 3 else "classic,fast").split(",")
    shape = sys.argv[4] if len(sys.argv) > 4 else "morph"  # or switch, cut
    ahead = 0
    for part in variant.split("+"):
        if part == "nocarry":
            checks.ENGINES["fast"] = replace(checks.ENGINES["fast"], carry_optimizer=False)
        elif part == "blend":
            engine_module.Engine.targets = blended
        elif part.startswith("sharp"):
            engine_module.Engine.targets = sharpened(float(part.removeprefix("sharp")))
        elif part.startswith("ahead"):
            ahead = int(part.removeprefix("ahead"))
        elif part != "base":
            sys.exit(f"unknown variant {part}")
    models = load_models("shapes", "shapes", "cpu")
    print(f"torch kernels: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    for name in engines:
        for end in ends:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as scratch:
                speed = checks.ENGINES[name]
                if shape == "morph":
                    green, yellow = morph(models, Path(scratch), speed, end, ahead)
                else:
                    green, yellow = switch(models, Path(scratch), speed, end, ahead, shape == "cut")
            crossed = checks.crossing(green, yellow)
            middle = (24 + end * 24) / 2 if shape == "morph" else end * 24
            row = {
                "variant": variant,
                "engine": name,
                shape: f"1-{end} s" if shape == "morph" else f"at {end} s",
                "crossed": crossed,
                "plan crosses": middle,
                "lag s": None if crossed is None else round((crossed - middle) / 24, 2),
                "last yellow-green": round(yellow[-1] - green[-1], 3),
                "seconds": round(time.perf_counter() - started),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
