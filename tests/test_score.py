"""`feverdream score`: flicker measured along the plan's own camera, colour drift from each
shot's first frame, and the CLIP loss, read from the frames a render left in its folder."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipeline import run
from pipeline.cli import main
from pipeline.schedule import FramePlan
from pipeline.score import Measure, score
from pipeline.store import FrameRecord, FrameStore, Manifest


def frame_plan(index: int, pan_x: float = 0.0, cut: bool = False) -> FramePlan:
    return FramePlan(index, index / 24, 1.0, 0.0, pan_x, 0.0, cut, (("a room", 1.0),))


def write_render(folder, pictures: list[np.ndarray], plan: list[FramePlan]):
    store = FrameStore(folder)
    store.frames_dir.mkdir(parents=True)
    for index, picture in enumerate(pictures):
        Image.fromarray(picture).save(store.frame_path(index))
    records = {i: FrameRecord(None, 0.0) for i in range(len(pictures))}
    store.write_manifest(Manifest({"seed": 0, "cuts": 4}, [p.to_json() for p in plan], records))
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


def test_the_worst_second_is_the_highest_mean_over_a_window():
    measure = Measure.of([None, 1.0, 1.0, 5.0, 5.0, 1.0], window=2)
    assert measure.mean == 13 / 5 and measure.worst == 5.0


def test_score_reads_a_real_render_with_its_own_clip(tmp_path, tiny_model_dir, capsys):
    board = tmp_path / "board.yaml"
    board.write_text(
        "title: t\nduration: 8f\nrender:\n  size: 144x256\n  steps: 1\n  first_steps: 2\n"
        "  cuts: 2\nkeyframes:\n  - at: 0s\n    prompt: a room\n    zoom: 1.05\n"
    )
    options = run.RenderOptions(output=tmp_path / "out", vqgan="tiny", clip="tiny", encode=False)
    run.render(run.load(board), options)
    assert main(["score", str(tmp_path / "out"), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["frames"] == 8
    for name in ("clip_loss", "flicker", "colour_drift"):
        assert np.isfinite(figures[name]["mean"]) and figures[name]["worst_second"] >= 0
    assert main(["score", str(tmp_path / "nothing-here")]) != 0
    assert "holds no rendered frames" in capsys.readouterr().err
