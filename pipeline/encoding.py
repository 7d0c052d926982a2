"""A render's video and what goes with it, from the frames in its folder: the MP4 (made after
the frames, or while they are made by an `Encoder` that follows them), the contact sheet, the
preview GIF and the render's summary (pipeline/record.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import record
from pipeline.errors import DiskFullError
from pipeline.story import (
    PREVIEW_VIDEO_SIZE,
    Progress,
    Rendered,
    RenderOptions,
    Story,
    again,
    render_folder,
    render_plan,
)
from pipeline.story import (
    soundtrack as soundtrack_of,
)

if TYPE_CHECKING:
    from pipeline.render import SoundtrackInfo, SoundtrackSpec
    from pipeline.schedule import Plan

# What x264 at crf 18 makes of a second of busy 1080x1920 pictures, rounded up (the examples'
# videos take 0.2-1 MB a second): the room a video needs, in proportion to its area.
VIDEO_BYTES_PER_SECOND = 2_000_000


def video_bytes(story: Story, options: RenderOptions, plan: Plan) -> int:
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
    """The video, contact sheet, preview GIF and summary of finished frames (in
    `result.frames_dir`), with `models` and the frames' `records` (record.FrameRecord).
    With `encoder` (the video begun while the frames were made), its video."""
    plan = render_plan(story, options)
    try:
        return _encode(story, options, plan, result, models, records, on_progress,
                       soundtrack=soundtrack, encoder=encoder)  # fmt: skip
    except DiskFullError as error:
        raise error.needing(video_bytes(story, options, plan), then=(
            f"free some space, then {again(options)}: the {plan.n_frames} frames are kept, "
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
        soundtrack = soundtrack_of(story, options)
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
    result.summary = record.write_summary(
        folder,
        record.Summary(
            storyboard_sha256=story.board.sha256,
            seed=story.board.seed,
            models=models,
            device=result.device,
            frames=records,
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
