"""Many storyboards, and the shots of each, rendered on a Ray cluster (issue 24).

Each shot of each storyboard (`run.shots`: from the start or a cut to the next cut) is one
task, run by a `ShotWorker` actor that keeps its models loaded between tasks (one actor per
GPU, or per CPU core when there is none). A shot renders into its own folder through the
frame store, so a task whose worker dies is retried by Ray and continues from the frames and
engine state already saved, as a resumed local render does. When every shot of a storyboard
is done, its frames are gathered in its render folder as `feverdream render` leaves them, and
it is encoded (and posted, if asked) once. Progress is read from the shots' records on the
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
    gathered: bool = False  # every frame made by an earlier batch: only the video is left
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


def _frames_made(job: Job) -> int:
    """Frames of this storyboard on disk: those of finished shots, and those the shots
    still rendering have recorded."""
    assert job.story is not None and job.options is not None
    return sum(
        shot[1] - shot[0]
        if shot in job.done
        else run.shot_frames_done(job.story, job.options, shot)
        for shot in job.shots
    )


def _connect(cluster: str | None, threads: int) -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_RAY) from None
    address = cluster or os.environ.get("RAY_ADDRESS") or "local"
    # The workers see this process's models folder, caches and config, wherever they run.
    env = {key: value for key, value in os.environ.items() if key.startswith("FEVERDREAM_")}
    env["OMP_NUM_THREADS"] = str(threads)
    if address == "local":
        ray.init(
            address="local",  # a new Ray of our own, never one already running here
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

    def place(self) -> tuple[str, tuple[str, ...]]:
        """Where this worker's memory is: its machine, and the GPUs Ray gave it (none for a
        CPU worker, which shares the machine's memory)."""
        import ray

        return ray.get_runtime_context().get_node_id(), tuple(map(str, ray.get_gpu_ids()))

    def render(
        self,
        path: str,
        sha256: str,
        options: run.RenderOptions,
        shot: tuple[int, int],
        sharing: int = 1,
    ):
        """Render one shot; `sharing`: the workers (this one included) whose steps share
        this one's memory, each fitted to its part of it."""
        story = run.load(path)
        if story.board.sha256 != sha256:
            raise FeverdreamError(
                f"{path} changed while the batch ran: its shots would not fit together; "
                "run the batch again"
            )
        device = run.pick_device(options.device)
        key = (run.model_name(story, options), run.clip_names(story, options),
               run.depth_name(story, options), device, options.random_weights)  # fmt: skip
        if key not in self.models:
            self.models.clear()  # one set of models in memory at a time
            self.models[key] = run.load_models(story, options, device)
        return run.render_shot(story, options, shot, self.models[key], sharing=sharing)


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
    if options.frames is not None or options.fresh:
        raise FeverdreamError(
            "a batch renders whole storyboards and continues what is there: frames A:B and "
            "--fresh are for `feverdream render`"
        )
    jobs = [Job(path) for path in storyboards(paths)]
    names: dict[str, Path] = {}
    for job in jobs:
        try:
            job.story = run.load(job.path)
            run.soundtrack(job.story, options)  # a bad soundtrack fails now, not after frames
        except FeverdreamError as error:
            job.error = str(error)
            continue
        name = job.story.board.name
        if name in names:
            job.error = (
                f"{job.path}: another storyboard of this batch, {names[name]}, has the same "
                f"name ({name}) and would render into the same folder; rename one"
            )
            continue
        names[name] = job.path
        output = (options.output or Path("outputs")).resolve() / name
        job.options = _with(options, output=output, encode=False)
        job.shots = run.shots(job.story.plan)
        held = run.folder_holds(job.story, job.options)
        job.skipped, job.error, job.gathered = held.finished, held.conflict, held.gathered
    todo = [job for job in jobs if job.error is None and not job.skipped]
    gathered = [job for job in todo if job.gathered]
    for job in gathered:  # an earlier batch rendered every frame, then stopped: encode only
        _finish(job, post)
    todo = [job for job in todo if job not in gathered]
    if not todo:
        return jobs
    _download_first(todo)
    todo = [job for job in todo if job.error is None]
    if not todo:
        return jobs

    threads = 1
    ray = _connect(cluster, threads)
    try:
        actors = _start_actors(ray, gpus_per_task, workers, threads)
        on_ready(ray, [actor for actor, _ in actors])
        _run(ray, actors, todo, post, on_progress)
    finally:
        ray.shutdown()
    return jobs


def _download_first(jobs: list[Job]) -> None:
    """Fetch the models every storyboard names once, here, before any worker starts: two
    workers of one machine must not download the same file into its models folder at once.
    A storyboard whose models cannot be had fails now, with the download's message."""
    for job in jobs:
        assert job.story is not None and job.options is not None
        try:
            run.download_models(job.story, job.options)
        except FeverdreamError as error:
            job.error = str(error)


def _with(options: run.RenderOptions, **changes: Any) -> run.RenderOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)


def _start_actors(ray: Any, gpus_per_task: float, workers: int | None, threads: int) -> list:
    resources = ray.cluster_resources()
    if gpus_per_task:
        fit = int(resources.get("GPU", 0) // gpus_per_task)
        shape = {"num_gpus": gpus_per_task, "num_cpus": 1}
        what = f"{resources.get('GPU', 0):g} GPUs at --gpus-per-task {gpus_per_task:g}"
    else:
        fit = int(resources.get("CPU", 1)) // threads
        shape = {"num_cpus": threads}
        what = f"{resources.get('CPU', 0):g} CPUs, one per worker"
    count = workers or fit
    if count < 1 or count > fit:
        raise FeverdreamError(
            f"the cluster has room for {fit} render workers ({what}), not {count}: "
            "ask for fewer with --workers, or add machines"
        )
    remote = ray.remote(**shape, max_restarts=4, max_task_retries=4)(_ShotWorker)
    actors = [remote.remote(threads) for _ in range(count)]
    places = ray.get([actor.place.remote() for actor in actors])  # up, before the clock starts
    return [(actor, places.count(place)) for actor, place in zip(actors, places, strict=True)]


def _run(ray: Any, actors: list[tuple[Any, int]], jobs: list[Job], post, on_progress) -> None:
    """Hand each idle actor the next shot until all are done; a failed shot fails its
    storyboard (the others go on); a storyboard whose shots are all done is finished.
    `actors`: each with the number of workers that share its memory."""
    sharing = {id(actor): count for actor, count in actors}
    tasks = [(job, shot) for job in jobs for shot in job.shots]
    tasks.reverse()  # popped from the end: in the order given
    running: dict[Any, tuple[Any, Job, tuple[int, int]]] = {}
    idle = [actor for actor, _ in actors]
    begun: set[int] = set()  # the jobs whose first shot has gone to a worker

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
            if id(job) not in begun:  # its wall time counts from its first shot
                begun.add(id(job))
                job.started = time.perf_counter()
            assert job.story is not None
            task = actor.render.remote(str(job.path), job.story.board.sha256, job.options, shot,
                                       sharing[id(actor)])  # fmt: skip
            running[task] = (actor, job, shot)
        if not running and tasks:
            for job, _ in tasks:
                job.error = job.error or "every render worker died (see the errors above)"
            break
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        for future in ready:
            actor, job, shot = running.pop(future)
            try:
                job.done[shot] = ray.get(future)
                idle.append(actor)
            except ray.exceptions.ActorDiedError as error:
                # Ray restarted it and retried the shot as often as allowed: give the shot to
                # another worker, and this one no more.
                log.warning("a render worker died for good (%s)", _message(error))
                if actors_left := len(idle) + len(running):
                    tasks.append((job, shot))
                    log.info("%s: shot %s goes to another of %d workers", job.name, shot,
                             actors_left)  # fmt: skip
                else:
                    job.error = job.error or _message(error)
            except ray.exceptions.RayError as error:
                idle.append(actor)
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
        # Without shots done here, every frame was gathered by an earlier batch.
        job.video = run.finish(job.story, job.options, list(job.done.values())).video
        if post is not None:
            job.posted = post(job)
    except FeverdreamError as error:
        job.error = str(error)
    except Exception as error:  # a full disk, ffmpeg, the network: this one fails, not all
        log.exception("%s failed after its frames were made", job.name)
        job.error = f"{type(error).__name__}: {error} (its frames are kept; run again)"
    job.seconds = time.perf_counter() - job.started
