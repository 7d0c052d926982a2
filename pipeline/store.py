"""A render's folder on disk: frames written atomically, the manifest, and the resume state.

Layout of outputs/<name>/ (or the folder given with -o):
  frames/000000.png ...   the engine's frames at canvas size
  frames/manifest.json    what was rendered with which settings, per-frame loss and time
  frames/state-N.pt       what the engine needs to continue after optimised frame N (the
                          latest one only)

Every file is written to a temporary name and renamed into place, so a render killed at
any moment, or stopped by a full disk, leaves either the old or the new file, never half of
one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import DiskFullError, FeverdreamError, RenderChangedError, is_disk_full

MANIFEST_VERSION = 1

log = logging.getLogger(__name__)


def atomic_write(path: Path, write: Callable[[Path], None], mode: int | None = None) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place.

    The file gets `mode` from its first byte on, or by default the permissions an ordinary
    new file would (mkstemp's own are owner-only). A full disk is a DiskFullError naming the
    folder, the part written removed.
    """
    tmp = None
    # The part written is removed before the disk's free space is read for the message.
    with full_disk_said(path.parent):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            tmp = Path(name)
            os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
            os.close(fd)
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)


@contextmanager
def full_disk_said(folder: Path) -> Iterator[None]:
    """A full disk met by any write inside (a folder made, a lock taken) as a DiskFullError
    naming `folder`, not an OSError's traceback."""
    try:
        yield
    except OSError as error:
        if not is_disk_full(error):
            raise
        raise DiskFullError(folder, None, free_space(folder)) from None


def free_space(folder: Path) -> int | None:
    """Bytes an ordinary user may still write on the disk holding `folder` (None if unknown)."""
    for place in (folder, *folder.parents):
        try:
            stats = os.statvfs(place)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, data: Any, mode: int | None = None) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"), mode)


RETRY_LOCK_S = 0.25  # how long a render waits for a folder's lock (see render_lock)


@contextmanager
def render_lock(folder: Path) -> Iterator[None]:
    """One render of a folder at a time, across processes and threads (the studio, the
    command line, a notebook): two writing the same frames and video would spoil both. The
    lock is RENDER_FOLDER/.lock (filelock's flock), held while the render runs and removed
    before it is let go, so that nothing is left behind. One who opened the old file just then
    finds it gone once it is let go (filelock checks) and tries the path again, within
    RETRY_LOCK_S; while a render holds the folder, the next is refused."""
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


@dataclass
class FrameRecord:
    loss: float | None  # None for frames made between optimised ones, or with no steps
    seconds: float
    optimised: bool = True


@dataclass
class Manifest:
    """What a frames folder holds: the settings it was made with and each finished frame."""

    settings: dict[str, Any]
    plan: list[dict[str, Any]]  # each planned frame's entry, as `feverdream plan --json`
    records: dict[int, FrameRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "settings": self.settings,
            "plan": self.plan,
            "frames": {
                str(i): {"loss": r.loss, "seconds": r.seconds, "optimised": r.optimised}
                for i, r in sorted(self.records.items())
            },
        }

    @property
    def aims_ahead(self) -> bool:
        """Whether its frames were made by an engine that aims ahead of the plan (issue 36):
        an older one's are neither continued nor gathered with this one's."""
        return "aim" in self.settings

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        records = {
            int(i): FrameRecord(r["loss"], r["seconds"], r.get("optimised", True))
            for i, r in data.get("frames", {}).items()
        }
        return cls(data["settings"], list(data["plan"]), records)


class FrameStore:
    """The frames folder of one render. `start_over`: how to start it afresh, for the messages
    that refuse its frames (default: render's --fresh and -o; a batch's shot says its own)."""

    def __init__(self, folder: Path, start_over: str | None = None):
        self.folder = folder
        self.frames_dir = folder / "frames"
        self.manifest_path = self.frames_dir / "manifest.json"
        self.start_over = start_over

    def _refused(self, what: str, way_out: str, between: str = "\n") -> RenderChangedError:
        """Frames not continued: what is wrong, then what to do (`start_over`, if given)."""
        if self.start_over is not None:
            return RenderChangedError(f"{what}\n{self.start_over}")
        return RenderChangedError(f"{what}{between}{way_out}")

    def frame_path(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.png"

    def read_manifest(self) -> Manifest | None:
        if not self.manifest_path.exists():
            return None
        try:
            return Manifest.from_json(json.loads(self.manifest_path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise self._refused(
                f"{self.manifest_path} is damaged ({error})",
                "run again with --fresh to start this render over",
                between="; ",
            ) from None

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(self.manifest_path, manifest.to_json())

    def clear(self) -> None:
        """Remove the frames and state of an earlier render (for --fresh)."""
        if not self.frames_dir.exists():
            return
        for path in self.frames_dir.iterdir():
            if path.suffix in (".png", ".pt", ".json", ".tmp"):
                path.unlink()

    def finished_frames(self, manifest: Manifest) -> int:
        """How many frames from frame 0 on are finished (recorded and present on disk)."""
        count = 0
        while count in manifest.records and self.frame_path(count).exists():
            count += 1
        return count

    # --- the engine's state, for resuming --------------------------------------------------

    def state_path(self, frame: int) -> Path:
        return self.frames_dir / f"state-{frame:06d}.pt"

    def save_state(self, frame: int, state: dict[str, Any]) -> None:
        """What the engine needs to continue after optimised frame `frame`."""
        import torch

        state = {"frame": frame, **state}
        # Made in memory and written as bytes: torch.save writing to a full disk fails with
        # its own RuntimeError, where a plain write says ENOSPC.
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.state_path(frame), lambda tmp: tmp.write_bytes(buffer.getbuffer()))

    def drop_state(self, frame: int) -> None:
        self.state_path(frame).unlink(missing_ok=True)

    def load_state(self, frame: int, device: Any) -> dict[str, Any] | None:
        import torch

        path = self.state_path(frame)
        if not path.exists():
            return None
        state = torch.load(path, map_location=device, weights_only=True)
        return state if state.get("frame") == frame else None

    def start(self, manifest: Manifest, fresh: bool, device: Any) -> dict[str, Any] | None:
        """Open the folder for a render described by `manifest`: the saved state of the
        optimised frame to continue after (its records copied into `manifest`), or None to
        start from frame 0 (the folder emptied).

        Frames made with other settings, or at frames the storyboard has since changed,
        are never overwritten: that is a RenderChangedError saying what to do.
        """
        old = self._same_settings(manifest, fresh)
        if old is not None:
            state = self._resume(old, manifest, device)
        else:
            state = None
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.write_manifest(manifest)
        return state

    def _same_settings(self, manifest: Manifest, fresh: bool) -> Manifest | None:
        """The manifest of the frames already here, if they were made the same way."""
        old = self.read_manifest()
        if fresh or old is None:
            if not fresh and any(self.frames_dir.glob("*.png")):
                raise self._refused(
                    f"{self.frames_dir} holds frames without a manifest",
                    "render with --fresh to replace them, or -o to render elsewhere",
                    between="; ",
                )
            self.clear()
            return None
        settings = old.settings
        if manifest.aims_ahead and not old.aims_ahead:
            if self.finished_frames(old):
                raise self._made_by_an_older_engine()
            self.clear()  # begun by an older engine, but no frame finished: nothing to keep
            return None
        if "execution" in manifest.settings and (
            "execution" not in settings or not self.finished_frames(old)
        ):
            # Frames from before renders recorded their execution (they go on under this
            # one), or none made yet: nothing to keep the same as.
            settings = {**settings, "execution": manifest.settings["execution"]}
        changes = describe_changes(settings, manifest.settings)
        if changes:
            raise self._refused(
                f"the frames in {self.frames_dir} were rendered with other settings:\n  "
                + "\n  ".join(changes),
                f"run again with --fresh to start {self.folder.name} over (its frames are "
                "replaced), or render to another folder with -o",
            )
        return old

    def _made_by_an_older_engine(self) -> RenderChangedError:
        """Frames made before the engine aimed ahead of the plan (issue 36): they are not
        continued (the frames this engine makes would not follow on from them), nor taken
        for this engine's, even when finished."""
        return self._refused(
            f"the frames in {self.frames_dir} were made by an older engine, one that followed "
            "the storyboard's prompts late; this one aims ahead so that keyframes land on time, "
            "and does not continue or rewrite an older one's frames",
            f"run again with --fresh to start {self.folder.name} over (its frames are replaced), "
            "render to another folder with -o, or finish it with the feverdream that began it",
        )

    def _resume(self, old: Manifest, manifest: Manifest, device: Any) -> dict[str, Any] | None:
        done = self.finished_frames(old)
        changed = first_changed_frame(old.plan, manifest.plan)
        if changed is not None and changed < done:
            raise self._refused(
                f"the storyboard changed at frame {changed}, which is already rendered ({done} "
                f"frames are done): {describe_frame_change(old.plan, manifest.plan, changed)}",
                f"run again with --fresh to re-render {self.folder.name}, or render to another "
                "folder with -o",
            )
        # The latest optimised frame with a saved state: normally the last one finished;
        # after a storyboard grew, possibly a frame that is no longer on the new plan's rhythm.
        saved = sorted(int(path.stem.split("-")[1]) for path in self.frames_dir.glob("state-*.pt"))
        for index in reversed([i for i in saved if i < done]):
            state = self.load_state(index, device)
            if state is not None:
                manifest.records = {i: r for i, r in old.records.items() if i <= index}
                log.info("continuing after frame %d of %d", index, len(manifest.plan))
                return state
        if done:
            log.warning("no saved engine state in %s: rendering from the start", self.frames_dir)
        return None


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts."""
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changes += [f"{key}.{change}" for change in describe_changes(before, after)]
        elif before != after:
            changes.append(f"{key}: {before!r} → {after!r}")
    return changes


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
