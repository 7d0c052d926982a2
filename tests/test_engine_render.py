"""The frame loop with the tiny models, loaded from real-format files: it optimises toward
its prompts, repeats itself exactly, and never loses or corrupts finished frames."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from small_disk import on_a_small_disk

from pipeline.engine import Engine
from pipeline.models.loading import load_models
from pipeline.settings import CLASSIC, EngineSettings, Speed

BOARD = """\
title: engine test
seed: 7
fps: 24
size: 360x640
duration: 12f
render:
  size: 144x256
  steps: 2
  first_steps: 4
  cuts: 4
  cadence: 2
keyframes:
  - at: 0s
    prompt: "a red circle"
    zoom: 1.05
  - at: 6f
    prompt: "a blue square"
    rotate: 3
    pan: [2, 0]
"""


@pytest.fixture(scope="module")
def tiny_models(_tiny_model_files):
    """The tiny models, loaded by path through the real loaders."""
    return load_models(str(_tiny_model_files.vqgan_ckpt), str(_tiny_model_files.clip), "cpu")


def engine_for(models, speed: Speed = CLASSIC, **overrides) -> Engine:
    vqgan, clip = models
    values = dict(width=144, height=256, steps=10, first_steps=10, cuts=8, lr=0.1, seed=3)
    values.update(overrides)
    return Engine(vqgan, clip, EngineSettings(**values, speed=speed))


def similarity(engine: Engine, z: torch.Tensor, text: str) -> float:
    """How close CLIP finds the decoded frame (as a whole, letterboxed view) and the text."""
    from pipeline.guidance import make_cutouts

    engine.embed([text])
    with torch.no_grad():
        image = engine.latent_to_image(z)
        view = make_cutouts(image, 1, engine.clip.input_resolution, torch.Generator())
        return float(engine.clip.encode_image(view)[0] @ engine.embeddings[text])


def test_optimising_moves_the_frame_towards_its_prompt_and_away_from_a_negative(tiny_models):
    engine = engine_for(tiny_models)
    start = engine.random_latent(torch.Generator().manual_seed(0))
    text = "a red circle"
    before = similarity(engine, start, text)
    toward, _, _ = engine.optimise(start, ((text, 1.0),), 15, torch.Generator().manual_seed(1))
    away, _, _ = engine.optimise(start, ((text, -1.0),), 15, torch.Generator().manual_seed(1))
    assert similarity(engine, toward, text) > before + 0.01
    assert similarity(engine, away, text) < before - 0.01


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _tiny_model_files, device) -> Path:
    """One uninterrupted render of BOARD on the device under test, which the tests compare
    against or start from."""
    folder = tmp_path_factory.mktemp("reference")
    models = str(_tiny_model_files.vqgan_ckpt.parent)
    result = render(folder, "out", "--device", device, env={"FEVERDREAM_MODELS": models})
    assert result.returncode == 0, result.stderr
    assert len(frames_of(folder / "out")) == 12
    return folder / "out"


def render(
    tmp_path: Path,
    out: str,
    *extra: str,
    board: str = BOARD,
    wait: bool = True,
    env: dict[str, str] | None = None,
):
    path = tmp_path / "board.yaml"
    path.write_text(textwrap.dedent(board))
    command = [sys.executable, "-m", "pipeline", "render", str(path), "-o", str(tmp_path / out)]
    command += ["--models", "tiny", *extra]
    if "--device" not in extra:
        command += ["--device", "cpu"]
    env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def render_here(tmp_path: Path, out: str, *extra: str, board: str, capsys, caplog):
    """The command `render` runs, run in this process (the command line's own main): the
    same code, without starting Python and torch again. Its exit status, and what it said
    (its errors and its log)."""
    from pipeline.cli import main

    path = tmp_path / "board.yaml"
    path.write_text(textwrap.dedent(board))
    command = ["render", str(path), "-o", str(tmp_path / out), "--models", "tiny"]
    with caplog.at_level("INFO", logger="pipeline"):
        code = main([*command, "--device", "cpu", *extra])
    return code, capsys.readouterr().err + caplog.text


def frames_of(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((folder / "frames").glob("*.png"))]


@pytest.mark.device
def test_a_killed_render_resumes_to_exactly_the_uninterrupted_frames(
    tmp_path, tiny_model_dir, reference, device
):
    process = render(tmp_path, "killed", "--device", device, wait=False)
    target = tmp_path / "killed" / "frames" / "000005.png"
    deadline = time.monotonic() + 240
    while not target.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert target.exists(), "the render never reached frame 5"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(frames_of(tmp_path / "killed")) < 12

    resumed = render(tmp_path, "killed", "--device", device)
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing after frame" in resumed.stderr
    # Other processes' frames, byte for byte: the same storyboard, seed and device give the
    # same frames, and a resumed render the uninterrupted one's.
    assert frames_of(tmp_path / "killed") == frames_of(reference)


def test_ctrl_c_stops_after_the_current_frame_and_the_render_continues(tmp_path, tiny_model_dir):
    process = render(tmp_path, "stopped", wait=False)
    target = tmp_path / "stopped" / "frames" / "000002.png"
    deadline = time.monotonic() + 240
    while not target.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert b"run the same command to continue" in err
    kept = frames_of(tmp_path / "stopped")
    assert 3 <= len(kept) < 12
    finished = render(tmp_path, "stopped")
    assert finished.returncode == 0, finished.stderr
    assert len(frames_of(tmp_path / "stopped")) == 12


@pytest.mark.parametrize("encode", ["after", "during"])
def test_ctrl_c_while_encoding_stops_at_once_and_keeps_every_frame(
    tmp_path, tiny_model_dir, reference, encode
):
    # "during": the encoder began with the frames (here all made already) and is killed.
    shutil.copytree(reference, tmp_path / "out")
    (tmp_path / "out" / "board.mp4").unlink()
    process = render(tmp_path, "out", "--encode", encode, wait=False, env={"PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    for line in process.stdout:  # "frames: DIR" is printed as the encoding starts
        if line.startswith(b"frames: "):
            process.send_signal(signal.SIGINT)
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert b"interrupted" in err and b"ffmpeg" not in err and b"stopping after" not in err
    assert not list((tmp_path / "out").glob("*.mp4*")) and not list((tmp_path / "out").glob(".*"))
    assert frames_of(tmp_path / "out") == frames_of(reference)


def test_a_changed_storyboard_needs_fresh_and_keeps_the_frames(
    tmp_path, tiny_model_dir, reference, capsys, caplog
):
    shutil.copytree(reference, tmp_path / "out")
    before = frames_of(tmp_path / "out")
    seed = BOARD.replace("seed: 7", "seed: 8")
    code, said = render_here(tmp_path, "out", board=seed, capsys=capsys, caplog=caplog)
    assert code == 2
    assert "seed: 7 → 8" in said and "--fresh" in said
    assert frames_of(tmp_path / "out") == before
    zoom = BOARD.replace("zoom: 1.05", "zoom: 1.06")
    code, said = render_here(tmp_path, "out", board=zoom, capsys=capsys, caplog=caplog)
    assert code == 2
    assert "changed at frame 0" in said and "zoom 1.05 → 1.06" in said
    assert frames_of(tmp_path / "out") == before
    code, said = render_here(tmp_path, "out", "--fresh", board=seed, capsys=capsys, caplog=caplog)
    assert code == 0, said
    assert frames_of(tmp_path / "out") != before


def test_a_longer_storyboard_continues_after_the_frames_already_made(
    tmp_path, tiny_model_dir, reference, capsys, caplog
):
    shutil.copytree(reference, tmp_path / "out")
    before = frames_of(tmp_path / "out")
    longer = BOARD.replace("duration: 12f", "duration: 16f")
    code, said = render_here(tmp_path, "out", board=longer, capsys=capsys, caplog=caplog)
    assert code == 0, said
    assert "continuing after frame 11" in said
    assert frames_of(tmp_path / "out")[:11] == before[:11]
    assert len(frames_of(tmp_path / "out")) == 16


def test_a_storyboard_that_changes_what_finished_frames_aimed_at_needs_fresh(
    tmp_path, tiny_model_dir, reference, capsys, caplog
):
    # The engine aims ahead of the plan (Plan.aim): a storyboard that goes on with a new prompt
    # changes what the frames already made aimed at, though not their own prompts, so they are
    # not continued as if an uninterrupted render had made them.
    shutil.copytree(reference, tmp_path / "out")
    before = frames_of(tmp_path / "out")
    longer = BOARD.replace("duration: 12f", "duration: 16f") + (
        '  - at: 12f\n    prompt: "a blue square"\n    ease: hold\n'
        '  - at: 14f\n    prompt: "a green triangle"\n'
    )
    code, said = render_here(tmp_path, "out", board=longer, capsys=capsys, caplog=caplog)
    assert code == 2
    assert "the storyboard changed at frame" in said and "the prompts it aims at" in said
    assert "--fresh" in said
    assert frames_of(tmp_path / "out") == before


@pytest.mark.parametrize(
    ("models", "words"),
    [
        ("vqgan: no_such_model", ["no_such_model", "known"]),
        ("vqgan: broken.ckpt", ["broken.ckpt"]),
    ],
)
def test_bad_models_fail_clearly_and_leave_frames_alone(
    tmp_path, tiny_model_dir, reference, models, words
):
    shutil.copytree(reference, tmp_path / "out")
    before = frames_of(tmp_path / "out")
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "broken.yaml").write_text("model:\n  params: {}\n")
    board = BOARD.replace("keyframes:", f"models:\n  {models}\n  clip: tiny\nkeyframes:")
    path = tmp_path / "bad.yaml"
    path.write_text(board)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "render", str(path), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert frames_of(tmp_path / "out") == before


def test_frames_made_by_the_engine_before_it_aimed_ahead_are_refused_not_mixed(
    tmp_path, tiny_model_dir, reference, capsys, caplog
):
    # A render begun before the engine aimed ahead of the plan (issue 36) records no aim:
    # its frames are neither continued nor rewritten, finished or not.
    import json

    shutil.copytree(reference, tmp_path / "out")
    manifest_path = tmp_path / "out" / "frames" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["settings"]["aim"]
    manifest["settings"]["carry_optimizer"] = True
    for frame in manifest["plan"]:
        frame.pop("aim", None)
    for finished in (True, False):
        if not finished:
            del manifest["frames"]["11"]
            (tmp_path / "out" / "frames" / "000011.png").unlink()
        manifest_path.write_text(json.dumps(manifest))
        before = frames_of(tmp_path / "out")
        code, said = render_here(tmp_path, "out", board=BOARD, capsys=capsys, caplog=caplog)
        assert code == 2
        assert "made by an older engine" in said and "--fresh" in said
        assert frames_of(tmp_path / "out") == before
        assert json.loads(manifest_path.read_text()) == manifest
    code, said = render_here(tmp_path, "out", "--fresh", board=BOARD, capsys=capsys, caplog=caplog)
    assert code == 0, said
    assert frames_of(tmp_path / "out") == frames_of(reference)


def test_a_held_camera_moves_the_shown_picture_and_encodes_it_moved_past_its_cells(
    tiny_models, tmp_path
):
    # For a VQGAN whose round trip loses moves smaller than a latent cell (the shapes one),
    # the engine holds the camera's move: each frame's picture is encoded again unmoved and
    # shown moved by the camera so far, until the move takes a corner `camera_hold` cells
    # away; then the moved picture is encoded, as every frame of the classic loop is.
    from pipeline.camera import camera_path, reach, warp_by
    from pipeline.run import load as load_story

    path = tmp_path / "board.yaml"
    path.write_text(BOARD.replace("duration: 12f", "duration: 6f").replace("1.05", "1.02"))
    _, _, plan = load_story(str(path))
    engine = engine_for(tiny_models, steps=0, first_steps=0, camera_hold=1)
    cell = engine.vqgan.downsample
    previous, encoded = engine.anchor(0, plan, None), None
    for index in range(1, 6):
        moved = camera_path(plan, 0, index)
        frame = engine.anchor(index, plan, previous)
        with torch.no_grad():
            picture = engine.latent_to_image(previous.z)
        if reach(moved, 144, 256) < cell:
            assert torch.equal(frame.z, engine.image_to_latent(picture))
            assert torch.equal(frame.held, moved)
            with torch.no_grad():
                assert torch.equal(frame.image, warp_by(engine.latent_to_image(frame.z), moved))
        else:
            assert frame.held is None
            assert torch.equal(frame.z, engine.image_to_latent(warp_by(picture, moved)))
            encoded = index
            break
        previous = frame
    assert encoded is not None and encoded > 1, "the first frames hold, a later one is encoded"
    assert engine.settings.record()["camera_hold"] == 1
    assert engine_for(tiny_models).settings.record()["camera_hold"] == 0


def test_a_render_resumed_while_the_camera_is_held_makes_the_same_frames(tmp_path):
    # The held move is part of what a render saves: stopped and continued, a zoom with the
    # shapes models (which hold 4 cells) makes the frames an uninterrupted render makes.
    from pipeline import run

    board = tmp_path / "board.yaml"
    board.write_text(
        "title: t\nduration: 10f\nrender:\n  size: 144x256\n  steps: 1\n  first_steps: 2\n"
        "  cuts: 2\nmodels:\n  vqgan: shapes\n  clip: shapes\n"
        "keyframes:\n  - at: 0s\n    prompt: a large red circle\n    zoom: 1.03\n"
    )
    story = run.load(board)

    def options(out):
        return run.RenderOptions(output=tmp_path / out, encode=False)

    whole = run.render(story, options("whole"))
    asked = iter([False, False, False, True])
    stopped = run.render(story, options("parts"), should_stop=lambda: next(asked, True))
    assert stopped.stopped and stopped.frames_done == 4
    state = torch.load(stopped.frames_dir / "state-000003.pt", weights_only=True)
    assert "held" in state, "frame 3 of a 3% zoom is still held"
    resumed = run.render(story, options("parts"))
    assert not resumed.stopped
    for index in range(10):
        name = f"{index:06d}.png"
        assert (whole.frames_dir / name).read_bytes() == (resumed.frames_dir / name).read_bytes()


def test_a_pipeline_py_in_the_working_folder_does_not_take_over_a_render(tmp_path, tiny_model_dir):
    # `render` starts again with glibc's malloc tuning (pipeline/cli_malloc.py); that restart must
    # run feverdream, not a module of the user's that happens to be called pipeline.
    work = tmp_path / "work"
    work.mkdir()
    (work / "pipeline.py").write_text('print("this is not feverdream")\n')
    board = textwrap.dedent(BOARD).replace("duration: 12f", "duration: 6f")
    (work / "board.yaml").write_text(board)
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("GLIBC_TUNABLES", "FEVERDREAM_MALLOC_TUNING")}  # fmt: skip
    feverdream = Path(sys.executable).parent / "feverdream"
    done = subprocess.run([str(feverdream), "render", "board.yaml", "-o", "out", "--models", "tiny",
                           "--device", "cpu"], cwd=work, capture_output=True, text=True,
                          env=environment, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "this is not feverdream" not in done.stdout
    assert len(list((work / "out" / "frames").glob("*.png"))) == 6


def test_a_full_disk_ends_the_render_with_a_message_and_loses_nothing(
    tmp_path, tiny_model_dir, reference
):
    """A render onto a disk too small for it stops with one line naming the folder and the
    room it needs, every frame written whole; with room for the frames but not the video,
    it keeps every frame; with room, the same command finishes with the uninterrupted
    render's frames (issue 35)."""
    pngs = sorted((reference / "frames").glob("*.png"))
    state = max(p.stat().st_size for p in (reference / "frames").glob("state-*.pt"))
    frames_room = sum(-(-p.stat().st_size // 4096) * 4096 for p in pngs)
    # Room for about 40% of the frames; then for all of them (and two states, the manifest)
    # but not the video beside them; then plenty.
    small, middle = frames_room * 2 // 5, frames_room + 3 * state + 64 * 1024
    assert (reference / "board.mp4").stat().st_size > 64 * 1024
    (tmp_path / "board.yaml").write_text(BOARD)
    disk = tmp_path / "disk"
    command = [sys.executable, "-m", "pipeline", "render", str(tmp_path / "board.yaml")]
    command += ["--models", "tiny", "--device", "cpu", "-o", str(disk / "out")]
    first, again, second, third = on_a_small_disk(disk, [small, small, middle, 64 * 2**20],
                                                  command)  # fmt: skip
    wanted = frames_of(reference)

    # The disk fills among the frames: one line says where and how much, nothing cut short.
    assert first.code == 1 and "Traceback" not in first.err, first.err
    assert first.last_line.startswith(f"error: the disk holding {disk}/out"), first.err
    assert "is full" in first.last_line and "more needed" in first.last_line
    assert "run the same command again" in first.last_line
    written = frames_of(first.disk / "out")
    assert 0 < len(written) < len(wanted)
    assert written == wanted[: len(written)]  # every frame on the disk whole
    assert not list(first.disk.rglob("*.tmp")) and not list(first.disk.rglob("*.mp4"))
    # The same command again before any space is freed: the same message, nothing lost.
    assert again.code == 1 and "Traceback" not in again.err, again.err
    assert again.last_line.startswith(f"error: the disk holding {disk}/out"), again.err
    kept = frames_of(again.disk / "out")
    assert len(kept) >= len(written) and kept == wanted[: len(kept)]

    # Room for the frames but not the video: every frame kept, only the video to make.
    assert second.code == 1 and "Traceback" not in second.err, second.err
    assert "only the video is left to make" in second.last_line
    assert frames_of(second.disk / "out") == wanted
    assert not list(second.disk.rglob("*.mp4*"))

    # Room at last: the same command finishes, with the uninterrupted render's frames.
    assert third.code == 0, third.err
    assert frames_of(third.disk / "out") == wanted
    assert (third.disk / "out" / "board.mp4").stat().st_size > 0
