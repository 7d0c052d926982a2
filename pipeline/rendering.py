"""Rendering a storyboard's frames: the models loaded, the engine made (its speed, execution
and memory, or those a render it continues began with), the frames rendered into the render
folder under its lock, then encoded (encoding.py).

    from pipeline import run

    story = run.load("storyboards/anxiety.yaml")
    result = run.render(story, run.RenderOptions(preview=True), on_progress=print)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import record
from pipeline.encoding import Encoder, encode, video_bytes, video_target
from pipeline.errors import DiskFullError
from pipeline.record import ModelsUsed, ModelUsed
from pipeline.story import (
    Progress,
    Rendered,
    RenderOptions,
    Story,
    again,
    clip_names,
    depth_name,
    load,
    model_name,
    optimised_steps,
    pick_device,
    render_folder,
    render_plan,
    render_settings,
)
from pipeline.story import (
    soundtrack as soundtrack_of,
)

if TYPE_CHECKING:
    from pipeline.engine import FrameProgress
    from pipeline.schedule import Plan
    from pipeline.settings import Execution
    from pipeline.store import FrameStore

log = logging.getLogger(__name__)


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
    from pipeline.store import FrameStore, full_disk_said, render_lock

    options = options or RenderOptions()
    story = story if isinstance(story, Story) else load(story)
    plan = render_plan(story, options)
    soundtrack = soundtrack_of(story, options)
    device = pick_device(options.device)
    models = 1 + len(dict.fromkeys(name for name, _ in clip_names(story, options)))
    models += depth_name(story, options) is not None
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
            done = progress.frames_done
            newest = store.frame_path(done - 1) if done else None
            on_progress(Progress("frames", done, progress.frames_total, progress.loss, newest))

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


def _no_room_for_frames(
    error: DiskFullError, story: Story, options: RenderOptions, store: FrameStore, plan: Plan
) -> DiskFullError:
    """A full disk while frames are made, saying about how much room the rest of the render
    needs: the frames left at the size of those written (1.5 bytes a pixel before any), two
    resume states, and the video."""
    settings = render_settings(story, options)
    done = record.frames_done(store.folder)
    written = [store.frame_path(i).stat().st_size for i in range(done)]
    frame = sum(written) / len(written) if written else 1.5 * settings.width * settings.height
    states = sorted(store.frames_dir.glob("state-*.pt"))
    state = states[-1].stat().st_size if states else 0
    needed = int(frame * (plan.n_frames - done) + 2 * state) + video_bytes(story, options, plan)
    return error.needing(needed, then=(
        f"free some space, then {again(options)}: it keeps the {done} of {plan.n_frames} frames "
        "made and goes on from there"))  # fmt: skip


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
    loaded: tuple[Any, Any, Any],
    store: FrameStore | None = None,
    start_over: str = "run with --fresh",
) -> tuple[Any, dict[str, Any]]:
    """The engine for a render on these models into `store`, and what its record keeps
    beside the engine's settings: the models by name and content, and the pictures by content.

    Its execution is the one `options` asks for; else, for a render that goes on in `store`,
    the one it began with (as its record says), so that its frames are those of an
    uninterrupted render; else the fast one, fitted to the memory free. A render whose
    execution no longer fits, where a fresh start would choose another that does, is refused,
    saying what to do (`start_over`: how to start afresh, for the message)."""
    from pipeline import memory
    from pipeline.engine import Engine
    from pipeline.errors import RenderChangedError
    from pipeline.models.files import file_sha256
    from pipeline.models.loading import digest
    from pipeline.settings import EngineSettings, Execution, Speed

    vqgan, clips, depth = loaded
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
        settings, story.board.seed, device, speed, execution), depth)  # fmt: skip
    began, left = (None, 0)
    if options.execution is None and store is not None:
        began, left = _began_with(store, story, options)
    if began is not None:
        if options.compile is not None:  # asked for otherwise: refused as a changed setting
            began = replace(began, compile=options.compile)
        kept = Engine(vqgan, clips, replace(engine.settings, execution=began), depth)
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
            engine = Engine(
                vqgan, clips, replace(engine.settings, execution=fitted.execution), depth
            )
    models = ModelsUsed(
        ModelUsed(model_name(story, options), digest(vqgan)),
        tuple(
            ModelUsed(name, digest(model), weight)
            for (name, weight), (model, _) in zip(clip_names(story, options), clips, strict=True)
        ),
        None if depth is None else ModelUsed(str(depth_name(story, options)), digest(depth)),
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
    made = record.read(store)
    if made is None or made.execution is None:
        return None, 0
    done = store.finished_frames(made)
    if not done:
        return None, 0
    left = max(0, render_plan(story, options).n_frames - done)
    return Execution.from_record(made.execution), left


def download_models(
    story: Story,
    options: RenderOptions,
    on_bytes: Callable[[int, int | None], None] | None = None,
) -> None:
    """Fetch the registry models a render with these options reads that are not here yet
    (`on_bytes(done, total)` follows each file; without it, a progress bar on the terminal);
    none for random weights."""
    if options.random_weights:
        return
    from pipeline.errors import ModelError
    from pipeline.models.download import ensure_downloaded

    names = [model_name(story, options), *(name for name, _ in clip_names(story, options))]
    for name in dict.fromkeys(names):
        ensure_downloaded(name, on_bytes)
    depth = depth_name(story, options)
    if depth is None:
        return
    try:
        ensure_downloaded(depth, on_bytes)
    except ModelError as error:
        # Never a silent 2D render instead: the storyboard asked for the 3D camera.
        said = str(error)
        raise ModelError(
            f"{story.board.path.name} moves the 3D camera (translate, rotate_3d or fov), which "
            f"reads each optimised frame's depth with the depth model {depth}, not here yet. "
            f"{said[:1].upper()}{said[1:]}"
        ) from None


def frames_folder(story: Story, options: RenderOptions) -> Path:
    """Where a render with these options writes its frames."""
    from pipeline.store import FrameStore

    return FrameStore(render_folder(story, options)).frames_dir


def frames_done(story: Story, options: RenderOptions) -> int:
    """The frames a render with these options finds made, to go on after (0 when it cannot
    tell, or when it starts afresh)."""
    return 0 if options.fresh else record.frames_done(render_folder(story, options))


def load_models(
    story: Story,
    options: RenderOptions,
    device: str,
    on_bytes: Callable[[int, int | None], None] = lambda done, total: None,
    on_loading: Callable[[], None] = lambda: None,
) -> tuple[Any, list[tuple[Any, float]], Any]:
    """The render's VQGAN, (CLIP, weight) pairs and depth model (None unless its storyboard
    moves the 3D camera) on `device`, downloading registry models not yet here
    (`on_bytes(done, total)` follows each file); `on_loading` is told when the files are all
    here and loading begins."""
    from pipeline.models.loading import load_all, load_depth_model

    download_models(story, options, on_bytes)
    on_loading()
    depth = depth_name(story, options)
    depth_model = None if depth is None else load_depth_model(
        depth, device, random_weights=options.random_weights)  # fmt: skip
    vqgan, clips = load_all(model_name(story, options), clip_names(story, options), device,
                            random_weights=options.random_weights)  # fmt: skip
    return vqgan, clips, depth_model
