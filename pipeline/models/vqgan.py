"""The VQGAN the engine optimises through: taming's encoder, quantizer and decoder, loaded safely.

Built from taming-transformers' own torch modules rather than its Lightning model class (which
breaks on current Lightning and builds a loss that downloads VGG weights); the attribute names
match taming's `VQModel`, so a real checkpoint's `state_dict` loads unchanged.

Tensor conventions: images are float32 NCHW in [-1, 1]; latents are (N, e_dim, H/f, W/f) where
f is `downsample` (8 or 16) and e_dim the codebook's embedding size.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
import yaml
from torch import nn

from pipeline.errors import ModelError

try:
    from taming.modules.diffusionmodules.model import Decoder, Encoder
    from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2
except ModuleNotFoundError as missing:  # a separate install step, easy to miss (README)
    if (missing.name or "").partition(".")[0] != "taming":
        raise
    raise ModelError(
        "taming-transformers is not installed, and the VQGAN is made of its modules: pip "
        "install --no-deps taming-transformers-rom1504==0.0.6 (--no-deps: its Lightning "
        "requirements are not needed)"
    ) from None
from pipeline.models.architectures import VQGANConfig
from pipeline.models.checkpoint import (
    Checkpoint,
    TensorRef,
    kind_of,
    load_state_checked,
    state_dict_refs,
    verify_sha256,
)
from pipeline.models.files import file_sha256
from pipeline.store import atomic_write

log = logging.getLogger(__name__)

# The parts of taming's VQModel that the engine uses; a checkpoint's other keys (the
# training loss and discriminator, a transformer's weights) are ignored.
PARTS = ("encoder", "decoder", "quant_conv", "post_quant_conv", "quantize")
_DDCONFIG_KEYS = (
    "ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "in_channels",
    "resolution", "z_channels",
)  # fmt: skip
_TARGETS = {"VQModel": False, "GumbelVQ": True}
_FIRST_STAGE = "first_stage_model."


def _config_error(path: Path, message: str) -> ModelError:
    return ModelError(f"{path}: {message}; is this a taming-transformers model.yaml?")


def read_vqgan_config(path: Path) -> tuple[VQGANConfig, str]:
    """Parse a taming model.yaml: (the architecture, the prefix of its keys in the checkpoint).

    Accepts `VQModel` and `GumbelVQ` configs and a `Net2NetTransformer` config, whose first
    stage is the VQGAN (its weights sit under `first_stage_model.` in the checkpoint).
    """
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelError(f"cannot read the VQGAN config {path}: {error}") from error
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, dict):
        raise _config_error(path, "no `model:` section")
    prefix = ""
    if str(model.get("target", "")).endswith(".Net2NetTransformer"):
        model = (model.get("params") or {}).get("first_stage_config")
        if not isinstance(model, dict):
            raise _config_error(path, "a Net2NetTransformer without a first_stage_config")
        prefix = _FIRST_STAGE
    target = str(model.get("target", ""))
    kind = target.rsplit(".", 1)[-1]
    if kind not in _TARGETS:
        raise _config_error(
            path, f"model target {target!r} is not a VQModel, GumbelVQ or Net2NetTransformer"
        )
    params = model.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("ddconfig"), dict):
        raise _config_error(path, "no model params with a ddconfig")
    ddconfig = params["ddconfig"]
    for key in ("embed_dim", "n_embed"):
        if not isinstance(params.get(key), int):
            raise _config_error(path, f"params.{key} is missing or not a whole number")
    missing = [key for key in _DDCONFIG_KEYS if key not in ddconfig]
    if missing:
        raise _config_error(path, f"ddconfig lacks {', '.join(missing)}")
    config = VQGANConfig(params["embed_dim"], params["n_embed"], ddconfig, _TARGETS[kind])
    return config, prefix


class _ClampWithGrad(torch.autograd.Function):
    """Clamp to [-1, 1], but let a gradient through where following it moves a clipped value
    back into range: a pixel the decoder pushed past white can still be steered back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(-1, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (grad * (x - x.clamp(-1, 1)) >= 0)


class VQGAN(nn.Module):
    """Encoder, codebook quantizer and decoder of a taming VQGAN (VQModel or GumbelVQ)."""

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = config
        dd = config.ddconfig
        z_channels = dd["z_channels"]
        # taming's Decoder prints the latent shape it was built for; keep the CLI's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            self.encoder = Encoder(**dd)
            self.decoder = Decoder(**dd)
        self.quant_conv = nn.Conv2d(z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, z_channels, 1)
        if config.gumbel:
            self.quantize = GumbelQuantize(z_channels, config.embed_dim, config.n_embed)
        else:
            self.quantize = VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25)
        self.downsample: int = config.downsample
        # How many latent cells the camera may move the shown picture before the engine
        # encodes it again (0: every frame). Set from the registry (VQGANEntry.camera_hold).
        self.camera_hold: int = 0
        # Where the weights came from, for the render's record: file -> SHA-256 (empty: random).
        self.checksums: dict[str, str] = {}

    @property
    def codebook(self) -> torch.Tensor:
        """The codebook, (n_embed, e_dim)."""
        if self.config.gumbel:
            return self.quantize.embed.weight
        return self.quantize.embedding.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image (N, 3, H, W) in [-1, 1] -> continuous latent (N, e_dim, H/f, W/f).

        For a GumbelVQ the encoder's output is a set of logits over the codebook, not a point
        in codebook space; this returns the codebook entry of the most likely code at each
        position (Gumbel's hard quantisation without its sampling noise), which quantize_st
        leaves unchanged. Not differentiable for a GumbelVQ.
        """
        h = self.quant_conv(self.encoder(x))
        if not self.config.gumbel:
            return h
        codes = self.quantize.proj(h).argmax(dim=1)
        return F.embedding(codes, self.codebook).permute(0, 3, 1, 2)

    def quantize_st(self, z: torch.Tensor) -> torch.Tensor:
        """Snap each latent vector to its nearest codebook entry (Euclidean), with a
        straight-through gradient: the value is the codebook entry, the gradient reaches z."""
        codebook = self.codebook
        vectors = z.movedim(1, -1).reshape(-1, codebook.shape[1])
        with torch.no_grad():
            distances = (
                vectors.square().sum(1, keepdim=True)
                - 2 * vectors @ codebook.T
                + codebook.square().sum(1)
            )
            codes = distances.argmin(dim=1)
        z_q = codebook[codes].view(z.shape[0], z.shape[2], z.shape[3], -1).movedim(-1, 1)
        return z + (z_q - z).detach()

    def decode(
        self, z_q: torch.Tensor, lean: bool = False, checkpoint: bool = False
    ) -> torch.Tensor:
        """Latent (N, e_dim, h, w) -> image (N, 3, h*f, w*f) clamped to [-1, 1].

        `lean`: through `lean_decode` rather than taming's own forward (the same function,
        less memory and time for a gradient to the latents); `checkpoint` (lean only): keep
        only each block's input for the backward and compute the block again there."""
        if lean and not self.decoder.conv_in.weight.requires_grad:
            h = _input_grad_conv(self.post_quant_conv, z_q)
            return _ClampWithGrad.apply(lean_decode(self.decoder, h, checkpoint))
        return _ClampWithGrad.apply(self.decoder(self.post_quant_conv(z_q)))


class _InputGradConv(torch.autograd.Function):
    """A stride-1 convolution whose backward gives the input's gradient only: the engine
    never trains the VQGAN, so the convolution's input (the activation torch would keep for
    the weights' gradient) is not kept."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias, padding: int):  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.padding, ctx.shape = padding, x.shape
        return F.conv2d(x, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        # Under autocast the forward ran in bf16 and so does this, as torch's own backward
        # would with the weight it cast (cuDNN refuses a bf16 gradient with fp32 weights).
        weight = weight.to(grad.dtype)
        grad_input = torch.nn.grad.conv2d_input(ctx.shape, weight, grad, padding=ctx.padding)
        return grad_input, None, None, None


def _input_grad_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    assert conv.stride == (1, 1) and conv.padding[0] == conv.padding[1]
    return _InputGradConv.apply(x, conv.weight, conv.bias, conv.padding[0])


def _norm_swish_now(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.silu(norm(x))


def _norm_swish(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """swish(GroupNorm(x)), keeping only x for the backward, which computes the two again
    (two passes over memory, next to the convolutions' arithmetic): otherwise the norm's
    output would be kept for the swish."""
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.utils.checkpoint.checkpoint(_norm_swish_now, norm, x, use_reentrant=False)
    return _norm_swish_now(norm, x)


def _resnet_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """taming's ResnetBlock (no timestep embedding, dropout off in eval) with the fused swish."""
    h = _input_grad_conv(block.conv1, _norm_swish(block.norm1, x))
    h = _input_grad_conv(block.conv2, _norm_swish(block.norm2, h))
    if block.in_channels != block.out_channels:
        shortcut = block.conv_shortcut if block.use_conv_shortcut else block.nin_shortcut
        x = _input_grad_conv(shortcut, x)
    return x + h


def lean_decode(decoder: nn.Module, h: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
    """taming's Decoder.forward, the same function computed for a gradient to its input
    only: torch's fused swish (x·sigmoid(x) in one kernel), each GroupNorm and swish computed
    again in the backward from the norm's input (_norm_swish), and convolutions that keep no
    activation (_InputGradConv). At 288x512 it keeps 0.7 GiB for the backward where taming's
    forward keeps 2.9, in about 0.98x the time (bench/RESULTS.md, "Speed and memory"). With
    `checkpoint`, each block keeps only its input and runs again in the backward: a little
    less memory still, for about one more decoder pass per step."""

    def block(run: Any, x: torch.Tensor) -> torch.Tensor:
        if checkpoint and torch.is_grad_enabled() and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(run, x, use_reentrant=True)
        return run(x)

    def resnet(module: nn.Module) -> Any:
        return lambda x: _resnet_block(module, x)

    h = _input_grad_conv(decoder.conv_in, h)
    h = block(resnet(decoder.mid.block_1), h)
    h = block(decoder.mid.attn_1, h)
    h = block(resnet(decoder.mid.block_2), h)
    for level in reversed(range(decoder.num_resolutions)):
        up = decoder.up[level]
        for index in range(decoder.num_res_blocks + 1):
            h = block(resnet(up.block[index]), h)
            if len(up.attn) > 0:
                h = block(up.attn[index], h)
        if level != 0:
            upsample = up.upsample
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            if upsample.with_conv:
                h = block(lambda x, conv=upsample.conv: _input_grad_conv(conv, x), h)
    if decoder.give_pre_end:
        return h
    return block(lambda x: _input_grad_conv(decoder.conv_out, _norm_swish(decoder.norm_out, x)), h)


def random_vqgan(config: VQGANConfig, seed: int = 0) -> VQGAN:
    """A VQGAN of this architecture with random weights drawn from a fixed seed.

    The codebook is drawn from N(0, 0.03²) rather than taming's uniform ±1/n_embed: close
    enough together that Adam at the engine's usual learning rate (0.1) moves a latent from
    code to code within a step or two, as it does on a trained codebook, and far enough apart
    that the codes differ (the decoder's GroupNorms make up for their small scale).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQGAN(config)
        nn.init.normal_(model.codebook, std=0.03)
    return model.eval().requires_grad_(False)


def _vqgan_refs(root: Any, prefix: str, path: Path) -> dict[str, TensorRef]:
    """The VQGAN's tensors in a Lightning checkpoint (or a bare state dict), prefix removed."""
    try:
        tensors = state_dict_refs(root, path)
    except ModelError:  # no state dict at all: said below, with what the file looks like
        tensors = {}
    refs = {}
    for key, ref in tensors.items():
        name = key[len(prefix) :]
        if key.startswith(prefix) and name.split(".", 1)[0] in PARTS:
            refs[name] = ref
    if not refs:
        where = f" under {prefix!r}" if prefix else ""
        raise ModelError(
            f"{path} holds no VQGAN weights{where}: it looks like {kind_of(root)}. Give a "
            "taming-transformers VQGAN checkpoint (`feverdream models list` names some)."
        )
    return refs


def load_vqgan(ckpt: Path, config: Path, sha256: str | None = None, name: str = "") -> VQGAN:
    """Load a taming VQGAN from its checkpoint and model.yaml; eval mode, no gradients.

    The checkpoint's SHA-256 is checked against `sha256` (when given) before it is read, and
    the file is read with the restricted unpickler, so it cannot run code. `name` is the
    registry name, used in error messages.
    """
    ckpt, config = Path(ckpt), Path(config)
    for path in (ckpt, config):
        if not path.is_file():
            raise ModelError(f"the VQGAN file {path} does not exist")
    checksum = verify_sha256(ckpt, sha256, name)
    # The checkpoint is opened first (cheap: no tensor is read yet), so that a corrupt
    # download is reported as such even when its config is broken too.
    with Checkpoint(ckpt) as checkpoint:
        architecture, prefix = read_vqgan_config(config)
        refs = _vqgan_refs(checkpoint.root, prefix, ckpt)
        model = VQGAN(architecture)
        mismatch = (
            f"the config {config} does not match the checkpoint {ckpt} "
            "(is it the model.yaml that came with it?)"
        )
        load_state_checked(model, refs, checkpoint, mismatch)
    model.checksums = {ckpt.name: checksum, config.name: file_sha256(config)}
    log.debug("loaded VQGAN %s (f%d, %d codes)", ckpt, model.downsample, architecture.n_embed)
    return model.eval().requires_grad_(False)


def save_vqgan(model: VQGAN, ckpt: Path, config: Path) -> None:
    """Write a VQGAN as a Lightning-style checkpoint and a taming model.yaml, atomically."""
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "1.0.8",
        "state_dict": model.state_dict(),
    }
    atomic_write(Path(config), lambda tmp: tmp.write_text(yaml.safe_dump(model.config.to_yaml())))
    atomic_write(Path(ckpt), lambda tmp: _save_through_handle(checkpoint, tmp))


def _save_through_handle(data: object, tmp: Path) -> None:
    # torch.save names the archive's root folder after the file it writes: the random
    # temporary name. Through a handle the folder is "archive", so the same model is the
    # same bytes wherever it is written.
    with open(tmp, "wb") as handle:
        torch.save(data, handle)
