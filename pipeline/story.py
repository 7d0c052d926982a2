"""A storyboard loaded for rendering, and what a render of it is: `Story` (the storyboard, its
soundtrack's analysis, its plan), `RenderOptions` (how to render it) and what follows from the
two before anything is computed: its folder, settings, frames, models and soundtrack; and what
a render reports (`Progress`) and returns (`Rendered`).

Nothing here loads a model or writes a file; rendering.py renders, encoding.py encodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pipeline.errors import FeverdreamError
from pipeline.schedule import Plan, build_plan, lead
from pipeline.storyboard import RenderSettings, Storyboard, load_storyboard, parse_storyboard

if TYPE_CHECKING:
    from pipeline.audio import AudioFeatures
    from pipeline.render import SoundtrackInfo, SoundtrackSpec
    from pipeline.settings import Execution, Speed

# The size of a preview's video: a quarter of the full 1080x1920 area, like its canvas.
PREVIEW_VIDEO_SIZE = (540, 960)


class Story(NamedTuple):
    """A storyboard, its soundtrack's analysis (None without audio) and its frame plan."""

    board: Storyboard
    features: AudioFeatures | None
    plan: Plan


def load(path: str | Path, text: str | None = None) -> Story:
    """Storyboard → soundtrack analysis → plan; every problem is a FILE:LINE StoryboardError.

    `text`, when given, is read as the storyboard instead of the file (an editor's unsaved
    text); `path` still names it and locates its soundtrack and pictures. The analysis
    decodes the soundtrack (or reads its cache) once; the video's mixer reuses what it
    learnt, so a render never decodes the track again."""
    board = load_storyboard(path) if text is None else parse_storyboard(text.encode(), Path(path))
    features = None
    if board.audio is not None:
        from pipeline import audio

        try:
            features = audio.analyse(board.audio.path, board.fps, board.audio.offset)
        except audio.AudioError as error:
            raise board.audio.where.error(str(error)) from None
    return Story(board, features, build_plan(board, features))


def validated(story: Story) -> str:
    """What `feverdream validate` says of a storyboard that loaded: "ok", and its size."""
    board, plan = story.board, story.plan
    return (
        f"ok: '{board.title}', {plan.duration:.2f}s at {board.fps} fps "
        f"({plan.n_frames} frames), {len(board.keyframes)} keyframes"
    )


# --- a render of it -------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderOptions:
    """How to render a storyboard; the defaults render all of it as the storyboard says."""

    output: Path | None = None  # the render's folder (default outputs/NAME)
    preview: bool = False  # a quarter of the canvas area and a third of the steps
    frames: tuple[int, int] | None = None  # frames A to B-1 only, into their own folder
    fresh: bool = False  # replace frames already made instead of continuing after them
    device: str | None = None  # "cpu" or "cuda"; default cuda when available
    vqgan: str | None = None  # override the storyboard's models (registry names or paths)
    clip: str | None = None
    depth: str | None = None  # the 3D camera's; `--models tiny` sets all three
    random_weights: bool = False  # the named architectures with random weights (benchmarks)
    speed: Speed | None = None  # default Speed.fast for the device and storyboard's cadence
    # How the engine computes (layout, compilation, memory); None: Execution.fast, compiled
    # when the render is long enough (compile_pays), fitted to the free memory (memory.fit).
    execution: Execution | None = None
    compile: bool | None = None  # None: as compile_pays says
    # Bytes of memory the render may plan a step for; None: what the device has free once
    # the models are loaded (a batch's workers on one machine each take their share of it).
    memory: int | None = None
    encode: bool = True  # also make the MP4, contact sheet, GIF and the render's summary
    # Encode the MP4 while the frames are made (fed each frame once it is written), so a
    # render ends a few frames after its last frame; None: on a GPU only (on a CPU the
    # encoder takes cores from the engine; bench/RESULTS.md, "Encoding while rendering").
    encode_while_rendering: bool | None = None


@dataclass(frozen=True)
class Progress:
    """Where a render stands, in stages that come in this order:

    - "download": bytes of a model file not yet in the models folder (`total` 0 when the
      server does not say); only when a model is downloaded;
    - "loading": the models read onto the device, 0 of N models then N of N;
    - "preparing": the engine set up and the prompts embedded, 0 of N prompts then N of N;
    - "frames": reported once before the first frame with those a resume found, then after
      each optimised frame (the first takes `first_steps`, so it is the long one);
    - "encoding": the video's frames, reported at 0 before the video starts."""

    stage: str
    done: int
    total: int
    loss: float | None = None  # the latest optimised frame's loss (frames stage)
    newest: Path | None = None  # the newest frame's file (frames stage, once one is made)

    @property
    def unit(self) -> str:
        """What `done` and `total` count, for a progress bar."""
        return {"download": "B", "loading": "model", "preparing": "prompt"}.get(self.stage, "frame")


@dataclass
class Rendered:
    """What a render made. When `stopped`, the frames so far are saved in `frames_dir` and
    the same call continues after them; no video is made."""

    folder: Path
    frames_dir: Path
    frames_done: int
    frames_total: int
    stopped: bool
    device: str
    video: Path | None = None
    contact_sheet: Path | None = None
    preview_gif: Path | None = None
    summary: Path | None = None  # how the video was made (record.Summary)
    seconds: dict[str, float] = field(default_factory=dict)  # "frames", "encoding"


def pick_device(requested: str | None = None, option: str = "device") -> str:
    """The device a render runs on: the one asked for, else CUDA when torch sees a GPU.
    `option` is what the caller calls the choice, for the error message."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise FeverdreamError(
            f"{option} cuda: no CUDA GPU is visible to torch here; use {option} cpu"
        )
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def render_folder(story: Story, options: RenderOptions) -> Path:
    """Where a render with these options writes: outputs/NAME, or the given folder, with
    preview/ and frames-A-B/ inside it for a preview and a frame range."""
    folder = options.output if options.output is not None else Path("outputs") / story.board.name
    if options.preview:
        folder = folder / "preview"
    if options.frames is not None:
        folder = folder / f"frames-{options.frames[0]}-{options.frames[1]}"
    return folder


def render_settings(story: Story, options: RenderOptions) -> RenderSettings:
    return story.board.render.preview() if options.preview else story.board.render


def render_plan(story: Story, options: RenderOptions) -> Plan:
    """The frames a render with these options makes: the whole plan, or frames A to B-1."""
    return story.plan if options.frames is None else story.plan.span(*options.frames)


def aim_settings(board: Storyboard) -> dict[str, int]:
    """What a full render of this storyboard (the default engine, at its steps and cadence)
    aims by (Plan.engine_aim: ahead of its plan, so that its picture shows each keyframe on
    time)."""
    render = board.render
    return {"steps": render.steps, "first_steps": render.first_steps, "cadence": render.cadence}


def aim_lead(board: Storyboard) -> int:
    """The frames a full render of this storyboard aims ahead of its plan (but at a shot's
    first frame, which aims by its own first steps)."""
    return lead(board.render.steps, board.render.cadence)


def again(options: RenderOptions) -> str:
    """How to run the same render again, for a message that ends in doing so."""
    return "run it again without --fresh" if options.fresh else "run the same command again"


def optimised_steps(story: Story, options: RenderOptions) -> dict[int, int]:
    """The frames a render with these options optimises, each with its steps (a shot's
    first frame takes `first_steps`): what its time depends on."""
    settings = render_settings(story, options)
    plan = render_plan(story, options)
    cadence = options.speed.cadence if options.speed is not None else settings.cadence
    return {
        index: settings.first_steps if index == 0 or plan.frames[index].cut else settings.steps
        for index in plan.optimised_frames(cadence)
    }


def model_name(story: Story, options: RenderOptions) -> str:
    """The VQGAN a render uses: the option, else the storyboard's (a file next to the
    storyboard, or a registry name)."""
    return options.vqgan or story.board.model(story.board.models.vqgan)


def clip_names(story: Story, options: RenderOptions) -> tuple[tuple[str, float], ...]:
    """The CLIPs a render uses, with their weights: the option (one CLIP), else the
    storyboard's (files next to the storyboard, or registry names)."""
    if options.clip:
        return ((options.clip, 1.0),)
    return tuple((story.board.model(name), weight) for name, weight in story.board.models.clips)


def depth_name(story: Story, options: RenderOptions) -> str | None:
    """The depth model a render reads (None: its storyboard has no 3D camera key): the
    option, else the storyboard's."""
    if not story.board.camera_3d:
        return None
    return options.depth or story.board.model(story.board.models.depth)


def soundtrack(
    story: Story, options: RenderOptions
) -> tuple[SoundtrackSpec, SoundtrackInfo] | None:
    """The part of the soundtrack under the frames rendered, checked before any frame is
    made, from what the analysis already read (the track is not decoded again)."""
    board = story.board
    if board.audio is None:
        return None
    from pipeline import render as video

    start = options.frames[0] / board.fps if options.frames else 0.0
    spec = video.SoundtrackSpec(
        board.audio.path, board.audio.offset + start, board.audio.fade_in, board.audio.fade_out
    )
    features = story.features
    try:
        if features is None:  # a Story built without its analysis: decode the track here
            info = video.check_soundtrack(spec)
        else:
            info = video.known_soundtrack(spec, features.track_duration, features.channels)
    except FeverdreamError as error:
        raise board.audio.where.error(str(error)) from None
    return spec, info
