"""Many storyboards, and the shots of each, rendered on a Ray cluster (issue 24).

Each shot of each storyboard (`run.shots`: from the start or a cut to the next cut) is one
task, run by a `ShotWorker` actor that keeps its models loaded between tasks (one actor per
GPU, or per CPU core when there is none). A shot renders into its own folder through the
frame store, so a task whose worker dies is retried by Ray and continues from the frames and
engine state already saved, as a resumed local render does. When every shot of a storyboard
is done, its frames are gathered in its render folder as `feverdream render` leaves them, and
it is encoded (and posted, if asked) once. Progress is read from the shots' manifests on the
(shared) output folder.

Ray is optional (`pip install 'feverdream[cluster]'`); nothing here imports it until a batch
starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import run
from pipeline.errors import FeverdreamError

log = logging.getLogger(__name__)

INSTALL_RAY = (
    "feverdream batch runs on Ray, which is not installed: pip install 'feverdream[cluster]' "
    "(in a checkout: .venv/bin/pip install -e '.[cluster]')"
)


class RayMissing(FeverdreamError):
    """Ray is not installed."""


def storyboards(paths: Sequence[str | Path]) -> list[Path]:
    """The storyboards named: files as given, and every *.yaml in a folder (sorted)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).resolve()  # workers may run elsewhere, in another folder
        if path.is_dir():
            found += sorted(path.glob("*.yaml"))
        else:
            found.append(path)
    return list(dict.fromkeys(found))


@dataclass
class Job:
    """One storyboard of a batch and what became of it."""

    path: Path
    story: run.Story | None = None
    options: run.RenderOptions | None = None
    shots: list[tuple[int, int]] = field(default_factory=list)
    done: dict[tuple[int, int], run.ShotRendered] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False  # rendered and encoded by an earlier batch
    video: Path | None = None
    posted: Any = None
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.story.board.name if self.story else self.path.name

    @property
    def frames_total(self) -> int:
        return self.story.plan.n_frames if self.story else 0


@dataclass(frozen=True)
class BatchProgress:
    """Frames done and in all, across the batch and per storyboard (by name)."""

    done: int
    total: int
    per_storyboard: dict[str, tuple[int, int]]


def _finished(job: Job, options: run.RenderOptions) -> bool:
    """Whether an earlier batch (or render) left this storyboard's video and records."""
    import json

    assert job.story is not None
    folder = run.render_folder(job.story, options)
    record = folder / "render.json"
    video = folder / f"{job.story.board.name}.mp4"
    if not (record.is_file() and video.is_file()):
        return False
    try:
        return json.loads(record.read_text()).get("storyboard_sha256") == job.story.board.sha256
    except ValueError:
        return False


def _frames_made(job: Job) -> int:
    """Frames of this storyboard on disk: those of finished shots, and those the shots
    still rendering have recorded in their manifests."""
    from pipeline.store import FrameStore

    assert job.story is not None and job.options is not None
    count = 0
    for shot in job.shots:
        if shot in job.done:
            count += shot[1] - shot[0]
            continue
        try:
            manifest = FrameStore(run.shot_folder(job.story, job.options, shot)).read_manifest()
        except FeverdreamError:
            manifest = None
        count += len(manifest.records) if manifest else 0
    return count


def _connect(cluster: str | None, threads: int) -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_RAY) from None
    address = cluster or os.environ.get("RAY_ADDRESS") or "local"
    env = {"OMP_NUM_THREADS": str(threads)}
    if address == "local":
        ray.init(
            include_dashboard=False,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    else:
        ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
    return ray


class _ShotWorker:
    """A Ray actor: renders shots, its models loaded once and kept between tasks."""

    def __init__(self, threads: int):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(threads)
        self.models: dict[tuple, Any] = {}

    def pid(self) -> int:
        return os.getpid()

    def render(self, path: str, options: run.RenderOptions, shot: tuple[int, int]):
        story = run.load(path)
        device = run.pick_device(options.device)
        key = (run.model_name(story, options), run.clip_names(story, options), device,
               options.random_weights)  # fmt: skip
        if key not in self.models:
            self.models[key] = run.load_models(story, options, device)
        return run.render_shot(story, options, shot, self.models[key])


def batch(
    paths: Sequence[str | Path],
    options: run.RenderOptions | None = None,
    *,
    cluster: str | None = None,
    gpus_per_task: float = 0,
    workers: int | None = None,
    post: Callable[[Job], Any] | None = None,
    on_progress: Callable[[BatchProgress], None] = lambda progress: None,
    on_ready: Callable[[Any, list[Any]], None] = lambda ray, actors: None,
) -> list[Job]:
    """Render every storyboard in `paths` (files, or folders of *.yaml) on Ray, each shot a
    task, into `options.output`/NAME (default outputs/NAME); encode each when its shots are
    done, then `post(job)` if given. A storyboard that fails validation, or whose render
    fails, is reported in its Job and the others go on. `cluster`: a Ray address, or
    "local" (the default, unless RAY_ADDRESS says otherwise) to start Ray on this machine.
    `workers`: how many render actors (default: one per `gpus_per_task` GPUs, else one per
    CPU). `on_ready(ray, actors)` is told the actors once they are up."""
    options = options or run.RenderOptions()
    jobs = [Job(path) for path in storyboards(paths)]
    for job in jobs:
        try:
            job.story = run.load(job.path)
        except FeverdreamError as error:
            job.error = str(error)
            continue
        output = (options.output or Path("outputs")).resolve() / job.story.board.name
        job.options = _with(options, output=output, encode=False)
        job.shots = run.shots(job.story.plan)
        if _finished(job, job.options):
            job.skipped = True
    todo = [job for job in jobs if job.error is None and not job.skipped]
    if not todo:
        return jobs

    threads = 1
    ray = _connect(cluster, threads)
    try:
        actors = _start_actors(ray, gpus_per_task, workers, threads)
        on_ready(ray, actors)
        _run(ray, actors, todo, post, on_progress)
    finally:
        ray.shutdown()
    return jobs


def _with(options: run.RenderOptions, **changes: Any) -> run.RenderOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)


def _start_actors(ray: Any, gpus_per_task: float, workers: int | None, threads: int) -> list:
    resources = ray.cluster_resources()
    if gpus_per_task:
        count = workers or int(resources.get("GPU", 0) // gpus_per_task)
        if count < 1:
            raise FeverdreamError(
                f"the cluster has {resources.get('GPU', 0):g} GPUs, fewer than "
                f"--gpus-per-task {gpus_per_task:g}"
            )
        shape = {"num_gpus": gpus_per_task, "num_cpus": 1}
    else:
        count = workers or max(1, int(resources.get("CPU", 1)) // threads)
        shape = {"num_cpus": threads}
    remote = ray.remote(**shape, max_restarts=4, max_task_retries=4)(_ShotWorker)
    actors = [remote.remote(threads) for _ in range(count)]
    ray.get([actor.pid.remote() for actor in actors])  # up, before the clock starts
    return actors


def _run(ray: Any, actors: list, jobs: list[Job], post, on_progress) -> None:
    """Hand each idle actor the next shot until all are done; a failed shot fails its
    storyboard (the others go on); a storyboard whose shots are all done is finished."""
    tasks = [(job, shot) for job in jobs for shot in job.shots]
    tasks.reverse()  # popped from the end: in the order given
    running: dict[Any, tuple[Any, Job, tuple[int, int]]] = {}
    idle = list(actors)
    started = time.perf_counter()
    for job in jobs:
        job.started = started

    def report() -> None:
        per = {job.name: (_frames_made(job), job.frames_total) for job in jobs}
        done = sum(d for d, _ in per.values())
        on_progress(BatchProgress(done, sum(t for _, t in per.values()), per))

    report()
    while tasks or running:
        while tasks and idle:
            job, shot = tasks.pop()
            if job.error is not None:
                continue  # a shot of it failed already: the rest would be wasted
            actor = idle.pop()
            running[actor.render.remote(str(job.path), job.options, shot)] = (actor, job, shot)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for future in ready:
            actor, job, shot = running.pop(future)
            idle.append(actor)
            try:
                job.done[shot] = ray.get(future)
            except ray.exceptions.RayError as error:
                job.error = job.error or _message(error)
            if job.error is None and len(job.done) == len(job.shots):
                _finish(job, post)
            elif job.error is not None and not any(j is job for _, j, _ in running.values()):
                job.seconds = time.perf_counter() - job.started
        report()


def _message(error: Exception) -> str:
    """What went wrong in a task, as its own error said it (not Ray's wrapping)."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, Exception) and str(cause).strip():
        return str(cause).strip()
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else repr(error)


def _finish(job: Job, post) -> None:
    assert job.story is not None and job.options is not None
    try:
        parts = [job.done[shot] for shot in job.shots]
        gathered = run.gather(job.story, job.options, parts)
        records = {part.shot[0] + i: r for part in parts for i, r in part.records.items()}
        models = parts[0].describe["models"]
        result = run.encode(job.story, job.options, gathered, models, records)
        job.video = result.video
        if post is not None:
            job.posted = post(job)
    except FeverdreamError as error:
        job.error = str(error)
    job.seconds = time.perf_counter() - job.started
