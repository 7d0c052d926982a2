"""Model files on this machine: the models folder (the environment variable
FEVERDREAM_MODELS, else the user cache (platformdirs) `feverdream/models`) and the package's
own, finding an entry's files or a file given by path, and their hashes. A downloaded file
has a `<file>.sha256` beside it recording the hash of what was fetched; later loads check the
file against it, or against the hash the entry carries (OpenAI's published one; the shapes
files')."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import platformdirs

from pipeline.errors import ModelError
from pipeline.models.catalogue import (
    Entry,
    ModelFile,
    Source,
    VQGANEntry,
    entries,
    find_entry,
    looks_like_path,
    unknown_name_error,
)
from pipeline.store import atomic_write


def packaged_dir() -> Path:
    """Where the package's own model files are (the shapes world's)."""
    return Path(str(resources.files("pipeline") / "assets" / "models"))


def models_dir() -> Path:
    """Where downloaded (and tiny) model files live."""
    override = os.environ.get("FEVERDREAM_MODELS")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("feverdream")) / "models"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def recorded_sha256(path: Path) -> str | None:
    """The hash recorded in `<file>.sha256` when the file was downloaded, if any."""
    record = Path(f"{path}.sha256")
    if not record.is_file():
        return None
    words = record.read_text().split()
    return words[0].lower() if words else None


def record_sha256(path: Path, sha256: str) -> None:
    """Write `<file>.sha256`, which later loads check the file against."""
    atomic_write(Path(f"{path}.sha256"), lambda tmp: tmp.write_text(f"{sha256}  {path.name}\n"))


def expected_sha256(file: ModelFile, path: Path) -> str | None:
    return file.sha256 or recorded_sha256(path)


def _missing_error(entry: Entry, file: ModelFile, path: Path) -> ModelError:
    if entry.source is Source.PACKAGED:
        return ModelError(
            f"{path} is missing from the installed package: reinstall feverdream "
            "(`make setup` in a checkout, or pip install again)"
        )
    return ModelError(
        f"{entry.name} is not downloaded ({path} is missing). Run "
        f"`feverdream models download {entry.name}`, or fetch {' or '.join(file.urls)} by "
        f"hand and save it as {path}."
    )


def entry_paths(entry: Entry) -> tuple[Path, ...]:
    """Where an entry's files are on this machine, in the order of `entry.files`: the
    package's own folder, or the models folder. A downloaded model's files may not be there
    yet, nor a built one's (`tiny.ensure_built` writes them)."""
    if entry.source is Source.PACKAGED:
        return tuple(packaged_dir() / file.filename for file in entry.files)
    return tuple(models_dir() / file.filename for file in entry.files)


def _present(entry: Entry) -> tuple[Path, ...]:
    """The entry's files, which must all be there."""
    paths = entry_paths(entry)
    for file, path in zip(entry.files, paths, strict=True):
        if not path.is_file():
            raise _missing_error(entry, file, path)
    return paths


def resolve_vqgan(
    name_or_path: str | os.PathLike[str], config: str | os.PathLike[str] | None = None
) -> tuple[Path, Path, str | None]:
    """(checkpoint, model.yaml, expected SHA-256 or None) for a registry name or a file path.

    A path names the .ckpt (its .yaml of the same stem beside it) or the .yaml (its .ckpt
    beside it); `config` names the yaml explicitly. Raises ModelError for an unknown name or a
    registry model that is not downloaded.
    """
    name = os.fspath(name_or_path)
    entry = find_entry("vqgan", name)
    if isinstance(entry, VQGANEntry):
        yaml, ckpt = _present(entry)
        return ckpt, yaml, expected_sha256(entry.checkpoint, ckpt)
    if not looks_like_path(name):
        raise unknown_name_error(name, "vqgan")
    path = Path(name).expanduser()
    ckpt = path.with_suffix(".ckpt") if path.suffix == ".yaml" else path
    yaml = Path(config).expanduser() if config is not None else ckpt.with_suffix(".yaml")
    for what, file in (("checkpoint", ckpt), ("config", yaml)):
        if not file.is_file():
            raise ModelError(
                f"the VQGAN {what} {file} does not exist (a checkpoint needs its model.yaml "
                "beside it, with the same name but .yaml)"
            )
    return ckpt, yaml, recorded_sha256(ckpt)


def resolve_clip(name_or_path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(the .pt file, expected SHA-256 or None) for a registry name or a file path."""
    return _resolve_one_file("clip", "CLIP file", name_or_path)


def resolve_depth(name_or_path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(the depth model's file, expected SHA-256 or None) for a registry name or a file path."""
    return _resolve_one_file("depth", "depth model file", name_or_path)


def _resolve_one_file(
    kind: str, what: str, name_or_path: str | os.PathLike[str]
) -> tuple[Path, str | None]:
    """A model of one file (a CLIP or a depth model) by registry name of this kind, which must
    be present, or by file path: the file and its expected SHA-256 or None."""
    name = os.fspath(name_or_path)
    entry = find_entry(kind, name)
    if entry is not None:
        ((file, path),) = zip(entry.files, _present(entry), strict=True)
        return path, expected_sha256(file, path)
    if not looks_like_path(name):
        raise unknown_name_error(name, kind)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"the {what} {path} does not exist")
    return path, recorded_sha256(path)


def model_paths(name: str) -> list[Path]:
    """The files of a registry model (a VQGAN's checkpoint and yaml, a CLIP's file, a depth
    model's file, or each of them for a name of several kinds), which must be present."""
    paths: list[Path] = []
    if find_entry("vqgan", name):
        paths += resolve_vqgan(name)[:2]
    if find_entry("clip", name):
        paths.append(resolve_clip(name)[0])
    if find_entry("depth", name):
        paths.append(resolve_depth(name)[0])
    if not paths:
        raise unknown_name_error(name)
    return paths


@dataclass(frozen=True)
class OnDisk:
    """Where a model a render names is, whether it is all there, and its size."""

    name: str
    kind: str  # "vqgan", "clip" or "depth"
    source: str  # how it comes: "download", "packaged", "built", or "file" (a path given)
    paths: tuple[Path, ...]
    present: bool
    size: int | None  # bytes on disk when present, else the stated size when known


def on_disk(kind: str, name: str) -> OnDisk:
    """A registry name's files where they are or will be (located, never built), or a
    file given by path."""
    entry = find_entry(kind, name)
    if entry is None:
        paths: tuple[Path, ...] = (Path(name).expanduser(),)
        source, stated = "file", None
    else:
        source, paths = entry.source.value, entry_paths(entry)
        sizes = [file.approx_bytes for file in entry.files if file.approx_bytes]
        stated = sum(sizes) if sizes else None
    present = all(path.is_file() for path in paths)
    size = sum(path.stat().st_size for path in paths) if present else stated
    return OnDisk(name, kind, source, paths, present, size)


@dataclass(frozen=True)
class ModelStatus:
    """One row of `feverdream models list`."""

    name: str
    present: bool
    paths: tuple[Path, ...]
    size: int | None  # bytes on disk when present, else the stated size when known
    notes: str
    source: Source

    @property
    def state(self) -> str:
        """present, missing, or "on use" for a model built when a render first uses it."""
        if self.present:
            return "present"
        return "on use" if self.source is Source.BUILT else "missing"


def status(kind: str) -> list[ModelStatus]:
    """What is known of this kind ("vqgan", "clip" or "depth"), and what is on this machine."""
    rows = []
    for entry in entries(kind).values():
        paths = entry_paths(entry)
        present = all(path.is_file() for path in paths)
        if present:
            size = sum(path.stat().st_size for path in paths)
        else:
            stated = [file.approx_bytes for file in entry.files if file.approx_bytes]
            size = sum(stated) if stated else None
        rows.append(ModelStatus(entry.name, present, paths, size, entry.notes, entry.source))
    return rows
