"""feverdream as a library: what the command line, the tests, the bench scripts and every
front end call to load, render, encode, check and post a storyboard's video.

    from pipeline import run

    story = run.load("storyboards/anxiety.yaml")          # storyboard, soundtrack, plan
    result = run.render(story, run.RenderOptions(preview=True), on_progress=print)
    print(result.video, result.frames_done, result.stopped)

Nothing here prints or exits: progress goes to a callback, failures are the project's typed
errors (pipeline.errors), each with a message that says what to do next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.errors import DiskFullError, FeverdreamError
from pipeline.record import ModelsUsed, ModelUsed
from pipeline.schedule import Plan, build_plan, lead
from pipeline.storyboard import RenderSettings, Storyboard, load_storyboard, parse_storyboard

if TYPE_CHECKING:
    from pipeline.audio import AudioFeatures
    from pipeline.engine import FrameProgress
    from pipeline.render import SoundtrackInfo, SoundtrackSpec
    from pipeline.settings import Execution, Speed
    from pipeline.store import FrameStore

log = logging.getLogger(__name__)

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


# --- rendering ----------------------------------------------------------------------------


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
    random_weights: bool = False  # the named architectures with random weights (benchmarks)
    speed: Speed | None = None  # default Speed.fast for the device and storyboard's cadence
    # How the engine computes (layout, compilation, memory); None: Execution.fast, compiled
    # when the render is long enough (compile_pays), fitted to the free memory (memory.fit).
    execution: Execution | None = None
    compile: bool | None = None  # None: as compile_pays says
    # Bytes of memory the render may plan a step for; None: what the device has free once
    # the models are loaded (a batch's workers on one machine each take their share of it).
    memory: int | None = None
    encode: bool = True  # also make the MP4, contact sheet, GIF and render.json
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
    render_json: Path | None = None
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


def _again(options: RenderOptions) -> str:
    """How to run the same render again, for a message that ends in doing so."""
    return "run it again without --fresh" if options.fresh else "run the same command again"


def render(
    story: Story | str | Path,
    options: RenderOptions | None = None,
    *,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Rendered:
    """Render a storyboard's frames into the render folder, continuing after any frames a
    stopped render left there, then (with `options.encode`) its video and records.

    `should_stop` is asked after each optimised frame is saved; once it says yes the render
    returns with `stopped` set. Bad inputs (soundtrack, models, changed settings) fail
    before the first frame.
    """
    from pipeline.engine import render_frames
    from pipeline.store import FrameStore, full_disk_said

    options = options or RenderOptions()
    story = story if isinstance(story, Story) else load(story)
    plan = render_plan(story, options)
    soundtrack = _soundtrack(story, options)
    device = pick_device(options.device)
    models = 1 + len(dict.fromkeys(name for name, _ in clip_names(story, options)))
    loaded = load_models(
        story,
        options,
        device,
        on_bytes=lambda done, total: on_progress(Progress("download", done, total or 0)),
        on_loading=lambda: on_progress(Progress("loading", 0, models)),
    )
    on_progress(Progress("loading", models, models))
    prompts = len(plan.prompt_texts)
    on_progress(Progress("preparing", 0, prompts))
    folder = render_folder(story, options)
    store = FrameStore(folder)
    # The lock first: a render of this folder under way is said as such, not as its memory.
    with full_disk_said(folder), render_lock(folder):
        engine, describe = make_engine(story, options, device, loaded, store)
        # The frames' own call finds these embedded: the same texts, in the same batch.
        engine.embed(plan.prompt_texts, dict(plan.images))
        on_progress(Progress("preparing", prompts, prompts))
        started = time.perf_counter()
        encoder = None
        if options.encode and (
            options.encode_while_rendering
            if options.encode_while_rendering is not None
            else device == "cuda"
        ):
            spec, out = video_target(story, options, soundtrack)
            encoder = Encoder(store, plan.n_frames, spec, out, soundtrack, on_progress)

        def frames_made(progress: FrameProgress) -> None:
            if encoder is not None:
                encoder.made(progress.frames_done)
            on_progress(
                Progress("frames", progress.frames_done, progress.frames_total, progress.loss)
            )

        try:
            frames = render_frames(
                plan,
                engine,
                store,
                describe=describe,
                fresh=options.fresh,
                should_stop=should_stop,
                on_progress=frames_made,
            )
        except BaseException as error:
            if encoder is not None:
                encoder.abandon()
            if isinstance(error, DiskFullError):
                raise _no_room_for_frames(error, story, options, store, plan) from None
            raise
        if encoder is not None and frames.stopped:
            encoder.abandon()
        result = Rendered(
            folder=folder,
            frames_dir=store.frames_dir,
            frames_done=frames.frames_done,
            frames_total=frames.frames_total,
            stopped=frames.stopped,
            device=device,
            seconds={"frames": time.perf_counter() - started},
        )
        if frames.stopped or not options.encode:
            return result
        return encode(story, options, result, describe["models"], frames.records, on_progress,
                      soundtrack=soundtrack, encoder=encoder)  # fmt: skip


# What x264 at crf 18 makes of a second of busy 1080x1920 pictures, rounded up (the examples'
# videos take 0.2-1 MB a second): the room a video needs, in proportion to its area.
VIDEO_BYTES_PER_SECOND = 2_000_000


def _no_room_for_frames(
    error: DiskFullError, story: Story, options: RenderOptions, store: FrameStore, plan: Plan
) -> DiskFullError:
    """A full disk while frames are made, saying about how much room the rest of the render
    needs: the frames left at the size of those written (1.5 bytes a pixel before any), two
    resume states, and the video."""
    settings = render_settings(story, options)
    manifest = store.read_manifest()
    done = store.finished_frames(manifest) if manifest is not None else 0
    written = [store.frame_path(i).stat().st_size for i in range(done)]
    frame = sum(written) / len(written) if written else 1.5 * settings.width * settings.height
    states = sorted(store.frames_dir.glob("state-*.pt"))
    state = states[-1].stat().st_size if states else 0
    needed = int(frame * (plan.n_frames - done) + 2 * state) + _video_bytes(story, options, plan)
    return error.needing(needed, then=(
        f"free some space, then {_again(options)}: it keeps the {done} of {plan.n_frames} frames "
        "made and goes on from there"))  # fmt: skip


def _video_bytes(story: Story, options: RenderOptions, plan: Plan) -> int:
    """About the bytes of a render's video, contact sheet and preview GIF."""
    width, height = PREVIEW_VIDEO_SIZE if options.preview else (story.board.width,
                                                                story.board.height)  # fmt: skip
    seconds = plan.n_frames / story.board.fps
    video = VIDEO_BYTES_PER_SECOND * seconds * width * height / (1080 * 1920)
    # The GIF (at most 5 MB, a few frames a second of them) and the contact sheet.
    return int(video + min(5_000_000, 20_000 * plan.n_frames) + 500_000)


class _Abandoned(Exception):
    """The render the encoder followed stopped or failed: no video."""


class Encoder:
    """The MP4 made while the frames are: a thread feeds ffmpeg each frame of the store once
    the render says it is written (frames are written in order, each whole), so the video is
    the one encoding the same frames afterwards makes. A render that stops or fails abandons
    it: ffmpeg is killed and its partial file removed, so no video is ever half made."""

    def __init__(self, store, n_frames: int, spec, out: Path, soundtrack, on_progress):
        self.store, self.n_frames, self.on_progress = store, n_frames, on_progress
        self.changed = threading.Condition()
        self.ready = 0  # frames the render has written
        self.state = "rendering"  # then "finished" (every frame written) or "abandoned"
        self.encoded = 0
        self.reporting = False  # encoding progress is reported once the frames are done
        self.reports = threading.Lock()
        self.process: Any = None
        self.video: Path | None = None
        self.error: BaseException | None = None
        soundtrack_info = soundtrack[1] if soundtrack else None
        self.thread = threading.Thread(
            target=self._encode, args=(spec, out, soundtrack_info), name="encoder", daemon=True
        )
        self.thread.start()

    def made(self, frames_done: int) -> None:
        with self.changed:
            self.ready = max(self.ready, frames_done)
            self.changed.notify_all()

    def _frames(self) -> Iterator[Path]:
        for index in range(self.n_frames):
            with self.changed:
                self.changed.wait_for(
                    lambda index=index: self.ready > index or self.state != "rendering"
                )
                if self.state == "abandoned" or self.ready <= index:
                    raise _Abandoned
            yield self.store.frame_path(index)

    def _encode(self, spec, out: Path, soundtrack_info) -> None:
        from pipeline import render as video

        def on_frame(done: int, total: int) -> None:
            with self.reports:
                self.encoded = done
                if self.reporting:
                    self.on_progress(Progress("encoding", done, total))

        try:
            self.video = video.encode_video(
                self._frames(), self.n_frames, spec, out, soundtrack=soundtrack_info,
                on_frame=on_frame, on_start=lambda process: setattr(self, "process", process),
            )  # fmt: skip
        except _Abandoned:
            pass
        except BaseException as error:  # raised in the render's thread by `finish`
            self.error = error

    def finish(self) -> Path:
        """Every frame is written: the video, once ffmpeg has the last of them."""
        with self.changed:
            self.state = "finished"
            self.changed.notify_all()
        with self.reports:  # so the counts reported never go back
            self.reporting = True
            self.on_progress(Progress("encoding", self.encoded, self.n_frames))
        try:
            self.thread.join()
        except BaseException:  # a Ctrl-C while the last frames are encoded: stop at once
            self.abandon()
            raise
        if self.error is not None:
            raise self.error
        assert self.video is not None
        return self.video

    def abandon(self) -> None:
        with self.changed:
            self.state = "abandoned"
            self.changed.notify_all()
        if self.process is not None:
            self.process.kill()
        self.thread.join()
        if self.video is not None:  # it ended as it was stopped: a stopped render has no video
            self.video.unlink(missing_ok=True)
            self.video = None


RETRY_LOCK_S = 0.25  # how long a render waits for a folder's lock (see render_lock)


@contextmanager
def render_lock(folder: Path) -> Iterator[None]:
    """One render of a folder at a time, across processes and threads (the studio, the
    command line, a notebook): two writing the same frames and video would spoil both. The
    lock is RENDER_FOLDER/.lock (filelock's flock), held while the render runs and removed
    before it is let go, so that nothing is left behind. One who opened the old file just then
    finds it gone once it is let go (filelock checks) and tries the path again, within
    RETRY_LOCK_S; while a render holds the folder, the next is refused."""
    import os

    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    # No soft fallback: where the disk has no flock, its marker file would be this one.
    lock = FileLock(path, fallback_to_soft=False)
    try:
        lock.acquire(timeout=RETRY_LOCK_S)
    except Timeout:
        try:
            holder = path.read_text(encoding="utf-8").strip()
        except OSError:
            holder = ""
        raise FeverdreamError(
            f"{folder} is being rendered now ({holder or 'another render'}); wait for that "
            "render to finish or stop it (Ctrl-C, or Stop in the studio), then run this again"
        ) from None
    try:  # who holds it, for the message above (on a full disk, not said)
        path.write_text(f"process {os.getpid()}", encoding="utf-8")
    except OSError:
        pass
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.release()


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


# torch.compile's first step compiles the decoder: 45-60 s on a 2-core CPU. On CPU the
# compiled step was slower (1.12x, bench/RESULTS.md "Speed and memory"), so it is never
# chosen there; on a GPU it is chosen only for renders long enough to earn back about a
# minute if it saves a fifth of a ~0.1 s step (not yet measured on a GPU).
COMPILE_MIN_STEPS = 3000


def compile_pays(device: str, steps: int) -> tuple[bool, str]:
    """Whether a render optimising `steps` steps here should compile the decoder, and why."""
    if not device.startswith("cuda"):
        return False, "on a CPU the compiled decoder was slower (bench/RESULTS.md)"
    if steps < COMPILE_MIN_STEPS:
        return False, (
            f"{steps} optimisation steps would not earn back its first step's compilation "
            f"(it pays from about {COMPILE_MIN_STEPS}; --compile on forces it)"
        )
    return True, f"{steps} optimisation steps earn back its first step's compilation"


def make_engine(
    story: Story,
    options: RenderOptions,
    device: str,
    loaded: tuple[Any, Any],
    store: FrameStore | None = None,
    start_over: str = "run with --fresh",
) -> tuple[Any, dict[str, Any]]:
    """The engine for a render on these models into `store`, and what its manifest records
    beside the engine's settings: the models by name and content, and the pictures by content.

    Its execution is the one `options` asks for; else, for a render that goes on in `store`,
    the one it began with (recorded in its manifest), so that its frames are those of an
    uninterrupted render; else the fast one, fitted to the memory free. A render whose
    execution no longer fits, where a fresh start would choose another that does, is refused,
    saying what to do (`start_over`: how to start afresh, for the message)."""
    from pipeline import memory
    from pipeline.engine import Engine
    from pipeline.models.files import file_sha256
    from pipeline.models.loading import digest
    from pipeline.settings import EngineSettings, Execution, Speed
    from pipeline.store import RenderChangedError

    vqgan, clips = loaded
    settings = render_settings(story, options)
    speed = options.speed or Speed.fast(device, settings.cadence)
    execution = options.execution
    if execution is None:
        steps = sum(optimised_steps(story, options).values())
        compiled, why = compile_pays(device, steps) if options.compile is None else (
            options.compile, "asked for")  # fmt: skip
        log.info("torch.compile %s: %s", "on" if compiled else "off", why)
        execution = replace(Execution.fast(device, speed, vqgan), compile=compiled)
    engine = Engine(vqgan, clips, EngineSettings.for_render(
        settings, story.board.seed, device, speed, execution))  # fmt: skip
    began, left = (None, 0)
    if options.execution is None and store is not None:
        began, left = _began_with(store, story, options)
    if began is not None:
        if options.compile is not None:  # asked for otherwise: refused as a changed setting
            began = replace(began, compile=options.compile)
        kept = Engine(vqgan, clips, replace(engine.settings, execution=began))
        held = memory.fits(kept, options.memory) if left else None
        if held is not None and not held.fits:
            fresh = memory.fit(engine, options.memory)
            if fresh.fits and fresh.execution != began:
                assert store is not None
                room = held.room if held.allowed else "free here"
                raise RenderChangedError(
                    f"{store.folder} began with {began.describe()}, which it keeps so that its "
                    "frames are those of an uninterrupted render; a step of it needs about "
                    f"{memory.amount(held.need)}, and {memory.amount(held.free)} is {room}\n"
                    "free some memory (other programs, fewer batch workers) and run the same "
                    f"command again to go on, or {start_over} to start over with "
                    f"{fresh.execution.describe()}, which fits"
                )
            log.warning(
                "memory: continuing with what this render began with (%s), so that its frames "
                "are those of an uninterrupted render: a step of it needs about %s of the %s "
                "%s, and no other execution would fit either",
                began.describe(), memory.amount(held.need), memory.amount(held.free), held.room,
            )  # fmt: skip
        elif held is not None:
            log.info("memory: %s, the execution this render began with", held.describe())
        engine = kept
    elif options.execution is None:
        fitted = memory.fit(engine, options.memory)
        (log.info if fitted.fits else log.warning)("memory: %s", fitted.describe())
        if fitted.execution != engine.execution:
            engine = Engine(vqgan, clips, replace(engine.settings, execution=fitted.execution))
    models = ModelsUsed(
        ModelUsed(model_name(story, options), digest(vqgan)),
        tuple(
            ModelUsed(name, digest(model), weight)
            for (name, weight), (model, _) in zip(clip_names(story, options), clips, strict=True)
        ),
    ).to_json()
    # The pictures by content, so that frames made from a picture since replaced are never
    # continued as if nothing had changed.
    pictures = {name: file_sha256(path) for name, path in story.plan.images}
    return engine, {"models": models, **({"pictures": pictures} if pictures else {})}


def _began_with(
    store: FrameStore, story: Story, options: RenderOptions
) -> tuple[Execution | None, int]:
    """The execution a render in `store` began with, to go on under (None: starting afresh,
    or no frame made, or none recorded), and how many frames it has left to make."""
    from pipeline.settings import Execution

    if options.fresh:
        return None, 0
    manifest = store.read_manifest()
    if manifest is None or not isinstance(manifest.settings.get("execution"), dict):
        return None, 0
    done = store.finished_frames(manifest)
    if not done:
        return None, 0
    left = max(0, render_plan(story, options).n_frames - done)
    return Execution.from_record(manifest.settings["execution"]), left


def encode(
    story: Story,
    options: RenderOptions,
    result: Rendered,
    models: dict[str, Any],
    records: dict[int, Any],
    on_progress: Callable[[Progress], None] = lambda progress: None,
    *,
    soundtrack: tuple[SoundtrackSpec, SoundtrackInfo] | None = None,
    encoder: Encoder | None = None,
) -> Rendered:
    """The video, contact sheet, preview GIF and render.json of finished frames (in
    `result.frames_dir`), with `models` and the frames' `records` as render.json says.
    With `encoder` (the video begun while the frames were made), its video."""
    plan = render_plan(story, options)
    try:
        return _encode(story, options, plan, result, models, records, on_progress,
                       soundtrack=soundtrack, encoder=encoder)  # fmt: skip
    except DiskFullError as error:
        raise error.needing(_video_bytes(story, options, plan), then=(
            f"free some space, then {_again(options)}: the {plan.n_frames} frames are kept, "
            "and only the video is left to make")) from None  # fmt: skip


def _encode(
    story: Story,
    options: RenderOptions,
    plan: Plan,
    result: Rendered,
    models: dict[str, Any],
    records: dict[int, Any],
    on_progress: Callable[[Progress], None],
    *,
    soundtrack: tuple[SoundtrackSpec, SoundtrackInfo] | None,
    encoder: Encoder | None,
) -> Rendered:
    from pipeline import render as video
    from pipeline.store import FrameStore

    if soundtrack is None:
        soundtrack = _soundtrack(story, options)
    folder, store = result.folder, FrameStore(result.folder)
    started = time.perf_counter()
    frame_paths = [store.frame_path(i) for i in range(plan.n_frames)]
    if encoder is not None:
        result.video = encoder.finish()
    else:
        spec, out = video_target(story, options, soundtrack, folder)
        on_progress(Progress("encoding", 0, plan.n_frames))
        result.video = video.encode_video(
            frame_paths,
            plan.n_frames,
            spec,
            out,
            progress=False,
            soundtrack=soundtrack[1] if soundtrack else None,
            on_frame=lambda done, total: on_progress(Progress("encoding", done, total)),
        )
    marks = [m for m in plan.keyframes if m.frame < plan.n_frames]
    if marks:
        result.contact_sheet = video.contact_sheet(
            [(store.frame_path(m.frame), m.t, m.label) for m in marks], folder / "contact.png"
        )
    result.preview_gif = video.preview_gif(frame_paths, story.board.fps, folder / "preview.gif")
    result.seconds["encoding"] = time.perf_counter() - started
    result.render_json = video.write_render_json(
        folder / "render.json",
        video.RenderRecord(
            storyboard_sha256=story.board.sha256,
            seed=story.board.seed,
            models=models,
            device=result.device,
            frames=[video.FrameRecord(i, r.seconds, r.loss) for i, r in sorted(records.items())],
            total_seconds=sum(result.seconds.values()),
        ),
    )
    return result


def video_target(
    story: Story,
    options: RenderOptions,
    soundtrack: tuple[SoundtrackSpec, SoundtrackInfo] | None,
    folder: Path | None = None,
) -> tuple[Any, Path]:
    """The video a render makes: its spec (size, card, soundtrack) and its file."""
    from pipeline import render as video

    board = story.board
    name = (
        board.name
        if options.frames is None
        else f"{board.name}-{options.frames[0]}-{options.frames[1]}"
    )
    spec = video.VideoSpec(
        fps=board.fps,
        size=PREVIEW_VIDEO_SIZE if options.preview else (board.width, board.height),
        audio=soundtrack[0] if soundtrack else None,
        content_warning=board.content_warning if options.frames is None else None,
        content_warning_duration=board.content_warning_duration,
    )
    return spec, (folder or render_folder(story, options)) / f"{name}.mp4"


# --- shots: the parts of a video that share nothing ---------------------------------------


def shots(plan: Plan) -> list[tuple[int, int]]:
    """The plan's shots as frame ranges (A, B), frames A to B-1: from the start and from each
    cut up to the next. A cut starts again from noise (or its picture), so each shot can be
    rendered on its own, by another process, and comes out as in a render of the whole."""
    starts = [0] + [fp.frame for fp in plan.frames if fp.cut and fp.frame > 0]
    return list(zip(starts, [*starts[1:], plan.n_frames], strict=True))


def shot_folder(story: Story, options: RenderOptions, shot: tuple[int, int]) -> Path:
    """Where one shot's frames and resume state are kept until the whole is gathered."""
    return render_folder(story, options) / "shots" / f"{shot[0]:06d}-{shot[1]:06d}"


@dataclass
class ShotRendered:
    """What `render_shot` made: the shot's frames are in `folder`/frames, numbered from 0."""

    shot: tuple[int, int]
    folder: Path
    describe: dict[str, Any]  # what the manifest records beside the engine's settings
    settings: dict[str, Any]  # the engine's settings, as a whole render's manifest has them
    records: dict[int, Any]  # per frame of the shot (0 = its first), as FrameRecords
    seconds: float


def render_shot(
    story: Story,
    options: RenderOptions,
    shot: tuple[int, int],
    loaded: tuple[Any, Any] | None = None,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> ShotRendered:
    """Render one shot (from `shots`) into its own folder, continuing after the frames a
    killed attempt left there; `loaded` are the models (`load_models`), if already loaded.
    Its frames are byte-identical to the same frames of `render` on the same device: the
    same random stream per frame, the same anchors, the whole plan's prompts embedded as
    a whole render embeds them."""
    from pipeline.engine import render_frames
    from pipeline.store import FrameStore

    device = pick_device(options.device)
    loaded = loaded or load_models(story, options, device)
    folder = shot_folder(story, options, shot)
    start_over = f"delete {folder} and run the batch again"  # batch has no --fresh
    store = FrameStore(folder, start_over)
    engine, describe = make_engine(story, options, device, loaded, store, start_over)
    engine.embed(story.plan.prompt_texts, dict(story.plan.images))
    started = time.perf_counter()
    frames = render_frames(
        story.plan.span(*shot),
        engine,
        store,
        describe=describe,
        on_progress=lambda p: on_progress(
            Progress("frames", p.frames_done, p.frames_total, p.loss)
        ),
        first_frame=shot[0],
    )
    return ShotRendered(shot, folder, describe, engine.settings.record(), frames.records,
                        time.perf_counter() - started)  # fmt: skip


def gather(story: Story, options: RenderOptions, done: Sequence[ShotRendered]) -> Rendered:
    """The frames of every shot, made apart, put together in the render folder as `render`
    would have left them (frames, manifest, the last frame's state), so that `render`
    finds them finished. The shots' folders stay until `clear_shots`."""
    import shutil

    from pipeline.store import FrameStore, Manifest, atomic_write

    ordered = sorted(done, key=lambda shot: shot.shot[0])
    if [s.shot for s in ordered] != shots(story.plan):
        raise FeverdreamError(f"{story.board.name}: not every shot is rendered yet")
    folder = render_folder(story, options)
    store = FrameStore(folder)
    # The last shot's settings: a render that goes on after it continues from its state,
    # under its execution (shots made on other workers may each have had their own).
    last = ordered[-1]
    settings = {**last.settings, **last.describe}
    manifest = Manifest(settings, story.plan.recorded(settings))
    existing = store.read_manifest()

    def made_the_same_way(settings: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in settings.items() if key != "execution"}

    if existing is not None and (made_the_same_way(existing.settings), existing.plan) != (
        made_the_same_way(manifest.settings),
        manifest.plan,
    ):
        raise FeverdreamError(
            f"{store.frames_dir} holds frames rendered another way; move them away or "
            "render with --fresh, then run the batch again"
        )
    # The manifest first: frames copied before a failure (a full disk) are then this
    # render's, and the next batch copies the rest.
    manifest.records = {
        start + index: part.records[index]
        for part in ordered
        for start, end in [part.shot]
        for index in range(end - start)
    }
    store.write_manifest(manifest)
    for part in ordered:
        start, end = part.shot
        kept = FrameStore(part.folder)
        for index in range(end - start):
            target, source = store.frame_path(start + index), kept.frame_path(index)
            if not target.exists():  # copied whole or not at all, so a frame here is whole
                atomic_write(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
    state = FrameStore(last.folder).load_state(last.shot[1] - last.shot[0] - 1, "cpu")
    if state is not None:
        state.pop("frame")
        store.save_state(story.plan.n_frames - 1, state)
    return Rendered(
        folder=folder,
        frames_dir=store.frames_dir,
        frames_done=story.plan.n_frames,
        frames_total=story.plan.n_frames,
        stopped=False,
        device=last.settings["device"],
        seconds={"frames": sum(part.seconds for part in ordered)},
    )


def _soundtrack(
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


# --- models -------------------------------------------------------------------------------


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


def load_models(
    story: Story,
    options: RenderOptions,
    device: str,
    on_bytes: Callable[[int, int | None], None] = lambda done, total: None,
    on_loading: Callable[[], None] = lambda: None,
) -> tuple[Any, list[tuple[Any, float]]]:
    """The render's VQGAN and (CLIP, weight) pairs on `device`, downloading registry models
    not yet here (`on_bytes(done, total)` follows each file); `on_loading` is told when the
    files are all here and loading begins."""
    from pipeline.models.loading import load_all

    vqgan, clips = model_name(story, options), clip_names(story, options)
    if not options.random_weights:
        from pipeline.models.download import ensure_downloaded

        for name in dict.fromkeys([vqgan, *(name for name, _ in clips)]):
            ensure_downloaded(name, on_bytes)
    on_loading()
    return load_all(vqgan, clips, device, random_weights=options.random_weights)


def gathered(story: Story, options: RenderOptions) -> tuple[Rendered, dict[int, Any], Any]:
    """Frames already gathered (or rendered whole) in the render folder, as `encode` takes
    them: the result so far, the frames' records and the models the manifest names."""
    from pipeline.store import FrameStore

    store = FrameStore(render_folder(story, options))
    manifest = store.read_manifest()
    if manifest is None or store.finished_frames(manifest) < story.plan.n_frames:
        raise FeverdreamError(f"{store.frames_dir} does not hold every frame yet")
    rendered = Rendered(
        folder=store.folder,
        frames_dir=store.frames_dir,
        frames_done=story.plan.n_frames,
        frames_total=story.plan.n_frames,
        stopped=False,
        device=manifest.settings.get("device", "cpu"),
        seconds={"frames": sum(r.seconds for r in manifest.records.values())},
    )
    return rendered, manifest.records, manifest.settings.get("models", {})


def clear_shots(story: Story, options: RenderOptions) -> None:
    """Remove the shots' folders, once their frames are gathered and the video is made."""
    import shutil

    shutil.rmtree(render_folder(story, options) / "shots", ignore_errors=True)


# --- after the render ---------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """What `check` found: the file's summary, and what TikTok would reject (empty: none)."""

    summary: str
    problems: list[str]

    @property
    def accepted(self) -> bool:
        return not self.problems


def check(video: str | Path, max_duration: float | None = None) -> Checked:
    """Would TikTok accept this video file? What to change if not."""
    from pipeline.check import find_problems, probe_video

    info = probe_video(Path(video))
    return Checked(info.summary(), find_problems(info, max_duration_s=max_duration))


def post(
    video: str | Path,
    mode: str = "draft",
    caption: str = "",
    *,
    say: Callable[[str], None] = lambda line: None,
    **options: Any,
) -> Any:
    """Post a video to TikTok as a draft or directly (`pipeline.tiktok.post_video`'s
    options); `say` is told what happens, line by line."""
    from pipeline import tiktok

    return tiktok.post_video(str(video), mode=mode, caption=caption, say=say, **options)


def login(
    *,
    paste: bool = False,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = lambda line: None,
) -> str:
    """Log in to TikTok and save the token (`pipeline.tiktok.login`): through a browser on
    this machine, or with `paste` (Colab, SSH) by pasting back, through `ask`, the address
    TikTok sent the browser to. Returns who logged in."""
    from pipeline import tiktok

    return tiktok.login(paste=paste, ask=ask, say=say)


def logged_in() -> bool:
    """Whether a TikTok login is saved on this machine."""
    from pipeline import tiktok

    return tiktok.logged_in()


def score(folder: str | Path, clip: str | None = "render", story: Story | None = None):
    """How a render folder's frames hold up (pipeline.score): CLIP loss, flicker and colour
    drift, each as mean and worst second. `clip` is a CLIP's name or path, "render" (the
    one the frames were made with) or None (no CLIP loss); `story`, the storyboard, gives
    the files of its image prompts."""
    from pipeline import score as scoring
    from pipeline.models.loading import load_clip_model

    images = dict(story.plan.images) if story is not None else None
    if clip is not None:
        # Before any CLIP loads (or downloads): pictures the loss needs and cannot have.
        scoring.steering_pictures(Path(folder), images)
    model: Any = None
    if clip == "render":
        manifest = scoring.manifest_of(Path(folder))
        recorded = ModelsUsed.from_json(manifest.settings.get("models"))
        if recorded is None:
            raise FeverdreamError(f"{folder}: no CLIP recorded for these frames; name one")
        loaded = {name: load_clip_model(name) for name in {c.name for c in recorded.clips}}
        model = [(loaded[clip.name], clip.weight) for clip in recorded.clips]
    elif clip is not None:
        model = load_clip_model(clip)
    return scoring.score(folder, model, images=images)
