"""A storyboard that moves the 3D camera renders through the real loaders (tiny models, the
tiny depth model in its published format), keeps each optimised frame's depth in its resume
state so that a stopped render continues to exactly the uninterrupted frames, records the
depth model it read, and refuses to start without one, saying how to get it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from pipeline import run
from pipeline.cli import main

BOARD = """\
title: a 3D test
seed: 5
fps: 24
size: 360x640
duration: 10f
render:
  size: 144x256
  steps: 1
  first_steps: 2
  cuts: 2
  cadence: 2
models:
  vqgan: tiny
  clip: tiny
  depth: tiny
keyframes:
  - at: 0s
    prompt: "a corridor"
    translate: [1, 0, 0.03]
    rotate_3d: [0, 1, 0]
  - at: 6f
    prompt: "a staircase"
    rotate_3d: [0.5, -1, 2]
    fov: 55
"""


def write(tmp_path: Path, text: str = BOARD) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def options(
    tmp_path: Path, out: str, latent_warp: bool = False, device: str = "cpu"
) -> run.RenderOptions:
    from pipeline.settings import Speed

    speed = Speed(cadence=2, latent_warp=latent_warp)  # fp32 on every CPU
    return run.RenderOptions(output=tmp_path / out, device=device, encode=False, speed=speed)


def frames(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.glob("*.png"))]


@pytest.mark.device
@pytest.mark.parametrize("latent_warp", [False, True], ids=["picture-warp", "latent-warp"])
def test_a_stopped_3d_render_continues_to_exactly_the_uninterrupted_frames(
    tmp_path, latent_warp, device
):
    story = run.load(write(tmp_path))
    whole = run.render(story, options(tmp_path, "whole", latent_warp, device))
    assert whole.frames_done == 10 and not whole.stopped
    asked = iter([False, True])
    stop = lambda: next(asked, True)  # noqa: E731
    parts = run.render(story, options(tmp_path, "parts", latent_warp, device), should_stop=stop)
    assert parts.stopped and parts.frames_done == 3  # frames 0, 1-2 (frame 2 optimised)
    state = torch.load(parts.frames_dir / "state-000002.pt", weights_only=True)
    assert state["depth"].shape == (1, 1, 256, 144), "the optimised frame's depth is kept"
    assert float(state["depth"].median()) == pytest.approx(1.0, abs=1e-5), "in middle distances"
    resumed = run.render(story, options(tmp_path, "parts", latent_warp, device))
    assert not resumed.stopped and resumed.frames_done == 10
    assert frames(resumed.frames_dir) == frames(whole.frames_dir)
    # The camera moved the picture: no two neighbouring frames are the same.
    made = frames(whole.frames_dir)
    assert all(a != b for a, b in zip(made, made[1:], strict=False))


def test_the_record_names_the_depth_model_and_a_changed_one_is_not_continued(tmp_path, capsys):
    path = write(tmp_path)
    out = tmp_path / "out"
    assert main(["render", str(path), "-o", str(out), "--device", "cpu"]) == 0
    manifest = json.loads((out / "frames" / "manifest.json").read_text())
    depth = manifest["settings"]["models"]["depth"]
    assert depth["name"] == "tiny" and len(depth["sha256"]) == 64, manifest["settings"]["models"]
    capsys.readouterr()
    # The same storyboard read with another depth model (the tiny architecture from another
    # seed, in its own file) is another render: refused, the frames kept.
    from pipeline.models.architectures import TINY_DEPTH
    from pipeline.models.depth import random_depth, save_depth

    other = tmp_path / "other-depth.pth"
    save_depth(random_depth(TINY_DEPTH, seed=7), other)
    before = frames(out / "frames")
    code = main(["render", str(path), "-o", str(out), "--device", "cpu", "--depth", str(other)])
    err = capsys.readouterr().err
    assert code != 0, err
    assert "--fresh" in err and "depth" in err, err
    assert frames(out / "frames") == before


def test_a_3d_storyboard_without_its_depth_model_fails_before_any_frame(
    tmp_path, capsys, monkeypatch
):
    # The storyboard names the real depth model, which is not here and cannot be fetched
    # (its address answers nothing): a clear message naming the model, exit 1, no frame.
    from pipeline.models import catalogue

    entry = catalogue.find_entry("depth", "depth-anything-v2-small")
    dead = "http://127.0.0.1:9/depth_anything_v2_vits.pth"
    file = entry.files[0]
    dead_file = type(file)(**{**file.__dict__, "url": dead, "mirrors": ()})
    moved = type(entry)(**{**entry.__dict__, "file": dead_file})
    monkeypatch.setitem(catalogue.DEPTHS, entry.name, moved)
    path = write(tmp_path, BOARD.replace("depth: tiny", "depth: depth-anything-v2-small"))
    out = tmp_path / "out"
    code = main(["render", str(path), "-o", str(out), "--device", "cpu", "--vqgan", "tiny",
                 "--clip", "tiny"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "depth-anything-v2-small" in err, err
    assert "moves the 3D camera" in err, err
    assert "--depth tiny" in err and "by hand" in err, err
    assert "--models shapes" not in err, err  # the shapes models have no depth model
    assert not list(out.glob("frames/*.png"))
    assert "Traceback" not in err
