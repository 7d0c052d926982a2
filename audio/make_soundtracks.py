"""Synthesises the example storyboards' soundtracks with numpy and writes them beside this file.

Run `.venv/bin/python audio/make_soundtracks.py`: it writes one 16-bit mono WAV per
storyboard, then prints what feverdream's own beat tracker finds in each, for the
storyboards' `beat N` keyframes and audio/README.md. The output is deterministic: every
track draws its noise from its own seeded generator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
from scipy import signal

SR = 44100
HERE = Path(__file__).resolve().parent

# TikTok normalises playback to about -14 LUFS; mastering there means no surprise level
# change. The ceiling leaves room for the AAC encoder's overshoot.
TARGET_LUFS = -14.0
CEILING_DB = -1.0


# --- building blocks ---------------------------------------------------------------------


def seconds(n: float) -> int:
    return int(round(n * SR))


def silence(duration: float) -> np.ndarray:
    return np.zeros(seconds(duration))


def filtered(
    x: np.ndarray, kind: str, cutoff: float | tuple[float, float], order: int = 2
) -> np.ndarray:
    """Butterworth low-, high- or band-pass."""
    sos = signal.butter(order, cutoff, btype=kind, fs=SR, output="sos")
    return signal.sosfilt(sos, x)


def place(track: np.ndarray, sound: np.ndarray, at: float, gain: float = 1.0) -> None:
    """Mix `sound` into `track` starting at `at` seconds, cut at the track's end."""
    start = seconds(at)
    if start >= len(track):
        return
    end = min(start + len(sound), len(track))
    track[start:end] += gain * sound[: end - start]


def thump(f_start: float, f_end: float, duration: float, decay: float) -> np.ndarray:
    """A pitched drop with an exponential tail: kick drums and heartbeats."""
    t = np.arange(seconds(duration)) / SR
    frequency = f_end + (f_start - f_end) * np.exp(-t / 0.04)
    phase = 2 * np.pi * np.cumsum(frequency) / SR
    attack = np.minimum(t / 0.002, 1.0)  # 2 ms: no click from a jump to full level
    return np.sin(phase) * attack * np.exp(-t / decay)


def noise_burst(rng: np.random.Generator, duration: float, decay: float) -> np.ndarray:
    t = np.arange(seconds(duration)) / SR
    return rng.standard_normal(len(t)) * np.exp(-t / decay)


def tick(rng: np.random.Generator, pitch: float = 3200.0) -> np.ndarray:
    """A clock tick: a tiny high ping over a click of noise."""
    t = np.arange(seconds(0.03)) / SR
    ping = np.sin(2 * np.pi * pitch * t) * np.exp(-t / 0.004)
    click = filtered(noise_burst(rng, 0.03, 0.002), "highpass", 2000.0)
    return 0.6 * ping + 0.8 * click


def knock(rng: np.random.Generator) -> np.ndarray:
    """A knuckle on a wooden door: a low resonance and a dull click."""
    body = thump(260.0, 170.0, 0.25, 0.05)
    click = filtered(noise_burst(rng, 0.25, 0.008), "bandpass", (300.0, 2500.0))
    return body + 0.5 * click


def heartbeat(rng: np.random.Generator, period: float) -> np.ndarray:
    """One lub-dub, as long as `period`.

    The lub carries a short thud of noise, the dub does not: it is what a listener (and a
    beat tracker) hears as the beat.
    """
    lub = thump(95.0, 48.0, 0.35, 0.07)
    lub += 0.3 * filtered(noise_burst(rng, 0.35, 0.015), "lowpass", 1200.0)
    dub = thump(110.0, 58.0, 0.3, 0.05)
    beat = np.zeros(seconds(period))
    place(beat, lub, 0.0)
    place(beat, dub, min(0.3 * period, 0.24), 0.55)
    return beat


def breath(rng: np.random.Generator, inhale: float, exhale: float) -> np.ndarray:
    """An inhale then a longer, lower exhale: noise in an airy band under slow swells."""
    air = rng.standard_normal(seconds(inhale + exhale))
    t = np.arange(len(air)) / SR
    swell = np.where(
        t < inhale,
        np.sin(np.pi * t / inhale) ** 2,
        0.8 * np.sin(np.pi * (t - inhale) / exhale) ** 2,
    )
    inhaled = filtered(air, "bandpass", (700.0, 3500.0)) * (t < inhale)
    exhaled = filtered(air, "bandpass", (300.0, 1800.0)) * (t >= inhale)
    return (inhaled + exhaled) * swell


def drone(duration: float, notes: list[float], detune: float = 0.004) -> np.ndarray:
    """Soft saw-like chord of slightly detuned voices, so it beats and breathes."""
    t = np.arange(seconds(duration)) / SR
    out = np.zeros_like(t)
    for note in notes:
        for cents in (-detune, detune):
            f = note * (1 + cents)
            for harmonic in range(1, 7):
                out += np.sin(2 * np.pi * f * harmonic * t + harmonic) / harmonic**1.5
    return filtered(out, "lowpass", 900.0) / (2 * len(notes))


def glitch(rng: np.random.Generator) -> np.ndarray:
    """A digital stutter: a bit-crushed square burst, repeated at a jittered pitch."""
    length = seconds(rng.uniform(0.04, 0.09))
    t = np.arange(length) / SR
    f = rng.choice([220.0, 330.0, 880.0, 1760.0])
    square = np.sign(np.sin(2 * np.pi * f * t))
    crushed = np.round((0.6 * square + 0.4 * rng.standard_normal(length)) * 4) / 4
    step = int(rng.integers(4, 12))  # sample-and-hold: the lo-fi "broken" grain
    crushed = np.repeat(crushed[::step], step)[:length]
    burst = crushed * np.exp(-t / 0.03)
    repeats = int(rng.integers(1, 4))
    return np.concatenate([burst * (0.7**k) for k in range(repeats)])


def beat_grid(first: float, last: float, bpm_start: float, bpm_end: float) -> list[float]:
    """Beat times from `first` to `last` s, the tempo moving linearly between the two."""
    times = [first]
    while True:
        progress = (times[-1] - first) / (last - first)
        bpm = bpm_start + (bpm_end - bpm_start) * progress
        following = times[-1] + 60.0 / bpm
        if following > last:
            return times
        times.append(following)


def fades(x: np.ndarray, fade_in: float, fade_out: float) -> np.ndarray:
    ramp_in = np.minimum(np.arange(len(x)) / max(seconds(fade_in), 1), 1.0)
    ramp_out = np.minimum(np.arange(len(x))[::-1] / max(seconds(fade_out), 1), 1.0)
    return x * np.sin(0.5 * np.pi * ramp_in) ** 2 * np.sin(0.5 * np.pi * ramp_out) ** 2


# --- the tracks ----------------------------------------------------------------------------


def anxiety(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """A heartbeat that speeds up from 104 to 114 bpm, a clock ticking on it, short breaths."""
    duration = 16.0
    track = silence(duration)
    beats = beat_grid(0.5, duration - 0.6, 104.0, 114.0)
    for i, at in enumerate(beats):
        period = beats[i + 1] - at if i + 1 < len(beats) else 60 / 114
        place(track, heartbeat(rng, period), at, 1.0)
        place(track, tick(rng), at, 0.12)
        place(track, tick(rng, 2700.0), at + period / 2, 0.07)
    at = 0.8
    while at < duration - 1.5:
        inhale = rng.uniform(0.5, 0.8) * (1 - at / 40)  # breathing quickens with the heart
        place(track, breath(rng, inhale, 1.4 * inhale), at, 0.18)
        at += 2.6 * inhale + rng.uniform(0.2, 0.6)
    # A thin whine rising over the last seconds: the ringing in the ears before a panic.
    t = np.arange(seconds(6.0)) / SR
    whine = np.sin(2 * np.pi * (5200 + 150 * t) * t) * (t / 6.0) ** 2
    place(track, whine, duration - 6.0, 0.02)
    return fades(track, 0.02, 1.2), beats


def depression(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """A slow minor drone under rain, a muffled 70 bpm pulse and a soft, falling bell."""
    duration = 18.0
    bed = drone(duration, [55.0, 82.41, 110.0, 130.81]) * 0.5
    bed *= 0.8 + 0.2 * np.sin(2 * np.pi * np.arange(len(bed)) / SR / 9.0)
    gusts = 0.7 + 0.3 * np.sin(2 * np.pi * np.arange(len(bed)) / SR / 5.3)
    bed += 0.03 * gusts * filtered(rng.standard_normal(len(bed)), "bandpass", (600.0, 5000.0))
    for at in rng.uniform(0.0, duration, 60):
        drop = filtered(noise_burst(rng, 0.02, 0.003), "bandpass", (2000.0, 7000.0))
        place(bed, drop, at, rng.uniform(0.01, 0.03))
    track = fades(bed, 2.0, 0.0)
    beats = beat_grid(0.6, duration - 0.8, 70.0, 70.0)
    pulse = filtered(thump(90.0, 42.0, 0.6, 0.12), "lowpass", 220.0)
    pulse += filtered(noise_burst(rng, 0.6, 0.02), "lowpass", 1500.0) * 0.3
    t = np.arange(seconds(2.5)) / SR
    # A falling line in A minor, one note a beat, like a slow music box winding down.
    melody = [329.63, 261.63, 220.0, 261.63, 246.94, 196.0, 220.0, 164.81]
    for i, at in enumerate(beats):
        place(track, pulse, at, 1.6)
        note = melody[i % len(melody)]
        bell = sum(np.sin(2 * np.pi * k * note * t) * np.exp(-t * k / 0.8) / k for k in range(1, 7))
        place(track, bell * np.minimum(t / 0.004, 1.0), at, 0.06)
    return fades(track, 0.02, 2.0), beats


def adhd(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """A driving 132 bpm kick, sixteenth-note ticking, and glitch bursts cutting in."""
    duration = 15.0
    track = silence(duration)
    beats = beat_grid(0.5, duration - 0.4, 132.0, 132.0)
    sixteenth = 60.0 / 132.0 / 4
    kick = thump(160.0, 48.0, 0.3, 0.09)
    bass_t = np.arange(seconds(4 * sixteenth)) / SR
    bass = np.sign(np.sin(2 * np.pi * 55.0 * bass_t)) * np.minimum(bass_t / 0.03, 1.0)
    bass = filtered(bass * np.exp(-bass_t / 0.2), "lowpass", 300.0)
    for i, at in enumerate(beats):
        place(track, kick, at, 1.0)
        place(track, bass, at, 0.18)
        for step in range(4):
            accent = 0.12 if step == 0 else 0.05
            place(track, tick(rng, 5200.0 + 300.0 * step), at + step * sixteenth, accent)
        # Bursts of glitches in some bars, on the grid so they jolt without blurring the beat.
        if i % 4 == 2 and rng.random() < 0.7:
            for step in rng.choice(8, size=3, replace=False):
                place(track, glitch(rng), at + step * sixteenth, 0.12)
    return fades(track, 0.02, 0.8), beats


def sleep_paralysis(rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """A low beating drone, a slow breath that is not yours, knocks, a distant heartbeat."""
    duration = 18.0
    t = np.arange(seconds(duration)) / SR
    low = np.sin(2 * np.pi * 43.0 * t) + np.sin(2 * np.pi * 43.6 * t)
    tritone = np.sin(2 * np.pi * 311.1 * t) * (0.2 + 0.8 * t / duration) ** 2
    bed = 0.12 * low + 0.015 * tritone + 0.08 * drone(duration, [61.74, 87.31])
    at = 1.0
    while at < duration - 3.0:
        inhale = rng.uniform(1.4, 1.9)
        place(bed, filtered(breath(rng, inhale, 1.5 * inhale), "lowpass", 1200.0), at, 0.12)
        at += 2.5 * inhale + rng.uniform(0.8, 1.6)
    track = fades(bed, 1.5, 0.0)
    beats = beat_grid(0.5, duration - 0.8, 76.0, 76.0)
    for i, at in enumerate(beats):
        period = beats[i + 1] - at if i + 1 < len(beats) else 60 / 76
        place(track, heartbeat(rng, period), at, 0.6)
    # Knocks in uneven groups at uneven moments; on the heartbeat, so the pulse stays clear.
    for knocked in (5, 6, 8, 12, 13, 16, 17, 18):
        place(track, filtered(knock(rng), "lowpass", 900.0), beats[knocked], 0.5)
    return fades(track, 0.02, 1.8), beats


# --- mastering -----------------------------------------------------------------------------


def _biquad(kind: str, fc: float, q: float, gain_db: float = 0.0) -> np.ndarray:
    """RBJ cookbook biquad as second-order sections."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * fc / SR
    alpha = np.sin(w) / (2 * q)
    cos = np.cos(w)
    if kind == "highshelf":
        root = 2 * np.sqrt(a) * alpha
        b = [
            a * ((a + 1) + (a - 1) * cos + root),
            -2 * a * ((a - 1) + (a + 1) * cos),
            a * ((a + 1) + (a - 1) * cos - root),
        ]
        den = [
            (a + 1) - (a - 1) * cos + root,
            2 * ((a - 1) - (a + 1) * cos),
            (a + 1) - (a - 1) * cos - root,
        ]
    else:
        b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
        den = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array([[*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]]])


def loudness(x: np.ndarray) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770: K-weighting, 400 ms blocks, two gates)."""
    sos = np.vstack([_biquad("highshelf", 1681.97, 0.7072, 4.0), _biquad("highpass", 38.13, 0.5)])
    weighted = signal.sosfilt(sos, x)
    block, hop = seconds(0.4), seconds(0.1)
    power = np.array(
        [np.mean(weighted[i : i + block] ** 2) for i in range(0, len(x) - block + 1, hop)]
    )
    lufs = -0.691 + 10 * np.log10(np.maximum(power, 1e-12))
    gated = power[lufs > -70.0]
    relative = -0.691 + 10 * np.log10(gated.mean()) - 10.0
    return float(-0.691 + 10 * np.log10(power[(lufs > -70.0) & (lufs > relative)].mean()))


def master(x: np.ndarray) -> np.ndarray:
    """Bring to TARGET_LUFS, then soft-limit peaks under CEILING_DB.

    The gain stops 4 dB short of pushing peaks past the ceiling, so percussive tracks end
    up a little quieter than the target rather than squashed flat.
    """
    ceiling = 10 ** (CEILING_DB / 20)
    gain = 10 ** ((TARGET_LUFS - loudness(x)) / 20)
    gain = min(gain, ceiling * 10 ** (4 / 20) / np.max(np.abs(x)))
    y = x * gain
    knee = 0.7 * ceiling
    over = np.abs(y) > knee
    y[over] = np.sign(y[over]) * (
        knee + (ceiling - knee) * np.tanh((np.abs(y[over]) - knee) / (ceiling - knee))
    )
    return y


TRACKS: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, list[float]]]] = {
    "anxiety": anxiety,
    "depression": depression,
    "adhd": adhd,
    "sleep_paralysis": sleep_paralysis,
}


def main() -> None:
    from pipeline.audio import analyse

    logging.basicConfig(level=logging.WARNING)
    for seed, (name, make) in enumerate(TRACKS.items(), start=1):
        mix, pulses = make(np.random.default_rng(seed))
        mix = master(mix)
        path = HERE / f"{name}.wav"
        soundfile.write(path, mix.astype(np.float32), SR, subtype="PCM_16")
        features = analyse(path, fps=30.0)
        peak = 20 * np.log10(np.max(np.abs(mix)))
        off = [min(abs(b - p) for p in pulses) for b in features.beat_times]
        print(
            f"{path.name}: {len(mix) / SR:.1f} s, {loudness(mix):.1f} LUFS, peak {peak:.1f} dBFS, "
            f"{features.tempo:.0f} bpm, {len(features.beat_times)} beats detected "
            f"({len(pulses)} made; furthest {1000 * max(off):.0f} ms from one)"
        )
        print("  beats:", ", ".join(f"{t:.2f}" for t in features.beat_times))


if __name__ == "__main__":
    main()
