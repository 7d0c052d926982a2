"""`feverdream bench` times a step's parts and a whole render, here with the tiny models: a part
made slower shows up as slower in that part and in the whole step, and nowhere else."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, replace

import pytest
from torch import nn

from pipeline import bench
from pipeline.cli import main
from pipeline.engine import Engine
from pipeline.models.loading import load_models
from pipeline.run import load as load_story
from pipeline.settings import AIM, CLASSIC, EngineSettings

# Far above anything the tiny models' parts take here, and far above the timing noise.
DELAY = 0.3


class Delayed(nn.Module):
    """A module that waits DELAY seconds before each forward pass of the one it wraps."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        time.sleep(DELAY)
        return self.inner(*args)


# Each side is measured this many times, the two in turn, and its least time kept: another
# process on the same cores (a test beside this one, its ffmpeg) only ever adds to a time, so
# the least of a few is the part's own cost, and one slow run cannot hide a slower part.
ROUNDS = 3


def least(results: list[bench.BenchResult], name: str) -> float:
    return min(getattr(result.timings, name) for result in results)


def test_a_slower_decoder_shows_up_in_its_part_and_the_whole_step_only():
    settings = EngineSettings(144, 256, steps=2, first_steps=2, cuts=2, lr=0.1, seed=0)
    engines = {}
    for slow in (False, True):
        vqgan, clip = load_models("tiny", "tiny", random_weights=True)
        if slow:
            vqgan.decoder = Delayed(vqgan.decoder)
        engines[slow] = Engine(vqgan, clip, settings)
    runs: dict[bool, list[bench.BenchResult]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for slow, engine in engines.items():
            # One untimed run first, so no measurement carries the first call's set-up costs.
            runs[slow].append(bench.run_bench(engine, repeats=1, warmup=1))
    plain, slowed = runs[False], runs[True]
    grew = {
        name: least(slowed, name) - least(plain, name)
        for name in ("decode_forward", "decode_image", "step", "clip_forward", "encode")
    }
    # The decoder runs once in its own part, once per whole step, once per frame's picture.
    for name in ("decode_forward", "decode_image", "step"):
        assert least(slowed, name) >= DELAY and grew[name] > DELAY * 0.8, grew
    # The CLIP forward pass and the encoder do not run the decoder.
    for name in ("clip_forward", "encode"):
        assert grew[name] < DELAY / 2, grew
    frame = {slow: min(run.seconds_per_frame for run in runs[slow]) for slow in runs}
    assert frame[True] - frame[False] > DELAY * 0.8
    assert max(run.frames_per_hour for run in slowed) < max(run.frames_per_hour for run in plain)


class SlowerStep(Engine):
    """The engine with DELAY added to its optimisation step and nothing else."""

    def step(self, *args):
        time.sleep(DELAY)
        return super().step(*args)


def test_the_bench_times_the_engines_own_step():
    # A change to the engine's step (here: DELAY more) must show in the bench's whole step and
    # frames per hour, and not in the parts it times alone.
    vqgan, clip = load_models("tiny", "tiny", random_weights=True)
    settings = EngineSettings(144, 256, steps=2, first_steps=2, cuts=2, lr=0.1, seed=0)
    runs: dict[type[Engine], list[bench.BenchResult]] = {Engine: [], SlowerStep: []}
    for _ in range(ROUNDS):
        for kind, results in runs.items():
            results.append(bench.run_bench(kind(vqgan, clip, settings), repeats=1, warmup=1))
    plain, slowed = runs[Engine], runs[SlowerStep]
    assert least(slowed, "step") - least(plain, "step") > DELAY * 0.8
    assert least(slowed, "parts") - least(plain, "parts") < DELAY / 2
    assert max(run.frames_per_hour for run in slowed) < max(run.frames_per_hour for run in plain)


def test_bench_compares_the_classic_loop_and_projects_a_storyboard(tiny_model_dir, capsys):
    code = main(
        [
            "bench", "--vqgan", "tiny", "--clip", "tiny", "--size", "144x256", "--cuts", "2",
            "--steps", "2", "--cadence", "3", "--repeats", "1", "--warmup", "0", "--compare",
            "--storyboard", "storyboards/anxiety.yaml", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    classic, fast = results["classic"], results["this render"]
    assert {key: classic["settings"][key] for key in asdict(CLASSIC)} == asdict(CLASSIC)
    assert fast["settings"]["cadence"] == 3 and fast["settings"]["aim"] == AIM
    # The projection renders the storyboard's own plan: every frame, the engine's anchors.
    _, _, plan = load_story("storyboards/anxiety.yaml")
    for result, cadence in ((classic, 1), (fast, 3)):
        projection = result["extra"]["projection"]
        assert projection["frames"] == plan.n_frames
        assert projection["optimised_frames"] == len(plan.optimised_frames(cadence))
        # Encoding while the frames are made overlaps the two; on a CPU it encodes after.
        engine, encoding = projection["engine_seconds"], projection["encode_seconds"]
        assert projection["total_seconds"] == projection["total_seconds_encoding_after"]
        assert projection["total_seconds_encoding_after"] == pytest.approx(engine + encoding)
        during = projection["total_seconds_encoding_during"]
        assert max(engine, encoding) < during < engine + encoding


def test_bench_compare_prints_the_line_to_set_beside_a_peers(tiny_model_dir, capsys):
    args = ["bench", "--vqgan", "tiny", "--clip", "tiny", "--size", "144x256", "--cuts", "2"]
    assert main([*args, "--steps", "2", "--repeats", "1", "--warmup", "0", "--compare"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("peer-comparable")]
    figures = [float(x) for x in re.findall(r"([0-9.]+) frames/hour", line)]
    gain = float(re.search(r"([0-9.]+)x$", line).group(1))
    assert line.startswith("peer-comparable, 144x256, 2 cutouts, 2 steps: classic ")
    assert len(figures) == 2 and abs(figures[1] / figures[0] - gain) < 0.02 * gain
    assert line.count("GiB") == 2


def test_bench_prints_a_readable_report(tiny_model_dir, capsys):
    args = ["bench", "--vqgan", "tiny", "--clip", "tiny", "--size", "144x256", "--cuts", "2"]
    assert main([*args, "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "whole step" in out and "frames per hour" in out


def test_bench_measures_each_clip_named_in_one_run(tiny_model_dir, capsys):
    args = ["bench", "--vqgan", "tiny", "--size", "144x256", "--cuts", "2", "--steps", "1"]
    assert main([*args, "--clip", "tiny", "--clip", "shapes", "--repeats", "1",
                 "--warmup", "0", "--json"]) == 0  # fmt: skip
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"tiny", "shapes"}
    for name, result in results.items():
        assert result["this render"]["extra"]["models"]["clip"] == [[name, 1.0]]
        assert result["this render"]["timings"]["clip_forward"] > 0
    assert main([*args, "--clip", "tiny", "--clip", "shapes", "--repeats", "1",
                 "--warmup", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "== tiny · this render" in out and "== shapes · this render" in out
    assert "a step with shapes: " in out and "the time of one with tiny" in out


def test_a_slower_depth_model_shows_up_as_the_3d_cameras_share_of_a_frame():
    # With a depth model, the bench times its estimate, which each optimised frame pays once:
    # made DELAY slower (the tiny one alone takes milliseconds), the depth part shows it and
    # the step does not; without one, there is no depth part.
    from pipeline.models.loading import load_depth_model

    vqgan, clip = load_models("tiny", "tiny", random_weights=True)
    settings = EngineSettings(144, 256, steps=2, first_steps=2, cuts=2, lr=0.1, seed=0)
    depth = Delayed(load_depth_model("tiny", random_weights=True))
    plain = bench.run_bench(Engine(vqgan, clip, settings), repeats=1, warmup=1)
    slowed = bench.run_bench(Engine(vqgan, clip, settings, depth), repeats=1, warmup=1)
    assert plain.timings.depth == 0 and "3D camera" not in bench.describe(plain)
    assert slowed.timings.depth > DELAY * 0.8 and slowed.timings.warp_3d > 0
    assert abs(slowed.timings.step - plain.timings.step) < DELAY / 2
    # Each optimised frame (every frame here: cadence 1) pays for its depth once.
    free = bench.frame_seconds(replace(slowed.timings, depth=0.0), settings)
    assert slowed.seconds_per_frame - free == pytest.approx(slowed.timings.depth)
    line = next(line for line in bench.describe(slowed).splitlines() if "3D camera" in line)
    share = float(re.search(r"\(([0-9.]+)% of a frame's time\)", line).group(1))
    assert share == pytest.approx(100 * slowed.timings.depth / slowed.seconds_per_frame, abs=0.1)


def test_bench_times_the_depth_model_of_a_storyboard_that_moves_the_3d_camera(
    tiny_model_dir, tmp_path, capsys
):
    board = tmp_path / "board.yaml"
    board.write_text(
        "title: t\nsize: 360x640\nduration: 1s\nrender:\n  size: 144x256\nmodels:\n"
        "  vqgan: tiny\n  clip: tiny\n  depth: tiny\n"
        "keyframes:\n  - at: 0s\n    prompt: a hallway\n    translate: [0, 0, 0.02]\n"
    )
    args = ["bench", "--cuts", "2", "--steps", "2", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--storyboard", str(board)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"3D camera \(tiny\), per optimised frame: depth [0-9.]+ s \([0-9.]+% ", out)
