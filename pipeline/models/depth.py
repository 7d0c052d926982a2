"""The depth model for the 3D camera: a picture in, its relative inverse depth out.

Depth Anything V2 (Yang et al., 2024): a DINOv2 vision transformer, here timm's
`VisionTransformer` (its parameter names are DINOv2's), whose normed tokens after four of its
blocks feed a DPT head that fuses them from coarse to fine into one channel. The head is
written here, its parameter names those of the authors' `depth_anything_v2_vits.pth`
(`pretrained.*` for the transformer, `depth_head.*` for the head), so their file loads as it
is, through the restricted unpickler. That file is a plain state dict, with DINOv2's
`pretrained.mask_token` (used only in its training) beside the weights; loading drops it, and
the tiny model is written with one, in the same format.

Tensor conventions: pictures are float (N, 3, H, W) RGB in [0, 1]; depth is (N, 1, H, W) at
the picture's own size, relative inverse depth: 0 or more, larger where nearer, in no unit
and on no fixed scale (an affine-invariant disparity, as the model was trained to give).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pipeline.errors import ModelError
from pipeline.models.architectures import IMAGENET_MEAN, IMAGENET_STD, DepthConfig
from pipeline.models.catalogue import DEPTHS
from pipeline.models.checkpoint import (
    Checkpoint,
    TensorRef,
    is_safetensors,
    kind_of,
    load_state_checked,
    state_dict_refs,
    verify_sha256,
)
from pipeline.store import atomic_write

log = logging.getLogger(__name__)

# DINOv2's token for masked patches: in the published file, unused at inference.
MASK_TOKEN = "pretrained.mask_token"
_HEAD = "depth_head."
# DINOv2 resamples its position embeddings to a grid this far past the one asked for, and
# takes the whole cells (facebookresearch/dino issue 8); the same here, for the same numbers.
_GRID_OFFSET = 0.1


class _ResidualUnit(nn.Module):
    """Two 3x3 convolutions, each after a ReLU, added to what came in."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _Fusion(nn.Module):
    """One step of the head's climb to full resolution: the coarser path, with this level's
    features refined and added, refined again, enlarged (to `size`, else twice) and mixed."""

    def __init__(self, width: int):
        super().__init__()
        self.resConfUnit1 = _ResidualUnit(width)  # the published names
        self.resConfUnit2 = _ResidualUnit(width)
        self.out_conv = nn.Conv2d(width, width, 1)

    def forward(
        self,
        path: torch.Tensor,
        level: torch.Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        if level is not None:
            path = path + self.resConfUnit1(level)
        path = self.resConfUnit2(path)
        if size is None:
            path = F.interpolate(path, scale_factor=2.0, mode="bilinear", align_corners=True)
        else:
            path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class _Scratch(nn.Module):
    """The head past its projections: each level to one width, the fusions, the output."""

    def __init__(self, config: DepthConfig):
        super().__init__()
        width = config.features
        channels = config.out_channels
        self.layer1_rn = nn.Conv2d(channels[0], width, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(channels[1], width, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(channels[2], width, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(channels[3], width, 3, padding=1, bias=False)
        self.refinenet1 = _Fusion(width)
        self.refinenet2 = _Fusion(width)
        self.refinenet3 = _Fusion(width)
        self.refinenet4 = _Fusion(width)
        self.output_conv1 = nn.Conv2d(width, width // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(width // 2, config.head_features, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(config.head_features, 1, 1),
            nn.ReLU(),  # depth is never negative
        )


class DPTHead(nn.Module):
    """The DPT head (Ranftl et al., 2021) as Depth Anything V2 uses it: the transformer's
    tokens from four blocks, as feature maps at 4x, 2x, 1x and 1/2x the patch grid, fused from
    the coarsest up, then one channel at the picture's size."""

    def __init__(self, config: DepthConfig):
        super().__init__()
        self.patch_size = config.patch_size
        channels = config.out_channels
        self.projects = nn.ModuleList(nn.Conv2d(config.embed_dim, c, 1) for c in channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[0], channels[0], 4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(config)

    def forward(self, tokens: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """Four blocks' patch tokens, each (N, rows*columns, embed_dim) -> (N, 1, H, W), H and
        W the grid's size in pixels."""
        scratch = self.scratch
        reduce = (scratch.layer1_rn, scratch.layer2_rn, scratch.layer3_rn, scratch.layer4_rn)
        levels = []
        for layer, project, resize, to_width in zip(
            tokens, self.projects, self.resize_layers, reduce, strict=True
        ):
            feature_map = layer.transpose(1, 2).reshape(layer.shape[0], -1, *grid)
            levels.append(to_width(resize(project(feature_map))))
        fine, middle, coarse, coarsest = levels
        path = scratch.refinenet4(coarsest, size=tuple(coarse.shape[-2:]))
        path = scratch.refinenet3(path, coarse, size=tuple(middle.shape[-2:]))
        path = scratch.refinenet2(path, middle, size=tuple(fine.shape[-2:]))
        path = scratch.refinenet1(path, fine)
        out = scratch.output_conv1(path)
        pixels = (grid[0] * self.patch_size, grid[1] * self.patch_size)
        out = F.interpolate(out, size=pixels, mode="bilinear", align_corners=True)
        return scratch.output_conv2(out)


class DepthModel(nn.Module):
    """Depth Anything V2 with the engine's conventions: (N, 3, H, W) pictures in [0, 1] in,
    (N, 1, H, W) relative inverse depth out (0 or more, larger = nearer)."""

    def __init__(self, config: DepthConfig):
        super().__init__()
        self.config = config
        self.pretrained = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.heads,
            init_values=1.0,  # DINOv2's layer scale as Depth Anything builds it
            num_classes=0,
        )
        self.depth_head = DPTHead(config)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        # The shorter side a picture is run at: the config's (the authors' 518 px), which a
        # caller may lower for speed (a multiple of the patch size is kept).
        self.input_side: int = config.input_side
        # Where the weights came from, for the render's record: file -> SHA-256 (empty: random).
        self.checksums: dict[str, str] = {}

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a picture of this size is run at: its shorter side at `input_side`, the
        other in proportion, each a whole number of patches (the authors' own resize: keep the
        aspect, never below the side, multiples of 14)."""
        patch = self.config.patch_size
        side = max(patch, round(self.input_side / patch) * patch)
        scale = side / min(height, width)
        return (
            max(side, round(height * scale / patch) * patch),
            max(side, round(width * scale / patch) * patch),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) relative inverse depth."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(
                f"the depth model takes (N, 3, H, W) pictures, not {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        size = self.input_size(height, width)
        x = image
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        depth = self.infer(((x - self.mean) / self.std).to(self.mean.dtype))
        if tuple(depth.shape[-2:]) != (height, width):
            depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True)
        return depth

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """The network itself: a normalised (N, 3, H, W) picture whose sides are whole patches
        -> (N, 1, H, W)."""
        patch = self.config.patch_size
        if x.shape[-2] % patch or x.shape[-1] % patch:
            raise ValueError(f"the picture's sides must be multiples of {patch}, not {x.shape}")
        grid = (x.shape[-2] // patch, x.shape[-1] // patch)
        return self.depth_head(self._tokens(x, grid), grid)

    def _tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        """The patch tokens after each block the head reads, normed, the class token left out."""
        vit = self.pretrained
        patches = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
        tokens = tokens + self._positions(grid).to(tokens.dtype)
        wanted = set(self.config.layers)
        out = []
        for index, block in enumerate(vit.blocks[: max(wanted) + 1]):
            tokens = block(tokens)
            if index in wanted:
                out.append(vit.norm(tokens)[:, 1:])
        return out

    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embeddings for a grid of patches: the trained ones, resampled
        (bicubic, as DINOv2 does) when the grid is another."""
        positions = self.pretrained.pos_embed
        trained = self.config.grid
        if grid == (trained, trained):
            return positions
        cells = positions[:, 1:].float().reshape(1, trained, trained, -1).permute(0, 3, 1, 2)
        scale = ((grid[0] + _GRID_OFFSET) / trained, (grid[1] + _GRID_OFFSET) / trained)
        cells = F.interpolate(cells, scale_factor=scale, mode="bicubic", align_corners=False)
        if tuple(cells.shape[-2:]) != grid:
            raise AssertionError(f"position embeddings resampled to {cells.shape}, not {grid}")
        cells = cells.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
        return torch.cat([positions[:, :1], cells.to(positions.dtype)], dim=1)


def random_depth(config: DepthConfig, seed: int = 0) -> DepthModel:
    """A depth model of this architecture with random weights drawn from a fixed seed: its
    depth means nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DepthModel(config)
    return model.eval().requires_grad_(False)


@functools.cache
def _shapes(config: DepthConfig) -> dict[str, tuple[int, ...]]:
    """The tensors an architecture's file holds, by name, with their shapes (built on the meta
    device: no memory, no compute)."""
    with torch.device("meta"):
        model = DepthModel(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _architecture(refs: dict[str, TensorRef], path: Path) -> DepthConfig:
    """The known architecture a file's tensors are the weights of."""
    shapes = {key: ref.shape for key, ref in refs.items()}
    for entry in DEPTHS.values():
        if _shapes(entry.architecture) == shapes:
            return entry.architecture
    raise ModelError(
        f"{path} is a Depth Anything checkpoint, but not of a size feverdream knows "
        f"({len(shapes)} tensors; {', '.join(DEPTHS)} are known). Give Depth Anything V2 "
        "Small's depth_anything_v2_vits.pth (`feverdream models download "
        "depth-anything-v2-small`); the larger ones are not free to use and are not supported."
    )


def _depth_refs(root: Any, path: Path) -> dict[str, TensorRef]:
    """The model's tensors in a published-format state dict, DINOv2's mask token left out."""
    try:
        refs = state_dict_refs(root, path)
    except ModelError:  # no state dict at all: said below, with what the file looks like
        refs = {}
    refs.pop(MASK_TOKEN, None)
    if not any(key.startswith(_HEAD) for key in refs):
        raise ModelError(
            f"{path} holds no depth model: it looks like {kind_of(root)}. Give Depth Anything "
            "V2 Small's depth_anything_v2_vits.pth (`feverdream models list` names it)."
        )
    return refs


def load_depth(
    path: Path, sha256: str | None = None, name: str = "", architecture: DepthConfig | None = None
) -> DepthModel:
    """Load a depth model from its state dict, in the authors' format; eval mode, no gradients.

    The SHA-256 is checked against `sha256` (when given) before the file is read, and the file
    is read with the restricted unpickler, so it cannot run code. `architecture`: the registry
    entry's, else the known one the file's tensors fit. `name` is the registry name, used in
    error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"the depth model file {path} does not exist")
    checksum = verify_sha256(path, sha256, name)
    with Checkpoint(path) as checkpoint:
        refs = _depth_refs(checkpoint.root, path)
        config = architecture or _architecture(refs, path)
        model = DepthModel(config)
        what = f"{path} does not fit the depth model {name or 'built for it'}"
        load_state_checked(model, refs, checkpoint, what)
    model.checksums = {path.name: checksum}
    log.debug("loaded depth model %s (%d-d, %d blocks)", path, config.embed_dim, config.depth)
    return model.eval().requires_grad_(False)


def is_depth_checkpoint(path: Path) -> bool:
    """Whether a file is a depth model's state dict (its head's tensors are there); reads the
    file's index of tensors, not the tensors."""
    if is_safetensors(path):
        return False
    try:
        with Checkpoint(path) as checkpoint:
            names = state_dict_refs(checkpoint.root, path)
    except ModelError:
        return False
    return any(key.startswith(_HEAD) for key in names)


def save_depth(model: DepthModel, path: Path) -> None:
    """Write a depth model as the authors publish theirs, atomically: a plain state dict, with
    DINOv2's (unused) mask token beside the position embeddings."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        state[key] = value
        if key == "pretrained.pos_embed":
            state[MASK_TOKEN] = torch.zeros(1, model.config.embed_dim)
    atomic_write(Path(path), lambda tmp: _save_through_handle(state, tmp))


def _save_through_handle(data: object, tmp: Path) -> None:
    # Through a handle, the archive's folder is "archive", not the temporary file's name: the
    # same model is the same bytes wherever it is written.
    with open(tmp, "wb") as handle:
        torch.save(data, handle)
