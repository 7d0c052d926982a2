"""`feverdream render` end to end with the tiny models: the MP4 TikTok gets, what a render
leaves behind, previews, frame ranges, and a bad soundtrack caught before any frame."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from pipeline.check import probe_video
from pipeline.cli import main

# The video at TikTok's smallest size (encoding 1080x1920 doubled the time of the tests that
# share this storyboard); the checks of TikTok's full-size file render FULL_SIZE.
BOARD = """\
title: pipeline test
seed: 5
fps: 24
size: 360x640
duration: 2s
render:
  size: 144x256
  steps: 1
  first_steps: 2
  cuts: 2
audio:
  file: tone.wav
  fade_out: 0.5s
content_warning: "TW: flashing abstract shapes"
content_warning_duration: 1s
keyframes:
  - at: 0s
    prompt: "a red circle"
    zoom: 1.03
  - at: 1s
    prompt: "a blue square"
"""


def write_board(folder: Path, text: str = BOARD, tone_seconds: float = 1.0) -> Path:
    rate = 44100
    t = np.arange(int(tone_seconds * rate)) / rate
    soundfile.write(folder / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    path = folder / "board.yaml"
    path.write_text(textwrap.dedent(text))
    return path


FULL_SIZE = BOARD.replace("\nsize: 360x640\n", "\nsize: 1080x1920\n")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, _tiny_model_files) -> Path:
    """One full render (2 s of frames, a 1 s card, a 1 s soundtrack) shared by the checks."""
    folder = tmp_path_factory.mktemp("render")
    board = write_board(folder, FULL_SIZE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEVERDREAM_MODELS", str(_tiny_model_files.vqgan_ckpt.parent))
        patch.setenv("FEVERDREAM_CACHE", str(folder / "cache"))
        assert main(["render", str(board), "--models", "tiny", "-o", str(folder / "out")]) == 0
    return folder / "out"


def test_the_video_is_what_tiktok_asks_for(rendered):
    info = probe_video(rendered / "board.mp4")
    assert info.container == "mp4"
    assert (info.video_codec, info.profile, info.pix_fmt) == ("h264", "High", "yuv420p")
    assert (info.width, info.height) == (1080, 1920)
    assert info.fps == 24 and info.constant_frame_rate
    assert info.frame_count == 48 + 24  # two seconds of frames after a one-second card
    assert info.moov_before_mdat
    audio = info.audio
    assert audio is not None and audio.codec == "aac" and audio.channels == 2
    assert audio.sample_rate == 48000
    # The one-second tone is padded with silence: the audio lasts as long as the video.
    assert abs(audio.duration - info.frame_count / 24) <= 1 / 24


def test_check_accepts_the_rendered_video(rendered, capsys):
    assert main(["check", str(rendered / "board.mp4")]) == 0
    assert "TikTok accepts this file" in capsys.readouterr().out


def test_a_render_leaves_its_record_contact_sheet_and_preview(rendered):
    record = json.loads((rendered / "render.json").read_text())
    assert record["seed"] == 5
    assert len(record["frames"]) == 48
    assert all(frame["loss"] is not None for frame in record["frames"])
    assert set(record["models"]) == {"vqgan", "clip"}
    assert record["storyboard_sha256"]
    with Image.open(rendered / "contact.png") as sheet:
        assert sheet.width >= 2 * 240  # two keyframes side by side, 240 px tiles
    assert (rendered / "preview.gif").stat().st_size < 5_000_000
    with Image.open(rendered / "frames" / "000000.png") as frame:
        assert frame.size == (144, 256)


def test_a_corrupt_soundtrack_fails_before_any_frame(tmp_path, tiny_model_dir, capsys):
    board = write_board(tmp_path)
    (tmp_path / "tone.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    code = main(["render", str(board), "--models", "tiny", "-o", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "board.yaml:12: audio.file:" in err
    assert not (tmp_path / "out" / "frames").exists()


def test_preview_renders_a_quarter_of_the_canvas_with_a_third_of_the_steps(
    tmp_path, tiny_model_dir
):
    board = write_board(tmp_path, BOARD.replace("duration: 2s", "duration: 1s"))
    assert main(["render", str(board), "--models", "tiny", "--preview", "-o", str(tmp_path)]) == 0
    preview = tmp_path / "preview"
    with Image.open(preview / "frames" / "000000.png") as frame:
        assert frame.size == (80, 144)
    manifest = json.loads((preview / "frames" / "manifest.json").read_text())
    assert manifest["settings"]["first_steps"] == 1 and manifest["settings"]["steps"] == 1
    info = probe_video(preview / "board.mp4")
    assert (info.width, info.height) == (540, 960)
    assert info.frame_count == 24 + 24


@pytest.mark.parametrize("span", ["5", "10:5", "-3:4", "3:3", "0:999", "a:b"])
def test_a_bad_frame_range_names_the_flag_before_anything_starts(tmp_path, capsys, span):
    board = write_board(tmp_path)
    command = ["render", str(board), "--models", "tiny", f"--frames={span}", "-o", str(tmp_path)]
    assert main([*command, "--post", "direct"]) != 0  # checked before TikTok's login
    err = capsys.readouterr().err
    assert f"--frames {span}: give A:B" in err and "<= 48" in err
    assert not (tmp_path / "board").exists()


def test_a_frame_range_renders_only_those_frames_with_their_stretch_of_sound(
    tmp_path, tiny_model_dir
):
    board = write_board(tmp_path, tone_seconds=3.0)
    out = tmp_path / "out"
    command = ["render", str(board), "--models", "tiny", "--frames", "30:42", "-o", str(out)]
    assert main([*command, "--engine", "classic"]) == 0
    folder = out / "frames-30-42"
    assert len(list((folder / "frames").glob("*.png"))) == 12
    info = probe_video(folder / "board-30-42.mp4")
    assert info.frame_count == 12  # no content-warning card on a range
    assert info.audio is not None and abs(info.audio.duration - 0.5) <= 1 / 24
    manifest = json.loads((folder / "frames" / "manifest.json").read_text())
    assert manifest["settings"]["cadence"] == 1
