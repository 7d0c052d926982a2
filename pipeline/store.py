"""A render's folder on disk: frames written atomically, the resume state, the folder's lock.

Layout of outputs/<name>/ (or the folder given with -o):
  frames/000000.png ...   the engine's frames at canvas size
  frames/state-N.pt       what the engine needs to continue after optimised frame N (the
                          latest one only)
  and the render's record beside them (pipeline/record.py), which this module never reads.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import DiskFullError, FeverdreamError, RenderChangedError, is_disk_full

if TYPE_CHECKING:
    from pipeline.record import Record

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


class FrameStore:
    """The frames folder of one render: its frames and the engine's state to resume from
    (what they were made with is its record: pipeline/record.py). `start_over`: how to start
    it afresh, for the messages that refuse its frames (default: render's --fresh and -o; a
    batch's shot says its own)."""

    def __init__(self, folder: Path, start_over: str | None = None):
        self.folder = folder
        self.frames_dir = folder / "frames"
        self.start_over = start_over

    def refused(self, what: str, way_out: str, between: str = "\n") -> RenderChangedError:
        """Frames not continued: what is wrong, then what to do (`start_over`, if given)."""
        if self.start_over is not None:
            return RenderChangedError(f"{what}\n{self.start_over}")
        return RenderChangedError(f"{what}{between}{way_out}")

    def frame_path(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.png"

    def clear(self) -> None:
        """Remove the frames, state and record of an earlier render (for --fresh)."""
        if not self.frames_dir.exists():
            return
        for path in self.frames_dir.iterdir():
            if path.suffix in (".png", ".pt", ".json", ".tmp"):
                path.unlink()

    def finished_frames(self, record: Record) -> int:
        """How many frames from frame 0 on are finished (recorded and present on disk)."""
        count = 0
        while count in record.frames and self.frame_path(count).exists():
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
