"""Load a YAML storyboard and check it, with FILE:LINE errors, into plain typed objects.

The YAML is composed into nodes (which keep their line numbers) and validated by hand,
node by node, so that every error names the line and the key a user has to fix. Only
what can be known from the file is checked here; times given as `beat N` and the
values of expressions are checked when the plan is built (schedule.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline import expressions
from pipeline.errors import StoryboardError

EASES = ("linear", "ease-in", "ease-out", "ease-in-out", "hold")
FPS_RANGE = (23, 60)
SIDE_RANGE = (360, 4096)

TOP_KEYS = (
    "title",
    "seed",
    "fps",
    "size",
    "duration",
    "render",
    "models",
    "style",
    "negative",
    "audio",
    "content_warning",
    "content_warning_duration",
    "caption",
    "init_image",
    "init_strength",
    "keyframes",
)
RENDER_KEYS = ("size", "steps", "first_steps", "cuts", "lr", "cadence", "color_coherence")
COLOR_COHERENCE = ("off", "lab", "rgb")
MODEL_KEYS = ("vqgan", "clip", "depth")
AUDIO_KEYS = ("file", "offset", "fade_in", "fade_out")
KEYFRAME_KEYS = (
    "at",
    "prompt",
    "zoom",
    "rotate",
    "pan",
    "translate",
    "rotate_3d",
    "fov",
    "ease",
    "cut",
    "init_image",
)
# The 3D camera's keys (pipeline/camera3d.py): a storyboard that uses one moves through the
# picture with its depth, estimated by the depth model (`models: depth:`).
CAMERA_3D_KEYS = ("translate", "rotate_3d", "fov")
FOV_RANGE = (1.0, 170.0)  # degrees, the 3D camera's horizontal field of view
DEFAULT_FOV = 40.0  # degrees, as Deforum's
# A prompt written `image: PATH` is a picture CLIP steers toward (or, weighted below 0, away).
IMAGE_PROMPT = "image:"


# --- the typed storyboard ----------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a value came from, for error messages."""

    file: str
    line: int
    key: str

    def error(self, message: str) -> StoryboardError:
        return StoryboardError(self.file, self.line, self.key, message)


@dataclass(frozen=True)
class Time:
    """A point in time as written: seconds (s, m:ss.s, frames) or the Nth beat of the audio."""

    text: str
    where: Where
    seconds: float | None = None
    beat: int | None = None


@dataclass(frozen=True)
class Value:
    """A number, or an expression evaluated per frame."""

    where: Where
    number: float | None = None
    expression: expressions.Expression | None = None

    def at(self, variables: dict[str, float]) -> float:
        if self.expression is None:
            assert self.number is not None
            return self.number
        try:
            return self.expression.evaluate(variables)
        except expressions.ExpressionError as error:
            t, frame = variables["t"], int(variables["frame"])
            raise self.where.error(f"at {t:.3f}s (frame {frame}): {error}") from None


@dataclass(frozen=True)
class Keyframe:
    index: int  # 1-based, as users count them
    at: Time
    where: Where
    prompt: tuple[tuple[str, Value], ...] | None = None  # (text without style, weight)
    zoom: Value | None = None
    rotate: Value | None = None
    pan: tuple[Value, Value] | None = None
    # The 3D camera: the camera moves [x, y, z] (x, y: pixels at the middle distance, as
    # `pan`; z: forward, a fraction of the middle distance) and turns [x, y, z] degrees each
    # frame, over a horizontal field of view of `fov` degrees.
    translate: tuple[Value, Value, Value] | None = None
    rotate_3d: tuple[Value, Value, Value] | None = None
    fov: Value | None = None
    ease: str = "linear"
    cut: bool = False
    init_image: str | None = None  # as written; the shot this keyframe starts begins from it

    @property
    def values(self) -> list[Value]:
        """Every number or expression the keyframe sets (motion and prompt weights)."""
        motion = [self.zoom, self.rotate, self.fov]
        motion += [*(self.pan or ()), *(self.translate or ()), *(self.rotate_3d or ())]
        weights = [weight for _, weight in self.prompt or ()]
        return [value for value in motion + weights if value is not None]


@dataclass(frozen=True)
class RenderSettings:
    width: int = 288
    height: int = 512
    steps: int = 10
    first_steps: int = 150
    cuts: int = 32
    lr: float = 0.1
    cadence: int = 1
    # Each frame's colours matched to its shot's first frame before it is optimised: lab,
    # rgb or off (bench/RESULTS.md, "Colour that holds", measures the choice).
    color_coherence: str = "off"

    def preview(self) -> RenderSettings:
        """A quick look: about a quarter of the canvas area and a third of the steps."""
        width = round16(self.width / 2)
        return dataclasses.replace(
            self,
            width=width,
            height=round16(width * self.height / self.width),
            steps=-(-self.steps // 3),
            first_steps=-(-self.first_steps // 3),
        )


@dataclass(frozen=True)
class Models:
    vqgan: str = "vqgan_imagenet_f16_16384"
    # The CLIPs the loss listens to, each with its weight (their losses are summed):
    # `clip: NAME`, a list of names, or a mapping of names to weights.
    clips: tuple[tuple[str, float], ...] = (("ViT-B/32", 1.0),)
    # What the 3D camera reads each optimised frame's depth with (used only by a storyboard
    # with a 3D key).
    depth: str = "depth-anything-v2-small"


@dataclass(frozen=True)
class Soundtrack:
    path: Path
    where: Where
    offset: float = 0.0
    fade_in: float = 0.0
    fade_out: float = 0.0


@dataclass(frozen=True)
class Storyboard:
    path: Path
    name: str  # the file's stem; names the output folder and video
    sha256: str  # of the file's bytes
    title: str
    seed: int
    fps: int
    width: int
    height: int
    duration: Time | None
    render: RenderSettings
    models: Models
    style: str | None
    negative: str | None
    audio: Soundtrack | None
    content_warning: str | None
    content_warning_duration: float
    caption: str | None
    keyframes: tuple[Keyframe, ...]
    init_image: str | None = None  # as written: the picture the first frame and cuts start from
    init_strength: float = 0.0  # 0-1: how strongly a shot's first frame keeps to its picture
    # Every picture the storyboard names (init images as written, image prompts as their
    # `image: PATH` key), with its checked path.
    images: tuple[tuple[str, Path], ...] = ()

    @property
    def uses_audio_features(self) -> bool:
        """Whether any time or expression needs the soundtrack's analysis."""
        for kf in self.keyframes:
            if kf.at.beat is not None:
                return True
            if any(v.expression and v.expression.uses_audio for v in kf.values):
                return True
        return self.duration is not None and self.duration.beat is not None

    @property
    def camera_3d(self) -> bool:
        """Whether a keyframe sets a 3D camera key: the video moves through the picture
        with its depth (and zoom, rotate and pan move the 3D camera: schedule.build_plan)."""
        return any(getattr(kf, key) is not None for kf in self.keyframes for key in CAMERA_3D_KEYS)

    def model(self, name: str) -> str:
        """A model as the storyboard names it: a file relative to the storyboard (like its
        audio) when one is there, else a registry name."""
        candidate = self.path.parent / name
        return str(candidate) if candidate.is_file() else name


# --- YAML nodes with their lines ---------------------------------------------------------


class _Context:
    """The file being read, so helpers can make errors that point into it."""

    def __init__(self, file: str, base: Path | None = None):
        self.file = file
        self.base = base if base is not None else Path(file).parent
        self.images: dict[str, Path] = {}
        self._constructor = yaml.constructor.SafeConstructor()

    def where(self, node: yaml.Node, key: str) -> Where:
        return Where(self.file, node.start_mark.line + 1, key)

    def error(self, node: yaml.Node, key: str, message: str) -> StoryboardError:
        return self.where(node, key).error(message)

    def scalar(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            raise self.error(node, key, f"expected a single value, found {kind}")
        try:
            return self._constructor.construct_object(node)
        except yaml.constructor.ConstructorError as error:
            raise self.error(node, key, f"cannot read this value: {error.problem}") from None
        except ValueError as error:
            raise self.error(node, key, f"cannot read this value: {error}") from None

    def mapping(
        self, node: yaml.Node, key: str, known: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key, rejecting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"expected a mapping with keys such as {_few(known)}")
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = self.scalar(key_node, key) if isinstance(key_node, yaml.ScalarNode) else None
            path = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str):
                raise self.error(key_node, key or "(top level)", f"{name!r} is not a key name")
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
                raise self.error(key_node, path, f"unknown key ({hint})")
            if name in entries:
                first = entries[name][0].start_mark.line + 1
                raise self.error(key_node, path, f"given twice (first on line {first})")
            entries[name] = (key_node, value_node)
        return entries


def _few(names: tuple[str, ...]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a true/false value ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ('{value}')"
    return f"{type(value).__name__} ({value})"


# --- values --------------------------------------------------------------------------------


def _text(ctx: _Context, node: yaml.Node, key: str, *, empty_ok: bool = False) -> str:
    value = ctx.scalar(node, key)
    if not isinstance(value, str):
        raise ctx.error(node, key, f"expected text, found {_type_name(value)}")
    if not empty_ok and not value.strip():
        raise ctx.error(node, key, "is empty (write some text, or remove the key)")
    return value


def _integer(ctx: _Context, node: yaml.Node, key: str, low: int, high: int | None = None) -> int:
    value = ctx.scalar(node, key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(node, key, f"expected a whole number, found {_type_name(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ctx.error(node, key, f"{value} is out of range (must be {bounds})")
    return value


def _number(ctx: _Context, node: yaml.Node, key: str) -> float:
    value = ctx.scalar(node, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ctx.error(node, key, f"expected a number, found {_type_name(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ctx.error(node, key, f"expected a finite number, found {value}")
    return value


def _boolean(ctx: _Context, node: yaml.Node, key: str) -> bool:
    value = ctx.scalar(node, key)
    if not isinstance(value, bool):
        raise ctx.error(node, key, f"expected true or false, found {_type_name(value)}")
    return value


def parse_size(text: object) -> tuple[int, int]:
    """WIDTHxHEIGHT (also with X or ×) as two integers; ValueError says what was wrong."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"expected WIDTHxHEIGHT such as 1080x1920, found {text!r}")
    return int(match.group(1)), int(match.group(2))


def _size(ctx: _Context, node: yaml.Node, key: str) -> tuple[int, int]:
    try:
        return parse_size(ctx.scalar(node, key))
    except ValueError as error:
        raise ctx.error(node, key, str(error)) from None


def _value(ctx: _Context, node: yaml.Node, key: str, *, audio: bool) -> Value:
    """A number or an expression string."""
    where = ctx.where(node, key)
    raw = ctx.scalar(node, key)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise where.error(f"expected a number or an expression, found {_type_name(raw)}")
    if isinstance(raw, str):
        try:
            return Value(where, expression=expressions.parse(raw, audio=audio))
        except expressions.ExpressionError as error:
            raise where.error(str(error)) from None
    if not math.isfinite(float(raw)):
        raise where.error(f"expected a finite number, found {raw}")
    return Value(where, number=float(raw))


_SECONDS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*s")
_CLOCK = re.compile(r"(\d+):(\d\d?(?:\.\d*)?)")
_FRAMES = re.compile(r"(\d+)\s*f")
_BEAT = re.compile(r"beat\s+(\d+)")
_TIME_FORMS = "4s, 1.5s, 0:04.5 (m:ss.s), 96f (frames) or beat 12"


def _time(ctx: _Context, node: yaml.Node, key: str, *, fps: int, beats: bool, audio: bool) -> Time:
    """Parse one of the time forms; `beats` says whether `beat N` may be used here."""
    where = ctx.where(node, key)
    raw = ctx.scalar(node, key)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise where.error(f"expected a time such as {_TIME_FORMS}, found {_type_name(raw)}")
    text = str(raw).strip()
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif match := _SECONDS.fullmatch(text):
        seconds = float(match.group(1))
    elif match := _CLOCK.fullmatch(text):
        if float(match.group(2)) >= 60:
            raise where.error(f"'{text}': the seconds after ':' must be under 60")
        seconds = int(match.group(1)) * 60 + float(match.group(2))
    elif match := _FRAMES.fullmatch(text):
        seconds = int(match.group(1)) / fps
    elif match := _BEAT.fullmatch(text):
        if not beats:
            raise where.error(f"'{text}': a beat cannot be used here; give seconds such as 1.5s")
        if not audio:
            raise where.error(
                f"'{text}' needs a soundtrack: add an `audio:` block with a file, "
                "or give the time in seconds"
            )
        number = int(match.group(1))
        if number < 1:
            raise where.error(f"'{text}': beats count from 1 (beat 1 is the first beat)")
        return Time(text, where, beat=number)
    elif text.startswith("-"):
        raise where.error(f"'{text}': negative times are not allowed")
    else:
        raise where.error(f"'{text}' is not a time; write {_TIME_FORMS}")
    if seconds < 0:
        raise where.error(f"'{text}': negative times are not allowed")
    if not math.isfinite(seconds) or seconds > 24 * 3600:
        raise where.error(f"'{text}' is too large")
    return Time(text, where, seconds=seconds)


def _seconds(ctx: _Context, node: yaml.Node, key: str, fps: int) -> float:
    time = _time(ctx, node, key, fps=fps, beats=False, audio=False)
    assert time.seconds is not None
    return time.seconds


# --- sections ------------------------------------------------------------------------------


def _render(ctx: _Context, node: yaml.Node, width: int, height: int) -> RenderSettings:
    entries = ctx.mapping(node, "render", RENDER_KEYS)
    values: dict[str, Any] = {}
    if "size" in entries:
        size_node = entries["size"][1]
        rw, rh = _size(ctx, size_node, "render.size")
        if rw % 16 or rh % 16 or rw < 16 or rh < 16:
            hint = f"{round16(rw)}x{round16(rh)}"
            raise ctx.error(
                size_node,
                "render.size",
                f"{rw}x{rh}: both sides must be multiples of 16 (try {hint})",
            )
        if abs((rw / rh) / (width / height) - 1) > 0.01:
            suggestion = nearest_canvas(rh, width / height)
            raise ctx.error(
                size_node,
                "render.size",
                f"{rw}x{rh} does not have the video's {width}x{height} aspect within 1% "
                f"(try {suggestion}, or 288x512 for 9:16)",
            )
        values["width"], values["height"] = rw, rh
    readers: dict[str, Callable[[yaml.Node, str], Any]] = {
        "steps": lambda n, k: _integer(ctx, n, k, 0, 100_000),
        "first_steps": lambda n, k: _integer(ctx, n, k, 1, 100_000),
        "cuts": lambda n, k: _integer(ctx, n, k, 1, 1024),
        "cadence": lambda n, k: _integer(ctx, n, k, 1, 100),
        "lr": lambda n, k: _positive(ctx, n, k),
        "color_coherence": lambda n, k: _choice(ctx, n, k, COLOR_COHERENCE),
    }
    for name, read in readers.items():
        if name in entries:
            values[name] = read(entries[name][1], f"render.{name}")
    return RenderSettings(**values)


def _choice(ctx: _Context, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str:
    value = ctx.scalar(node, key)
    if value is False and "off" in choices:  # YAML reads a bare `off` as false
        return "off"
    if value not in choices:
        raise ctx.error(node, key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def nearest_canvas(height: int, aspect: float) -> str:
    """The WxH nearest `height` whose sides are multiples of 16 and whose aspect is within 1%
    of `aspect` (width / height): a render size the storyboard would accept."""
    best = None
    for h in range(16, 8192 + 1, 16):
        w = round16(h * aspect)
        if abs((w / h) / aspect - 1) <= 0.01 and (
            best is None or abs(h - height) < abs(best[1] - height)
        ):
            best = (w, h)
    return f"{best[0]}x{best[1]}" if best else f"{round16(height * aspect)}x{round16(height)}"


def round16(x: float) -> int:
    """The nearest multiple of 16 (halves up), at least 16: the engine's canvas sides."""
    return max(16, int(x / 16 + 0.5) * 16)


def _positive(ctx: _Context, node: yaml.Node, key: str) -> float:
    value = _number(ctx, node, key)
    if value <= 0:
        raise ctx.error(node, key, f"{value} must be greater than 0")
    return value


def _models(ctx: _Context, node: yaml.Node) -> Models:
    entries = ctx.mapping(node, "models", MODEL_KEYS)
    fields: dict[str, Any] = {}
    if "vqgan" in entries:
        fields["vqgan"] = _model_name(ctx, entries["vqgan"][1], "models.vqgan", "vqgan")
    if "clip" in entries:
        fields["clips"] = _clips(ctx, entries["clip"][1])
    if "depth" in entries:
        fields["depth"] = _model_name(ctx, entries["depth"][1], "models.depth", "depth")
    return Models(**fields)


def _clips(ctx: _Context, node: yaml.Node) -> tuple[tuple[str, float], ...]:
    """`clip: NAME`, `clip: [NAME, ...]` (weight 1 each; an item may be `{NAME: WEIGHT}`) or
    `clip: {NAME: WEIGHT, ...}`: the CLIPs with their weights."""
    key = "models.clip"
    if isinstance(node, yaml.ScalarNode):
        return ((_model_name(ctx, node, key, "clip"), 1.0),)
    if isinstance(node, yaml.MappingNode):
        pairs = list(node.value)
    elif isinstance(node, yaml.SequenceNode):
        pairs = []
        for item in node.value:
            if isinstance(item, yaml.MappingNode) and len(item.value) == 1:
                pairs.append(item.value[0])
            elif isinstance(item, yaml.ScalarNode):
                pairs.append((item, None))
            else:
                raise ctx.error(item, key, "expected a CLIP's name, or {NAME: WEIGHT}")
    else:
        raise ctx.error(node, key, "expected a CLIP's name, a list of names, or NAME: WEIGHT")
    if not pairs:
        raise ctx.error(node, key, "is empty: name at least one CLIP, e.g. ViT-B/32")
    clips = []
    for name_node, weight_node in pairs:
        name = _model_name(ctx, name_node, key, "clip")
        if isinstance(node, yaml.MappingNode) and name in (c for c, _ in clips):
            raise ctx.error(name_node, key, f"'{name}' is given twice")
        weight = 1.0
        if weight_node is not None:
            weight = _number(ctx, weight_node, f"{key}['{name}']")
            if weight <= 0:
                raise ctx.error(
                    weight_node,
                    f"{key}['{name}']",
                    f"a CLIP's weight must be greater than 0, not {weight} (to leave a CLIP "
                    "out, remove it)",
                )
        clips.append((name, weight))
    return tuple(clips)


def _model_name(ctx: _Context, node: yaml.Node, key: str, kind: str) -> str:
    """A model as written: a registry name, or a file (beside the storyboard, or a path)
    that is there. Checked now, so that a typo fails before any model loads."""
    from pipeline.models.catalogue import find_entry, looks_like_path, unknown_name_error

    name = _text(ctx, node, key).strip()
    if find_entry(kind, name) is not None:
        return name
    beside, given = ctx.base / name, Path(name).expanduser()
    if beside.is_file() or given.is_file():
        return name
    if looks_like_path(name):
        raise ctx.error(
            node,
            key,
            f"{name} not found (paths are relative to the storyboard's folder, {ctx.base})",
        )
    raise ctx.error(node, key, str(unknown_name_error(name, kind)))


def _audio(ctx: _Context, node: yaml.Node, base: Path, fps: int) -> Soundtrack:
    entries = ctx.mapping(node, "audio", AUDIO_KEYS)
    if "file" not in entries:
        raise ctx.error(node, "audio.file", "missing: give the soundtrack's path")
    file_node = entries["file"][1]
    path = (base / _text(ctx, file_node, "audio.file")).resolve()
    if not path.is_file():
        raise ctx.error(
            file_node,
            "audio.file",
            f"{path} not found (paths are relative to the storyboard's folder, {base})",
        )
    times = {
        name: _seconds(ctx, entries[name][1], f"audio.{name}", fps)
        for name in ("offset", "fade_in", "fade_out")
        if name in entries
    }
    return Soundtrack(path=path, where=ctx.where(file_node, "audio.file"), **times)


def _image(ctx: _Context, node: yaml.Node, key: str, written: str) -> Path:
    """A picture the storyboard names, relative to its folder: there, and readable as an
    image (opened and decoded now, so a bad file fails before any model loads)."""
    from PIL import Image

    try:
        path = (ctx.base / written).resolve()
    except (OSError, ValueError) as error:
        raise ctx.error(node, key, f"'{written}' is not a usable path ({error})") from None
    try:
        found = path.is_file()
    except OSError as error:  # a name too long for the filesystem, say
        raise ctx.error(node, key, f"'{written}' is not a usable path ({error})") from None
    if not found:
        raise ctx.error(
            node,
            key,
            f"{path} not found (paths are relative to the storyboard's folder, {ctx.base})",
        )
    try:
        with Image.open(path) as picture:
            picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ctx.error(
            node, key, f"{path} is not a picture that can be read ({error}); save it as PNG or JPEG"
        ) from None
    return path


def is_picture(prompt: str) -> bool:
    """Whether a prompt, as a loaded storyboard holds it, names a picture (`image: PATH`, its
    file in `Storyboard.images`) rather than words. The prefix is known here only."""
    return prompt.startswith(IMAGE_PROMPT)


def _prompt_text(ctx: _Context, node: yaml.Node, key: str) -> str:
    """A prompt's text, or `image: PATH` with the picture checked."""
    text = _text(ctx, node, key).strip()
    if not text.lower().startswith(IMAGE_PROMPT):
        return text
    written = text[len(IMAGE_PROMPT) :].strip()
    if not written:
        raise ctx.error(node, key, "`image:` needs the picture's path, e.g. image: photos/room.jpg")
    text = f"{IMAGE_PROMPT} {written}"
    ctx.images[text] = _image(ctx, node, key, written)
    return text


def _prompt(
    ctx: _Context, node: yaml.Node, key: str, *, audio: bool
) -> tuple[tuple[str, Value], ...]:
    if isinstance(node, yaml.ScalarNode):
        text = _prompt_text(ctx, node, key)
        return ((text, Value(ctx.where(node, key), number=1.0)),)
    if not isinstance(node, yaml.MappingNode):
        raise ctx.error(node, key, "expected a prompt, or a mapping of prompt: weight")
    if not node.value:
        raise ctx.error(node, key, "is empty: give at least one prompt")
    weights: dict[str, Value] = {}
    for text_node, weight_node in node.value:
        text = _prompt_text(ctx, text_node, key)
        if text in weights:
            raise ctx.error(text_node, key, f"'{text}' is given twice")
        weights[text] = _value(ctx, weight_node, f"{key}['{text}']", audio=audio)
    if all(w.number == 0 for w in weights.values()):
        raise ctx.error(node, key, "all weights are 0: give at least one prompt a non-zero weight")
    return tuple(weights.items())


def _keyframe(ctx: _Context, node: yaml.Node, index: int, fps: int, audio: bool) -> Keyframe:
    base = f"keyframes[{index}]"
    entries = ctx.mapping(node, base, KEYFRAME_KEYS)
    if "at" not in entries:
        raise ctx.error(node, f"{base}.at", "missing: every keyframe needs a time, e.g. `at: 4s`")
    fields: dict[str, Any] = {
        "at": _time(ctx, entries["at"][1], f"{base}.at", fps=fps, beats=True, audio=audio)
    }
    if "prompt" in entries:
        fields["prompt"] = _prompt(ctx, entries["prompt"][1], f"{base}.prompt", audio=audio)
    for name in ("zoom", "rotate"):
        if name in entries:
            fields[name] = _value(ctx, entries[name][1], f"{base}.{name}", audio=audio)
    if "fov" in entries:
        fields["fov"] = _value(ctx, entries["fov"][1], f"{base}.fov", audio=audio)
    for name, axes in (("pan", "x, y"), ("translate", "x, y, z"), ("rotate_3d", "x, y, z")):
        if name in entries:
            fields[name] = _vector(ctx, entries[name][1], f"{base}.{name}", axes, audio=audio)
    if "ease" in entries:
        ease_node = entries["ease"][1]
        ease = _text(ctx, ease_node, f"{base}.ease")
        if ease not in EASES:
            close = difflib.get_close_matches(ease, EASES, n=1, cutoff=0.4)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ctx.error(
                ease_node,
                f"{base}.ease",
                f"unknown ease '{ease}' ({hint}known: {', '.join(EASES)})",
            )
        fields["ease"] = ease
    if "cut" in entries:
        fields["cut"] = _boolean(ctx, entries["cut"][1], f"{base}.cut")
    if "init_image" in entries:
        image_node = entries["init_image"][1]
        if index > 1 and not fields.get("cut"):
            raise ctx.error(
                image_node,
                f"{base}.init_image",
                "a picture starts a shot: give this keyframe `cut: true` as well, or set "
                "`init_image` at the top level for the first frame",
            )
        fields["init_image"] = _init_image(ctx, image_node, f"{base}.init_image")
    return Keyframe(index=index, where=ctx.where(node, base), **fields)


def _vector(ctx: _Context, node: yaml.Node, key: str, axes: str, *, audio: bool) -> tuple:
    """`[x, y]` or `[x, y, z]` as `axes` names them: numbers or expressions."""
    if not isinstance(node, yaml.SequenceNode) or len(node.value) != axes.count(",") + 1:
        raise ctx.error(node, key, f"expected [{axes}] (numbers or expressions)")
    return tuple(_value(ctx, item, key, audio=audio) for item in node.value)


def _init_image(ctx: _Context, node: yaml.Node, key: str) -> str:
    written = _text(ctx, node, key).strip()
    ctx.images[written] = _image(ctx, node, key, written)
    return written


def _strength(ctx: _Context, node: yaml.Node, key: str) -> float:
    value = _number(ctx, node, key)
    if not 0 <= value <= 1:
        raise ctx.error(
            node, key, f"{value:g} is out of range (0 = free, 1 = keep closely to the picture)"
        )
    return value


# --- loading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that remembers the last token its parser took, so that a syntax
    error can be put at the typo rather than where PyYAML noticed it."""

    def __init__(self, text: str):
        super().__init__(text)
        self.taken: yaml.Token | None = None

    def get_token(self) -> yaml.Token:
        self.taken = super().get_token()
        return self.taken


def _syntax_error(error: yaml.MarkedYAMLError, loader: _Loader | None) -> tuple[int | None, str]:
    """The line (1-based) to fix for a YAML syntax error, and what to say.

    PyYAML marks where it noticed the problem (problem_mark): the start of the token after
    the typo, which for the usual typos is a line or more below it (an unclosed quote or
    bracket, a key without its ':'), while context_mark is where the construct it was
    reading began. Where the problem mark is right (a tab, a bad indentation,
    `key: value: other`), it is kept.
    """
    problem, context = error.problem_mark, error.context_mark
    said = error.problem or error.context or "invalid YAML"
    mark = problem or context
    line = mark.line + 1 if mark else None
    last = loader.taken if loader is not None else None
    if isinstance(error, yaml.scanner.ScannerError) and loader is not None and loader.tokens:
        last = loader.tokens[-1]  # scanned, not yet parsed
    spans = last is not None and last.start_mark.line < last.end_mark.line
    quoted = isinstance(last, yaml.ScalarToken) and last.style in ("'", '"')
    if quoted and spans and _swallows_keys(last):
        # A missing closing quote: the text runs on to the next quote of its kind.
        return last.start_mark.line + 1, (
            f"the quoted text that starts on this line runs on to line {last.end_mark.line + 1}"
            ": is its closing quote missing?"
        )
    flow = "flow" in (error.context or "")
    if quoted and not flow and problem is not None and problem.line == last.end_mark.line:
        return line, (
            f"{said}: text goes on after a closing quote; inside '...' an apostrophe is "
            'written twice (it\'\'s), inside "..." a quote as \\"'
        )
    if context is not None and "quoted scalar" in (error.context or "") and "end of stream" in said:
        return context.line + 1, "this quote is never closed: add the closing quote"
    if context is not None and "could not find expected ':'" in said:
        # A key without its ':' is noticed only on the line after it.
        said = GLUED if _glued(context) else "expected ':' after the key on this line (key: value)"
        return context.line + 1, said
    if flow and context is not None and last is not None:
        opened = f"the {_character(context)} that opens on line {context.line + 1}"
        missing = f"{said}: is a ',' or closing bracket missing at the end of this line? ({opened})"
        if spans:
            # A bracket left open reads the next line into its last item.
            return last.start_mark.line + 1, missing
        if problem is not None and problem.line > last.end_mark.line:
            return last.end_mark.line + 1, missing
        return line, f"{said} (in {opened})"
    if said == "mapping values are not allowed here":
        if spans and isinstance(last, yaml.ScalarToken):
            if _glued(last.start_mark):
                # `seed:1` or `- at:0s` is one word, which runs on into the next line.
                return last.start_mark.line + 1, GLUED
            return line, (
                f"{said}: the value that starts on line {last.start_mark.line + 1} runs on into "
                "this line; indent this line as the keys beside it"
            )
        return line, f"{said}: a value with ': ' in it needs quotes (\"like: this\")"
    return line, said


GLUED = "a ':' after a key needs a space after it (seed: 1, not seed:1)"


def _swallows_keys(token: yaml.Token) -> bool:
    """Whether a quoted text over several lines holds lines that read as keys or list items:
    what a missing closing quote runs on into (a prompt wrapped over two lines holds none)."""
    text = (token.start_mark.buffer or "")[token.start_mark.pointer : token.end_mark.pointer]
    return any(re.match(r"\s*(-\s+)?[\w.]+:(\s|$)", line) for line in text.splitlines()[1:])


def _glued(mark: yaml.Mark) -> bool:
    """Whether the line from a mark on has a ':' with no space after it (`seed:1`)."""
    rest = (mark.buffer or "")[mark.pointer :].partition("\n")[0]
    return re.search(r":[^\s\x00]", rest) is not None


def _character(mark: yaml.Mark) -> str:
    """The character at a mark (the bracket a flow collection opens with)."""
    buffer = mark.buffer or ""
    return buffer[mark.pointer] if mark.pointer < len(buffer) else "bracket"


def _compose(data: bytes, file: str) -> yaml.Node:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise StoryboardError(
            file, line, "", "the file is not UTF-8 text; save it as UTF-8 in your editor"
        ) from None
    loader = None
    try:
        # The reader checks characters already when the loader is made.
        loader = _Loader(text)
        node = loader.get_single_node()
    except yaml.reader.ReaderError as error:
        line = text[: error.position].count("\n") + 1
        raise StoryboardError(
            file, line, "", f"character #x{error.character:04x} is not allowed in YAML; remove it"
        ) from None
    except yaml.MarkedYAMLError as error:
        line, problem = _syntax_error(error, loader)
        raise StoryboardError(file, line, "", f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise StoryboardError(file, None, "", f"YAML error: {error}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise StoryboardError(file, 1, "", "the storyboard is empty; see storyboards/ for examples")
    return node


def load_storyboard(path: Path | str) -> Storyboard:
    """Read and check a storyboard; raises StoryboardError pointing at the first problem."""
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoryboardError(file, None, "", "no such file") from None
    except OSError as error:
        raise StoryboardError(file, None, "", f"cannot read it: {error.strerror}") from None
    return parse_storyboard(data, path)


def parse_storyboard(data: bytes, path: Path) -> Storyboard:
    """Check a storyboard given as bytes; `path` locates it (and its audio file)."""
    ctx = _Context(str(path), path.parent)
    root = _compose(data, ctx.file)
    entries = ctx.mapping(root, "", TOP_KEYS)

    def node(name: str) -> yaml.Node | None:
        return entries[name][1] if name in entries else None

    fps = _integer(ctx, n, "fps", *FPS_RANGE) if (n := node("fps")) is not None else 24
    width, height = _size(ctx, n, "size") if (n := node("size")) is not None else (1080, 1920)
    if n is not None:
        for side in (width, height):
            if not SIDE_RANGE[0] <= side <= SIDE_RANGE[1]:
                raise ctx.error(
                    n, "size", f"{width}x{height}: each side must be between 360 and 4096 pixels"
                )
        if width * 16 != height * 9 or width % 2 or height % 2:
            raise ctx.error(
                n,
                "size",
                f"{width}x{height} is not vertical 9:16 with even sides "
                "(use 1080x1920, 720x1280 or 2160x3840)",
            )

    audio = _audio(ctx, n, path.parent, fps) if (n := node("audio")) is not None else None
    has_audio = audio is not None

    keyframes_node = node("keyframes")
    if keyframes_node is None:
        raise ctx.error(root, "keyframes", "missing: a storyboard needs at least one keyframe")
    if not isinstance(keyframes_node, yaml.SequenceNode):
        raise ctx.error(keyframes_node, "keyframes", "expected a list of keyframes (- at: 0s ...)")
    if not keyframes_node.value:
        raise ctx.error(keyframes_node, "keyframes", "is empty: give at least one keyframe")
    init_image = (
        _init_image(ctx, n, "init_image") if (n := node("init_image")) is not None else None
    )
    keyframes = tuple(
        _keyframe(ctx, kf, i, fps, has_audio) for i, kf in enumerate(keyframes_node.value, 1)
    )
    init_strength = 0.0
    if (n := node("init_strength")) is not None:
        init_strength = _strength(ctx, n, "init_strength")
        if init_image is None and not any(kf.init_image for kf in keyframes):
            raise ctx.error(n, "init_strength", "there is no `init_image` for it to keep to")
    if not any(kf.prompt for kf in keyframes):
        raise ctx.error(keyframes_node, "keyframes", "no keyframe has a prompt: add `prompt:`")

    def text(name: str) -> str | None:
        return _text(ctx, n, name) if (n := node(name)) is not None else None

    seed = _integer(ctx, n, "seed", 0, 2**32 - 1) if (n := node("seed")) is not None else 0
    duration = None
    if (n := node("duration")) is not None:
        duration = _time(ctx, n, "duration", fps=fps, beats=True, audio=has_audio)
        if duration.seconds is not None and round(duration.seconds * fps) < 1:
            raise ctx.error(n, "duration", f"'{duration.text}' is shorter than one frame")
    warning_duration = 1.5
    if (n := node("content_warning_duration")) is not None:
        warning_duration = _seconds(ctx, n, "content_warning_duration", fps)
        if warning_duration <= 0:
            raise ctx.error(n, "content_warning_duration", "must be longer than 0s")

    return Storyboard(
        path=path,
        name=path.stem,
        sha256=hashlib.sha256(data).hexdigest(),
        title=text("title") or path.stem,
        seed=seed,
        fps=fps,
        width=width,
        height=height,
        duration=duration,
        render=_render(ctx, n, width, height)
        if (n := node("render")) is not None
        else (RenderSettings()),
        models=_models(ctx, n) if (n := node("models")) is not None else Models(),
        style=text("style"),
        negative=_prompt_text(ctx, n, "negative") if (n := node("negative")) is not None else None,
        audio=audio,
        content_warning=text("content_warning"),
        content_warning_duration=warning_duration,
        caption=text("caption"),
        keyframes=keyframes,
        init_image=init_image,
        init_strength=init_strength,
        images=tuple(ctx.images.items()),
    )


def files_named(data: bytes, path: Path) -> list[tuple[str, str]]:
    """The files a storyboard names, as (key, path as written), read leniently and checking
    nothing: its soundtrack, `init_image`s and the pictures of image prompts. For saying which
    files to bring before the storyboard is checked (a storyboard pasted into a notebook)."""
    try:
        root = _compose(data, str(path))
    except StoryboardError:
        return []  # the check that follows says what is wrong with the text

    def entries(node: yaml.Node | None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            return {}
        return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}

    named: list[tuple[str, str]] = []

    def file(key: str, node: yaml.Node | None) -> None:
        if isinstance(node, yaml.ScalarNode) and str(node.value).strip():
            named.append((key, str(node.value).strip()))

    def pictures(key: str, node: yaml.Node | None) -> None:
        texts = [k for k, _ in node.value] if isinstance(node, yaml.MappingNode) else [node]
        for text in texts:
            if isinstance(text, yaml.ScalarNode) and isinstance(text.value, str):
                written = text.value.strip()
                if written.lower().startswith(IMAGE_PROMPT):
                    named.append((key, written[len(IMAGE_PROMPT) :].strip()))

    top = entries(root)
    file("audio.file", entries(top.get("audio")).get("file"))
    file("init_image", top.get("init_image"))
    pictures("negative", top.get("negative"))
    keyframes = top.get("keyframes")
    for index, keyframe in enumerate(
        keyframes.value if isinstance(keyframes, yaml.SequenceNode) else [], 1
    ):
        fields = entries(keyframe)
        file(f"keyframes[{index}].init_image", fields.get("init_image"))
        pictures(f"keyframes[{index}].prompt", fields.get("prompt"))
    return [(key, written) for key, written in named if written]
