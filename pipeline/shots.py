"""A video's shots rendered apart and put together again, as `feverdream batch` does: the
shots of a plan (from the start or a cut to the next cut), one shot rendered into its own
folder, the shots' frames gathered into the render folder as a whole render leaves them,
and what a render folder already holds for a batch (finished, gathered, made another way).

    for shot in shots.shots(story.plan):
        done.append(shots.render_shot(story, options, shot))   # on any worker
    shots.finish(story, options, done)                           # gathered, encoded
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline import record
from pipeline.encoding import encode
from pipeline.errors import FeverdreamError
from pipeline.record import ModelsUsed
from pipeline.rendering import load_models, make_engine
from pipeline.schedule import Plan
from pipeline.store import FrameStore
from pipeline.story import (
    Progress,
    Rendered,
    RenderOptions,
    Story,
    clip_names,
    model_name,
    pick_device,
    render_folder,
)


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
    describe: dict[str, Any]  # what the record keeps beside the engine's settings
    settings: dict[str, Any]  # the engine's settings, as a whole render's record has them
    records: dict[int, Any]  # per frame of the shot (0 = its first), as FrameRecords
    seconds: float


def render_shot(
    story: Story,
    options: RenderOptions,
    shot: tuple[int, int],
    loaded: tuple[Any, Any, Any] | None = None,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    sharing: int = 1,
) -> ShotRendered:
    """Render one shot (from `shots`) into its own folder, continuing after the frames a
    killed attempt left there; `loaded` are the models (`load_models`), if already loaded.
    Its frames are byte-identical to the same frames of `render` on the same device: the
    same random stream per frame, the same anchors, the whole plan's prompts embedded as
    a whole render embeds them. `sharing`: the workers (this one included) whose steps share
    this device's memory, each fitted to its part of it."""
    from pipeline.engine import render_frames

    device = pick_device(options.device)
    loaded = loaded or load_models(story, options, device)
    if sharing > 1:
        from pipeline import memory

        whole = options.memory or memory.free_bytes(device)
        options = replace(options, memory=whole // sharing)
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
    would have left them (frames, record, the last frame's state), so that `render` finds
    them finished. The shots' folders stay until `clear_shots`."""
    import shutil

    from pipeline.store import atomic_write

    ordered = sorted(done, key=lambda shot: shot.shot[0])
    if [s.shot for s in ordered] != shots(story.plan):
        raise FeverdreamError(f"{story.board.name}: not every shot is rendered yet")
    folder = render_folder(story, options)
    store = FrameStore(folder)
    # The last shot's settings: a render that goes on after it continues from its state,
    # under its execution (shots made on other workers may each have had their own).
    last = ordered[-1]
    settings = {**last.settings, **last.describe}
    gathered = record.Record(settings, story.plan.recorded(settings))
    existing = record.read(store)
    if existing is not None and not record.same_render(existing, gathered):
        raise FeverdreamError(
            f"{store.frames_dir} holds frames rendered another way; move them away or "
            "render with --fresh, then run the batch again"
        )
    # The record first: frames copied before a failure (a full disk) are then this
    # render's, and the next batch copies the rest.
    gathered.frames = {
        start + index: part.records[index]
        for part in ordered
        for start, end in [part.shot]
        for index in range(end - start)
    }
    record.write(store, gathered)
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


def gathered(story: Story, options: RenderOptions) -> tuple[Rendered, dict[int, Any], Any]:
    """Frames already gathered (or rendered whole) in the render folder, as `encode` takes
    them: the result so far, the frames' records and the models the record names."""
    store = FrameStore(render_folder(story, options))
    made = record.read(store)
    if made is None or store.finished_frames(made) < story.plan.n_frames:
        raise FeverdreamError(f"{store.frames_dir} does not hold every frame yet")
    rendered = Rendered(
        folder=store.folder,
        frames_dir=store.frames_dir,
        frames_done=story.plan.n_frames,
        frames_total=story.plan.n_frames,
        stopped=False,
        device=made.device,
        seconds={"frames": sum(r.seconds for r in made.frames.values())},
    )
    return rendered, made.frames, made.settings.get("models", {})


def clear_shots(story: Story, options: RenderOptions) -> None:
    """Remove the shots' folders, once their frames are gathered and the video is made."""
    import shutil

    shutil.rmtree(render_folder(story, options) / "shots", ignore_errors=True)


def finish(story: Story, options: RenderOptions, done: Sequence[ShotRendered]) -> Rendered:
    """The video of a storyboard whose shots are all `done` (or, with none given, whose
    frames an earlier batch gathered already): the shots gathered, encoded as `render`
    encodes, and their folders removed."""
    if done:
        parts = sorted(done, key=lambda shot: shot.shot[0])
        result = gather(story, options, parts)
        records = {part.shot[0] + i: r for part in parts for i, r in part.records.items()}
        models = parts[0].describe["models"]
    else:
        result, records, models = gathered(story, options)
    result = encode(story, options, result, models, records)
    clear_shots(story, options)
    return result


# --- what a render folder holds already -----------------------------------------------------


@dataclass(frozen=True)
class Held:
    """What a storyboard's render folder holds for a batch."""

    finished: bool  # its video and records, from this storyboard and these models
    gathered: bool  # every frame, made this way: only the video is left to make
    conflict: str | None  # why it cannot take the batch's frames (None: it can)


def folder_holds(story: Story, options: RenderOptions) -> Held:
    """What an earlier batch (or render) left in this storyboard's render folder."""
    try:
        if _finished(story, options):
            return Held(True, True, None)
    except record.RecordError as error:
        return Held(False, False, str(error))
    store = FrameStore(render_folder(story, options))
    try:
        made = record.read(store)
    except FeverdreamError as error:
        return Held(False, False, str(error))
    conflict = _conflict(story, options, store, made)
    # Every frame already here (gathered by an earlier batch, or made by `feverdream render`):
    # nothing left but to encode.
    gathered = (
        conflict is None and made is not None and store.finished_frames(made) == story.plan.n_frames
    )
    return Held(False, gathered, conflict)


def _finished(story: Story, options: RenderOptions) -> bool:
    """Whether an earlier batch (or render) left this storyboard's video and its summary,
    made from this storyboard with these models."""
    folder = render_folder(story, options)
    if not (folder / f"{story.board.name}.mp4").is_file():
        return False
    summary = record.read_summary(folder)
    return (
        summary is not None
        and summary.storyboard_sha256 == story.board.sha256
        and _same_models(story, options, record.ModelsUsed.from_json(summary.models))
    )


def shot_frames_done(story: Story, options: RenderOptions, shot: tuple[int, int]) -> int:
    """Frames of a shot still rendering that its folder's record has."""
    try:
        made = record.read(FrameStore(shot_folder(story, options, shot)))
    except FeverdreamError:
        made = None
    return len(made.frames) if made else 0


def _conflict(
    story: Story, options: RenderOptions, store: FrameStore, made: record.Record | None
) -> str | None:
    """Why this storyboard's render folder (`store`, whose record is `made`) cannot take a
    batch's frames, if it cannot: frames made another way (other settings, another
    storyboard), or without a record."""
    if made is None:
        if any(store.frames_dir.glob("*.png")):
            return (
                f"{store.frames_dir} holds frames without a record of how they were made: "
                "move them away (or delete them) and run the batch again"
            )
        return None
    if not made.aims_ahead:
        return (
            f"{store.frames_dir} holds frames made by an older engine (one that followed the "
            "storyboard's prompts late): move that folder away (or delete it) and run the "
            "batch again, or render to another folder with -o"
        )
    if made.plan != story.plan.recorded(made.settings) or not _same_models(
        story, options, made.models
    ):
        return (
            f"{store.frames_dir} holds frames rendered from another version of this "
            "storyboard or with other models: move that folder away (or delete it) and run "
            "the batch again, or render to another folder with -o"
        )
    return None


def _same_models(story: Story, options: RenderOptions, recorded: ModelsUsed | None) -> bool:
    """Whether recorded models are the ones these options name, by name and weight, and
    random or not as they ask."""
    if recorded is None:
        return False
    wanted = [(model_name(story, options), None)]
    wanted += [(name, weight) for name, weight in clip_names(story, options)]
    random = options.random_weights
    return recorded.names() == wanted and all(r == random for r in recorded.random)
