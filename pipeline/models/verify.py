"""`feverdream models verify`: is a model file someone copied by hand the file it should be?

For each file (a VQGAN, a CLIP or a depth model): its SHA-256 and whether that is the
published (or recorded) hash of a known model, whether it loads through the real loaders, what
architecture it is, and which registry entry it matches, with what to do when something is
off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ModelError
from pipeline.models.catalogue import (
    CLIPEntry,
    DepthEntry,
    Entry,
    Source,
    VQGANEntry,
    entries,
    find_entries,
    unknown_name_error,
)
from pipeline.models.files import entry_paths, file_sha256, recorded_sha256
from pipeline.models.tiny import ensure_built


@dataclass
class Verdict:
    """What `verify` found out about one model (a VQGAN's checkpoint with its yaml, a CLIP
    file, or a depth model's file)."""

    path: Path
    kind: str  # "vqgan", "clip" or "depth"
    sha256: str
    hash_note: str  # how the hash compares with what is known
    entry: str | None = None  # the registry model it is
    architecture: str = ""  # in words, once it loaded
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(name_or_path: str) -> list[Verdict]:
    """Check a registry model's files in the models folder (each kind a name has: `tiny`
    is a VQGAN, a CLIP and a depth model), or a file given by path."""
    named = find_entries(name_or_path)
    verdicts = []
    for entry in named:
        ensure_built(entry)
        missing = [path for path in entry_paths(entry) if not path.is_file()]
        if missing:
            raise ModelError(
                f"{entry.name} is not in the models folder ({missing[0]} is missing): "
                f"`feverdream models download {entry.name}`, or save the file there by hand"
            )
        verdicts.append(_verify_file(entry_paths(entry)[-1 if entry.kind == "vqgan" else 0], entry))
    if verdicts:
        return verdicts
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        if os.sep not in name_or_path and not path.suffix:
            raise unknown_name_error(name_or_path)
        raise ModelError(f"{path} does not exist")
    return [_verify_file(path, None)]


def _kind(path: Path) -> str:
    """What a file given by path is: a VQGAN by its name, a depth model by its tensors' names,
    else a CLIP."""
    from pipeline.models.depth import is_depth_checkpoint

    if path.suffix in (".ckpt", ".yaml"):
        return "vqgan"
    return "depth" if path.is_file() and is_depth_checkpoint(path) else "clip"


def _verify_file(path: Path, named: Entry | None) -> Verdict:
    kind = named.kind if named is not None else _kind(path)
    if kind == "vqgan" and path.suffix == ".yaml":
        path = path.with_suffix(".ckpt")
        if not path.is_file():
            raise ModelError(
                f"{path} is missing: a VQGAN is its .ckpt with its .yaml beside it; save the "
                "checkpoint there under that name and verify again"
            )
    sha256 = file_sha256(path)
    verdict = Verdict(path, kind, sha256, "")
    entry = named or _entry_by_hash(kind, sha256) or _entry_by_filename(kind, path.name)
    verdict.entry = entry.name if entry else None
    published = _published(entry, path) if entry else None
    if entry is None:
        verdict.hash_note = "matches no model feverdream knows (a model of your own is fine)"
    elif published and published == sha256:
        verdict.hash_note = f"matches the {_whose(entry, path)} hash of {entry.name}"
    elif published:
        verdict.hash_note = f"is not the {_whose(entry, path)} hash of {entry.name} ({published})"
        verdict.problems.append(
            f"this is not the file {entry.name} should be: it is corrupt, incomplete or "
            f"another file; delete it and `feverdream models download {entry.name}`"
        )
    else:
        verdict.hash_note = f"no hash of {entry.name} is published to compare it with"
    if kind == "vqgan":
        _load_vqgan(verdict, entry)
    elif kind == "depth":
        _load_depth(verdict, entry)
    else:
        _load_clip(verdict, entry)
    return verdict


def _entry_by_hash(kind: str, sha256: str) -> Entry | None:
    for entry in entries(kind).values():
        for file, path in zip(entry.files, entry_paths(entry), strict=True):  # never builds
            if sha256 in (file.sha256, recorded_sha256(path)):
                return entry
    return None


def _entry_by_filename(kind: str, filename: str) -> Entry | None:
    for entry in entries(kind).values():
        if entry.source is Source.DOWNLOAD and filename in (f.filename for f in entry.files):
            return entry
    return None


def _published(entry: Entry, path: Path) -> str | None:
    file = entry.checkpoint if isinstance(entry, VQGANEntry) else entry.file
    if file.sha256:
        return file.sha256
    # Not the file itself: what the download recorded beside the model folder's copy.
    own = entry_paths(entry)[-1 if isinstance(entry, VQGANEntry) else 0]
    return recorded_sha256(own) if own.resolve() != path.resolve() else None


def _whose(entry: Entry, path: Path) -> str:
    file = entry.checkpoint if isinstance(entry, VQGANEntry) else entry.file
    return "published" if file.sha256 else "recorded"


def _load_vqgan(verdict: Verdict, entry: Entry | None) -> None:
    from pipeline.models.vqgan import load_vqgan, read_vqgan_config

    config = verdict.path.with_suffix(".yaml")
    if not config.is_file():
        verdict.problems.append(
            f"its model.yaml is not beside it: save it as {config} (a VQGAN needs both files)"
        )
        return
    try:
        model = load_vqgan(verdict.path, config)
        architecture, _ = read_vqgan_config(config)
    except ModelError as error:
        verdict.problems.append(str(error))
        return
    verdict.architecture = (
        f"VQGAN f{model.downsample}, {architecture.n_embed} codes"
        + (", Gumbel quantizer" if architecture.gumbel else "")
        + f"; loads, and its weights fit {config.name}"
    )
    if isinstance(entry, VQGANEntry) and _weights_shape(architecture) != _weights_shape(
        entry.architecture
    ):
        verdict.problems.append(
            f"its yaml describes another architecture than {entry.name}'s; use the "
            f"model.yaml that came with {entry.name}"
        )


def _weights_shape(config) -> tuple:
    """What of a VQGAN's architecture decides its weights (not its training resolution)."""
    layout = {k: v for k, v in config.ddconfig.items() if k not in ("resolution", "dropout")}
    return config.embed_dim, config.n_embed, config.gumbel, sorted(layout.items())


def _load_clip(verdict: Verdict, entry: Entry | None) -> None:
    from pipeline.models.clip import load_clip

    try:
        clip = load_clip(verdict.path)
    except ModelError as error:
        verdict.problems.append(str(error))
        return
    verdict.architecture = (
        f"CLIP, {clip.input_resolution} px input, {clip.embed_dim}-d embeddings; loads"
    )
    if isinstance(entry, CLIPEntry) and clip.input_resolution != entry.input_resolution:
        verdict.problems.append(
            f"it takes {clip.input_resolution} px images, but {entry.name} takes "
            f"{entry.input_resolution} px: it is another model"
        )


def _load_depth(verdict: Verdict, entry: Entry | None) -> None:
    from pipeline.models.depth import load_depth

    try:
        model = load_depth(verdict.path)
    except ModelError as error:
        verdict.problems.append(str(error))
        return
    config = model.config
    verdict.architecture = (
        f"depth model (Depth Anything V2), a {config.embed_dim}-d ViT/{config.patch_size} of "
        f"{config.depth} blocks, {config.input_side} px input; loads"
    )
    if isinstance(entry, DepthEntry) and config != entry.architecture:
        verdict.problems.append(
            f"it is another architecture than {entry.name}'s: it is another model"
        )
