"""Soundtrack analysis: beats land on the clicks, every format decodes, results are cached."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipeline import audio
from pipeline.audio import FEATURES, AudioError, analyse

SR = 22050
REPO = Path(__file__).resolve().parent.parent
TRACKS = ("anxiety", "depression", "adhd", "sleep_paralysis")


def click_track(clicks: np.ndarray, duration: float) -> np.ndarray:
    """Short 1 kHz pings at the given times over a faint hum, as mono float samples."""
    y = 0.01 * np.sin(2 * np.pi * 110 * np.arange(int(duration * SR)) / SR)
    ping_t = np.arange(int(0.02 * SR)) / SR
    ping = np.sin(2 * np.pi * 1000 * ping_t) * np.exp(-ping_t / 0.004)
    for t in clicks:
        start = int(round(t * SR))
        y[start : start + len(ping)] += 0.8 * ping
    return y


# 120 bpm for 8 s: a click every half second from 0.5 s on.
CLICKS = np.arange(0.5, 7.6, 0.5)


@pytest.fixture(scope="session")
def clicks_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "clicks.wav"
    soundfile.write(path, click_track(CLICKS, 8.0), SR, subtype="PCM_16")
    return path


def nearest_click_error(times: tuple[float, ...], clicks: np.ndarray, shift: float = 0.0):
    return max(min(abs(t + shift - c) for c in clicks) for t in times)


def test_beats_land_on_the_clicks_of_a_click_track(clicks_wav: Path):
    features = analyse(clicks_wav, fps=30)

    assert len(features.beat_times) >= len(CLICKS) - 2
    assert nearest_click_error(features.beat_times, CLICKS) < 0.05
    assert features.tempo == pytest.approx(120, abs=3)
    for t in features.beat_times:
        assert features.beat[round(t * 30)] == 1.0


def test_beat_decays_between_beats_and_is_zero_before_the_first(clicks_wav: Path):
    features = analyse(clicks_wav, fps=30)
    first, second = (round(t * 30) for t in features.beat_times[:2])

    assert all(v == 0.0 for v in features.beat[:first])
    between = features.beat[first:second]
    assert all(a > b for a, b in zip(between, between[1:], strict=False))
    assert between[-1] < 0.05


@pytest.mark.parametrize("fps", [24, 30, 29.97])
def test_features_cover_every_frame_of_the_track_in_0_to_1(clicks_wav: Path, fps: float):
    features = analyse(clicks_wav, fps=fps)

    assert features.duration == pytest.approx(8.0)
    assert features.frames == math.ceil(8.0 * fps)
    for name in FEATURES:
        values = getattr(features, name)
        assert len(values) == features.frames, name
        assert min(values) >= 0.0 and max(values) == 1.0, name
    assert features.at("rms", features.frames) == 0.0
    assert features.at("onset", -1) == 0.0
    with pytest.raises(KeyError, match="unknown audio feature"):
        features.at("loudness", 0)


def test_offset_moves_the_video_start_into_the_track(clicks_wav: Path):
    whole = analyse(clicks_wav, fps=30)
    later = analyse(clicks_wav, fps=30, offset=1.25)

    expected = [t - 1.25 for t in whole.beat_times if t >= 1.25]
    assert later.beat_times == pytest.approx(expected, abs=1e-5)
    assert later.duration == pytest.approx(6.75)
    assert later.frames == math.ceil(6.75 * 30)


def test_offset_past_the_end_is_an_error(clicks_wav: Path):
    with pytest.raises(AudioError, match="past the end of the track"):
        analyse(clicks_wav, fps=30, offset=9.0)


def test_a_silent_track_has_no_beats_and_all_zero_features(tmp_path: Path):
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(2 * SR), SR)

    features = analyse(path, fps=24)

    assert features.beat_times == ()
    assert all(set(getattr(features, name)) == {0.0} for name in FEATURES)


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3"])
def test_flac_ogg_and_mp3_decode_like_the_wav(clicks_wav: Path, tmp_path: Path, suffix: str):
    import imageio_ffmpeg

    encoded = tmp_path / f"clicks.{suffix}"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(clicks_wav), str(encoded)],
        check=True,
    )

    features = analyse(encoded, fps=30)

    # Lossy encoders pad the start by a few ms; the clicks must still be found.
    assert features.duration == pytest.approx(8.0, abs=0.1)
    assert len(features.beat_times) >= len(CLICKS) - 2
    assert nearest_click_error(features.beat_times, CLICKS) < 0.05


def test_a_second_analysis_reads_the_cache_instead_of_decoding(
    clicks_wav: Path, monkeypatch: pytest.MonkeyPatch
):
    first = analyse(clicks_wav, fps=30)

    def must_not_decode(path: Path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(audio, "_decode", must_not_decode)
    assert analyse(clicks_wav, fps=30) == first
    with pytest.raises(AssertionError, match="decoded"):
        analyse(clicks_wav, fps=24)  # another frame rate is another analysis


def test_a_corrupt_cache_file_is_ignored_and_rewritten(clicks_wav: Path):
    first = analyse(clicks_wav, fps=30)
    (cache_file,) = audio._cache_dir().glob("*.json")
    cache_file.write_text('{"key": "truncated')

    assert analyse(clicks_wav, fps=30) == first
    assert json.loads(cache_file.read_text())["features"]["beat_times"] == list(first.beat_times)


def test_a_missing_file_says_so(tmp_path: Path):
    with pytest.raises(AudioError, match=r"nowhere\.wav: not found"):
        analyse(tmp_path / "nowhere.wav", fps=30)


def test_random_bytes_named_wav_cannot_be_decoded(tmp_path: Path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))

    with pytest.raises(AudioError, match="cannot decode.*wav, mp3, flac or ogg"):
        analyse(path, fps=30)


def test_an_empty_file_is_an_error(tmp_path: Path):
    path = tmp_path / "empty.mp3"
    path.touch()

    with pytest.raises(AudioError, match="empty"):
        analyse(path, fps=30)


def test_a_wav_without_samples_is_an_error(tmp_path: Path):
    path = tmp_path / "nothing.wav"
    soundfile.write(path, np.zeros(0), SR)

    with pytest.raises(AudioError, match="no audio"):
        analyse(path, fps=30)


def test_audio_errors_are_usage_errors():
    assert AudioError("x").exit_code == 2


@pytest.mark.parametrize("name", TRACKS)
def test_the_example_soundtracks_have_a_clear_pulse(name: str):
    path = REPO / "audio" / f"{name}.wav"
    samples, _ = soundfile.read(path)

    features = analyse(path, fps=30)

    assert 10.0 <= features.duration <= 20.0
    assert len(features.beat_times) >= 16
    assert np.abs(samples).max() < 0.95  # mastered under -1 dBFS, no clipping
    assert path.stat().st_size < 2_000_000


def test_warm_compiles_the_analysis():
    assert audio.main(["--warm"]) == 0
