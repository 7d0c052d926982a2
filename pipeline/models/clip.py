"""CLIP for the engine: text and image embeddings, from OpenAI's `.pt` files and OpenCLIP's.

The network is open_clip's implementation of OpenAI's architecture (its parameter names are
OpenAI's), built in float32 with the sizes read off the file's tensor shapes. OpenAI ships its
models as TorchScript archives, which `torch.load` would hand to `torch.jit.load`, running the
code inside; here only their tensors are read, by the restricted unpickler. OpenCLIP's own
models (LAION-2B) are state dicts of the same names, as `.bin` (a pickle, read the same way)
or `.safetensors`; they were trained with plain GELU where OpenAI's use QuickGELU, and some
with other pixel statistics, which their registry entry says (`CLIPVariant`).

Tensor conventions: images are float32 NCHW in [0, 1] at `input_resolution` pixels square;
embeddings are float32 (N, embed_dim), L2-normalised.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from pipeline.errors import ModelError
from pipeline.models.architectures import OPENAI, OPENAI_MEAN, OPENAI_STD, CLIPVariant
from pipeline.models.checkpoint import (
    Checkpoint,
    Safetensors,
    is_safetensors,
    kind_of,
    load_state_checked,
    module_tensors,
    state_dict_refs,
    verify_sha256,
)
from pipeline.store import atomic_write

log = logging.getLogger(__name__)

CLIP_MEAN, CLIP_STD = OPENAI_MEAN, OPENAI_STD
# OpenAI's archives keep these as tensors beside the weights; the sizes are read from shapes.
_METADATA = ("input_resolution", "context_length", "vocab_size")
_HEAD_WIDTH = 64  # every OpenAI CLIP uses 64-wide attention heads


def _indices(tensors: dict[str, Any], prefix: str) -> int:
    """How many numbered children `prefix` has: `prefix0.…`, `prefix1.…`, …"""
    return len({key[len(prefix) :].split(".", 1)[0] for key in tensors if key.startswith(prefix)})


def _grid(positions: int, path: Path) -> int:
    side = math.isqrt(positions - 1)
    if side * side + 1 != positions:
        raise ModelError(f"{path}: a positional embedding of {positions} rows is not a square grid")
    return side


def config_from_state_dict(
    tensors: dict[str, Any], path: Path, looks_like: str = ""
) -> dict[str, Any]:
    """The architecture of an OpenAI CLIP state dict, in open_clip's model-config layout;
    `looks_like` says what the file is instead, should it not be one ("; it looks like ...")."""
    try:
        if "visual.proj" in tensors:
            conv = tensors["visual.conv1.weight"]
            patch = conv.shape[-1]
            vision = {
                "layers": _indices(tensors, "visual.transformer.resblocks."),
                "width": conv.shape[0],
                "patch_size": patch,
                "image_size": patch * _grid(tensors["visual.positional_embedding"].shape[0], path),
            }
        else:
            pool = tensors["visual.attnpool.positional_embedding"].shape[0]
            vision = {
                "layers": tuple(_indices(tensors, f"visual.layer{i}.") for i in range(1, 5)),
                "width": tensors["visual.layer1.0.conv1.weight"].shape[0],
                "patch_size": None,
                "image_size": 32 * _grid(pool, path),
            }
        width = tensors["ln_final.weight"].shape[0]
        text = {
            "context_length": tensors["positional_embedding"].shape[0],
            "vocab_size": tensors["token_embedding.weight"].shape[0],
            "width": width,
            "heads": width // _HEAD_WIDTH,
            "layers": _indices(tensors, "transformer.resblocks."),
        }
        return {
            "embed_dim": tensors["text_projection"].shape[1],
            "vision_cfg": vision,
            "text_cfg": text,
        }
    except (KeyError, IndexError) as error:
        raise ModelError(
            f"{path} is not an OpenAI CLIP model: it has no tensor {error}{looks_like}. "
            "Use one of OpenAI's .pt files (see `feverdream models list`)."
        ) from error


def build_clip(config: dict[str, Any], quick_gelu: bool = True) -> CLIP:
    """A CLIP (float32) from an open_clip model config: OpenAI's architecture with its
    QuickGELU, or with `quick_gelu=False` the plain GELU OpenCLIP's own models train with."""
    vision = CLIPVisionCfg(**config["vision_cfg"])
    text = CLIPTextCfg(**config["text_cfg"])
    return CLIP(config["embed_dim"], vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu)


class CLIPModel(nn.Module):
    """CLIP with the engine's conventions: texts in, images in [0, 1] in, unit vectors out."""

    def __init__(self, model: CLIP, input_resolution: int, variant: CLIPVariant = OPENAI):
        super().__init__()
        self.model = model
        self.input_resolution = input_resolution
        self.context_length: int = model.context_length
        self.embed_dim: int = model.text_projection.shape[1]
        mean, std = torch.tensor(variant.mean), torch.tensor(variant.std)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        # Where the weights came from, for the render's record: file -> SHA-256 (empty: random).
        self.checksums: dict[str, str] = {}
        self.eval().requires_grad_(False)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(N, embed_dim) unit vectors, without gradient; texts past 77 tokens are cut."""
        tokens = open_clip.tokenize(texts, context_length=self.context_length)
        with torch.no_grad():
            return self.model.encode_text(tokens.to(self.mean.device), normalize=True)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [0, 1], R = input_resolution -> (N, embed_dim) unit vectors,
        differentiable with respect to the images."""
        size = self.input_resolution
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"CLIP takes (N, 3, {size}, {size}) images, not {tuple(images.shape)}")
        return self.model.encode_image((images - self.mean) / self.std, normalize=True)


def random_clip(config: dict[str, Any], seed: int = 0, variant: CLIPVariant = OPENAI) -> CLIPModel:
    """A CLIP of this architecture with random weights drawn from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_clip(config, variant.quick_gelu)
    return CLIPModel(model, _resolution(config), variant)


def _resolution(config: dict[str, Any]) -> int:
    size = config["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def load_clip(
    path: Path, sha256: str | None = None, name: str = "", variant: CLIPVariant = OPENAI
) -> CLIPModel:
    """Load a CLIP file: OpenAI's `.pt` (a TorchScript archive), or a state dict of the same
    parameter names (OpenCLIP's `open_clip_pytorch_model.bin` or `.safetensors`, with the
    `variant` its registry entry gives); eval mode, no gradients.

    The SHA-256 is checked against `sha256` (when given) before the file is read. `name` is
    the registry name, used in error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"the CLIP file {path} does not exist")
    checksum = verify_sha256(path, sha256, name)
    if is_safetensors(path):
        with Safetensors(path) as tensors:
            refs: dict[str, Any] = dict(tensors.refs)
            config = config_from_state_dict(refs, path)
            model = build_clip(config, variant.quick_gelu)
            what = f"{path} does not fit the CLIP built from it"
            load_state_checked(model, refs, tensors, what, ignore_extra=True)
    else:
        with Checkpoint(path) as checkpoint:
            if checkpoint.is_torchscript:
                refs = module_tensors(checkpoint.root)
            else:
                refs = state_dict_refs(checkpoint.root, path)
            for key in _METADATA:
                refs.pop(key, None)
            looks_like = f"; it looks like {kind_of(checkpoint.root)}"
            config = config_from_state_dict(refs, path, looks_like)
            model = build_clip(config, variant.quick_gelu)
            # TorchScript keeps plain tensor attributes (the text attention mask) beside the
            # weights.
            what = f"{path} does not fit the CLIP built from it"
            load_state_checked(model, refs, checkpoint, what, ignore_extra=True)
    clip = CLIPModel(model, _resolution(config), variant)
    clip.checksums = {path.name: checksum}
    log.debug("loaded CLIP %s (%d px, %d-d)", path, clip.input_resolution, clip.embed_dim)
    return clip


def save_clip_torchscript(clip: CLIPModel, path: Path) -> None:
    """Write a CLIP the way OpenAI ships it: a traced TorchScript archive of the model, with
    `input_resolution`, `context_length` and `vocab_size` kept as tensors beside the weights."""
    model = copy.deepcopy(clip.model)
    sizes = {
        "input_resolution": clip.input_resolution,
        "context_length": clip.context_length,
        "vocab_size": model.vocab_size,
    }
    for name, value in sizes.items():
        # open_clip keeps two of these as plain ints, which tracing would leave out.
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    images = torch.zeros(1, 3, clip.input_resolution, clip.input_resolution)
    tokens = torch.zeros(1, clip.context_length, dtype=torch.long)
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream, but it is the format OpenAI's files are in.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            model, {"encode_image": (images,), "encode_text": (tokens,)}
        )
        # Through a handle, so the archive's folder is not named after the temporary file.
        atomic_write(Path(path), lambda tmp: _save_script(traced, tmp))


def _save_script(module: torch.jit.ScriptModule, tmp: Path) -> None:
    with open(tmp, "wb") as handle:
        torch.jit.save(module, handle)
