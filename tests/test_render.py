"""The renderer: frames and a soundtrack become an MP4 TikTok accepts, plus the files beside it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from PIL import Image, ImageDraw

from pipeline.check import find_problems, probe_video
from pipeline.cli import main
from pipeline.errors import RenderError
from pipeline.render import (
    SoundtrackSpec,
    VideoSpec,
    check_soundtrack,
    contact_sheet,
    content_warning_card,
    encode_video,
    font,
    preview_gif,
)

FPS = 24
# superfast still gives High profile and keeps the tests quick; renders default to medium.
FAST = "superfast"
SMALL = (360, 640)  # for tests about audio and timing, where the picture size does not matter


def frames(n: int, size: tuple[int, int] = (144, 256)) -> list[np.ndarray]:
    """Frames whose colour says their number: red rises, blue falls."""
    width, height = size
    out = []
    for index in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = round(255 * index / max(1, n - 1))
        frame[..., 2] = 255 - frame[..., 0]
        frame[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        out.append(frame)
    return out


def soundtrack(
    path: Path, seconds: float, tone: bool = True, click_at: float | None = None
) -> Path:
    """A mono 44.1 kHz wav: a steady tone or silence, with an optional loud 10 ms click."""
    rate = 44_100
    t = np.arange(round(seconds * rate)) / rate
    signal = 0.3 * np.sin(2 * np.pi * 440 * t) if tone else np.zeros_like(t)
    if click_at is not None:
        start = round(click_at * rate)
        signal[start : start + rate // 100] = 0.9 * np.sin(2 * np.pi * 1000 * t[: rate // 100])
    soundfile.write(path, signal, rate)
    return path


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The output's soundtrack as a (channels, samples) float array and its sample rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(chunks, axis=1), stream.sample_rate


def first_loud_time(samples: np.ndarray, rate: int, threshold: float = 0.5) -> float:
    return int(np.argmax(np.abs(samples[0]) > threshold)) / rate


def rms(samples: np.ndarray, rate: int, start: float, end: float) -> float:
    window = samples[:, round(start * rate) : round(end * rate)]
    return float(np.sqrt(np.mean(window**2)))


def decoded_frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame {index}")


def test_video_is_what_tiktok_recommends(tmp_path: Path) -> None:
    track = soundtrack(tmp_path / "long.wav", 3.0)  # longer than the video: trimmed
    spec = VideoSpec(fps=FPS, audio=SoundtrackSpec(track), preset=FAST)
    out = encode_video(frames(48), 48, spec, tmp_path / "out" / "video.mp4", progress=False)

    info = probe_video(out)
    assert (info.container, info.video_codec, info.profile) == ("mp4", "h264", "High")
    assert (info.pix_fmt, info.width, info.height) == ("yuv420p", 1080, 1920)
    assert info.frame_count == 48
    assert info.constant_frame_rate and info.fps == pytest.approx(FPS)
    assert info.audio is not None
    assert (info.audio.codec, info.audio.profile) == ("aac", "LC")
    assert (info.audio.channels, info.audio.sample_rate) == (2, 48_000)
    assert info.audio.duration == pytest.approx(2.0, abs=1 / FPS)
    assert info.duration == pytest.approx(2.0, abs=1 / FPS)
    assert info.moov_before_mdat
    assert find_problems(info) == []
    assert main(["check", str(out)]) == 0
    assert list(out.parent.iterdir()) == [out]  # no partial file left behind

    # The last frame is the last one sent (red), upscaled whole.
    last = decoded_frame(out, 47).astype(int)
    assert last[960, 540, 0] > 200 and last[960, 540, 2] < 60


def test_short_soundtrack_is_padded_with_silence(tmp_path: Path) -> None:
    track = soundtrack(tmp_path / "short.wav", 0.5)
    spec = VideoSpec(fps=FPS, size=SMALL, audio=SoundtrackSpec(track), preset=FAST)
    out = encode_video(frames(48), 48, spec, tmp_path / "video.mp4", progress=False)

    info = probe_video(out)
    assert info.frame_count == 48  # the video is never cut short
    assert info.audio is not None
    assert info.audio.duration == pytest.approx(2.0, abs=1 / FPS)
    samples, rate = decoded_audio(out)
    assert rms(samples, rate, 0.1, 0.4) > 0.1
    assert rms(samples, rate, 0.7, 1.9) < 0.001


def test_offset_starts_the_soundtrack_later_in_the_track(tmp_path: Path) -> None:
    track = soundtrack(tmp_path / "click.wav", 3.0, tone=False, click_at=1.5)
    spec = VideoSpec(fps=FPS, size=SMALL, audio=SoundtrackSpec(track, offset=1.0), preset=FAST)
    out = encode_video(frames(48), 48, spec, tmp_path / "video.mp4", progress=False)

    samples, rate = decoded_audio(out)
    assert first_loud_time(samples, rate) == pytest.approx(0.5, abs=0.01)


def test_fades_make_the_ends_quiet(tmp_path: Path) -> None:
    track = soundtrack(tmp_path / "tone.wav", 3.0)
    audio = SoundtrackSpec(track, fade_in=1.0, fade_out=0.5)
    spec = VideoSpec(fps=FPS, size=SMALL, audio=audio, preset=FAST)
    out = encode_video(frames(48), 48, spec, tmp_path / "video.mp4", progress=False)

    samples, rate = decoded_audio(out)
    full = rms(samples, rate, 1.1, 1.4)
    assert full == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # mono, as loud on each side
    assert rms(samples, rate, 0.0, 0.05) < 0.1 * full
    assert rms(samples, rate, 1.95, 2.0) < 0.1 * full


def test_content_warning_card_comes_first_and_delays_the_soundtrack(tmp_path: Path) -> None:
    track = soundtrack(tmp_path / "click.wav", 3.0, tone=False, click_at=0.25)
    spec = VideoSpec(
        fps=FPS,
        size=SMALL,
        audio=SoundtrackSpec(track),
        content_warning="TW: flashing lights",
        content_warning_duration=1.0,
        preset=FAST,
    )
    assert spec.card_frames == 24
    out = encode_video(frames(48), 48, spec, tmp_path / "video.mp4", progress=False)

    info = probe_video(out)
    assert info.frame_count == 48 + 24
    assert info.audio is not None
    assert info.audio.duration == pytest.approx(3.0, abs=1 / FPS)
    samples, rate = decoded_audio(out)
    assert first_loud_time(samples, rate) == pytest.approx(1.25, abs=0.01)
    card = decoded_frame(out, 0).astype(int)
    assert card[:100].mean() < 30  # a dark ground
    assert card[280:360].max() > 200  # light text in the middle
    first = decoded_frame(out, 24)
    assert first[320, 180, 2] > 200  # then the storyboard's first frame (blue)


def test_card_text_is_large_centred_and_inside_the_frame() -> None:
    assert font(90).getname() == ("DejaVu Sans", "Bold")  # the package's own, not the system's
    card = np.asarray(content_warning_card("TW: intense imagery of panic", (1080, 1920)))
    rows, cols = np.nonzero(card.mean(axis=2) > 128)
    assert abs((cols.min() + cols.max()) / 2 - 540) < 20
    assert abs((rows.min() + rows.max()) / 2 - 960) < 40
    assert rows.max() - rows.min() > 120  # two lines of ~90 px type

    long = "a very long warning " * 30
    card = np.asarray(content_warning_card(long, (1080, 1920)))
    rows, cols = np.nonzero(card.mean(axis=2) > 128)
    assert cols.min() > 40 and cols.max() < 1040 and rows.min() > 100 and rows.max() < 1820


def test_corrupt_soundtrack_fails_before_any_frame(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 50)
    with pytest.raises(RenderError, match="bad.wav"):
        check_soundtrack(SoundtrackSpec(bad))

    taken = []

    def engine_frames():
        for frame in frames(48):
            taken.append(frame)
            yield frame

    spec = VideoSpec(fps=FPS, audio=SoundtrackSpec(bad), preset=FAST)
    with pytest.raises(RenderError, match="cannot be decoded"):
        encode_video(engine_frames(), 48, spec, tmp_path / "video.mp4", progress=False)
    assert taken == []
    assert not (tmp_path / "video.mp4").exists()


def test_soundtrack_offset_past_its_end_is_an_error(tmp_path: Path) -> None:
    track = soundtrack(tmp_path / "short.wav", 1.0)
    info = check_soundtrack(SoundtrackSpec(track))
    assert (info.duration, info.channels) == (pytest.approx(1.0, abs=0.01), 1)
    with pytest.raises(RenderError, match="past the end"):
        check_soundtrack(SoundtrackSpec(track, offset=2.0))


def test_canvas_off_nine_sixteen_is_cropped_not_stretched(tmp_path: Path) -> None:
    canvas = Image.new("RGB", (144, 240), "black")
    ImageDraw.Draw(canvas).ellipse((32, 80, 112, 160), fill="white")  # 80 px round
    picture = np.asarray(canvas)
    spec = VideoSpec(fps=FPS, size=SMALL, preset=FAST)
    out = encode_video([picture] * 24, 24, spec, tmp_path / "video.mp4", progress=False)

    info = probe_video(out)
    assert (info.width, info.height, info.audio) == (360, 640, None)
    rows, cols = np.nonzero(decoded_frame(out, 0).mean(axis=2) > 128)
    width, height = cols.max() - cols.min(), rows.max() - rows.min()
    assert width == pytest.approx(height, rel=0.03)
    assert height == pytest.approx(80 * 640 / 240, rel=0.03)


def test_frames_from_png_files(tmp_path: Path) -> None:
    paths = []
    for index, frame in enumerate(frames(24)):
        paths.append(tmp_path / f"{index:06d}.png")
        Image.fromarray(frame).save(paths[-1])
    spec = VideoSpec(fps=FPS, size=SMALL, preset=FAST)
    out = encode_video(paths, len(paths), spec, tmp_path / "video.mp4", progress=False)
    assert probe_video(out).frame_count == 24


def test_wrong_number_of_frames_leaves_no_file(tmp_path: Path) -> None:
    spec = VideoSpec(fps=FPS, size=SMALL, preset=FAST)
    with pytest.raises(RenderError, match="only 5 frames of the 10"):
        encode_video(frames(5), 10, spec, tmp_path / "video.mp4", progress=False)
    with pytest.raises(RenderError, match="more frames"):
        encode_video(frames(12), 10, spec, tmp_path / "video.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_preview_gif_is_small_and_animated(tmp_path: Path) -> None:
    out = preview_gif(frames(48, (288, 512)), FPS, tmp_path / "preview.gif")
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.width == 180 and gif.n_frames > 1
        lasts = 0
        for index in range(gif.n_frames):
            gif.seek(index)
            lasts += gif.info["duration"]
    assert lasts == pytest.approx(2000, abs=20)  # plays in real time
    assert out.stat().st_size < 5_000_000


def test_preview_gif_of_a_long_busy_video_stays_under_5_mb(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (720, 256, 144, 3), dtype=np.uint8)
    out = preview_gif(list(noise), FPS, tmp_path / "preview.gif")  # 30 s of pure noise
    assert out.stat().st_size < 5_000_000


def test_contact_sheet_has_one_labelled_tile_per_keyframe(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    items = [
        (np.full((256, 144, 3), colour, np.uint8), 2.0 * index, f"prompt number {index} " * 6)
        for index, colour in enumerate(colours)
    ]
    out = contact_sheet(items, tmp_path / "contact.png")
    sheet = np.asarray(Image.open(out).convert("RGB"))
    for colour in colours:
        tile = np.all(sheet == colour, axis=2)
        assert tile.sum() == 240 * round(240 * 256 / 144)  # one whole tile of each
    assert sheet.shape[1] == 4 * (240 + 16)  # four to a row, two rows
    labels = sheet[:, :, :].max(axis=2) > 200
    assert labels.sum() > tile.sum() * len(colours)  # text beside the tiles


def test_ffmpeg_failure_is_a_render_error_with_its_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An option this ffmpeg refuses stands in for any failure inside ffmpeg.
    monkeypatch.setattr("pipeline.render._COLOR_TAGS", ["-colorspace", "no-such-matrix"])
    spec = VideoSpec(fps=FPS, size=SMALL, preset=FAST)
    with pytest.raises(RenderError, match="ffmpeg could not write .*video.mp4") as error:
        encode_video(frames(24), 24, spec, tmp_path / "video.mp4", progress=False)
    assert "no-such-matrix" in str(error.value)
    assert list(tmp_path.iterdir()) == []
