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
