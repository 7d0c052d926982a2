"""The architectures of the known models, without torch: taming VQGAN configs, the depth
model's, and the tiny and shapes models'.

The full-size VQGAN configs are the `model.params` of each model's published model.yaml, so
`--random-weights` and `feverdream bench` can build the real architecture without the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The pixel normalisation OpenAI's CLIPs were trained with; some of OpenCLIP's use 0.5s.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)
# ImageNet's, which DINOv2 and the depth models built on it normalise their pixels by.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CLIPVariant:
    """How a CLIP's weights are run beyond what their shapes say: the activation it was
    trained with (OpenAI's QuickGELU, or plain GELU as OpenCLIP trains) and the mean and
    standard deviation its input pixels are normalised by."""

    quick_gelu: bool = True
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD


OPENAI = CLIPVariant()


@dataclass(frozen=True)
class VQGANConfig:
    """A VQGAN's architecture: the `params` of a taming model.yaml that shape the network."""

    embed_dim: int
    n_embed: int
    ddconfig: dict[str, Any] = field(hash=False)
    gumbel: bool = False

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    def to_yaml(self) -> dict[str, Any]:
        """The config in taming's model.yaml layout, as a training run would have written it."""
        target = "taming.models.vqgan.GumbelVQ" if self.gumbel else "taming.models.vqgan.VQModel"
        params: dict[str, Any] = {
            "embed_dim": self.embed_dim,
            "n_embed": self.n_embed,
            "ddconfig": dict(self.ddconfig),
            "lossconfig": {"target": "taming.modules.losses.DummyLoss"},
        }
        return {"model": {"base_learning_rate": 4.5e-6, "target": target, "params": params}}


def _taming_ddconfig(ch_mult: list[int], attn_resolutions: list[int]) -> dict[str, Any]:
    """The encoder/decoder settings all of CompVis' released VQGANs share, but for depth."""
    return {
        "double_z": False,
        "z_channels": 256,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": ch_mult,
        "num_res_blocks": 2,
        "attn_resolutions": attn_resolutions,
        "dropout": 0.0,
    }


# configs/model.yaml of the ImageNet f16 models (1024 and 16384 codes), the S-FLCKR first stage
# (configs/sflckr_transformer.yaml in taming-transformers) and WikiArt, which was fine-tuned
# from the ImageNet f16 16384 model with the same architecture.
F16 = _taming_ddconfig([1, 1, 2, 2, 4], [16])
# The OpenImages f8 8192 GumbelVQ: one level fewer, attention at 32x32.
F8_GUMBEL = _taming_ddconfig([1, 1, 2, 4], [32])

IMAGENET_F16_1024 = VQGANConfig(embed_dim=256, n_embed=1024, ddconfig=F16)
IMAGENET_F16_16384 = VQGANConfig(embed_dim=256, n_embed=16384, ddconfig=F16)
GUMBEL_F8_8192 = VQGANConfig(embed_dim=256, n_embed=8192, ddconfig=F8_GUMBEL, gumbel=True)

# The tiny VQGAN: f16 like the default model. Its cost is the decoder's full-resolution
# layers, so those are as light as taming's modules allow: 32 channels (the least its
# GroupNorm(32) takes) at every level, since its Encoder with no residual blocks needs one width
# throughout; one residual block per decoder level; resampling without convolutions. A 144x256
# engine step (decode, 8 cutouts, tiny CLIP, backward) then takes about 0.1 s on 2 CPU cores.
TINY_VQGAN = VQGANConfig(
    embed_dim=64,
    n_embed=512,
    ddconfig={
        "double_z": False,
        "z_channels": 64,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 1, 1, 1],
        "num_res_blocks": 0,
        "attn_resolutions": [],
        "dropout": 0.0,
        "resamp_with_conv": False,
    },
)

# The tiny CLIP, in open_clip's model-config layout. Widths are multiples of 64 so the loader
# infers the head counts as for OpenAI's models; the text side keeps CLIP's real tokenizer,
# vocabulary and context length.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"layers": 2, "width": 64, "patch_size": 16, "image_size": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}

# The shapes world's models (the recipe that trains them: tools/shapes/). The VQGAN is f8 like
# the OpenImages one, and as light at full resolution as taming's modules allow (32 channels,
# the least its GroupNorm(32) takes): the engine decodes every step.
SHAPES_VQGAN = VQGANConfig(
    embed_dim=32,
    n_embed=256,
    ddconfig={
        "double_z": False,
        "z_channels": 32,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 1, 1],
        "num_res_blocks": 0,
        "attn_resolutions": [],
        "dropout": 0.0,
        "resamp_with_conv": False,
    },
)

# The shapes CLIP in open_clip's model-config layout: a ResNet image tower, the class OpenAI's
# RN50 family loads as (a ViT this small took thousands of steps to tell a circle from a
# square; the convolutions see it within a hundred), and a text transformer on CLIP's own
# tokenizer, vocabulary and context. Its width is 64, so the loader infers one head.
SHAPES_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"layers": (1, 1, 1, 1), "width": 16, "image_size": 64, "patch_size": None},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


@dataclass(frozen=True)
class DepthConfig:
    """A Depth Anything V2 network: a DINOv2 vision transformer (timm's VisionTransformer)
    whose normed intermediate layers feed a DPT head that paints relative inverse depth."""

    embed_dim: int
    depth: int  # transformer blocks
    heads: int
    image_size: int  # the side its position embeddings were trained at (a multiple of patch_size)
    input_side: int  # the shorter side a picture is resized to before it is run
    layers: tuple[int, int, int, int]  # the blocks whose normed tokens the head reads
    features: int  # the head's width once the four layers are fused
    out_channels: tuple[int, int, int, int]  # the four layers' widths as the head projects them
    head_features: int = 32  # the width of the head's last convolution before its single channel
    patch_size: int = 14

    @property
    def grid(self) -> int:
        """Patches along a side of the picture the position embeddings were trained on."""
        return self.image_size // self.patch_size


# depth_anything_v2/dpt.py's `DepthAnythingV2(encoder="vits", features=64,
# out_channels=[48, 96, 192, 384])`: DINOv2's ViT-S/14 at 518 px, its blocks 2, 5, 8 and 11.
DEPTH_ANYTHING_V2_SMALL = DepthConfig(
    embed_dim=384,
    depth=12,
    heads=6,
    image_size=518,
    input_side=518,
    layers=(2, 5, 8, 11),
    features=64,
    out_channels=(48, 96, 192, 384),
)

# The tiny depth model: the same network, every width cut down, four blocks each read, a
# 4x4-patch picture (56 px); its output at 56 px costs a few milliseconds on one core.
TINY_DEPTH = DepthConfig(
    embed_dim=24,
    depth=4,
    heads=2,
    image_size=56,
    input_side=56,
    layers=(0, 1, 2, 3),
    features=8,
    out_channels=(8, 8, 16, 16),
    head_features=8,
)
