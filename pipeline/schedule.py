"""Compile a storyboard (and its soundtrack's features) into the per-frame plan.

Pure: no torch, no file access. Every value of every frame is decided here, so the plan
can be printed, plotted and snapshot-tested before anything is rendered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from pipeline.errors import FeverdreamError
from pipeline.expressions import AUDIO_VARIABLES
from pipeline.storyboard import (
    DEFAULT_FOV,
    FOV_RANGE,
    Keyframe,
    Storyboard,
    Time,
    Value,
    is_picture,
)

JSON_DECIMALS = 6

# The engine's picture follows a change of prompts late (bench/RESULTS.md, "Keyframes on
# time"): it holds the old prompt until the new one outweighs it by far, and then it takes
# some optimisation steps to turn. So each frame is optimised toward its aim rather than its
# own prompts: the plan's prompts LAG_STEPS optimisation steps later (`lead`), within the shot,
# with a morph's fraction sharpened to e^p / (e^p + (1 - e)^p), p = SHARPEN (which crosses a
# half where the plan's does). Measured on the shapes world, the only trained world at hand.
# Never more than MAX_LEAD frames: aimed further (24 frames at the shapes demo's 1.5 steps a
# frame), the frame at a keyframe already shows the next one (bench/RESULTS.md). A shot's
# first frame, made from noise in its `first_steps`, has nothing to catch up: it aims its own
# steps' worth ahead (Plan.engine_aim).
LAG_STEPS = 36
SHARPEN = 4
MAX_LEAD = 16


class Features(Protocol):
    """What the plan needs from the soundtrack's analysis (pipeline.audio.AudioFeatures)."""

    beat_times: Sequence[float]

    def at(self, name: str, frame: int) -> float: ...


@dataclass(frozen=True)
class FramePlan:
    """Everything the engine needs to know about one output frame."""

    frame: int
    t: float
    zoom: float
    rotate: float
    pan_x: float
    pan_y: float
    cut: bool
    # Full prompt text (or `image: PATH`) → weight; zero weights left out.
    prompts: tuple[tuple[str, float], ...]
    # On the first frame of a shot (frame 0, a cut) that starts from a picture: the picture,
    # as the storyboard writes it, and how strongly the frame keeps to it (0-1).
    init_image: str | None = None
    init_strength: float = 0.0
    # The prompts with a morph's fraction sharpened (SHARPEN); None: the same as `prompts`.
    # Not in the JSON: it follows from the storyboard, as `prompts` do.
    sharpened: tuple[tuple[str, float], ...] | None = None
    # The 3D camera's move this frame (pipeline/camera3d.py), in a storyboard with a 3D key;
    # None in one without (and then not in the JSON, which stays as it was).
    translate: tuple[float, float, float] | None = None
    rotate_3d: tuple[float, float, float] | None = None
    fov: float | None = None

    def to_json(self) -> dict:
        values = {
            "frame": self.frame,
            "t": _rounded(self.t),
            "zoom": _rounded(self.zoom),
            "rotate": _rounded(self.rotate),
            "pan_x": _rounded(self.pan_x),
            "pan_y": _rounded(self.pan_y),
            "cut": self.cut,
            "prompts": {text: _rounded(weight) for text, weight in self.prompts},
        }
        if self.init_image is not None:
            values["init_image"] = self.init_image
            values["init_strength"] = _rounded(self.init_strength)
        if self.translate is not None:
            values["translate"] = [_rounded(v) for v in self.translate]
            values["rotate_3d"] = [_rounded(v) for v in self.rotate_3d or (0.0, 0.0, 0.0)]
            values["fov"] = _rounded(self.fov if self.fov is not None else DEFAULT_FOV)
        return values

    @classmethod
    def from_json(cls, values: dict) -> FramePlan:
        """A frame as `to_json` wrote it (a render's record keeps its plan so)."""
        return cls(
            frame=values["frame"],
            t=values["t"],
            zoom=values["zoom"],
            rotate=values["rotate"],
            pan_x=values["pan_x"],
            pan_y=values["pan_y"],
            cut=values["cut"],
            prompts=tuple(values["prompts"].items()),
            init_image=values.get("init_image"),
            init_strength=values.get("init_strength", 0.0),
            translate=_vector(values.get("translate")),
            rotate_3d=_vector(values.get("rotate_3d")),
            fov=values.get("fov"),
        )


def _vector(values: list[float] | None) -> tuple[float, float, float] | None:
    return None if values is None else (values[0], values[1], values[2])


def _rounded(value: float) -> float:
    # Adding 0.0 turns -0.0 into 0.0, so a snapshot doesn't depend on a sign of nothing.
    return round(value, JSON_DECIMALS) + 0.0


@dataclass(frozen=True)
class KeyframeMark:
    """A keyframe as placed on the video's timeline."""

    index: int
    t: float
    frame: int  # the first frame at or after t (may equal n_frames for a keyframe at the end)
    label: str  # its prompt, for tables and contact sheets


@dataclass(frozen=True)
class Plan:
    fps: int
    duration: float
    frames: tuple[FramePlan, ...]
    keyframes: tuple[KeyframeMark, ...]
    beat_times: tuple[float, ...]
    # The pictures its frames name (init images, image prompts) → their checked paths.
    images: tuple[tuple[str, Path], ...] = ()

    def optimised_frames(self, cadence: int) -> list[int]:
        """The frames the engine optimises: every `cadence`-th frame from the start and from
        each cut, and the last frame before each cut and of the video, so every other frame
        lies between two optimised frames of the same shot."""
        starts = [0] + [fp.frame for fp in self.frames if fp.cut]
        ends = starts[1:] + [self.n_frames]
        optimised: set[int] = set()
        for start, end in zip(starts, ends, strict=True):
            optimised.update(range(start, end, cadence))
            optimised.add(end - 1)
        return sorted(optimised)

    def image(self, name: str) -> Path:
        """The file of a picture a frame names (an init image, or an `image: PATH` prompt)."""
        return dict(self.images)[name]

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def camera_3d(self) -> bool:
        """Whether its frames move the 3D camera (a storyboard with a 3D key)."""
        return bool(self.frames) and self.frames[0].translate is not None

    @property
    def prompt_texts(self) -> tuple[str, ...]:
        """Every distinct prompt text the video uses, in order of first use."""
        seen: dict[str, None] = {}
        for frame in self.frames:
            for text, _ in frame.prompts:
                seen.setdefault(text)
        return tuple(seen)

    def aim_weights(self, settings: dict) -> dict[str, list[float]]:
        """Each prompt's weight in every frame's aim with these settings (engine_aim), for
        plots beside the plan's weights."""
        aims = [dict(self.engine_aim(index, settings)) for index in range(self.n_frames)]
        return {text: [aim.get(text, 0.0) for aim in aims] for text in self.prompt_texts}

    def to_json(self) -> list[dict]:
        return [frame.to_json() for frame in self.frames]

    def recorded(self, settings: dict) -> list[dict]:
        """The plan as a render's record keeps it, made with these settings (the
        record's: `steps`, `first_steps`, and `cadence` where the engine has one): each
        frame with its aim (engine_aim) where that differs from its prompts."""
        frames = self.to_json()
        for values, frame in zip(frames, self.frames, strict=True):
            aim = self.engine_aim(frame.frame, settings)
            if aim != frame.prompts:
                values["aim"] = {text: _rounded(weight) for text, weight in aim}
        return frames

    def engine_aim(self, index: int, settings: dict) -> tuple[tuple[str, float], ...]:
        """What the engine optimises frame `index` toward, with these settings (a record's,
        or EngineSettings.record's): the aim a lead of `steps` ahead, or of `first_steps` at a
        shot's first frame (the plan's first, or a cut), which starts from noise."""
        first = index == 0 or self.frames[index].cut
        steps = settings["first_steps"] if first else settings["steps"]
        return self.aim(index, lead(steps, settings.get("cadence", 1)))

    def aim(self, index: int, lead: int) -> tuple[tuple[str, float], ...]:
        """The prompts frame `index` is optimised toward: the sharpened prompts of the frame
        `lead` frames later, or of the shot's (or the plan's) last frame if that comes first:
        the engine never aims across a cut."""
        target = index
        for later in self.frames[index + 1 : index + 1 + lead]:
            if later.cut:
                break
            target = later.frame
        frame = self.frames[target]
        return frame.prompts if frame.sharpened is None else frame.sharpened

    def span(self, start: int, end: int) -> Plan:
        """Frames `start` to `end - 1` as a plan of their own, numbered from 0, with the
        keyframes and beats that fall inside them (a render of part of a video)."""
        if not 0 <= start < end <= self.n_frames:
            raise FeverdreamError(
                f"frames {start}:{end}: give A:B with 0 <= A < B <= {self.n_frames} "
                "(frames A to B-1)"
            )
        shift = start / self.fps
        frames = [replace(fp, frame=i) for i, fp in enumerate(self.frames[start:end])]
        # Begun mid-shot, the span starts from its shot's picture, if the shot has one.
        shot = next(fp for fp in reversed(self.frames[: start + 1]) if fp.cut or fp.frame == 0)
        if not frames[0].cut and shot.init_image is not None:
            frames[0] = replace(
                frames[0], init_image=shot.init_image, init_strength=shot.init_strength
            )
        return Plan(
            fps=self.fps,
            duration=(end - start) / self.fps,
            frames=tuple(frames),
            keyframes=tuple(
                replace(mark, frame=mark.frame - start, t=mark.t - shift)
                for mark in self.keyframes
                if start <= mark.frame < end
            ),
            beat_times=tuple(t - shift for t in self.beat_times if shift <= t < end / self.fps),
            images=self.images,
        )


# --- easing --------------------------------------------------------------------------------


def ease(name: str, u: float) -> float:
    """How far (0..1) a value has travelled at fraction u of the way to the next keyframe."""
    if name == "hold":
        return 1.0 if u >= 1 else 0.0
    if name == "ease-in":
        return u * u
    if name == "ease-out":
        return 1 - (1 - u) * (1 - u)
    if name == "ease-in-out":
        return u * u * (3 - 2 * u)
    return u


def lead(steps: int, cadence: int) -> int:
    """The frames the engine aims ahead (Plan.aim) when it optimises every `cadence`-th frame
    for `steps` steps: LAG_STEPS steps' worth of frames, at most MAX_LEAD (none without
    steps: nothing is optimised, so nothing lags)."""
    if steps <= 0:
        return 0
    return min(round(LAG_STEPS * cadence / steps), MAX_LEAD)


def sharpen(e: float) -> float:
    """A morph's fraction as the engine aims at it: sooner past a half, as late before it."""
    return e**SHARPEN / (e**SHARPEN + (1 - e) ** SHARPEN)


def frame_count(duration: float, fps: int) -> int:
    """Frames in a video of this duration: round(duration × fps), halves rounded up."""
    return int(math.floor(duration * fps + 0.5))


# --- the plan ------------------------------------------------------------------------------


def build_plan(board: Storyboard, features: Features | None = None) -> Plan:
    """The plan of every frame; raises StoryboardError (with the line) for what only shows here."""
    beat_times = tuple(features.beat_times) if features is not None else ()
    times = _keyframe_times(board, beat_times)
    duration = _duration(board, times, beat_times)
    n_frames = frame_count(duration, board.fps)

    def variables(frame: int) -> dict[str, float]:
        values = {"t": frame / board.fps, "frame": float(frame), "fps": float(board.fps)}
        if features is not None:
            values.update({name: features.at(name, frame) for name in AUDIO_VARIABLES})
        return values

    _evaluate_at_keyframes(board, times, variables)
    cuts = {
        math.ceil(t * board.fps - 1e-9): kf
        for kf, t in zip(board.keyframes, times, strict=True)
        if kf.cut
    }
    # The picture each shot starts from: its keyframe's own, else the storyboard's.
    starts = {0: board.keyframes[0].init_image or board.init_image}
    starts.update({f: kf.init_image or board.init_image for f, kf in cuts.items() if f > 0})
    frames = []
    for f in range(n_frames):
        env = variables(f)
        t = env["t"]
        zoom = _track(board, times, t, env, lambda kf: kf.zoom, default=1.0, evaluate=_check_zoom)
        camera_3d = _camera_3d(board, times, t, env) if board.camera_3d else {}
        if camera_3d:
            _check_forward(board, times, env, zoom, camera_3d["translate"][2])
        prompts = _prompts(board, times, t, env)
        sharpened = _prompts(board, times, t, env, sharpen)
        frames.append(
            FramePlan(
                frame=f,
                t=t,
                zoom=zoom,
                rotate=_track(board, times, t, env, lambda kf: kf.rotate, default=0.0),
                pan_x=_track(board, times, t, env, lambda kf: kf.pan and kf.pan[0], default=0.0),
                pan_y=_track(board, times, t, env, lambda kf: kf.pan and kf.pan[1], default=0.0),
                cut=f in cuts and f > 0,
                prompts=prompts,
                init_image=starts.get(f),
                init_strength=board.init_strength if starts.get(f) else 0.0,
                sharpened=None if sharpened == prompts else sharpened,
                **camera_3d,
            )
        )
    marks = tuple(
        KeyframeMark(kf.index, t, min(math.ceil(t * board.fps - 1e-9), n_frames), _label(kf))
        for kf, t in zip(board.keyframes, times, strict=True)
    )
    return Plan(board.fps, duration, tuple(frames), marks, beat_times, board.images)


def _resolve(time: Time, beat_times: tuple[float, ...]) -> float:
    if time.seconds is not None:
        return time.seconds
    assert time.beat is not None
    if time.beat > len(beat_times):
        raise time.where.error(
            f"'{time.text}': the soundtrack has only {len(beat_times)} beats "
            f"(after its offset); use beat 1 to beat {len(beat_times)} or a time in seconds"
        )
    return beat_times[time.beat - 1]


def _keyframe_times(board: Storyboard, beat_times: tuple[float, ...]) -> list[float]:
    times: list[float] = []
    for kf in board.keyframes:
        t = _resolve(kf.at, beat_times)
        if times and t <= times[-1]:
            previous = board.keyframes[len(times) - 1]
            raise kf.at.where.error(
                f"'{kf.at.text}' ({t:.3f}s) is not after the previous keyframe's "
                f"'{previous.at.text}' ({times[-1]:.3f}s, line {previous.where.line}); "
                "keyframes must be in time order"
            )
        times.append(t)
    return times


def _duration(board: Storyboard, times: list[float], beat_times: tuple[float, ...]) -> float:
    if board.duration is None:
        duration = times[-1]
        if frame_count(duration, board.fps) < 1:
            last = board.keyframes[-1]
            raise last.at.where.error(
                "the video would have no frames: add `duration:` (e.g. duration: 10s) "
                "or a later keyframe"
            )
        return duration
    duration = _resolve(board.duration, beat_times)
    if frame_count(duration, board.fps) < 1:
        raise board.duration.where.error(f"'{board.duration.text}' is shorter than one frame")
    for kf, t in zip(board.keyframes, times, strict=True):
        if t > duration + 1e-9:
            raise kf.at.where.error(
                f"'{kf.at.text}' ({t:.3f}s) is after the end of the video "
                f"(duration {duration:.3f}s); move it earlier or make `duration` longer"
            )
    return duration


def _evaluate_at_keyframes(board: Storyboard, times: list[float], variables) -> None:
    """Evaluate every expression at every keyframe's time, so errors show before a render."""
    for kf, t in zip(board.keyframes, times, strict=True):
        env = variables(math.ceil(t * board.fps - 1e-9))
        for value in kf.values:
            value.at(env)
        if kf.zoom is not None:
            _check_zoom(kf.zoom, env)
        if kf.fov is not None:
            _check_fov(kf.fov, env)
        if kf.translate is not None:
            _check_dolly(kf.translate[2], env)


def _check_fov(value: Value, env: dict[str, float]) -> float:
    fov = value.at(env)
    low, high = FOV_RANGE
    if not low <= fov <= high:
        raise value.where.error(
            f"fov is {fov:g} degrees at {env['t']:.3f}s; give {low:g} to {high:g} "
            f"(the camera's horizontal field of view; {DEFAULT_FOV:g} if left out)"
        )
    return fov


def _check_dolly(value: Value, env: dict[str, float]) -> float:
    z = value.at(env)
    if z >= 1:
        raise value.where.error(
            f"translate z is {z:g} at {env['t']:.3f}s; it must be less than 1 (the fraction of "
            "the way to the middle distance the camera moves each frame: 0.02 is a fiftieth, "
            "1 would reach it in one frame)"
        )
    return z


def _check_forward(board: Storyboard, times, env: dict[str, float], zoom: float, z: float):
    """A frame's dolly with its zoom's (camera3d.frame_move: zoom z dollies 1 - 1/z) must
    stay short of the middle distance, as `translate` z alone must. The error is at the
    translate key of the frame's span whose z is the larger (a dolly this far has one)."""
    forward = z + 1 - 1 / zoom
    if forward < 1:
        return
    t = env["t"]
    keys = [(time, kf) for kf, time in zip(board.keyframes, times, strict=True) if kf.translate]
    i, eased = _segment(keys, t)
    span = keys[i : i + 2] if eased else keys[i : i + 1]
    value = max((kf.translate[2] for _, kf in span), key=lambda value: value.at(env))
    raise value.where.error(
        f"translate z {z:g} with zoom {zoom:g} at {t:.3f}s moves the camera {forward:.3g} of the "
        "way to the middle distance in one frame (zoom z dollies 1 - 1/z); together they must "
        "stay below 1"
    )


def _camera_3d(board: Storyboard, times, t: float, env) -> dict:
    """A frame's 3D camera (FramePlan.translate, rotate_3d, fov): each axis a track of its
    own, eased as the other keys are."""

    def axis(key: str, i: int, evaluate=_plain) -> float:
        return _track(board, times, t, env, lambda kf: (getattr(kf, key) or (None,) * 3)[i],
                      default=0.0, evaluate=evaluate)  # fmt: skip

    return {
        "translate": (
            axis("translate", 0),
            axis("translate", 1),
            axis("translate", 2, evaluate=_check_dolly),
        ),
        "rotate_3d": (axis("rotate_3d", 0), axis("rotate_3d", 1), axis("rotate_3d", 2)),
        "fov": _track(
            board, times, t, env, lambda kf: kf.fov, default=DEFAULT_FOV, evaluate=_check_fov
        ),
    }


def _check_zoom(value: Value, env: dict[str, float]) -> float:
    zoom = value.at(env)
    if zoom <= 0:
        raise value.where.error(
            f"zoom is {zoom:g} at {env['t']:.3f}s; it must be greater than 0 "
            "(1 = still, above 1 moves in, below 1 moves out)"
        )
    return zoom


def _segment(keys: list[tuple[float, Keyframe]], t: float) -> tuple[int, float]:
    """The index of the keyframe whose span holds t, and the eased fraction along it."""
    if t <= keys[0][0]:
        return 0, 0.0
    for i in range(len(keys) - 1):
        start, kf = keys[i]
        end = keys[i + 1][0]
        if start <= t < end:
            return i, ease(kf.ease, (t - start) / (end - start))
    return len(keys) - 1, 0.0


def _plain(value: Value, env: dict[str, float]) -> float:
    return value.at(env)


def _track(board, times, t, env, pick, *, default: float, evaluate=_plain) -> float:
    """One key's value at t: the keyframes that set it, eased from one to the next."""
    keys = [(time, kf) for kf, time in zip(board.keyframes, times, strict=True) if pick(kf)]
    if not keys:
        return default
    i, e = _segment(keys, t)
    a = evaluate(pick(keys[i][1]), env)
    if e == 0.0:
        return a
    b = evaluate(pick(keys[i + 1][1]), env)
    return a + (b - a) * e


def _full_text(text: str, style: str | None) -> str:
    if is_picture(text):  # a picture: the style is words, for words
        return text
    return f"{text}, {style.strip()}" if style else text


def _prompts(
    board: Storyboard, times, t: float, env, shape: Callable[[float], float] = lambda e: e
) -> tuple[tuple[str, float], ...]:
    """The frame's prompts and weights; with `shape`, a morph's fraction shaped by it."""
    keys = [(time, kf) for kf, time in zip(board.keyframes, times, strict=True) if kf.prompt]
    i, e = _segment(keys, t)
    e = shape(e)
    weights: dict[str, float] = {}
    for kf, share in ((keys[i][1], 1.0 - e), (keys[i + 1][1] if e else None, e)):
        if kf is None or share == 0.0:
            continue
        for text, weight in kf.prompt:
            full = _full_text(text, board.style)
            weights[full] = weights.get(full, 0.0) + weight.at(env) * share
    if board.negative:
        weights[board.negative] = weights.get(board.negative, 0.0) - 1.0
    return tuple((text, w) for text, w in weights.items() if w != 0.0)


def _label(kf: Keyframe) -> str:
    if not kf.prompt:
        return ""
    return " + ".join(text for text, _ in kf.prompt)


# --- reading the plan ----------------------------------------------------------------------


def _describe_prompts(prompts: tuple[tuple[str, float], ...]) -> str:
    return "; ".join(f"{w:+.2f} {text}" for text, w in prompts)


def _start(fp: FramePlan) -> str:
    """How a row's first frame starts a shot, if it does: CUT, and FROM its picture."""
    cut = "CUT " if fp.cut else ""
    return cut + (f"FROM {fp.init_image}: " if fp.init_image else "")


def format_table(plan: Plan, *, every_frame: bool = False) -> str:
    """A readable table: one row per keyframe span, or one row per frame."""
    header = f"{'time':>15}  {'frames':>11}  {'zoom':>13}  {'rotate':>13}  {'pan':>17}  prompts"
    rows = [header, "-" * len(header)]
    if every_frame:
        for fp in plan.frames:
            rows.append(
                f"{fp.t:>14.3f}s  {fp.frame:>11}  {fp.zoom:>13.4f}  {fp.rotate:>13.3f}  "
                f"{fp.pan_x:>8.2f},{fp.pan_y:>8.2f}  {_start(fp)}{_describe_prompts(fp.prompts)}"
            )
            if plan.camera_3d:
                rows.append(f"{'':>29}3D  {_describe_3d(fp)}")
        return "\n".join(rows)
    starts = sorted({m.frame for m in plan.keyframes if m.frame < plan.n_frames} | {0})
    for first, end in zip(starts, [*starts[1:], plan.n_frames], strict=True):
        a, b = plan.frames[first], plan.frames[end - 1]
        rows.append(
            f"{a.t:>6.2f}-{b.t:>6.2f}s  {first:>5}-{end - 1:<5}  "
            f"{a.zoom:>6.3f}-{b.zoom:<6.3f}  {a.rotate:>6.2f}-{b.rotate:<6.2f}  "
            f"{a.pan_x:>4.1f},{a.pan_y:<4.1f}-{b.pan_x:>4.1f},{b.pan_y:<4.1f}  "
            f"{_start(a)}{_describe_prompts(a.prompts)}"
        )
        if plan.camera_3d:
            rows.append(f"{'':>29}3D  {_describe_3d(a)}  to  {_describe_3d(b)}")
    return "\n".join(rows)


def _describe_3d(fp: FramePlan) -> str:
    """A frame's 3D camera, for the plan's table."""
    translate = ", ".join(f"{v:.3g}" for v in fp.translate or ())
    turn = ", ".join(f"{v:.3g}" for v in fp.rotate_3d or ())
    return f"translate [{translate}]  rotate_3d [{turn}]°  fov {fp.fov:.3g}°"
