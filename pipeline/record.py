"""A render's record, and the one module that reads and writes it. Two files:

- RENDER_FOLDER/frames/manifest.json, a `Record`: the engine's settings (as
  `EngineSettings.record()` makes them, with the models, the pictures and the execution
  beside them), the plan (as `Plan.recorded` makes it) and each finished frame's loss and
  time. Resume, gathering a batch's shots, the batch's and the studio's counts and score read
  it through `read`; whether frames may be continued is `changes` (empty: the same render).
- RENDER_FOLDER/render.json, a `Summary`: how the finished video was made (storyboard,
  seed, models, device, versions, each frame's time), written once the video is.

The models are written as {"vqgan": {"name", "sha256"}, "clip": ...}, where "clip" is one
CLIP of weight 1 as {"name", "sha256"} (as records had it before several CLIPs were
possible), or a list of {"name", "sha256", "weight"}: `ModelsUsed` reads both.

Records from older feverdreams go through `_migrated`, the one place that knows their shapes:
version 1 left colour coherence and the camera hold out when they were off. Records made
before the engine aimed ahead of the plan (no "aim") are read, and refused by whoever would
continue or gather them (`Record.aims_ahead`); a file that is not a record at all is a
`RecordError` saying what to do.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import FeverdreamError, RenderChangedError
from pipeline.store import FrameStore, atomic_write, atomic_write_json

log = logging.getLogger(__name__)

# 2: colour coherence and the camera hold always written (1 left them out when off).
VERSION = 2
# What a model's digest is when no file was read (`--random-weights`).
RANDOM_WEIGHTS = "random weights"


class RecordError(FeverdreamError):
    """A record that cannot be read: damaged, or not one a feverdream wrote."""

    exit_code = 2


# --- the models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelUsed:
    """One model a render used: the name it was asked for by, its files' SHA-256 (", "-joined
    when several) or RANDOM_WEIGHTS, and its weight in the loss (CLIPs)."""

    name: str
    sha256: str
    weight: float = 1.0

    @property
    def random(self) -> bool:
        return self.sha256 == RANDOM_WEIGHTS


@dataclass(frozen=True)
class ModelsUsed:
    """The VQGAN and the CLIPs a render used, and the depth model of one with a 3D camera."""

    vqgan: ModelUsed
    clips: tuple[ModelUsed, ...]
    depth: ModelUsed | None = None

    def to_json(self) -> dict[str, Any]:
        """As a record and render.json write them."""
        clip: Any
        if len(self.clips) == 1 and self.clips[0].weight == 1:
            clip = {"name": self.clips[0].name, "sha256": self.clips[0].sha256}
        else:
            clip = [{"name": c.name, "sha256": c.sha256, "weight": c.weight} for c in self.clips]
        written = {"vqgan": {"name": self.vqgan.name, "sha256": self.vqgan.sha256}, "clip": clip}
        if self.depth is not None:
            written["depth"] = {"name": self.depth.name, "sha256": self.depth.sha256}
        return written

    @classmethod
    def from_json(cls, data: Any) -> ModelsUsed | None:
        """The models a record names, either way a CLIP is written; None when it names none,
        or not in a shape this feverdream wrote."""
        if not isinstance(data, Mapping):
            return None
        clip = data.get("clip")
        entries = [{**clip, "weight": 1.0}] if isinstance(clip, Mapping) else clip
        try:
            vqgan = _model(data.get("vqgan"), 1.0)
            clips = tuple(_model(entry, entry.get("weight")) for entry in entries or ())
            depth = _model(data["depth"], 1.0) if data.get("depth") is not None else None
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        return cls(vqgan, clips, depth) if clips else None

    def names(self) -> list[tuple[str, float | None]]:
        """The VQGAN's name (no weight) and each CLIP's name and weight, in order."""
        return [(self.vqgan.name, None)] + [(clip.name, clip.weight) for clip in self.clips]

    @property
    def random(self) -> tuple[bool, ...]:
        """Whether each model (the VQGAN, then the CLIPs, then any depth model) had random
        weights."""
        depth = () if self.depth is None else (self.depth,)
        return tuple(model.random for model in (self.vqgan, *self.clips, *depth))


def _model(entry: Any, weight: Any) -> ModelUsed:
    return ModelUsed(str(entry["name"]), str(entry.get("sha256") or ""), float(weight))


# --- the frames folder's record ---------------------------------------------------------------


@dataclass
class FrameRecord:
    """One finished frame: its loss (None for frames made between optimised ones, or with no
    steps) and the seconds it took."""

    loss: float | None
    seconds: float
    optimised: bool = True


@dataclass
class Record:
    """What a frames folder holds: the settings it was made with and each finished frame."""

    settings: dict[str, Any]
    plan: list[dict[str, Any]]  # each planned frame's entry, as `feverdream plan --json`
    frames: dict[int, FrameRecord] = field(default_factory=dict)

    @property
    def aims_ahead(self) -> bool:
        """Whether its frames were made by an engine that aims ahead of the plan (issue 36):
        an older one's are neither continued nor gathered with this one's."""
        return "aim" in self.settings

    @property
    def models(self) -> ModelsUsed | None:
        return ModelsUsed.from_json(self.settings.get("models"))

    @property
    def execution(self) -> dict[str, Any] | None:
        """How the engine computed (`Execution.from_record` reads it); None before renders
        recorded it."""
        execution = self.settings.get("execution")
        return execution if isinstance(execution, dict) else None

    @property
    def device(self) -> str:
        return str(self.settings.get("device", "cpu"))

    @property
    def pictures(self) -> dict[str, str]:
        """The pictures the prompts name, by name, with their files' SHA-256."""
        return dict(self.settings.get("pictures", {}))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "settings": self.settings,
            "plan": self.plan,
            "frames": {
                str(i): {"loss": r.loss, "seconds": r.seconds, "optimised": r.optimised}
                for i, r in sorted(self.frames.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = _migrated(data)
        frames = {
            int(i): FrameRecord(r["loss"], r["seconds"], r.get("optimised", True))
            for i, r in data.get("frames", {}).items()
        }
        return cls(dict(data["settings"]), list(data["plan"]), frames)


def _migrated(data: dict[str, Any]) -> dict[str, Any]:
    """A record of an older version in this version's shape: the one migration."""
    version = data.get("version", 1)
    if not isinstance(version, int):
        raise ValueError(f"version {version!r}")
    if version > VERSION:
        raise _Newer(version)
    if version < 2:  # colour coherence and the camera hold were left out when off
        settings = data["settings"]
        if "aim" in settings:  # an older engine's: kept as it was, for its refusal
            settings = {"color_coherence": "off", "camera_hold": 0, **settings}
        data = {**data, "settings": settings, "version": 2}
    return data


class _Newer(Exception):
    """A record written by a newer feverdream, whose shape this one does not know."""


def path(folder: Path) -> Path:
    """Where a render folder keeps its record."""
    return Path(folder) / "frames" / "manifest.json"


def read(store: FrameStore) -> Record | None:
    """The record of the frames in a render folder; None when there is none. A damaged one
    is refused (RenderChangedError), saying how to start the render over."""
    file = path(store.folder)
    if not file.exists():
        return None
    try:
        return Record.from_json(json.loads(file.read_text()))
    except _Newer as newer:
        raise store.refused(
            f"{file} was written by a newer feverdream (record version {newer.args[0]}; this "
            f"one reads up to {VERSION})",
            "finish the render with that feverdream, or run again with --fresh to start it "
            "over here (its frames are replaced)",
            between="; ",
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise store.refused(
            f"{file} is damaged ({error})",
            "run again with --fresh to start this render over",
            between="; ",
        ) from None


def read_folder(folder: Path) -> Record | None:
    """`read` of a render folder's record."""
    return read(FrameStore(Path(folder)))


def write(store: FrameStore, record: Record) -> None:
    atomic_write_json(path(store.folder), record.to_json())


def frames_done(folder: Path) -> int:
    """The frames from frame 0 on that a render folder has finished, by its record (0 when
    it has none, or one that cannot be read)."""
    store = FrameStore(Path(folder))
    try:
        record = read(store)
    except RenderChangedError:
        return 0
    return 0 if record is None else store.finished_frames(record)


# --- going on with the frames already made ----------------------------------------------------


def start(store: FrameStore, record: Record, fresh: bool, device: Any) -> dict[str, Any] | None:
    """Open a frames folder for a render described by `record`: the saved state of the
    optimised frame to continue after (the frames' records up to it copied into `record`),
    or None to start from frame 0 (the folder emptied).

    Frames made with other settings, or at frames the storyboard has since changed, are
    never overwritten: that is a RenderChangedError saying what to do.
    """
    old = _same_settings(store, record, fresh)
    state = _resume(store, old, record, device) if old is not None else None
    store.frames_dir.mkdir(parents=True, exist_ok=True)
    write(store, record)
    return state


def _same_settings(store: FrameStore, record: Record, fresh: bool) -> Record | None:
    """The record of the frames already there, if they were made the same way."""
    old = read(store)
    if fresh or old is None:
        if not fresh and any(store.frames_dir.glob("*.png")):
            raise store.refused(
                f"{store.frames_dir} holds frames without a record of how they were made",
                "render with --fresh to replace them, or -o to render elsewhere",
                between="; ",
            )
        store.clear()
        return None
    done = store.finished_frames(old)
    if record.aims_ahead and not old.aims_ahead:
        if done:
            raise _made_by_an_older_engine(store)
        store.clear()  # begun by an older engine, but no frame finished: nothing to keep
        return None
    found = changes(old, record, done)
    if found:
        raise store.refused(
            f"the frames in {store.frames_dir} were rendered with other settings:\n  "
            + "\n  ".join(found),
            f"run again with --fresh to start {store.folder.name} over (its frames are "
            "replaced), or render to another folder with -o",
        )
    return old


def _made_by_an_older_engine(store: FrameStore) -> RenderChangedError:
    """Frames made before the engine aimed ahead of the plan (issue 36): they are not
    continued (the frames this engine makes would not follow on from them), nor taken for
    this engine's, even when finished."""
    return store.refused(
        f"the frames in {store.frames_dir} were made by an older engine, one that followed "
        "the storyboard's prompts late; this one aims ahead so that keyframes land on time, "
        "and does not continue or rewrite an older one's frames",
        f"run again with --fresh to start {store.folder.name} over (its frames are replaced), "
        "render to another folder with -o, or finish it with the feverdream that began it",
    )


def _resume(store: FrameStore, old: Record, record: Record, device: Any) -> dict[str, Any] | None:
    done = store.finished_frames(old)
    changed = first_changed_frame(old.plan, record.plan)
    if changed is not None and changed < done:
        raise store.refused(
            f"the storyboard changed at frame {changed}, which is already rendered ({done} "
            f"frames are done): {describe_frame_change(old.plan, record.plan, changed)}",
            f"run again with --fresh to re-render {store.folder.name}, or render to another "
            "folder with -o",
        )
    # The latest optimised frame with a saved state: normally the last one finished; after a
    # storyboard grew, possibly a frame that is no longer on the new plan's rhythm.
    saved = sorted(int(file.stem.split("-")[1]) for file in store.frames_dir.glob("state-*.pt"))
    for index in reversed([i for i in saved if i < done]):
        state = store.load_state(index, device)
        if state is not None:
            record.frames = {i: r for i, r in old.frames.items() if i <= index}
            log.info("continuing after frame %d of %d", index, len(record.plan))
            return state
    if done:
        log.warning("no saved engine state in %s: rendering from the start", store.frames_dir)
    return None


def changes(old: Record, new: Record, frames_done: int) -> list[str]:
    """What differs between the settings the frames already made (`frames_done` of them)
    were made with and a render's: empty when the render may continue them. An execution is
    kept the same only once a frame was made under it (records from before executions were
    recorded go on under the new one)."""
    settings = old.settings
    if "execution" in new.settings and ("execution" not in settings or not frames_done):
        settings = {**settings, "execution": new.settings["execution"]}
    return _differences(settings, new.settings)


def same_render(a: Record, b: Record) -> bool:
    """Whether two records are of the same render: settings and plan, whatever execution
    each was computed with (shots made on other workers may each have had their own)."""

    def made(record: Record) -> dict[str, Any]:
        return {key: value for key, value in record.settings.items() if key != "execution"}

    return (made(a), a.plan) == (made(b), b.plan)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts."""
    found = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            found += [f"{key}.{change}" for change in _differences(before, after)]
        elif before != after:
            found.append(f"{key}: {before!r} → {after!r}")
    return found


def first_changed_frame(old: list[dict], new: list[dict]) -> int | None:
    """The first frame whose plan differs (None when the plans agree on every frame)."""
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        if a != b:
            return i
    if len(old) != len(new):
        return min(len(old), len(new))
    return None


def describe_frame_change(old: list[dict], new: list[dict], index: int) -> str:
    """What differs at one frame of two plans, in words."""
    if index >= len(new):
        return f"the video now ends before frame {index}"
    if index >= len(old):
        return f"the video now goes on after frame {index - 1}"
    a, b = old[index], new[index]
    parts = []
    for key in ("zoom", "rotate", "pan_x", "pan_y", "cut", "init_image", "init_strength"):
        if a.get(key) != b.get(key):
            parts.append(f"{key} {a.get(key)} → {b.get(key)}")
    if a.get("prompts") != b.get("prompts"):
        parts.append(f"prompts {a.get('prompts')} → {b.get('prompts')}")
    elif a.get("aim", a.get("prompts")) != b.get("aim", b.get("prompts")):
        parts.append(
            "the prompts it aims at, a little ahead of the plan (so that keyframes land on "
            f"time), {a.get('aim', a.get('prompts'))} → {b.get('aim', b.get('prompts'))}"
        )
    return f"at {b['t']:.2f}s: " + "; ".join(parts)


# --- render.json ----------------------------------------------------------------------------


# The packages that shape the pixels, whose versions render.json records (those installed).
_VERSIONED = (
    "feverdream",
    "torch",
    "torchvision",
    "open-clip-torch",
    "timm",
    "numpy",
    "pillow",
    "librosa",
    "imageio-ffmpeg",
    "av",
)


def package_versions() -> dict[str, str]:
    """Versions of Python, ffmpeg and the packages that shape the pixels (those installed)."""
    from importlib import metadata

    import imageio_ffmpeg

    versions = {"python": platform.python_version(), "ffmpeg": imageio_ffmpeg.get_ffmpeg_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Summary:
    """What render.json holds: enough to say how a video was made and to make it again."""

    storyboard_sha256: str
    seed: int
    models: dict[str, Any]  # as ModelsUsed.to_json writes them
    device: str
    frames: dict[int, FrameRecord]
    total_seconds: float
    versions: dict[str, str] = field(default_factory=package_versions)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        frames = sorted(self.frames.items())
        data["frames"] = [{"frame": i, "seconds": r.seconds, "loss": r.loss} for i, r in frames]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        frames = {int(f["frame"]): FrameRecord(f.get("loss"), f["seconds"]) for f in data["frames"]}
        return cls(str(data["storyboard_sha256"]), int(data["seed"]), dict(data["models"]),
                   str(data["device"]), frames, float(data["total_seconds"]),
                   dict(data.get("versions", {})))  # fmt: skip


def summary_path(folder: Path) -> Path:
    return Path(folder) / "render.json"


def write_summary(folder: Path, summary: Summary) -> Path:
    """Write render.json atomically."""
    out = summary_path(folder)
    text = json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n"
    atomic_write(out, lambda tmp: tmp.write_text(text))
    return out


def read_summary(folder: Path) -> Summary | None:
    """The render.json of a finished render; None when there is none. One this feverdream
    cannot read (damaged, or written by a much older one) is a RecordError saying what to do:
    its video and frames are kept, and removing it makes the video again from the frames."""
    file = summary_path(folder)
    if not file.is_file():
        return None
    try:
        return Summary.from_json(json.loads(file.read_text()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RecordError(
            f"{file} is not a render.json this feverdream reads ({error}): delete it and run "
            "again (the frames are kept, and the video is made again from them)"
        ) from None
