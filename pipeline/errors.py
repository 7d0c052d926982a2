"""Errors a user can act on: the CLI prints them as one message, with no traceback."""

from __future__ import annotations


class FeverdreamError(Exception):
    """A failure whose message tells the user what happened and what to do next."""

    exit_code = 1


class StoryboardError(FeverdreamError):
    """A storyboard that cannot be rendered, located at FILE:LINE and a key."""

    exit_code = 2

    def __init__(self, file: str, line: int | None, key: str, message: str):
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class RenderError(FeverdreamError):
    """The video could not be made: ffmpeg failed, or its inputs (frames, soundtrack) are bad."""


class VideoFileError(FeverdreamError):
    """A video file that is missing or cannot be read as a video at all."""

    exit_code = 2


class ModelError(FeverdreamError):
    """A model that cannot be found, fetched or loaded: unknown name, missing, corrupt, bad hash."""


class RenderChangedError(FeverdreamError):
    """The frames on disk were made from different settings than this render asks for."""

    exit_code = 2


class NotLoggedIn(FeverdreamError):
    """No usable TikTok login on this machine."""


class DiskFullError(FeverdreamError):
    """A write that found its disk full (or the user's quota spent). What was written before
    it is whole, so the same command goes on from there once there is room; the message
    names the folder and about how much more room the work needs."""

    def __init__(self, folder: object, needed: int | None, free: int | None, then: str = ""):
        self.folder, self.needed, self.free = folder, needed, free
        said = [f"{size(free)} free"] if free is not None else []
        said += [f"about {size(needed)} more needed"] if needed else []
        then = then or "free some space, then run the same command again"
        has = f" ({'; '.join(said)})" if said else ""
        super().__init__(f"the disk holding {folder} is full{has}: {then}")

    def needing(self, needed: int, then: str) -> DiskFullError:
        """The same failure, with the room the whole task needs and what to do then."""
        return DiskFullError(self.folder, max(needed, self.needed or 0), self.free, then)


def size(count: int | float) -> str:
    """Bytes in the unit a person reads at a glance: 512 B, 3.4 MB, 1.3 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def is_disk_full(error: BaseException) -> bool:
    """Whether an error is the disk (or the user's quota) being full."""
    import errno

    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
