"""feverdream as a library: the one door. The command line, the batch, the studio and the
notebook import this module (and pipeline.errors) and nothing else of the pipeline; what is
behind it is theirs to call only through it (pyproject.toml, [tool.importlinter]).

    from pipeline import run

    story = run.load("storyboards/anxiety.yaml")          # storyboard, soundtrack, plan
    result = run.render(story, run.RenderOptions(preview=True), on_progress=print)
    print(result.video, result.frames_done, result.stopped)
    print(run.check(result.video).accepted)
    run.post(result.video, "draft", say=print)

What a user calls: `load`, `render`, `check`, `post`, `score`, `bench`, and for a batch
`shots`, `render_shot` and `finish`. The rest are what those take and give (`Story`,
`RenderOptions`, `Progress`, `Rendered`), what a front end shows before a render (the plan's
table and plot, the frames and models a render needs) and the models' and TikTok's own verbs.
Nothing here prints or exits: progress goes to a callback, failures are the project's typed
errors (pipeline.errors), each with a message that says what to do next. Heavy modules
(torch, ffmpeg) load inside the calls that need them, so `load` and `validated` answer at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.models.catalogue import RANDOM_WEIGHTS_NOTE, TINY
from pipeline.rendering import download_models, frames_done, frames_folder, load_models, render
from pipeline.shots import (
    Held,
    ShotRendered,
    finish,
    folder_holds,
    render_shot,
    shot_frames_done,
    shots,
)
from pipeline.store import atomic_write, atomic_write_json
from pipeline.story import (
    Progress,
    Rendered,
    RenderOptions,
    Story,
    aim_lead,
    aim_settings,
    clip_names,
    depth_name,
    load,
    model_name,
    optimised_steps,
    pick_device,
    render_folder,
    render_settings,
    soundtrack,
    validated,
)
from pipeline.storyboard import RenderSettings, files_named, parse_size

if TYPE_CHECKING:
    from pipeline.check import Checked
    from pipeline.models.files import ModelStatus, OnDisk
    from pipeline.models.verify import Verdict
    from pipeline.score import Score
    from pipeline.settings import Execution, Speed
    from pipeline.tiktok import Account

__all__ = [
    # a storyboard, before any render
    "Story", "load", "validated", "models_named", "files_named", "plan_table", "plot",
    "parse_size", "aim_lead",
    "aim_settings",
    # rendering it
    "RenderOptions", "Progress", "Rendered", "render", "speed", "execution", "pick_device",
    "render_folder", "frames_folder", "render_settings", "optimised_steps", "frames_done",
    "model_name", "clip_names", "depth_name", "soundtrack", "load_models", "download_models",
    # a batch: its shots rendered apart, then finished as one
    "shots", "render_shot", "ShotRendered", "finish", "folder_holds", "Held",
    "shot_frames_done",
    # after the render
    "check", "post", "check_can_post", "score", "bench", "bench_settings", "describe_bench",
    # TikTok
    "login", "logout", "logged_in", "whoami", "account", "post_status",
    # models
    "models_folder", "models_status", "model_on_disk", "download_model", "fetch_model",
    "model_paths",
    "verify_model", "RANDOM_WEIGHTS_NOTE", "TINY",
    # the example storyboards, and files written whole or not at all
    "copy_examples", "example_storyboards", "atomic_write", "atomic_write_json",
]  # fmt: skip


# --- a storyboard, before any render --------------------------------------------------------


def models_named(path: str | Path) -> list[str]:
    """The models a storyboard names (VQGAN first, then its CLIPs, then the depth model of one
    with a 3D camera key), read without its soundtrack's analysis."""
    from pipeline.storyboard import load_storyboard

    board = load_storyboard(path)
    depth = [board.models.depth] if board.camera_3d else []
    return [board.models.vqgan, *(name for name, _ in board.models.clips), *depth]


def plan_table(story: Story, every_frame: bool = False) -> str:
    """The plan as `feverdream plan` prints it: a row per keyframe (or per frame)."""
    from pipeline.schedule import format_table

    return format_table(story.plan, every_frame=every_frame)


def plot(story: Story, out: str | Path) -> Path:
    """Motion and prompt weights over time, with where a full render aims, as a PNG."""
    from pipeline.plot import plot_plan

    board = story.board
    return plot_plan(story.plan, Path(out), title=board.title, aim=aim_settings(board))


# --- rendering it ---------------------------------------------------------------------------


def speed(
    engine: str = "fast",
    device: str = "cpu",
    cadence: int = 1,
    precision: str = "auto",
    latent_warp: bool = False,
) -> Speed:
    """The engine's speed options: the fast defaults for the device and cadence, or the
    classic loop (`engine="classic"`); `precision` "fp32" or "bf16" overrides the VQGAN's."""
    import dataclasses

    from pipeline.settings import CLASSIC, Speed

    chosen = CLASSIC if engine == "classic" else Speed.fast(device, cadence)
    if precision != "auto":
        chosen = dataclasses.replace(chosen, bf16=precision == "bf16")
    if latent_warp:
        chosen = dataclasses.replace(chosen, latent_warp=True)
    return chosen


def execution(
    engine: str = "fast", device: str = "cpu", speed: Speed | None = None, compile: bool = False
) -> Execution:
    """How the engine computes: the classic loop's way, or the fast one (compiled or not)."""
    import dataclasses

    from pipeline.settings import Execution

    if engine == "classic":
        return Execution()
    return dataclasses.replace(Execution.fast(device, speed), compile=compile)


# --- after the render -----------------------------------------------------------------------


def check(video: str | Path, max_duration: float | None = None) -> Checked:
    """Would TikTok accept this video file? What to change if not."""
    from pipeline.check import checked

    return checked(Path(video), max_duration)


def score(folder: str | Path, clip: str | None = "render", story: Story | None = None) -> Score:
    """How a render folder's frames hold up (pipeline.score): CLIP loss, flicker and colour
    drift, each as mean and worst second. `clip` is a CLIP's name or path, "render" (the
    one the frames were made with) or None (no CLIP loss); `story`, the storyboard, gives
    the files of its image prompts."""
    from pipeline.score import score_render

    images = dict(story.plan.images) if story is not None else None
    return score_render(Path(folder), clip, images)


def bench_settings(story: Story | None) -> RenderSettings:
    """What `bench` renders with: the storyboard's `render:` settings, or the defaults."""
    return story.board.render if story else RenderSettings()


def bench(story: Story | None, speeds: dict[str, Speed], device: str, **options: Any) -> dict:
    """Time the engine with random full-size weights (pipeline.bench.bench_engines' options),
    with the storyboard's models and settings (its depth model too, when it moves the 3D
    camera), or the defaults without one."""
    from pipeline.bench import bench_engines
    from pipeline.storyboard import Models

    if "depth" not in options and story is not None and story.board.camera_3d:
        options["depth"] = story.board.models.depth
    return bench_engines(
        speeds,
        device,
        bench_settings(story),
        story.board.models if story else Models(),
        plan=story.plan if story else None,
        video=((story.board.width, story.board.height), story.board.fps) if story else None,
        **options,
    )


def describe_bench(result: Any) -> str:
    """One bench result as `feverdream bench` prints it."""
    from pipeline.bench import describe

    return describe(result)


# --- TikTok ---------------------------------------------------------------------------------


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


def check_can_post(mode: str, caption: str = "", **options: Any) -> None:
    """Fail now, before a render, if a post with these options would be refused later."""
    from pipeline import tiktok

    tiktok.check_can_post(mode, caption=caption, **options)


def post_status(publish_id: str, *, say: Callable[[str], None] = lambda line: None) -> Any:
    """Where a post stands."""
    from pipeline import tiktok

    return tiktok.post_status(publish_id, say=say)


def login(
    *,
    paste: bool = False,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = lambda line: None,
    **options: Any,
) -> str:
    """Log in to TikTok and save the token (`pipeline.tiktok.login`): through a browser on
    this machine, or with `paste` (Colab, SSH) by pasting back, through `ask`, the address
    TikTok sent the browser to. Returns who logged in."""
    from pipeline import tiktok

    return tiktok.login(paste=paste, ask=ask, say=say, **options)


def logout(*, say: Callable[[str], None] = lambda line: None) -> None:
    from pipeline import tiktok

    tiktok.logout(say=say)


def whoami(*, say: Callable[[str], None] = lambda line: None) -> Any:
    from pipeline import tiktok

    return tiktok.whoami(say=say)


def account() -> Account:
    """Who is logged in, with which permissions (TikTokError when nobody is)."""
    from pipeline import tiktok

    return tiktok.account()


def logged_in() -> bool:
    """Whether a TikTok login is saved on this machine."""
    from pipeline import tiktok

    return tiktok.logged_in()


# --- models ---------------------------------------------------------------------------------


def models_folder() -> Path:
    """Where downloaded model files live (FEVERDREAM_MODELS, else the user cache)."""
    from pipeline.models.files import models_dir

    return models_dir()


def models_status(kind: str) -> list[ModelStatus]:
    """Every known model of a kind ("vqgan", "clip" or "depth"): here or not, size, paths."""
    from pipeline.models.files import status

    return status(kind)


def model_on_disk(kind: str, name: str) -> OnDisk:
    """Where a model a storyboard names is (registry name or file), whether it is there, and
    its size (as stated before it is downloaded)."""
    from pipeline.models.files import on_disk

    return on_disk(kind, name)


def download_model(name: str) -> list[Path]:
    """Fetch a registry model into the models folder (resumable); its files."""
    from pipeline.models.download import download

    return download(name)


def fetch_model(name: str, on_bytes: Callable[[int, int | None], None] | None = None) -> None:
    """Fetch a registry model a render names if its files are not here yet (nothing for a
    file, a model already here, or one built or shipped); `on_bytes(done, total)` follows
    each file."""
    from pipeline.models.download import ensure_downloaded

    ensure_downloaded(name, on_bytes)


def model_paths(name: str) -> list[Path]:
    """A model's files, built first if it is one feverdream builds (tiny)."""
    from pipeline.models.catalogue import find_entries
    from pipeline.models.files import model_paths as paths
    from pipeline.models.tiny import ensure_built

    ensure_built(*find_entries(name))
    return paths(name)


def verify_model(target: str) -> list[Verdict]:
    """Check model files (a registry name or a file): hash, loads, architecture, which."""
    from pipeline.models.verify import verify

    return verify(target)


# --- the example storyboards ----------------------------------------------------------------


def copy_examples(folder: str | Path) -> Any:
    """Copy the example storyboards, pictures and soundtracks into FOLDER (yours are kept)."""
    from pipeline import examples

    return examples.copy_to(folder)


def example_storyboards() -> dict[str, Path]:
    """The example storyboards where they are now, by name."""
    from pipeline import examples

    return examples.storyboards()
