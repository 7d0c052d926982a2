"""`feverdream score`: flicker measured along the plan's own camera, colour drift from each
shot's first frame, and the CLIP loss against what steered the render, words and pictures,
read from the frames a render left in its folder; what the figures mean, when the worst
second was, and plain words for an unfinished render or a wrong path."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline import record, run
from pipeline.cli import main
from pipeline.errors import FeverdreamError
from pipeline.record import FrameRecord, Record
from pipeline.schedule import FramePlan
from pipeline.score import Measure, score
from pipeline.store import FrameStore


def frame_plan(
    index: int, pan_x: float = 0.0, cut: bool = False, prompts=(("a room", 1.0),)
) -> FramePlan:
    return FramePlan(index, index / 24, 1.0, 0.0, pan_x, 0.0, cut, tuple(prompts))


def write_render(folder, frames: list[np.ndarray], plan: list[FramePlan], **settings):
    """A render folder as a render leaves it: the frames, and a record with their plan
    (which may plan more frames than there are) and `settings`."""
    store = FrameStore(folder)
    store.frames_dir.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(store.frame_path(index))
    records = {i: FrameRecord(None, 0.0) for i in range(len(frames))}
    made = Record({"seed": 0, "cuts": 4, **settings}, [p.to_json() for p in plan], records)
    record.write(store, made)
    return folder


def texture(seed: int = 0, size=(64, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))


def test_flicker_follows_the_plans_camera(tmp_path):
    # A picture that moves 4 px right a frame, as its plan says: almost no flicker. The same
    # frames scored against a plan that stands still: every frame differs from the last.
    base = texture()
    pictures = [np.roll(base, 4 * i, axis=1) for i in range(6)]
    moving = score(
        write_render(tmp_path / "moving", pictures, [frame_plan(i, 4) for i in range(6)])
    )
    still = score(write_render(tmp_path / "still", pictures, [frame_plan(i) for i in range(6)]))
    assert moving.flicker.per_frame[0] is None
    assert moving.flicker.mean < 1.0, moving.flicker
    assert still.flicker.mean > 10 * max(moving.flicker.mean, 0.5), (still.flicker, moving.flicker)


def test_colour_drift_grows_as_a_shot_turns_red_and_starts_again_at_a_cut(tmp_path):
    grey = np.full((96, 64, 3), 128, dtype=np.uint8)
    pictures = []
    for i in range(8):
        picture = grey.copy()
        picture[..., 0] = 128 + 15 * (i % 4)  # redder each frame; the cut at 4 starts grey
        pictures.append(picture)
    plan = [frame_plan(i, cut=i == 4) for i in range(8)]
    drift = score(write_render(tmp_path / "r", pictures, plan)).colour_drift.per_frame
    assert drift[0] == 0 and drift[4] == 0
    assert drift[1] < drift[2] < drift[3] and drift[5] < drift[6] < drift[7]
    assert abs(drift[3] - drift[7]) < 1e-9


def test_the_worst_second_is_the_highest_mean_over_a_second_and_says_when():
    measure = Measure.of([None, 1.0, 1.0, 5.0, 5.0, 1.0], fps=2, start=10.0)
    assert measure.mean == 13 / 5 and measure.worst == 5.0
    assert measure.worst_at == (11.5, 12.5)  # frames 3 and 4, at 2 fps from 10 s
    nothing = Measure.of([None, None], fps=2)
    assert (nothing.mean, nothing.worst, nothing.worst_at) == (None, None, None)


def strict_json(text: str):
    """JSON as a strict parser reads it: NaN and Infinity are not JSON."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def draw(path, shape: str, colour, size=(64, 112)):
    picture = Image.new("RGB", size, "black")
    cx, cy, r = size[0] / 2, size[1] / 2, 0.3 * size[0]
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(picture)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    picture.save(path)
    return path


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def red_frames(tmp_path):
    """Four frames of a red circle, the picture they were drawn from, and a blue square."""
    red = draw(tmp_path / "red.png", "circle", (220, 30, 30))
    blue = draw(tmp_path / "blue.png", "square", (30, 60, 220))
    return [np.asarray(Image.open(red).convert("RGB"))] * 4, red, blue


WORDS = "a large blue square on a black background"


def test_an_image_prompt_is_scored_against_its_picture(tmp_path, shapes_models, red_frames):
    # Frames of a red circle are close to a red circle given as a picture and far from a blue
    # square (measured with the shapes CLIP: 0.16 against 0.80).
    frames, red, blue = red_frames
    pictures = {"image: red.png": red, "image: blue.png": blue}
    means = {}
    for name in pictures:
        plan = [frame_plan(i, prompts=[(name, 1.0)]) for i in range(4)]
        folder = write_render(tmp_path / f"render-{name[7:-4]}", frames, plan)
        scored = score(folder, shapes_models[1], images=pictures)
        assert all(v is not None for v in scored.clip_loss.per_frame) and not scored.left_out
        means[name] = scored.clip_loss.mean
    assert means["image: red.png"] + 0.3 < means["image: blue.png"], means


def test_where_words_and_pictures_mix_both_count(tmp_path, shapes_models, red_frames):
    # The same frames, cutouts and weights: the mixed loss is the picture's and the words'.
    frames, red, _ = red_frames
    losses = {}
    for name, prompts in {
        "picture": [("image: red.png", 1.0)],
        "words": [(WORDS, 0.5)],
        "mixed": [("image: red.png", 1.0), (WORDS, 0.5)],
    }.items():
        folder = write_render(
            tmp_path / name, frames, [frame_plan(i, prompts=prompts) for i in range(4)]
        )
        losses[name] = score(folder, shapes_models[1], images={"image: red.png": red}).clip_loss
    for index in range(4):
        both = losses["picture"].per_frame[index] + losses["words"].per_frame[index]
        assert losses["mixed"].per_frame[index] == pytest.approx(both, abs=1e-4)
    assert losses["mixed"].mean > losses["words"].mean + 0.05


def test_without_the_storyboard_pictures_are_asked_for_not_left_out(
    tmp_path, shapes_models, red_frames, capsys
):
    frames, red, _ = red_frames
    for name, prompts in {
        "pictures only": [("image: red.png", 1.0)],
        "pictures as well as words": [("image: red.png", 1.0), (WORDS, 1.0)],
    }.items():
        folder = write_render(
            tmp_path / name, frames, [frame_plan(i, prompts=prompts) for i in range(4)]
        )
        with pytest.raises(FeverdreamError, match=f"steered by {name}") as error:
            score(folder, shapes_models[1])
        assert "image: red.png" in str(error.value) and "--storyboard FILE" in str(error.value)
        # The command line says so before any CLIP loads, and prints no figures.
        assert main(["score", str(folder), "--json"]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and "--clip none" in captured.err, captured
    assert score(folder).clip_loss is None  # without a CLIP, nothing is needed


def test_a_picture_changed_since_the_render_is_left_out_and_said(
    tmp_path, tiny_model_dir, red_frames, capsys
):
    frames, red, _ = red_frames
    recorded = {"pictures": {"image: red.png": sha256(red)}}
    folders = {}
    for name, prompts in {
        "words": [("a room", 1.0)],
        "mixed": [("image: red.png", 1.0), ("a room", 1.0)],
        "picture": [("image: red.png", 1.0)],
    }.items():
        plan = [frame_plan(i, prompts=prompts) for i in range(4)]
        folders[name] = str(write_render(tmp_path / name, frames, plan, **recorded))
    board = tmp_path / "board.yaml"
    board.write_text(
        'duration: 4f\nkeyframes:\n  - at: 0s\n    prompt: {"image: red.png": 1, "a room": 1}\n'
    )
    draw(red, "square", (30, 60, 220))  # the picture is replaced after the render

    def scored(name: str) -> tuple[int, dict, str]:
        code = main(
            ["score", folders[name], "--clip", "tiny", "--storyboard", str(board), "--json"]
        )
        captured = capsys.readouterr()
        assert captured.out, captured.err
        return code, strict_json(captured.out), captured.err

    _, words, _ = scored("words")
    code, mixed, err = scored("mixed")
    assert code == 0
    assert "has changed since the render" in mixed["clip_loss"]["left_out"]["image: red.png"]
    assert mixed["clip_loss"]["mean"] == pytest.approx(words["clip_loss"]["mean"], abs=1e-5)
    assert "leaves out 'image: red.png'" in err and mixed["warnings"]

    # Nothing left to score: null figures with the reason, exit 1, still strict JSON.
    code, picture, err = scored("picture")
    assert code == 1 and "no frame's CLIP loss" in err
    loss = picture["clip_loss"]
    assert loss["mean"] is None and loss["worst_second"] is None and loss["missing"]
    assert picture["flicker"]["mean"] is not None


def test_a_path_that_is_not_a_render_folder_is_named_plainly(tmp_path, red_frames, capsys):
    frames, _, _ = red_frames
    render = write_render(tmp_path / "out", frames, [frame_plan(i) for i in range(4)])
    (render / "out.mp4").write_bytes(b"\0" * 16)
    (tmp_path / "empty").mkdir()
    for path, words in [
        (tmp_path / "nothing-here", ["nothing-here does not exist", "outputs/NAME"]),
        (render / "out.mp4", ["out.mp4 is a video file, not a render folder", f"{render}"]),
        (tmp_path / "empty", ["holds no rendered frames", "outputs/NAME"]),
    ]:
        assert main(["score", str(path)]) == 1
        err = capsys.readouterr().err
        assert all(word in err for word in words) and "Traceback" not in err, err


BOARD = """\
title: t
duration: 8f
render:
  size: 144x256
  steps: 1
  first_steps: 2
  cuts: 2
keyframes:
  - at: 0s
    prompt: a room
    zoom: 1.05
    ease: hold
  - at: 4f
    prompt: {"image: red.png": 1, "a room": 0.5}
"""


@pytest.fixture(scope="module")
def real_render(tmp_path_factory, _tiny_model_files):
    """One small render with the tiny models, made once for this file: stopped after its
    first 4 frames (words only; a copy kept as `unfinished`), then finished (its last 4
    steered by a picture as well)."""
    folder = tmp_path_factory.mktemp("real-render")
    models = folder / "models"
    models.mkdir()
    for path in (_tiny_model_files.vqgan_ckpt, _tiny_model_files.vqgan_config,
                 _tiny_model_files.clip):  # fmt: skip
        shutil.copy(path, models / path.name)
    draw(folder / "red.png", "circle", (220, 30, 30), size=(144, 256))
    (folder / "board.yaml").write_text(BOARD)
    frames = folder / "out" / "frames"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MODELS", "CACHE", "HOME"):
            patch.setenv(f"FEVERDREAM_{name}", str(folder / name.lower()))
        story = run.load(folder / "board.yaml")
        options = run.RenderOptions(output=folder / "out", vqgan="tiny", clip="tiny", encode=False)
        run.render(story, options, should_stop=lambda: len(list(frames.glob("*.png"))) >= 4)
        shutil.copytree(folder / "out", folder / "unfinished")
        assert run.render(story, options).frames_done == 8
    return folder


def test_an_unfinished_render_is_scored_with_a_warning(real_render, tiny_model_dir, capsys):
    assert main(["score", str(real_render / "unfinished"), "--json"]) == 0
    captured = capsys.readouterr()
    figures = strict_json(captured.out)
    assert (figures["frames"], figures["planned_frames"], figures["finished"]) == (4, 8, False)
    for name in ("clip_loss", "flicker", "colour_drift"):
        assert np.isfinite(figures[name]["mean"]) and figures[name]["worst_second"] >= 0
    assert "unfinished: 4 of its 8 frames" in captured.err


def test_a_render_steered_by_a_picture_is_scored_with_it(real_render, tiny_model_dir, capsys):
    out, board = str(real_render / "out"), str(real_render / "board.yaml")
    assert main(["score", out]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "image: red.png" in captured.err, captured

    assert main(["score", out, "--storyboard", board, "--json"]) == 0
    captured = capsys.readouterr()
    figures = strict_json(captured.out)
    assert figures["frames"] == 8 and figures["finished"] and figures["warnings"] == []
    assert np.isfinite(figures["clip_loss"]["mean"]) and "left_out" not in figures["clip_loss"]
    start, end = figures["flicker"]["worst_second_at"]
    assert 0 <= start < end <= 8 / 24 + 1e-6

    # For people: the figures, when the worst second was, and what each means.
    assert main(["score", out, "--storyboard", board]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^flicker +\d+\.\d{4} +\d+\.\d{4}  0\.\d\d-0\.\d\d s$", text, re.M), text
    for words in ("lower is closer", "0-255", "CIE76 ΔE", "worst second:"):
        assert words in text, text
