"""The studio's render queue: one render at a time, in the studio's own worker thread, on the
library API (pipeline.run). A page asks for a render; a reload, a second tab or a second click
that asks for one already queued or running gets that one back, never a second render."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline import run
from pipeline.errors import FeverdreamError
from pipeline.store import FrameStore, RenderChangedError, atomic_write_json

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
    stage: str = ""  # the library's Progress.stage: download, frames, encoding
    done: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    message: str = ""
    changed: bool = False  # failed because the storyboard changed under frames already made
    newest_frame: str | None = None
    video: str | None = None
    contact_sheet: str | None = None
    check: dict[str, Any] | None = None  # run.check's verdict on the video
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def public(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stop"}


class Timing:
    """Seconds per optimisation step measured by the studio's renders, kept per models, device
    and canvas in the studio's folder, so the plan's time estimate is this machine's."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> float | None:
        return self.read().get(key)

    def put(self, key: str, seconds_per_step: float) -> None:
        with self.lock:
            data = self.read()
            data[key] = round(seconds_per_step, 4)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, data)


def timing_key(story: run.Story, options: run.RenderOptions, device: str) -> str:
    settings = run.render_settings(story, options)
    clips = "+".join(name for name, _ in run.clip_names(story, options))
    return f"{run.model_name(story, options)}|{clips}|{device}|{settings.width}x{settings.height}"


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
                job.state = "running"
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
                    message="\n".join(said or ["these frames cannot be continued"])
                    + "\nStart over replaces the frames made before (until then they are kept)",
                )
            except FeverdreamError as error:
                self._update(job, state="failed", eta_s=None, message=str(error))
            except Exception as error:  # the worker lives on; the page shows what broke
                log.exception("render #%d failed", job.id)
                self._update(
                    job,
                    state="failed",
                    message=f"unexpected error: {type(error).__name__}: {error} (the studio's "
                    "terminal shows the traceback; frames already made are kept)",
                )

    def _render(self, job: Job) -> None:
        story = run.load(self.folder / job.board)
        options = self.options(story, job.kind, job.fresh)
        device = run.pick_device(options.device)
        steps = run.optimised_steps(story, options)
        store = FrameStore(run.render_folder(story, options))
        clock: dict[str, float] = {}

        def on_progress(progress: run.Progress) -> None:
            now = time.perf_counter()
            values: dict[str, Any] = {"stage": progress.stage, "done": progress.done}
            values["total"], values["eta_s"] = progress.total, None
            if progress.stage == "frames":
                if "start" not in clock:
                    clock["start"], clock["first"] = now, progress.done
                first, made = clock["first"], progress.done - clock["first"]
                if made > 0:
                    left = progress.total - progress.done
                    values["eta_s"] = (now - clock["start"]) / made * left
                    clock["steps"] = sum(n for i, n in steps.items() if first <= i < progress.done)
                    clock["seconds"] = now - clock["start"]
                if progress.done:
                    values["newest_frame"] = self._relative(store.frame_path(progress.done - 1))
                values["loss"] = progress.loss
            self._update(job, **values)

        result = run.render(story, options, on_progress=on_progress, should_stop=job.stop.is_set)
        if clock.get("steps"):
            self.timing.put(timing_key(story, options, device), clock["seconds"] / clock["steps"])
        if result.stopped:
            self._update(
                job,
                state="stopped",
                eta_s=None,
                message=f"stopped after {result.frames_done} of {result.frames_total} frames, "
                "all kept: render again (here, or `feverdream render`) to continue",
            )
            return
        checked = run.check(result.video)
        self._update(
            job,
            state="done",
            stage="",
            eta_s=None,
            video=self._relative(result.video),
            contact_sheet=self._relative(result.contact_sheet) if result.contact_sheet else None,
            check=asdict(checked),
            message=f"made {self._relative(result.video)}",
        )

    def _relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.outputs.resolve()).as_posix()
