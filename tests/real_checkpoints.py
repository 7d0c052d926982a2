"""Files built the way the model files users download are built, as the tests' picture of a
real download (weights random, widths tiny; everything else as in the originals).

Each writer reproduces one published file's structure at the pickle level: the top-level keys
in their order, the non-tensor objects, the global names the pickle mentions, the dtypes, the
storage locations and the archive layout. Sources, all public:

- taming-transformers (github.com/CompVis/taming-transformers): `main.py` trains with
  pytorch-lightning 1.0.8 on torch 1.7.0 (its environment.yaml), on GPUs; Lightning 1.0.8's
  `CheckpointConnector.dump_checkpoint` writes `epoch, global_step,
  pytorch-lightning_version, callbacks, optimizer_states, lr_schedulers, state_dict` (no
  `hyper_parameters` when the module does not save them, as taming's VQModel does not) and
  keys `callbacks` by the callback's class. `taming/models/vqgan.py`'s VQModel holds
  `loss` (`VQLPIPSWithDiscriminator`: `perceptual_loss`, LPIPS on VGG16, and
  `discriminator`, a PatchGAN with BatchNorm), and `configure_optimizers` returns two Adams
  (autoencoder, discriminator). The published `configs/model.yaml` files hold only `model:`.
- torch 1.7's `torch.save` (torch/serialization.py at v1.7.0): pickle protocol 2, a zip with
  `archive/data.pkl`, `archive/data/<key>` and `archive/version`, persistent ids
  `('storage', <torch.FloatStorage etc.>, key, location, numel)`, tensors rebuilt by
  `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
  OrderedDict())`; Adam's `step` a Python int. The pre-1.6 layout (`_legacy_save`): magic
  number, protocol 1001, system info, the object with 6-field storage ids, the storage keys,
  then each storage's element count and bytes.
- Later Lightning (1.x after 1.0): `hyper_parameters` saved as an
  `pytorch_lightning.utilities.parsing.AttributeDict`, a larger ModelCheckpoint state
  (`monitor, best_model_score, best_model_path, current_score, dirpath, best_k_models,
  kth_best_model_path, kth_value, last_model_path`) and `collections.defaultdict`s in the
  loop state.
- OpenAI's CLIP (github.com/openai/CLIP, `clip/model.py` and `clip/clip.py`): the released
  `.pt` files are TorchScript archives of the traced model after `convert_weights`, which
  makes conv, linear and attention weights and `text_projection`/`proj` fp16 and leaves
  LayerNorms, embeddings and `logit_scale` fp32; `clip.load` reads `input_resolution`,
  `context_length` and `vocab_size` from the archive as tensors.
"""

from __future__ import annotations

import collections
import copy
import io
import pickle
import struct
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from pipeline.models.clip import CLIPModel
from pipeline.models.vqgan import VQGAN

STAND_INS = Path(__file__).parent / "stand_ins"
if str(STAND_INS) not in sys.path:
    sys.path.insert(0, str(STAND_INS))

from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint  # noqa: E402
from pytorch_lightning.utilities.parsing import AttributeDict  # noqa: E402

# The storage classes torch 1.7 named in its persistent ids, by dtype.
STORAGE_CLASSES = {
    torch.float32: torch.FloatStorage,
    torch.float16: torch.HalfStorage,
    torch.int64: torch.LongStorage,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# --- torch 1.7's serialisation ------------------------------------------------------------


class _Storage:
    """A tensor's data as the writer hands it to persistent_id."""

    def __init__(self, key: str, tensor: torch.Tensor):
        self.key, self.tensor = key, tensor


class _Torch17Pickler(pickle.Pickler):
    """Pickles like torch 1.7's torch.save: protocol 2, tensors as `_rebuild_tensor_v2`
    calls on storages that are written outside the pickle."""

    def __init__(self, file: io.BytesIO, location: str, legacy: bool):
        super().__init__(file, protocol=2)
        self.location, self.legacy = location, legacy
        self.storages: dict[str, torch.Tensor] = {}

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return NotImplemented
        tensor = obj.detach().contiguous()
        # Legacy keys were the storages' ids; zip keys count from 0.
        key = str(140_000_000 + 64 * len(self.storages)) if self.legacy else str(len(self.storages))
        self.storages[key] = tensor
        args = (_Storage(key, tensor), 0, tuple(tensor.shape), tuple(tensor.stride()), False)
        return torch._utils._rebuild_tensor_v2, (*args, OrderedDict())

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, _Storage):
            return None
        kind = STORAGE_CLASSES[obj.tensor.dtype]
        numel = obj.tensor.numel()
        if self.legacy:
            return ("storage", kind, obj.key, self.location, numel, None)
        return ("storage", kind, obj.key, self.location, numel)


def _raw(tensor: torch.Tensor) -> bytes:
    return tensor.reshape(-1).view(torch.uint8).numpy().tobytes()


def save_torch17(obj: Any, path: Path, location: str = "cuda:0", legacy: bool = False) -> None:
    """`obj` as torch 1.7's torch.save wrote it: the zip layout, or the pre-1.6 layout."""
    buffer = io.BytesIO()
    pickler = _Torch17Pickler(buffer, location, legacy)
    pickler.dump(obj)
    if legacy:
        with open(path, "wb") as file:
            system = {"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip
            for header in (LEGACY_MAGIC, 1001, system):
                pickle.dump(header, file, protocol=2)
            file.write(buffer.getvalue())
            pickle.dump(list(pickler.storages), file, protocol=2)
            for tensor in pickler.storages.values():
                file.write(struct.pack("<q", tensor.numel()))
                file.write(_raw(tensor))
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for key, tensor in pickler.storages.items():
            archive.writestr(f"archive/data/{key}", _raw(tensor))
        archive.writestr("archive/version", "3\n")


# --- taming-transformers' VQGAN checkpoints -----------------------------------------------


def _vgg16_lpips_state() -> OrderedDict[str, torch.Tensor]:
    """LPIPS on VGG16 (`loss.perceptual_loss.*`): the scaling layer, VGG16's 13 convolutions
    by their torchvision indices in slices 1-5, and the five 1x1 `lin` layers; 4 channels wide
    instead of 64-512."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    state["scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    state["scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    slices = {1: [0, 2], 2: [5, 7], 3: [10, 12, 14], 4: [17, 19, 21], 5: [24, 26, 28]}
    channels = 3
    for number, convs in slices.items():
        for index in convs:
            state[f"net.slice{number}.{index}.weight"] = torch.randn(4, channels, 3, 3)
            state[f"net.slice{number}.{index}.bias"] = torch.randn(4)
            channels = 4
    for lin in range(5):
        state[f"lin{lin}.model.1.weight"] = torch.rand(1, 4, 1, 1)
    return state


def _patchgan_state() -> OrderedDict[str, torch.Tensor]:
    """taming's NLayerDiscriminator (`loss.discriminator.main.*`), 3 layers with BatchNorm,
    4 channels wide instead of 64."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    state["main.0.weight"], state["main.0.bias"] = torch.randn(4, 3, 4, 4), torch.randn(4)
    for conv, norm in ((2, 3), (5, 6), (8, 9)):
        state[f"main.{conv}.weight"] = torch.randn(4, 4, 4, 4)
        state[f"main.{norm}.weight"] = torch.ones(4)
        state[f"main.{norm}.bias"] = torch.zeros(4)
        state[f"main.{norm}.running_mean"] = torch.randn(4)
        state[f"main.{norm}.running_var"] = torch.rand(4) + 0.5
        state[f"main.{norm}.num_batches_tracked"] = torch.tensor(12345, dtype=torch.int64)
    state["main.11.weight"], state["main.11.bias"] = torch.randn(1, 4, 4, 4), torch.randn(1)
    return state


def _with_metadata(state: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """A state dict as nn.Module.state_dict() returns it: an OrderedDict carrying
    `_metadata`, one {'version': 1} per module."""
    modules = {key.rsplit(".", 1)[0] if "." in key else "" for key in state}
    state._metadata = OrderedDict((name, {"version": 1}) for name in sorted(modules | {""}))
    return state


def _adam_state(parameters: list[torch.Tensor], lr: float) -> dict:
    """torch 1.7's Adam.state_dict(): per parameter index, `step` (an int) and the moments."""
    return {
        "state": {
            i: {
                "step": 1200,
                "exp_avg": torch.randn_like(p) * 1e-3,
                "exp_avg_sq": torch.rand_like(p) * 1e-6,
            }  # fmt: skip
            for i, p in enumerate(parameters)
        },
        "param_groups": [
            {
                "lr": lr,
                "betas": (0.5, 0.9),
                "eps": 1e-08,
                "weight_decay": 0,
                "amsgrad": False,
                "params": list(range(len(parameters))),
            }  # fmt: skip
        ],
    }


def taming_state_dict(vqgan: VQGAN) -> OrderedDict[str, torch.Tensor]:
    """VQModel.state_dict(): the VQGAN's own tensors, then `loss.perceptual_loss.*` and
    `loss.discriminator.*`, on the GPU it was trained on (written with location cuda:0)."""
    state = OrderedDict(vqgan.state_dict())
    for key, value in _vgg16_lpips_state().items():
        state[f"loss.perceptual_loss.{key}"] = value
    for key, value in _patchgan_state().items():
        state[f"loss.discriminator.{key}"] = value
    return _with_metadata(state)


def lightning_108_checkpoint(vqgan: VQGAN) -> dict[str, Any]:
    """taming's `last.ckpt` object as Lightning 1.0.8 dumped it."""
    state = taming_state_dict(vqgan)
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    autoencoder = [v for k, v in state.items() if not k.startswith("loss.")]
    discriminator = [
        v
        for k, v in state.items()
        if k.startswith("loss.discriminator.") and not k.endswith(buffers)
    ]
    return {
        "epoch": 23,
        "global_step": 1_234_567,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {
            ModelCheckpoint: {
                "best_model_score": torch.tensor(4.2718),
                "best_model_path": "/checkpoint/logs/2020-11-09T13-31-51_imagenet_vqgan/"
                "checkpoints/epoch=000023.ckpt",
            }
        },
        "optimizer_states": [
            _adam_state(autoencoder, 4.5e-06),
            _adam_state(discriminator, 4.5e-06),
        ],
        "lr_schedulers": [],
        "state_dict": state,
    }


def later_lightning_checkpoint(vqgan: VQGAN) -> dict[str, Any]:
    """A VQGAN checkpoint as later Lightning 1.x versions dump one: hyper-parameters as an
    AttributeDict, a larger ModelCheckpoint state, defaultdicts in the loop state."""
    checkpoint = lightning_108_checkpoint(vqgan)
    checkpoint["pytorch-lightning_version"] = "1.4.9"
    checkpoint["callbacks"] = {
        ModelCheckpoint: {
            "monitor": "val/rec_loss",
            "best_model_score": torch.tensor(0.0731),
            "best_model_path": "/logs/checkpoints/epoch=000012.ckpt",
            "current_score": torch.tensor(0.0744),
            "dirpath": "/logs/checkpoints",
            "best_k_models": {"/logs/checkpoints/epoch=000012.ckpt": torch.tensor(0.0731)},
            "kth_best_model_path": "/logs/checkpoints/epoch=000012.ckpt",
            "kth_value": torch.tensor(0.0731),
            "last_model_path": "/logs/checkpoints/last.ckpt",
        }
    }
    checkpoint["loops"] = {
        "fit_loop": {
            "state_dict": {},
            "epoch_progress": collections.defaultdict(int, {"total": 13, "current": 13}),
        }
    }
    checkpoint["hyper_parameters"] = AttributeDict(
        ddconfig=AttributeDict(vqgan.config.ddconfig),
        lossconfig=AttributeDict(target="taming.modules.losses.vqperceptual.DummyLoss"),
        n_embed=vqgan.config.n_embed,
        embed_dim=vqgan.config.embed_dim,
        ignore_keys=[],
    )
    return checkpoint


def taming_yaml(vqgan: VQGAN) -> dict[str, Any]:
    """A published taming `model.yaml`: only `model:`, with the loss config beside ddconfig."""
    document = vqgan.config.to_yaml()
    document["model"]["params"]["lossconfig"] = {
        "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
        "params": {
            "disc_conditional": False,
            "disc_in_channels": 3,
            "disc_start": 250001,
            "disc_weight": 0.8,
            "codebook_weight": 1.0,
        },  # fmt: skip
    }
    return {"model": document["model"]}


def write_taming_vqgan(vqgan: VQGAN, folder: Path, kind: str) -> tuple[Path, Path]:
    """`kind`: "lightning-1.0.8" (torch 1.7 zip), "lightning-1.0.8-legacy" (pre-1.6 layout)
    or "later-lightning" (written by today's torch.save). The .ckpt and its .yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    ckpt, config = folder / f"{kind}.ckpt", folder / f"{kind}.yaml"
    if kind == "later-lightning":
        torch.save(later_lightning_checkpoint(vqgan), ckpt)
    else:
        save_torch17(lightning_108_checkpoint(vqgan), ckpt, legacy=kind.endswith("legacy"))
    config.write_text(yaml.safe_dump(taming_yaml(vqgan), sort_keys=False))
    return ckpt, config


# --- OpenAI's CLIP -----------------------------------------------------------------------


def half_precision_names(model: nn.Module) -> set[str]:
    """The parameters OpenAI's `clip.model.convert_weights` makes fp16: conv, linear and
    attention weights and biases, and the two projections; LayerNorms, embeddings and
    `logit_scale` stay fp32."""
    names = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            names.update(
                f"{dot}{name}" for name in ("weight", "bias") if getattr(module, name) is not None
            )
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"):  # fmt: skip
                if getattr(module, name) is not None:
                    names.add(f"{dot}{name}")
        for name in ("text_projection", "proj"):
            if isinstance(getattr(module, name, None), nn.Parameter):
                names.add(f"{dot}{name}")
    return names


def write_openai_clip(clip: CLIPModel, path: Path) -> Path:
    """A CLIP as OpenAI ships it: the model traced, its weights split fp16/fp32 as
    `convert_weights` leaves them, `input_resolution`, `context_length` and `vocab_size` as
    tensors, saved as a TorchScript archive. (Traced here on the CPU, so its storages are
    on `cpu` where OpenAI's were on `cuda:0`; the loader reads neither.)"""
    model = copy.deepcopy(clip.model)
    sizes = {
        "input_resolution": clip.input_resolution,
        "context_length": clip.context_length,
        "vocab_size": model.vocab_size,
    }
    for name, value in sizes.items():
        if hasattr(model, name):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    images = torch.zeros(1, 3, clip.input_resolution, clip.input_resolution)
    tokens = torch.zeros(1, clip.context_length, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (images, tokens))
    # Halved after tracing: on the GPU OpenAI's graph ran in fp16; on this CPU it could not.
    halves = half_precision_names(model)
    for name, parameter in traced.named_parameters():
        if name in halves:
            parameter.data = parameter.data.half()
    torch.jit.save(traced, str(path))
    return path
