"""The per-frame plan follows DESIGN.md's interpolation rules."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipeline.cli import main
from pipeline.run import load as load_story
from pipeline.schedule import LAG_STEPS, MAX_LEAD, SHARPEN, build_plan, ease, lead
from pipeline.storyboard import parse_storyboard


def plan_of(text: str, tmp_path: Path | None = None):
    path = (tmp_path or Path("/nonexistent")) / "board.yaml"
    board = parse_storyboard(textwrap.dedent(text).encode(), path)
    return build_plan(board)


@pytest.mark.parametrize("name", ["linear", "ease-in", "ease-out", "ease-in-out", "hold"])
def test_ease_curves_start_at_0_and_end_at_1(name):
    assert ease(name, 0.0) == 0.0
    assert ease(name, 1.0) == 1.0
    samples = [ease(name, u / 20) for u in range(21)]
    assert samples == sorted(samples)  # never travels backwards


def test_ease_shapes():
    assert ease("linear", 0.25) == 0.25
    assert ease("ease-in", 0.25) < 0.25 < ease("ease-out", 0.25)
    assert ease("ease-in-out", 0.25) < 0.25 and ease("ease-in-out", 0.75) > 0.75
    assert ease("hold", 0.99) == 0.0


def test_values_travel_along_the_earlier_keyframes_ease():
    plan = plan_of(
        """
        fps: 24
        keyframes:
          - at: 0s
            prompt: a
            zoom: 1.0
            ease: hold
          - at: 1s
            zoom: 2.0
          - at: 2s
            zoom: 3.0
        """
    )
    zoom = [fp.zoom for fp in plan.frames]
    assert zoom[12] == 1.0  # held until the next keyframe
    assert zoom[24] == 2.0
    assert zoom[36] == pytest.approx(2.5)  # linear again: ease is not inherited
    assert len(plan.frames) == 48


def test_each_key_has_its_own_keyframes():
    plan = plan_of(
        """
        fps: 24
        keyframes:
          - at: 0s
            prompt: a
            rotate: 0
          - at: 1s
            zoom: 1.1
          - at: 2s
            rotate: 10
            pan: [2, -2]
        """
    )
    frame = plan.frames[12]
    assert frame.zoom == pytest.approx(1.1)  # before its only keyframe: held
    assert frame.rotate == pytest.approx(10 * 12 / 48)  # 0 → 10 over 0-2 s, ignoring 1s
    assert (frame.pan_x, frame.pan_y) == (2.0, -2.0)


def test_a_number_blends_into_an_expression_evaluated_at_the_current_time():
    plan = plan_of(
        """
        fps: 24
        keyframes:
          - at: 0s
            prompt: a
            zoom: 1.0
          - at: 1s
            zoom: "1 + t"
        duration: 2s
        """
    )
    # Halfway (t = 0.5): 1.0 + ((1 + 0.5) - 1.0) * 0.5.
    assert plan.frames[12].zoom == pytest.approx(1.25)
    assert plan.frames[36].zoom == pytest.approx(2.5)  # after the last keyframe: 1 + t


def test_prompts_crossfade_with_style_and_negative():
    plan = plan_of(
        """
        fps: 24
        style: oil
        negative: text
        keyframes:
          - at: 0s
            prompt: {"a cat": 1, "a dog": -0.5}
          - at: 1s
            prompt: "a room"
        """
    )
    start, middle = dict(plan.frames[0].prompts), dict(plan.frames[12].prompts)
    assert start == {"a cat, oil": 1.0, "a dog, oil": -0.5, "text": -1.0}
    assert middle == pytest.approx(
        {"a cat, oil": 0.5, "a dog, oil": -0.25, "a room, oil": 0.5, "text": -1.0}
    )


def test_the_engine_aims_ahead_within_the_shot_with_the_morph_sharpened():
    # The picture follows a change of prompts late, so each frame is optimised toward the
    # plan a few steps' worth later (Plan.aim), never across a cut, with a morph's fraction
    # sharpened (sooner past a half) and a keyframe's own mix of prompts left as it is.
    plan = plan_of(
        """
        fps: 24
        keyframes:
          - at: 0s
            prompt: {"a cat": 0.75, "a hat": 0.25}
          - at: 1s
            prompt: {"a cat": 0.75, "a hat": 0.25}
          - at: 3s
            prompt: "a room"
            ease: hold
          - at: 4s
            prompt: "a sea"
            cut: true
          - at: 5s
            prompt: "a sea"
        """
    )
    assert lead(steps=3, cadence=1) == LAG_STEPS // 3 < MAX_LEAD
    assert lead(steps=LAG_STEPS, cadence=1) == 1
    # Never further than MAX_LEAD: the shapes demo's rhythm, the examples', a preview's.
    for steps, cadence in ((3, 2), (10, 5), (3, 5), (1, 2)):
        assert lead(steps=steps, cadence=cadence) == MAX_LEAD < LAG_STEPS * cadence // steps
    assert lead(steps=0, cadence=5) == 0  # nothing optimised, nothing lags
    mix = {"a cat": 0.75, "a hat": 0.25}
    assert dict(plan.aim(0, 0)) == mix == dict(plan.aim(0, 12))  # still ahead: as it is
    e = 6 / 48  # frame 30: a quarter of a second into the two-second morph
    old = 1 / (1 + (e / (1 - e)) ** SHARPEN)
    assert dict(plan.aim(30, 0)) == pytest.approx({"a cat": 0.75 * old, "a hat": 0.25 * old,
                                                   "a room": 1 - old})  # fmt: skip
    assert dict(plan.aim(18, 12)) == dict(plan.aim(30, 0))
    assert dict(plan.aim(48, 0)) == pytest.approx({"a cat": 0.375, "a hat": 0.125, "a room": 0.5})
    assert dict(plan.aim(48, 0)) == pytest.approx(dict(plan.frames[48].prompts))  # the middle
    assert dict(plan.aim(90, 12)) == {"a room": 1.0}  # frame 95, the last before the cut
    assert dict(plan.aim(96, 12)) == {"a sea": 1.0}  # the cut's own frame aims within its shot
    assert dict(plan.aim(110, 24)) == {"a sea": 1.0}  # the video's last frame, 119
    assert dict(plan.frames[30].prompts)["a room"] == pytest.approx(e)  # the plan is unchanged
    # The engine's own: a shot's first frame, made from noise in its first steps, aims by
    # those (here: 96 steps, under half a frame ahead); the others by their steps.
    settings = {"steps": 3, "first_steps": 96, "cadence": 1}
    assert plan.engine_aim(96, settings) == plan.aim(96, 0) == plan.frames[96].prompts
    assert plan.engine_aim(30, settings) == plan.aim(30, LAG_STEPS // 3) != plan.aim(30, 0)


def test_cut_marks_the_first_frame_at_or_after_its_time():
    plan = plan_of(
        """
        fps: 24
        keyframes:
          - at: 0s
            prompt: a
            cut: true
          - at: 0.51s
            prompt: b
            cut: true
          - at: 1s
            prompt: c
        """
    )
    cuts = [fp.frame for fp in plan.frames if fp.cut]
    assert cuts == [13]  # 0.51 s × 24 = 12.24 → frame 13; frame 0 is never a cut


def test_duration_defaults_to_the_last_keyframe_and_rounds_frames():
    plan = plan_of("fps: 30\nkeyframes:\n  - at: 0s\n    prompt: a\n  - at: 1.51s\n")
    assert plan.n_frames == 45  # round(1.51 × 30) = round(45.3)
    assert plan.frames[-1].t == pytest.approx(44 / 30)


def test_time_forms(tmp_path):
    plan = plan_of(
        """
        fps: 24
        keyframes:
          - at: 0
            prompt: a
          - at: 0:01.5
          - at: 48f
          - at: 2.5s
        """
    )
    assert [m.t for m in plan.keyframes] == [0.0, 1.5, 2.0, 2.5]


@pytest.fixture
def click_storyboard(tmp_path: Path) -> Path:
    """A click track with clicks every 0.5 s from 0.5 s, and a storyboard on its beats."""
    sr = 22050
    signal = np.zeros(int(6.5 * sr), dtype=np.float32)
    clicks = np.arange(0.5, 6.5, 0.5)
    for start in clicks:
        i = int(start * sr)
        signal[i : i + 300] = np.hanning(300) * np.sin(np.arange(300) * 0.8)
    soundfile.write(tmp_path / "clicks.wav", signal, sr)
    board = tmp_path / "beats.yaml"
    board.write_text(
        textwrap.dedent(
            """
            fps: 24
            audio:
              file: clicks.wav
              offset: 0.25s
            keyframes:
              - at: 0s
                prompt: a
                zoom: "1 + 0.1 * beat"
              - at: beat 3
                prompt: b
              - at: beat 6
                prompt: c
            """
        )
    )
    return board


def test_beat_n_lands_on_the_nth_click(click_storyboard):
    _, features, plan = load_story(str(click_storyboard))
    # Clicks at 0.5, 1.0, 1.5 ... s; the offset of 0.25 s moves them 0.25 s earlier.
    expected = [1.5 - 0.25, 3.0 - 0.25]
    got = [m.t for m in plan.keyframes[1:]]
    assert got == pytest.approx(expected, abs=1.5 / 24)
    # The beat variable peaks on the frame of a beat.
    beat_frame = round(got[0] * 24)
    assert plan.frames[beat_frame].zoom == pytest.approx(1.1, abs=1e-6)
    assert plan.frames[beat_frame + 3].zoom < 1.1


def test_plan_json_has_exactly_the_designed_keys(click_storyboard, capsys):
    assert main(["plan", str(click_storyboard), "--json"]) == 0
    frames = json.loads(capsys.readouterr().out)
    assert set(frames[0]) == {"frame", "t", "zoom", "rotate", "pan_x", "pan_y", "cut", "prompts"}
    assert [f["frame"] for f in frames] == list(range(len(frames)))


def test_plan_plot_is_drawn(click_storyboard, tmp_path, capsys):
    out = tmp_path / "plan.png"
    assert main(["plan", str(click_storyboard), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    # Title, header, rule, then one row per keyframe span (beat 6 ends the video).
    lines = table.strip().splitlines()
    assert len(lines) == 3 + 2
    assert "+1.00 a" in lines[3] and "+1.00 b" in lines[4]
