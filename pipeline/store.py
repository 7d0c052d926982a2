"""A render's folder on disk: frames written atomically, the manifest, and the resume state.

Layout of outputs/<name>/ (or the folder given with -o):
  frames/000000.png ...   the engine's frames at canvas size
  frames/manifest.json    what was rendered with which settings, per-frame loss and time
  frames/state.pt         what the engine needs to continue after the last finished frame

Every file is written to a temporary name and renamed into place, so a render killed at
any moment leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import FeverdreamError

MANIFEST_VERSION = 1


class RenderChangedError(FeverdreamError):
    """The frames on disk were made from different settings than this render asks for."""

    exit_code = 2


def atomic_write(path: Path, write: Callable[[Path], None], mode: int | None = None) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place.

    The file gets `mode` from its first byte on, or by default the permissions an ordinary
    new file would (mkstemp's own are owner-only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, data: Any, mode: int | None = None) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"), mode)


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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        records = {
            int(i): FrameRecord(r["loss"], r["seconds"], r.get("optimised", True))
            for i, r in data.get("frames", {}).items()
        }
        return cls(data["settings"], list(data["plan"]), records)


class FrameStore:
    """The frames folder of one render."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.frames_dir = folder / "frames"
        self.manifest_path = self.frames_dir / "manifest.json"
        self.state_path = self.frames_dir / "state.pt"

    def frame_path(self, index: int) -> Path:
        return self.frames_dir / f"{index:06d}.png"

    def read_manifest(self) -> Manifest | None:
        if not self.manifest_path.exists():
            return None
        try:
            return Manifest.from_json(json.loads(self.manifest_path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise RenderChangedError(
                f"{self.manifest_path} is damaged ({error}); run again with --fresh "
                "to start this render over"
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


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} → {new.get(key)!r}")
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
    for key in ("zoom", "rotate", "pan_x", "pan_y", "cut"):
        if a.get(key) != b.get(key):
            parts.append(f"{key} {a.get(key)} → {b.get(key)}")
    if a.get("prompts") != b.get("prompts"):
        parts.append(f"prompts {a.get('prompts')} → {b.get('prompts')}")
    return f"at {b['t']:.2f}s: " + "; ".join(parts)
