"""`feverdream check`: does TikTok accept a video file, and what should change if not."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from pipeline.check import check_video, find_problems, probe_video
from pipeline.cli import main
from pipeline.errors import VideoFileError


def make_video(
    out: Path,
    size: str = "360x640",
    rate: int = 24,
    seconds: float = 1.0,
    video: tuple[str, ...] = ("-c:v", "libx264", "-preset", "superfast", "-pix_fmt", "yuv420p"),
    extra: tuple[str, ...] = ("-movflags", "+faststart"),
    audio: bool = True,
) -> Path:
    """A test pattern (and a tone) from the bundled ffmpeg's lavfi sources."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y"]
    command += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        command += ["-c:a", "aac", "-ac", "2"]
    subprocess.run([*command, *video, *extra, str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "good": make_video(folder / "good.mp4"),
        "20fps": make_video(folder / "slow.mp4", rate=20),
        "narrow": make_video(folder / "narrow.mp4", size="320x568"),
        "moov_at_end": make_video(folder / "plain.mp4", extra=()),
        "mov": make_video(folder / "clip.mov", audio=False),
        "variable": make_video(
            folder / "variable.mp4",
            # Frames 12 on come 100 ms late: a gap, as phones record when they stutter.
            extra=("-vf", "setpts='(N+if(gte(N,12),2.4,0))/24/TB'", "-fps_mode", "passthrough"),
            audio=False,
        ),
        "avi": make_video(folder / "old.avi", video=("-c:v", "mpeg4"), extra=(), audio=False),
    }


def test_a_good_file_is_accepted(videos: dict[str, Path]) -> None:
    info = probe_video(videos["good"])
    assert (info.container, info.video_codec, info.pix_fmt) == ("mp4", "h264", "yuv420p")
    assert (info.width, info.height, info.frame_count) == (360, 640, 24)
    assert info.fps == pytest.approx(24) and info.constant_frame_rate
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.audio is not None and (info.audio.codec, info.audio.channels) == ("aac", 2)
    assert info.moov_before_mdat is True
    assert info.size_bytes == videos["good"].stat().st_size
    assert check_video(videos["good"]) == []


def test_a_20_fps_file_is_rejected_with_what_to_change(videos: dict[str, Path]) -> None:
    problems = check_video(videos["20fps"])
    assert len(problems) == 1
    assert "20 fps" in problems[0] and "23-60" in problems[0] and "-r 30" in problems[0]


def test_a_320_pixel_wide_file_is_rejected(videos: dict[str, Path]) -> None:
    problems = check_video(videos["narrow"])
    assert len(problems) == 1
    assert "width is 320 px" in problems[0] and "360" in problems[0]


def test_a_variable_frame_rate_is_rejected(videos: dict[str, Path]) -> None:
    info = probe_video(videos["variable"])
    assert not info.constant_frame_rate
    assert any("variable" in problem for problem in find_problems(info))


def test_mov_is_accepted_and_avi_is_not(videos: dict[str, Path]) -> None:
    assert probe_video(videos["mov"]).container == "mov"
    assert check_video(videos["mov"]) == []
    problems = check_video(videos["avi"])
    assert any("container is avi" in problem for problem in problems)
    assert any("codec is mpeg4" in problem for problem in problems)


def test_moov_after_mdat_is_reported_but_allowed(videos: dict[str, Path]) -> None:
    info = probe_video(videos["moov_at_end"])
    assert info.moov_before_mdat is False
    assert find_problems(info) == []


def test_duration_and_size_limits(videos: dict[str, Path]) -> None:
    info = probe_video(videos["good"])
    assert "at most 0.5 s" in check_video(videos["good"], max_duration_s=0.5)[0]
    too_long = dataclasses.replace(info, duration=601.0)
    assert "at most 600 s" in find_problems(too_long)[0]
    too_big = dataclasses.replace(info, size_bytes=5 * 1024**3)
    assert "4 GiB" in find_problems(too_big)[0]


def test_missing_or_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoFileError, match="does not exist"):
        probe_video(tmp_path / "nothing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(VideoFileError, match="cannot be read as a video"):
        probe_video(junk)
    sound = tmp_path / "sound.m4a"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "sine=duration=0.2", str(sound)],
        check=True,
    )  # fmt: skip
    with pytest.raises(VideoFileError, match="no video stream"):
        probe_video(sound)


def test_cli_exit_status(videos: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["check", str(videos["good"])]) == 0
    assert "TikTok accepts this file" in capsys.readouterr().out

    assert main(["check", str(videos["20fps"])]) == 1
    out = capsys.readouterr().out
    assert "20.000 fps" in out and "TikTok would reject this file" in out and "23-60" in out

    assert main(["check", str(tmp_path / "nothing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err
