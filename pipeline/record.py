"""A render's record: what its manifest (frames/manifest.json) and render.json say it was made
with. So far the models (issue 37 moves the rest of the record here): this is the one place
that knows how they are written, and every reader (resume, batch, score) reads them through it.

The models are written as {"vqgan": {"name", "sha256"}, "clip": ...}, where "clip" is one
CLIP of weight 1 as {"name", "sha256"} (as manifests had it before several CLIPs were
possible), or a list of {"name", "sha256", "weight"}.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What a model's digest is when no file was read (`--random-weights`).
RANDOM_WEIGHTS = "random weights"


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
    """The VQGAN and the CLIPs a render used."""

    vqgan: ModelUsed
    clips: tuple[ModelUsed, ...]

    def to_json(self) -> dict[str, Any]:
        """As a manifest and render.json write them."""
        clip: Any
        if len(self.clips) == 1 and self.clips[0].weight == 1:
            clip = {"name": self.clips[0].name, "sha256": self.clips[0].sha256}
        else:
            clip = [{"name": c.name, "sha256": c.sha256, "weight": c.weight} for c in self.clips]
        return {"vqgan": {"name": self.vqgan.name, "sha256": self.vqgan.sha256}, "clip": clip}

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
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        return cls(vqgan, clips) if clips else None

    def names(self) -> list[tuple[str, float | None]]:
        """The VQGAN's name (no weight) and each CLIP's name and weight, in order."""
        return [(self.vqgan.name, None)] + [(clip.name, clip.weight) for clip in self.clips]

    @property
    def random(self) -> tuple[bool, ...]:
        """Whether each model (the VQGAN, then the CLIPs) had random weights."""
        return tuple(model.random for model in (self.vqgan, *self.clips))


def _model(entry: Any, weight: Any) -> ModelUsed:
    return ModelUsed(str(entry["name"]), str(entry.get("sha256") or ""), float(weight))
