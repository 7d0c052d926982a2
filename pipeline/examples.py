"""The example storyboards with their pictures and soundtracks: where they are (a checkout's
storyboards/ and audio/, or pipeline/example_files/ inside an installed wheel, where setup.py
puts them) and copying them out into a folder of the user's, as `feverdream examples DIR`
does."""

from __future__ import annotations

import filecmp
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import FeverdreamError

# Folder → the files in it that are examples. The storyboards name their soundtracks as
# ../audio/NAME.wav and their pictures as pictures/NAME.png, so the two folders travel together.
PACKAGED = "example_files"  # their folder in the package (setup.py)
PATTERNS = {
    "storyboards": ("*.yaml", "pictures/*.png"),
    "audio": ("*.wav", "README.md"),
}


def source() -> Path:
    """The folder holding storyboards/ and audio/: the package's own copy, else the checkout
    this package is imported from."""
    here = Path(__file__).resolve().parent
    for root in (here / PACKAGED, here.parent):
        if all((root / folder).is_dir() for folder in PATTERNS):
            return root
    raise FeverdreamError(
        "this feverdream install carries no example storyboards; install it from its wheel "
        "(pip wheel . in a checkout) or use a checkout's storyboards/ folder"
    )


def files(root: Path | None = None) -> list[Path]:
    """The example files, relative to `root` (default: `source()`)."""
    root = root or source()
    return [
        path.relative_to(root)
        for folder, patterns in PATTERNS.items()
        for pattern in patterns
        for path in sorted((root / folder).glob(pattern))
    ]


def storyboards() -> dict[str, Path]:
    """The example storyboards where they are now, by name (anxiety, demo-shapes, ...)."""
    folder = source() / "storyboards"
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


@dataclass
class Copied:
    """What `copy_to` did: files written, and the user's own files it left as they were."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # differ from the example: never replaced


def copy_to(folder: str | Path) -> Copied:
    """Copy the examples into FOLDER/storyboards and FOLDER/audio. A file already there and
    the same is left alone; one that differs is the user's and is kept, never overwritten."""
    root, folder = source(), Path(folder)
    copied = Copied(folder)
    for relative in files(root):
        source_file, target = root / relative, folder / relative
        if target.exists():
            if not filecmp.cmp(source_file, target, shallow=False):
                copied.kept.append(target)
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_file, target)
        except OSError as error:
            raise FeverdreamError(
                f"cannot write {target} ({error.strerror}): choose a folder you can write to"
            ) from None
        copied.written.append(target)
    return copied
