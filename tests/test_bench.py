"""`feverdream bench` times a step's parts and a whole render, here with the tiny models."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main


def test_bench_reports_parts_frames_per_hour_and_a_projection(tiny_model_dir, capsys):
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
    timings = classic["timings"]
    for part in ("decode_forward", "decode_backward", "clip_forward", "clip_backward", "encode"):
        assert timings[part] > 0
    # A whole step against the sum of its parts is a speed figure (bench/RESULTS.md), and
    # with one repeat and no warm-up it swings with the load (0.37 on one clean run): the
    # report is checked for being made of the parts it times, not for a ratio.
    parts = ("quantize", "decode_forward", "decode_backward", "cutouts", "clip_forward")
    parts += ("clip_backward", "optimiser")
    assert timings["parts"] == pytest.approx(sum(timings[part] for part in parts))
    assert timings["step_over_parts"] == pytest.approx(timings["step"] / timings["parts"])
    assert classic["settings"]["cadence"] == 1 and fast["settings"]["cadence"] == 3
    # Timings vary with the machine's load, so check how a frame's cost is made of them:
    # with cadence 3, one optimised frame and two made between per three frames.
    t = fast["timings"]
    optimised = 2 * t["step"] + t["decode_image"] + t["encode"]
    assert fast["seconds_per_frame"] == pytest.approx((optimised + 2 * t["in_between"]) / 3)
    assert fast["frames_per_hour"] == pytest.approx(3600 / fast["seconds_per_frame"])
    projection = fast["extra"]["projection"]
    assert projection["frames"] == 360
    assert projection["optimised_frames"] < 360 / 2
    assert projection["total_seconds"] > projection["engine_seconds"] > 0
    assert classic["peak_memory_gib"] > 0


def test_bench_prints_a_readable_report(tiny_model_dir, capsys):
    args = ["bench", "--vqgan", "tiny", "--clip", "tiny", "--size", "144x256", "--cuts", "2"]
    assert main([*args, "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "whole step" in out and "frames per hour" in out
