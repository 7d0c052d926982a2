"""Soundtrack analysis: decodes a track into beat times and per-video-frame features."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DiskFullError, FeverdreamError
from pipeline.store import atomic_write

log = logging.getLogger(__name__)

#: The per-frame features an expression can read, each in 0..1.
FEATURES = ("beat", "onset", "rms", "bass", "mid", "treble")

# Bump when the analysis changes, so that old cache entries are not reused.
ANALYSIS_VERSION = 2

# librosa's beat tracker is tuned for 22050 Hz; a hop of 256 samples (11.6 ms) puts beats
# well inside one video frame (33-42 ms) while keeping the analysis fast.
_SR = 22050
_HOP = 256
_N_FFT = 2048
_BANDS = {"bass": (20.0, 250.0), "mid": (250.0, 4000.0), "treble": (4000.0, _SR / 2)}

# `beat` falls from 1 on a beat frame to exp(-4) ~ 0.02 on the frame of the next beat.
_BEAT_DECAY = 4.0

_FORMATS_HINT = (
    "is it a wav, mp3, flac or ogg file? Convert other formats to one of these first, "
    "e.g. with Audacity or ffmpeg"
)


class AudioError(FeverdreamError):
    """A soundtrack that cannot be read: missing, empty, unreadable or not audio."""

    exit_code = 2


@dataclass(frozen=True)
class AudioFeatures:
    """A soundtrack seen from the video: its beats and one value per feature per frame.

    Video frame f is at t = f / fps seconds, which is track time `offset + t`. Every
    per-frame tuple has ceil(duration * fps) values: one for each frame whose time lies
    inside the track. Each value summarises the track over that frame's 1/fps window
    centred on t (peak for `onset`, mean for the others) and is scaled so that the
    track's highest frame is 1. `beat` is 1 on the frame nearest each beat and decays
    exponentially to about 0.02 by the next beat's frame (0 before the first beat).
    `channels` and `track_duration` describe the whole file, so that the video's mixer
    need not decode it again.
    """

    fps: float
    offset: float
    duration: float  # seconds of track from `offset` to its end
    channels: int
    track_duration: float
    beat_times: tuple[float, ...]
    beat: tuple[float, ...]
    onset: tuple[float, ...]
    rms: tuple[float, ...]
    bass: tuple[float, ...]
    mid: tuple[float, ...]
    treble: tuple[float, ...]

    @property
    def frames(self) -> int:
        """How many video frames the track covers."""
        return len(self.beat)

    @property
    def tempo(self) -> float:
        """Beats per minute from the median gap between beats; 0.0 with fewer than 2 beats."""
        if len(self.beat_times) < 2:
            return 0.0
        return 60.0 / float(np.median(np.diff(self.beat_times)))

    def at(self, name: str, frame: int) -> float:
        """The value of feature `name` on video frame `frame`; 0.0 outside the track."""
        if name not in FEATURES:
            raise KeyError(f"unknown audio feature {name!r}; known: {', '.join(FEATURES)}")
        values = getattr(self, name)
        return values[frame] if 0 <= frame < len(values) else 0.0


def analyse(path: Path, fps: float, offset: float = 0.0) -> AudioFeatures:
    """Analyse the track at `path` for a video at `fps` that starts `offset` s into it.

    The result is cached on disk, keyed by the file's content, fps, offset and the
    analysis version, so analysing the same soundtrack again only reads a small file.
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if offset < 0:
        raise AudioError(f"{path}: offset {offset:g}s is negative; use 0s or more")
    _check_file(path)
    key = _cache_key(path, fps, offset)
    cache_file = _cache_dir() / f"{key}.json"
    features = _read_cache(cache_file, key)
    if features is not None:
        log.debug("audio features for %s from cache %s", path, cache_file)
        return features

    y, sr, channels = _decode(path)
    track_seconds = len(y) / sr
    if offset >= track_seconds:
        raise AudioError(
            f"{path}: offset {offset:g}s is past the end of the track ({track_seconds:.2f}s); "
            "use a smaller offset"
        )
    started = time.perf_counter()
    features = _analyse_signal(y, sr, fps, offset, channels)
    log.debug("analysed %s in %.2fs", path, time.perf_counter() - started)
    _write_cache(cache_file, key, features)
    return features


def _check_file(path: Path) -> None:
    """Fail early, with a next step, on the ways a soundtrack path is commonly wrong."""
    if not path.exists():
        raise AudioError(
            f"{path}: not found; check the file name (a storyboard's audio file is "
            "relative to the storyboard)"
        )
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; give the path of an audio file inside it")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); export or download it again")


def _undecodable(path: Path, error: Exception) -> AudioError:
    # libsndfile's own words ("Format not recognised.") without its repeat of the path.
    reason = getattr(error, "error_string", None) or str(error)
    return AudioError(f"{path}: cannot decode: {reason.rstrip('.')} ({_FORMATS_HINT})")


def _decode(path: Path) -> tuple[np.ndarray, int, int]:
    """Decode the whole file to mono float32 samples at its own sample rate; also the
    number of channels it has.

    libsndfile (through soundfile, librosa's first choice) reads all four formats; librosa's
    fallback, audioread, is deprecated and needs a system ffmpeg this project does not have.
    """
    import soundfile

    try:
        data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as error:
        raise _undecodable(path, error) from error
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio (0 samples); export it again")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: cannot decode: it holds invalid (NaN or infinite) samples")
    return data.mean(axis=1), int(sr), int(data.shape[1])


# --- analysis ------------------------------------------------------------------------------


def _analyse_signal(
    y: np.ndarray, sr: int, fps: float, offset: float, channels: int = 1
) -> AudioFeatures:
    """Features of the whole track, then cut to the video's frames from `offset` on.

    Beats are tracked over the whole track, so changing the offset shifts beat times
    exactly instead of re-tracking a shorter piece.
    """
    import librosa
    import librosa.beat

    track_duration = len(y) / sr
    duration = track_duration - offset
    y = librosa.resample(y, orig_sr=sr, target_sr=_SR) if sr != _SR else y

    spectrum = np.abs(librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP))
    mel = librosa.feature.melspectrogram(S=spectrum**2, sr=_SR)
    onset_envelope = librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=_SR)
    _, beat_frames = librosa.beat.beat_track(onset_envelope=onset_envelope, sr=_SR, hop_length=_HOP)
    track_beats = librosa.frames_to_time(beat_frames, sr=_SR, hop_length=_HOP)
    beat_times = tuple(round(float(t - offset), 6) for t in track_beats if t >= offset)

    frequencies = librosa.fft_frequencies(sr=_SR, n_fft=_N_FFT)
    power = spectrum**2
    per_hop = {
        "onset": onset_envelope,
        "rms": librosa.feature.rms(S=spectrum, frame_length=_N_FFT)[0],
    }
    for name, (low, high) in _BANDS.items():
        in_band = (frequencies >= low) & (frequencies < high)
        per_hop[name] = np.sqrt(power[in_band].mean(axis=0))

    n_frames = math.ceil(duration * fps - 1e-6)
    starts = _window_starts(n_frames, fps, offset, len(onset_envelope))
    per_frame = {
        name: _normalise(_pool(values, starts, peak=name == "onset"))
        for name, values in per_hop.items()
    }
    return AudioFeatures(
        fps=float(fps),
        offset=float(offset),
        duration=round(duration, 6),
        channels=channels,
        track_duration=track_duration,
        beat_times=beat_times,
        beat=_beat_envelope(beat_times, fps, n_frames),
        **per_frame,
    )


def _window_starts(n_frames: int, fps: float, offset: float, n_hops: int) -> np.ndarray:
    """First analysis hop of each video frame's window [t - 0.5/fps, t + 0.5/fps).

    The windows tile the track, so window f ends where window f + 1 starts; the last
    one ends at the track's end.
    """
    edges = (offset + (np.arange(n_frames) - 0.5) / fps) * _SR / _HOP
    return np.clip(np.ceil(edges).astype(int), 0, n_hops - 1)


def _pool(values: np.ndarray, starts: np.ndarray, peak: bool) -> np.ndarray:
    """Reduce the hops of each window to one value: its peak, or its mean."""
    if peak:
        return np.maximum.reduceat(values, starts)
    sums = np.add.reduceat(values, starts)
    # At more than ~86 fps a window can hold no hop; reduceat then returns the hop at its
    # start, so count it as one.
    counts = np.maximum(np.diff(np.append(starts, len(values))), 1)
    return sums / counts


def _normalise(values: np.ndarray) -> tuple[float, ...]:
    """Scale so the highest frame is 1; a silent track stays all zeros."""
    top = float(values.max()) if len(values) else 0.0
    scaled = values / top if top > 1e-10 else np.zeros_like(values)
    return tuple(round(float(v), 6) for v in np.clip(scaled, 0.0, 1.0))


def _beat_envelope(beat_times: tuple[float, ...], fps: float, n_frames: int) -> tuple[float, ...]:
    """1 on each beat's frame, decaying exponentially across the gap to the next beat."""
    envelope = np.zeros(n_frames)
    beat_frames = sorted({round(t * fps) for t in beat_times if round(t * fps) < n_frames})
    if not beat_frames:
        return tuple(envelope.tolist())
    gaps = np.diff(beat_frames)
    # After the last beat, decay as if the beat went on at its usual spacing.
    last_gap = int(np.median(gaps)) if len(gaps) else round(fps / 2)
    for start, gap in zip(beat_frames, [*gaps.tolist(), last_gap], strict=True):
        stop = min(start + gap, n_frames)
        since = np.arange(stop - start)
        envelope[start:stop] = np.exp(-_BEAT_DECAY * since / max(gap, 1))
    return tuple(round(float(v), 6) for v in envelope)


# --- cache ---------------------------------------------------------------------------------


def _cache_dir() -> Path:
    """Where analyses are kept: $FEVERDREAM_CACHE, else the user's cache directory."""
    root = os.environ.get("FEVERDREAM_CACHE")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("feverdream")
    return Path(root) / "audio"


def _cache_key(path: Path, fps: float, offset: float) -> str:
    with path.open("rb") as file:
        content = hashlib.file_digest(file, "sha256").hexdigest()
    inputs = f"{content}|fps={float(fps)!r}|offset={float(offset)!r}"
    return hashlib.sha256(f"{inputs}|v{ANALYSIS_VERSION}".encode()).hexdigest()[:32]


def _read_cache(cache_file: Path, key: str) -> AudioFeatures | None:
    """The cached features, or None when there are none or the file is unusable."""
    try:
        stored = json.loads(cache_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable audio cache %s (%s); analysing again", cache_file, error)
        return None
    try:
        if stored["key"] != key:
            raise ValueError("key does not match")
        features = stored["features"]
        features = AudioFeatures(
            fps=float(features["fps"]),
            offset=float(features["offset"]),
            duration=float(features["duration"]),
            channels=int(features["channels"]),
            track_duration=float(features["track_duration"]),
            **{name: tuple(map(float, features[name])) for name in ("beat_times", *FEATURES)},
        )
        if len({len(getattr(features, name)) for name in FEATURES}) != 1:
            raise ValueError("features of different lengths")
    except (KeyError, TypeError, ValueError) as error:
        log.warning("ignoring corrupt audio cache %s (%s); analysing again", cache_file, error)
        return None
    return features


def _write_cache(cache_file: Path, key: str, features: AudioFeatures) -> None:
    """Write atomically, so a crash or a parallel run never leaves half a file."""
    text = json.dumps({"key": key, "features": asdict(features)}, separators=(",", ":"))
    try:
        atomic_write(cache_file, lambda tmp: tmp.write_text(text))
    except (OSError, DiskFullError) as error:
        # The analysis itself succeeded; a read-only cache only costs time next run.
        log.warning("could not cache the audio analysis in %s: %s", cache_file.parent, error)


# --- setup ---------------------------------------------------------------------------------


def warm() -> float:
    """Run the analysis once on a click track so numba compiles (and caches) it now.

    Returns the seconds it took: about half a minute on a fresh install, well under a
    few seconds (librosa's import) after.
    """
    started = time.perf_counter()
    clicks = np.zeros(3 * _SR, dtype=np.float32)
    for beat in range(6):
        at = beat * _SR // 2
        clicks[at : at + 64] = 1.0
    _analyse_signal(clicks, _SR, fps=24.0, offset=0.0)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.audio", description="Prepare the soundtrack analysis."
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        required=True,
        help="compile librosa's numba code now, so the first `plan` does not wait for it",
    )
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("audio analysis ready (%.1fs)", warm())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
