"""`feverdream batch` on a local Ray cluster the test starts (2 CPUs, two one-thread render
workers): storyboards and their shots as tasks, frames byte-identical to `feverdream render`,
a worker killed mid-shot costs nothing, a bad storyboard is reported and the others render."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from test_tiktok_post import fake, sha256  # noqa: F401 (a fixture, and its helper)

from pipeline import batch, memory, record, rendering, run, shots
from pipeline.cli import main
from pipeline.store import FrameStore

# Ray is an optional dependency of feverdream (the `cluster` extra), not of its tests: `make
# setup` installs it, and without it these tests fail rather than skip.
assert importlib.util.find_spec("ray"), "Ray is missing: `make setup` installs .[test,cluster]"

BOARD = """\
title: {title}
seed: {seed}
size: 360x640
duration: {frames}f
render:
  size: 144x256
  steps: {steps}
  first_steps: {first_steps}
  cuts: 4
  cadence: 2
models:
  vqgan: tiny
  clip: tiny
keyframes:
  - at: 0s
    prompt: "a red circle"
    zoom: 1.02
{more}"""
CUT = """\
  - at: {at}f
    prompt: "a blue square"
    cut: true
    pan: [2, 0]
"""


def write(folder: Path, name: str, frames: int, cut_at: int | None, steps=2, first_steps=6):
    more = CUT.format(at=cut_at) if cut_at is not None else ""
    text = BOARD.format(title=name, seed=len(name), frames=frames, steps=steps,
                        first_steps=first_steps, more=more)  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def hashes(folder: Path, count: int) -> list[str]:
    store = FrameStore(folder)
    return [hashlib.sha256(store.frame_path(i).read_bytes()).hexdigest() for i in range(count)]


def rendered_alone(path: Path, out: Path, memory: int | None = None) -> list[str]:
    """The frames `feverdream render` makes of it, on one thread like each batch worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        story = run.load(path)
        options = run.RenderOptions(output=out, device="cpu", encode=False, memory=memory)
        run.render(story, options)
    finally:
        torch.set_num_threads(threads)
    return hashes(out, story.plan.n_frames)


@pytest.fixture
def boards(tmp_path, tiny_model_dir):
    folder = tmp_path / "boards"
    folder.mkdir()
    for path in (write(folder, "calm", 10, None), write(folder, "cut", 16, 7)):
        caption = f"caption: '{path.stem} #feverdream'\nkeyframes:"
        path.write_text(path.read_text().replace("keyframes:", caption))
    return folder


def test_a_batch_renders_the_same_frames_as_render_posts_each_and_reports_a_bad_one(
    fake,  # noqa: F811 (the fake TikTok fixture, imported above)
    boards,
    tmp_path,
    capsys,
):
    (boards / "broken.yaml").write_text("title: broken\nduration: 1s\nkeyframes:\n  - at: soon\n")
    out = tmp_path / "out"
    # Memory for one step with every cutout at once, not two: the two workers, sharing it,
    # each checkpoint the decoder.
    story = run.load(boards / "cut.yaml")
    options = run.RenderOptions(device="cpu")
    engine, _ = rendering.make_engine(story, options, "cpu", run.load_models(story, options, "cpu"))
    one_step = memory.fits(engine, free=2**40).need
    limit = int(2 * one_step / memory.HEADROOM) - 2
    assert memory.fits(engine, free=limit).fits
    code = main(["batch", str(boards), "-o", str(out), "--device", "cpu", "--workers", "2",
                 "--memory", f"{limit}B", "--post"])  # fmt: skip
    captured = capsys.readouterr()
    # The bad storyboard is reported with its FILE:LINE; the others render.
    assert code == 1, captured.err
    assert "broken.yaml:4: keyframes[1].at" in captured.err
    assert "2 of 3 storyboards rendered; 1 failed" in captured.out
    for name, frames in (("calm", 10), ("cut", 16)):
        folder = out / name
        alone = rendered_alone(boards / f"{name}.yaml", tmp_path / "alone" / name, limit // 2)
        assert hashes(folder, frames) == alone
        settings = json.loads((folder / "frames" / "manifest.json").read_text())["settings"]
        assert settings["execution"]["checkpoint"], settings
        assert main(["check", str(folder / f"{name}.mp4")]) == 0
        assert not (folder / "shots").exists()
    # The cut storyboard was two tasks, one per shot.
    assert run.shots(run.load(boards / "cut.yaml").plan) == [(0, 7), (7, 16)]
    # Each video went to TikTok as a draft, with its storyboard's caption.
    posted = sorted(task.sha256.hexdigest() for task in fake.tasks.values())
    assert posted == sorted(sha256(out / name / f"{name}.mp4") for name in ("calm", "cut"))
    assert "calm #feverdream" in captured.out and "cut #feverdream" in captured.out
    (boards / "broken.yaml").unlink()

    # `feverdream render` finds the batch's frames finished: nothing is rendered again.
    capsys.readouterr()
    before = (out / "cut" / "frames" / "000003.png").stat().st_mtime_ns
    again = run.render(boards / "cut.yaml", run.RenderOptions(output=out / "cut", encode=False))
    assert again.frames_done == 16
    assert (out / "cut" / "frames" / "000003.png").stat().st_mtime_ns == before
    # And a batch run again skips what is done.
    assert main(["batch", str(boards), "-o", str(out), "--workers", "2"]) == 0
    assert capsys.readouterr().out.count("already rendered") == 2
    # A video lost after its frames were gathered is encoded again, nothing rendered again.
    (out / "cut" / "cut.mp4").unlink()
    assert main(["batch", str(boards), "-o", str(out), "--workers", "2"]) == 0
    assert (out / "cut" / "cut.mp4").is_file()
    assert (out / "cut" / "frames" / "000003.png").stat().st_mtime_ns == before


def test_a_worker_killed_mid_shot_costs_nothing(tmp_path, tiny_model_dir):
    folder = tmp_path / "boards"
    folder.mkdir()
    path = write(folder, "long", 16, 8, steps=5, first_steps=24)
    story = run.load(path)
    killed: list[int] = []
    before: dict[int, float] = {}  # the first frames' render times, as recorded when killed
    at_kill: list[int] = []  # how many frames of the shot were recorded then

    def kill_when_frames_appear(ray, actors):
        pids = ray.get([actor.pid.remote() for actor in actors])
        shot = shots.shot_folder(story, run.RenderOptions(output=tmp_path / "out" / "long"),
                               (0, 8))  # fmt: skip

        def watch():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                made = record.read_folder(shot) if shot.exists() else None
                if made is not None and len(made.frames) >= 3:
                    at_kill.append(len(made.frames))
                    before.update({i: r.seconds for i, r in made.frames.items() if i < 3})
                    for pid in pids:  # both workers: whichever holds the shot dies mid-way
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    return
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()

    jobs = batch.batch([path], run.RenderOptions(output=tmp_path / "out", device="cpu"),
                       workers=2, on_ready=kill_when_frames_appear)  # fmt: skip
    assert killed, "the workers were never killed: the shot finished too soon"
    assert at_kill[0] < 8, "the shot was done before the kill"
    (job,) = jobs
    assert job.error is None and job.video is not None
    assert hashes(tmp_path / "out" / "long", 16) == rendered_alone(path, tmp_path / "alone")
    # The retried task continued after the frames saved before the kill: they were not made
    # again (a frame made again would have its own time).
    records = record.read_folder(tmp_path / "out" / "long").frames
    assert {i: records[i].seconds for i in before} == before


def test_without_ray_batch_says_how_to_install_it(boards, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    assert main(["batch", str(boards), "-o", str(tmp_path / "out")]) == 2
    assert "pip install 'feverdream[cluster]'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "calm" / "frames").exists()
