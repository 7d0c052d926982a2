"""The studio's render queue: one render at a time, in the studio's own worker thread, on the
library API (pipeline.run). A page asks for a render; a reload, a second tab or a second click
that asks for one already queued or running gets that one back, never a second render."""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline import run
from pipeline.errors import FeverdreamError, ModelError, RenderChangedError
from pipeline.studio.estimate import (
    Clock,
    Timing,
    needed_models,
    say_bytes,
    say_seconds,
    timing_key,
)

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running", "stopping")


@dataclass
class Job:
    """One render the studio was asked for, and where it stands. Paths are relative to the
    outputs folder (the page fetches them under /files/outputs/)."""

    id: int
    board: str  # the storyboard's file name in the studio's folder
    kind: str  # "preview" or "render"
    fresh: bool = False  # start over: replace the frames made before (the CLI's --fresh)
    state: str = "queued"  # queued, running, stopping, stopped, done, failed
    # The library's Progress.stage (download, loading, preparing, frames, encoding) and what
    # it is doing in words: "loading the models", "the first frame (40 steps)".
    stage: str = ""
    activity: str = ""
    done: int = 0
    total: int = 0
    loss: float | None = None
    # The time left for the frames: seconds per optimisation step × the steps still to take
    # (`seconds_left`), the plan's estimate until this render has made a frame, then its own.
    eta_s: float | None = None
    seconds_per_step: float | None = None  # what eta_s is counted with
    estimate_s: float | None = None  # eta_s as the render began: what the plan said
    frames_s: float | None = None  # what its frames took, once made
    message: str = ""
    details: str = ""  # what the page folds away under the message (a download's addresses)
    changed: bool = False  # failed because the storyboard changed under frames already made
    newest_frame: str | None = None
    video: str | None = None
    contact_sheet: str | None = None
    check: dict[str, Any] | None = None  # run.check's verdict on the video
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stop"}


class Jobs:
    """The queue and its worker. `models` overrides every storyboard's VQGAN and CLIP (like
    the CLI's --models), `device` is the CLI's --device."""

    def __init__(
        self,
        folder: Path,
        outputs: Path,
        *,
        models: str | None = None,
        device: str | None = None,
        state_dir: Path,
    ):
        self.folder, self.outputs = folder, outputs
        self.models, self.device = models, device
        self.timing = Timing(state_dir / "timing.json")
        self.jobs: list[Job] = []
        self.waiting: deque[Job] = deque()
        self.changed = threading.Condition()
        self.version = 0  # bumped on every change, for the pages' event streams
        self.worker = threading.Thread(target=self._work, name="studio-renders", daemon=True)
        self.worker.start()

    # --- what the pages ask ------------------------------------------------------------

    def options(self, story: run.Story, kind: str, fresh: bool = False) -> run.RenderOptions:
        """The render's options: the CLI's defaults, so `feverdream render` (run from the
        same folder as the studio) continues a render started here, and the other way."""
        return run.RenderOptions(
            output=self.outputs / story.board.name,
            preview=kind == "preview",
            device=self.device,
            vqgan=self.models,
            clip=self.models,
            depth=self.models if self.models == run.TINY else None,  # tiny has one too
            fresh=fresh,
        )

    def submit(self, board: str, kind: str, fresh: bool = False) -> Job:
        with self.changed:
            for job in self.jobs:
                if job.board == board and job.kind == kind and job.state in ACTIVE:
                    return job
            job = Job(id=len(self.jobs) + 1, board=board, kind=kind, fresh=fresh)
            self.jobs.append(job)
            self.waiting.append(job)
            self._bump()
            return job

    def stop(self, job_id: int) -> Job:
        """Stop a render after the frame being made (like Ctrl-C), or drop it from the queue."""
        with self.changed:
            job = self.get(job_id)
            if job.state == "queued":
                self.waiting.remove(job)
                job.state, job.message = "stopped", "taken off the queue before it started"
            elif job.state == "running":
                job.stop.set()
                job.state = "stopping"
                job.message = "stopping after the frame being made"
            self._bump()
            return job

    def get(self, job_id: int) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise FeverdreamError(f"no render #{job_id} in this studio")

    def snapshot(self) -> dict[str, Any]:
        with self.changed:
            return {"version": self.version, "jobs": [job.public() for job in self.jobs]}

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def _update(self, job: Job, **values: Any) -> None:
        with self.changed:
            for key, value in values.items():
                setattr(job, key, value)
            self._bump()

    # --- the worker --------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: bool(self.waiting))
                job = self.waiting.popleft()
                job.state, job.activity = "running", "starting"
                self._bump()
            try:
                self._render(job)
            except RenderChangedError as error:
                # The CLI's advice (--fresh, -o) becomes the page's: the Start over button.
                said = [line for line in str(error).splitlines() if "--fresh" not in line]
                self._update(
                    job,
                    state="failed",
                    changed=True,
                    eta_s=None,
                    activity="",
                    message="\n".join(said or ["these frames cannot be continued"])
                    + "\nStart over replaces the frames made before (until then they are kept)",
                )
            except FeverdreamError as error:
                self._update(job, state="failed", eta_s=None, activity="", message=str(error))
            except Exception as error:  # the worker lives on; the page shows what broke
                log.exception("render #%d failed", job.id)
                self._update(
                    job,
                    state="failed",
                    eta_s=None,
                    activity="",
                    message=f"unexpected error: {type(error).__name__}: {error} (the studio's "
                    "terminal shows the traceback; frames already made are kept)",
                )

    def _render(self, job: Job) -> None:
        story = run.load(self.folder / job.board)
        options = self.options(story, job.kind, job.fresh)
        device = run.pick_device(options.device)
        key = timing_key(story, options, device)
        needed = needed_models(story, options)
        clock = Clock(run.optimised_steps(story, options), self.timing.get(key))
        estimate = clock.left(run.frames_done(story, options))
        self._update(job, estimate_s=estimate, eta_s=estimate, seconds_per_step=clock.per_step)

        def on_progress(progress: run.Progress) -> None:
            stage, done, total = progress.stage, progress.done, progress.total
            values: dict[str, Any] = {"stage": stage, "done": done, "total": total}
            if stage == "download":
                got = say_bytes(done) + (f" of {say_bytes(total)}" if total else "")
                names = " and ".join(m.name for m in needed if m.downloads) or "a model"
                values["activity"] = f"downloading {names} (once): {got}"
            elif stage == "loading":
                models = ", ".join(f"{model.role} {model.name}" for model in needed)
                values["activity"] = f"loading the models: {models}"
            elif stage == "preparing":
                values["activity"] = f"embedding {total} prompt{'s' * (total != 1)}"
            elif stage == "frames":
                clock.frames(done)
                values["activity"] = clock.activity(done, total)
                values["eta_s"], values["seconds_per_step"] = clock.left(done), clock.per_step
                if progress.newest is not None:
                    values["newest_frame"] = self._relative(progress.newest)
                values["loss"] = progress.loss
            elif stage == "encoding":
                values["activity"], values["eta_s"] = "encoding the video", None
            self._update(job, **values)

        try:
            result = run.render(story, options, on_progress=on_progress,
                                should_stop=job.stop.is_set)  # fmt: skip
        except ModelError as error:
            missing = [m.name for m in needed_models(story, options) if m.downloads]
            if not missing:  # the models are here: a file that does not load, say, as it is
                raise
            self._update(job, state="failed", eta_s=None, activity="", details=str(error),
                         message=download_failed(missing, str(error)))  # fmt: skip
            return
        if clock.measured is not None:
            self.timing.put(key, clock.measured)
        if result.stopped:
            self._update(
                job,
                state="stopped",
                eta_s=None,
                activity="",
                message=f"stopped after {result.frames_done} of {result.frames_total} frames, "
                "all kept: render again (here, or `feverdream render`) to continue",
            )
            return
        checked = verdict(result.video, self.outputs)
        timed = ""
        if clock.seconds is not None:
            timed = f"; its frames took {say_seconds(clock.seconds)}" + (
                f" (the plan said {say_seconds(estimate)})" if estimate is not None
                else " (now timed: the plan's estimates use it)"
            )  # fmt: skip
        self._update(
            job,
            state="done",
            stage="",
            activity="",
            eta_s=None,
            frames_s=clock.seconds,
            video=self._relative(result.video),
            contact_sheet=self._relative(result.contact_sheet) if result.contact_sheet else None,
            check=checked,
            message=f"made {self._relative(result.video)}{timed}",
        )

    def _relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.outputs.resolve()).as_posix()


def verdict(video: Path, outputs: Path) -> dict[str, Any]:
    """run.check's verdict on a video, the file named as the page names it (under outputs)."""
    checked = asdict(run.check(video))
    shown = Path(video).resolve().relative_to(outputs.resolve()).as_posix()
    checked["summary"] = checked["summary"].replace(str(video), shown, 1)
    return checked


def download_failed(missing: list[str], error: str) -> str:
    """A failed download in one line, then the command that fetches it; the error itself,
    with every address tried, goes in the details."""
    offline = ": this machine seems offline" if "offline" in error else ""
    return (
        f"could not download {missing[0]}{offline}\n"
        f"in a terminal: `feverdream models download {' '.join(missing)}` (or by hand: see the "
        "details); or use the shapes models, which need no download"
    )
