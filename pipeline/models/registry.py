"""The known models: names, files, where each comes from, hashes; where they live; loading by name.

A storyboard's `models:` names a registry entry (`vqgan_imagenet_f16_16384`, `ViT-B/32`,
`shapes`, `tiny`) or gives file paths. Each entry says how its files are obtained (`Source`):
downloaded into the models folder (the environment variable FEVERDREAM_MODELS, else the user
cache (platformdirs) `feverdream/models`), written there on first use (`tiny`), or shipped in
the package (`shapes`, the project's own trained reference). A downloaded file has a
`<file>.sha256` beside it recording the hash of what was fetched; later loads check the file
against it, or against the hash the entry carries (OpenAI's published one; the shapes files').
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from pipeline.errors import ModelError
from pipeline.models import tiny
from pipeline.models.architectures import (
    GUMBEL_F8_8192,
    IMAGENET_F16_1024,
    IMAGENET_F16_16384,
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI,
    SHAPES_CLIP,
    SHAPES_VQGAN,
    TINY_CLIP,
    TINY_VQGAN,
    CLIPVariant,
    VQGANConfig,
)
from pipeline.store import atomic_write

if TYPE_CHECKING:
    import torch

    from pipeline.models.clip import CLIPModel
    from pipeline.models.vqgan import VQGAN

log = logging.getLogger(__name__)

TINY = "tiny"
SHAPES = "shapes"
NOISE = "random weights: abstract noise, not art"
RANDOM_WEIGHTS_NOTE = (
    "--random-weights (render flag): the named models' full-size architectures with random "
    "weights, no files needed, for benchmarks; " + NOISE
)
RANDOM_SEED = 0
MB = 1_000_000


class Source(enum.Enum):
    """Where an entry's files come from."""

    DOWNLOAD = "download"  # fetched into the models folder by `models download` or a render
    BUILT = "built"  # written into the models folder on first use, from fixed seeds (`tiny`)
    PACKAGED = "packaged"  # shipped inside the package, in pipeline/assets/ (`shapes`)


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its name in the models folder and where to fetch it."""

    filename: str
    url: str = ""  # where to fetch it (Source.DOWNLOAD only): the original host
    approx_bytes: int | None = None  # as stated by the tools that use it; for display only
    sha256: str | None = None  # published (or, for packaged files, committed) hash
    mirrors: tuple[str, ...] = ()  # public copies, tried in order after `url` (MODELS.md)

    @property
    def urls(self) -> tuple[str, ...]:
        """Every address of the file, in the order a download tries them."""
        return tuple(url for url in (self.url, *self.mirrors) if url)


@dataclass(frozen=True)
class VQGANEntry:
    name: str
    config: ModelFile
    checkpoint: ModelFile
    architecture: VQGANConfig
    notes: str = ""
    source: Source = Source.DOWNLOAD
    kind: str = "vqgan"
    # Latent cells the camera may move the shown picture before it is encoded again: for a
    # VQGAN whose round trip cannot hold a move smaller than a cell (engine.Engine.move).
    camera_hold: int = 0

    @property
    def files(self) -> tuple[ModelFile, ...]:
        return (self.config, self.checkpoint)


@dataclass(frozen=True)
class CLIPEntry:
    name: str
    file: ModelFile
    # open_clip's name for the same architecture, or the model config itself: what
    # `--random-weights` builds.
    architecture: str | dict[str, Any]
    input_resolution: int
    notes: str = ""
    source: Source = Source.DOWNLOAD
    kind: str = "clip"
    variant: CLIPVariant = OPENAI  # the activation and pixel normalisation it was trained with

    @property
    def files(self) -> tuple[ModelFile, ...]:
        return (self.file,)


Entry = VQGANEntry | CLIPEntry


_HEIBOX = "https://heibox.uni-heidelberg.de"
_SOMNAI = (  # a preservation mirror, pinned to the revision whose hashes it lists
    "https://huggingface.co/Somnai/pytti-vqgan-checkpoints/resolve/"
    "debc22c8f285c7734980c464ff992d335dde6e9a"
)
_PYTTI = "https://huggingface.co/pxlpshr/pytti-models/resolve/main/vqgan"
_ELEIBER = "https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1"


def _heibox(share: str, path: str) -> str:
    return f"{_HEIBOX}/d/{share}/files/?p={path}&dl=1"


@dataclass(frozen=True)
class _Copies:
    """Where one VQGAN file is: its original address, public mirrors, published SHA-256."""

    url: str
    mirrors: tuple[str, ...] = ()
    sha256: str | None = None


def _vqgan(
    name: str,
    config: _Copies,
    checkpoint: _Copies,
    approx_bytes: int | None,
    architecture: VQGANConfig,
    notes: str = "",
) -> VQGANEntry:
    return VQGANEntry(
        name,
        ModelFile(f"{name}.yaml", config.url, None, config.sha256, config.mirrors),
        ModelFile(
            f"{name}.ckpt", checkpoint.url, approx_bytes, checkpoint.sha256, checkpoint.mirrors
        ),
        architecture,
        notes,
    )


# Every address and hash below, with the public source that gives it, is in MODELS.md.
# CompVis publishes no hashes; the ones here are those the preservation mirrors publish,
# which `models download` checks (f16_1024 has none: the download records what it got).
VQGANS: dict[str, VQGANEntry] = {
    entry.name: entry
    for entry in (
        _vqgan(
            "vqgan_imagenet_f16_16384",
            _Copies(
                _heibox("a7530b09fed84f80a887", "%2Fconfigs%2Fmodel.yaml"),
                (
                    f"{_HEIBOX}/f/274fb24ed38341bfa753/?dl=1",
                    f"{_SOMNAI}/imagenet/imagenet.yaml",
                    f"{_PYTTI}/imagenet.yaml",
                    f"{_ELEIBER}/vqgan_imagenet_f16_16384.yaml",
                    "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/"
                    "vqgan_imagenet_f16_16384.yaml",
                ),
                "00e2c6189926f1d89ecfef73e9598db77981c1982f0555fbade963ffd16143c7",
            ),
            _Copies(
                _heibox("a7530b09fed84f80a887", "%2Fckpts%2Flast.ckpt"),
                (
                    f"{_HEIBOX}/f/867b05fc8c4841768640/?dl=1",
                    f"{_SOMNAI}/imagenet/imagenet.ckpt",
                    f"{_PYTTI}/imagenet.ckpt",
                    f"{_ELEIBER}/vqgan_imagenet_f16_16384.ckpt",
                    "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/"
                    "vqgan_imagenet_f16_16384.ckpt",
                ),
                "845a68805098cb666420d5db93df53f3a3b6dd443e6dd85c05759c5b998cd663",
            ),
            980 * MB,
            IMAGENET_F16_16384,
            "ImageNet, f16, 16384 codes (the usual default)",
        ),
        _vqgan(
            "vqgan_imagenet_f16_1024",
            _Copies(
                _heibox("8088892a516d4e3baf92", "%2Fconfigs%2Fmodel.yaml"),
                (
                    f"{_HEIBOX}/f/6ecf2af6c658432c8298/?dl=1",
                    f"{_ELEIBER}/vqgan_imagenet_f16_1024.yaml",
                ),
            ),
            _Copies(
                _heibox("8088892a516d4e3baf92", "%2Fckpts%2Flast.ckpt"),
                (
                    f"{_HEIBOX}/f/140747ba53464f49b476/?dl=1",
                    f"{_ELEIBER}/vqgan_imagenet_f16_1024.ckpt",
                ),
            ),
            958 * MB,
            IMAGENET_F16_1024,
            "ImageNet, f16, 1024 codes",
        ),
        _vqgan(
            "vqgan_gumbel_f8_8192",
            _Copies(
                _heibox("2e5662443a6b4307b470", "%2Fconfigs%2Fmodel.yaml"),
                (
                    f"{_HEIBOX}/f/b24d14998a8d4f19a34f/?dl=1",
                    f"{_SOMNAI}/openimages/openimages.yaml",
                    f"{_PYTTI}/openimages.yaml",
                ),
                "91110bab325067b37f85d1e75895a837d59c292bae4f3097f80c518714d5caff",
            ),
            _Copies(
                _heibox("2e5662443a6b4307b470", "%2Fckpts%2Flast.ckpt"),
                (
                    f"{_HEIBOX}/f/34a747d5765840b5a99d/?dl=1",
                    f"{_SOMNAI}/openimages/openimages.ckpt",
                    f"{_PYTTI}/openimages.ckpt",
                ),
                "5cd6c74810ab97e00e942c25403f73afc081e8b19987b31ec0d9ff5b68e7ab14",
            ),
            377 * MB,
            GUMBEL_F8_8192,
            "OpenImages, f8, 8192 codes, Gumbel quantizer",
        ),
        _vqgan(
            # The original host (eaidata.bmk.sh) is gone; these are its preserved copies.
            "wikiart_16384",
            _Copies(
                "https://github.com/pixray/pixray/releases/download/v1.7.1/vqgan_wikiart_16384.yaml",
                (f"{_SOMNAI}/wikiart/wikiart.yaml", f"{_PYTTI}/wikiart.yaml"),
                "6e78241d2828ff35b8381839ce249c24a6c468ed429760d33a25e98e7f24499a",
            ),
            _Copies(
                "https://github.com/pixray/pixray/releases/download/v1.7.1/vqgan_wikiart_16384.ckpt",
                (f"{_SOMNAI}/wikiart/wikiart.ckpt", f"{_PYTTI}/wikiart.ckpt"),
                "bd08bb46301f98be1712bb2be9f8868cea30b53137cd985d4d6e8da8b3e02c36",
            ),
            1005 * MB,
            IMAGENET_F16_16384,
            "WikiArt, f16, 16384 codes",
        ),
        _vqgan(
            "sflckr",
            _Copies(
                _heibox("73487ab6e5314cb5adba", "%2Fconfigs%2F2020-11-09T13-31-51-project.yaml"),
                (f"{_SOMNAI}/sflickr/sflickr.yaml", f"{_PYTTI}/sflckr.yaml"),
                "c27f012996f3f1f02580f063be47fd60bdd8528efb04d7318b2cbe8a86505b1b",
            ),
            _Copies(
                _heibox("73487ab6e5314cb5adba", "%2Fcheckpoints%2Flast.ckpt"),
                (f"{_SOMNAI}/sflickr/sflickr.ckpt", f"{_PYTTI}/sflckr.ckpt"),
                "8a8adea3da8dab412675772831370dd948e0aa97bb11a9488a2f328b58dbc929",
            ),
            4264 * MB,
            IMAGENET_F16_1024,
            "S-FLCKR landscapes, f16, 1024 codes (first stage of a transformer checkpoint)",
        ),
    )
}

_OPENAI = "https://openaipublic.azureedge.net/clip/models"


def _openai_clip(
    name: str, sha256: str, approx_bytes: int, open_clip_config: str, resolution: int
) -> CLIPEntry:
    filename = name.replace("/", "-").replace("@", "-") + ".pt"
    file = ModelFile(filename, f"{_OPENAI}/{sha256}/{filename}", approx_bytes, sha256)
    notes = f"OpenAI, {resolution} px" + (" (the usual default)" if name == "ViT-B/32" else "")
    return CLIPEntry(name, file, open_clip_config, resolution, notes)


# OpenAI's addresses embed each file's SHA-256 as the second-to-last path segment.
CLIPS: dict[str, CLIPEntry] = {
    entry.name: entry
    for entry in (
        _openai_clip(
            "ViT-B/32",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            338 * MB,
            "ViT-B-32",
            224,
        ),
        _openai_clip(
            "ViT-B/16",
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
            335 * MB,
            "ViT-B-16",
            224,
        ),
        _openai_clip(
            "ViT-L/14",
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
            890 * MB,
            "ViT-L-14",
            224,
        ),
        _openai_clip(
            "ViT-L/14@336px",
            "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            891 * MB,
            "ViT-L-14-336",
            336,
        ),
        _openai_clip(
            "RN50",
            "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
            244 * MB,
            "RN50",
            224,
        ),
        _openai_clip(
            "RN101",
            "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
            278 * MB,
            "RN101",
            224,
        ),
        _openai_clip(
            "RN50x4",
            "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
            402 * MB,
            "RN50x4",
            288,
        ),
        _openai_clip(
            "RN50x16",
            "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
            630 * MB,
            "RN50x16",
            384,
        ),
        _openai_clip(
            "RN50x64",
            "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
            1260 * MB,
            "RN50x64",
            448,
        ),
    )
}


_LAION = "https://huggingface.co/laion"


def _openclip(
    name: str,
    address: str,
    sha256: str,
    size: int,
    open_clip_config: str,
    variant: CLIPVariant,
    notes: str,
) -> CLIPEntry:
    """An OpenCLIP model from LAION's Hugging Face repositories, kept as NAME + its suffix."""
    filename = name + Path(address).suffix
    file = ModelFile(filename, f"{_LAION}/{address}", size, sha256)
    return CLIPEntry(name, file, open_clip_config, 224, notes, variant=variant)


# OpenCLIP's models trained on LAION-2B (open_clip's `pretrained.py` names their repositories;
# the hashes are their Hugging Face LFS object ids, MODELS.md cites where they are published).
# Both use plain GELU; the ViT-L/14 normalises its pixels by 0.5s, as open_clip says.
CLIPS.update(
    (entry.name, entry)
    for entry in (
        _openclip(
            "ViT-B-32-laion2b",
            "CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/1a25a446712ba5ee05982a381eed697ef9b435cf/"
            "open_clip_model.safetensors",
            "ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
            605_143_316,
            "ViT-B-32",
            CLIPVariant(quick_gelu=False),
            "OpenCLIP, LAION-2B, 224 px (ImageNet zero-shot 66.6%; OpenAI's ViT-B/32 63.2%)",
        ),
        _openclip(
            "ViT-L-14-laion2b",
            "CLIP-ViT-L-14-laion2B-s32B-b82K/resolve/main/open_clip_pytorch_model.bin",
            "5ddb47339f44e4fd9cace3d3960d38af1b51a25857440cfae90afc44706d7e2b",
            1_710_631_365,
            "ViT-L-14",
            CLIPVariant(quick_gelu=False, mean=INCEPTION_MEAN, std=INCEPTION_STD),
            "OpenCLIP, LAION-2B, 224 px (ImageNet zero-shot 75.3%; OpenAI's ViT-L/14 75.5%)",
        ),
    )
)


# The shapes world's reference models, trained by the project (tools/shapes/) and committed
# with the package; these hashes are checked at every load. `feverdream models build shapes`
# trains them again from the recipe and says how far the new weights are from these.
SHAPES_NOTES = (
    "trained by feverdream on drawn shapes (tools/shapes/): knows colours, shapes, sizes and "
    "positions, nothing else; shipped with the package"
)
SHAPES_FILES = {
    "shapes-vqgan.ckpt": "b2dfc7405ca39c0ddbd258b93e6123efd789e99785ef199ab54cb96b937d701a",
    "shapes-vqgan.yaml": "ca6836470a3ad5e0b950c05f53b11851eba87d9ea8e09a4fb289c2f348565064",
    "shapes-clip.pt": "e6774fff8f3b0723e9ae422e508463c33a90e126f371b6b47f6fdd2fc68b6c03",
}
TINY_NOTES = f"small, built on first use, for tests and `make demo-tiny`; {NOISE}"


def _packaged(filename: str) -> ModelFile:
    return ModelFile(filename, sha256=SHAPES_FILES[filename])


_tiny = tiny.tiny_files(Path())
VQGANS[TINY] = VQGANEntry(
    TINY,
    ModelFile(_tiny.vqgan_config.name),
    ModelFile(_tiny.vqgan_ckpt.name),
    TINY_VQGAN,
    TINY_NOTES,
    Source.BUILT,
)
CLIPS[TINY] = CLIPEntry(TINY, ModelFile(_tiny.clip.name), TINY_CLIP, 64, TINY_NOTES, Source.BUILT)
VQGANS[SHAPES] = VQGANEntry(
    SHAPES,
    _packaged("shapes-vqgan.yaml"),
    _packaged("shapes-vqgan.ckpt"),
    SHAPES_VQGAN,
    SHAPES_NOTES,
    Source.PACKAGED,
    # It decodes in 8x8 blocks: encoded again, a picture moved less than a cell (a zoom of a
    # few percent, a slow pan) comes back unmoved (bench/RESULTS.md, "A camera the latents
    # cannot hold").
    camera_hold=4,
)
CLIPS[SHAPES] = CLIPEntry(
    SHAPES, _packaged("shapes-clip.pt"), SHAPES_CLIP, 64, SHAPES_NOTES, Source.PACKAGED
)


def packaged_dir() -> Path:
    """Where the package's own model files are (the shapes world's)."""
    return Path(str(resources.files("pipeline") / "assets" / "models"))


def models_dir() -> Path:
    """Where downloaded (and tiny) model files live."""
    override = os.environ.get("FEVERDREAM_MODELS")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("feverdream")) / "models"


def _key(name: str) -> str:
    """Spellings of one name that should find the same entry: `ViT-B/32`, `vit-b-32`."""
    return name.strip().lower().replace("/", "-").replace("@", "-").removesuffix(".pt")


def _table(kind: str) -> dict[str, Entry]:
    return dict(VQGANS) if kind == "vqgan" else dict(CLIPS)


def find_entry(kind: str, name: str) -> Entry | None:
    """The registry entry of this kind ("vqgan" or "clip") that `name` names, if any."""
    table = _table(kind)
    if name in table:
        return table[name]
    for entry in table.values():
        if _key(name) in (_key(entry.name), _key(entry.files[-1].filename)):
            return entry
    return None


def known_names(kind: str | None = None) -> list[str]:
    kinds = [kind] if kind else ["vqgan", "clip"]
    return list(dict.fromkeys(name for k in kinds for name in _table(k)))


def unknown_name_error(name: str, kind: str | None = None) -> ModelError:
    what = {"vqgan": "VQGAN", "clip": "CLIP model", None: "model"}[kind]
    names = {_key(known): known for known in known_names(kind)}
    close = [names[key] for key in difflib.get_close_matches(_key(name), names, n=3, cutoff=0.6)]
    close = close or [known for key, known in names.items() if _key(name) in key][:3]
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ModelError(
        f"unknown {what} {name!r}.{hint} Known: {', '.join(names.values())} "
        "(`feverdream models list`); or give the path to a file."
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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


def looks_like_path(name: str) -> bool:
    """Whether a model's name is meant as a file (it is one, or ends like one)."""
    endings = (".ckpt", ".yaml", ".pt", ".pth", ".bin", ".safetensors")
    return Path(name).expanduser().exists() or name.endswith(endings)


def entry_paths(entry: Entry) -> tuple[Path, ...]:
    """Where an entry's files are on this machine, in the order of `entry.files`: the
    package's own folder, or the models folder (built tiny files are written first). A
    downloaded model's files may not be there yet."""
    if entry.source is Source.PACKAGED:
        return tuple(packaged_dir() / file.filename for file in entry.files)
    folder = models_dir()
    if entry.source is Source.BUILT:
        tiny.ensure_tiny(folder)
    return tuple(folder / file.filename for file in entry.files)


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
    name = os.fspath(name_or_path)
    entry = find_entry("clip", name)
    if isinstance(entry, CLIPEntry):
        (path,) = _present(entry)
        return path, expected_sha256(entry.file, path)
    if not looks_like_path(name):
        raise unknown_name_error(name, "clip")
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelError(f"the CLIP file {path} does not exist")
    return path, recorded_sha256(path)


def model_paths(name: str) -> list[Path]:
    """The files of a registry model (a VQGAN's checkpoint and yaml, a CLIP's file, or both
    for a name that is both), which must be present."""
    paths: list[Path] = []
    if find_entry("vqgan", name):
        paths += resolve_vqgan(name)[:2]
    if find_entry("clip", name):
        paths.append(resolve_clip(name)[0])
    if not paths:
        raise unknown_name_error(name)
    return paths


@dataclass(frozen=True)
class ModelStatus:
    """One row of `feverdream models list`."""

    name: str
    present: bool
    paths: tuple[Path, ...]
    size: int | None  # bytes on disk when present, else the stated size when known
    notes: str
    source: Source


def status(kind: str) -> list[ModelStatus]:
    """What is known of this kind ("vqgan" or "clip"), and what is on this machine."""
    rows = []
    for entry in _table(kind).values():
        if entry.source is Source.BUILT:
            paths = tuple(models_dir() / file.filename for file in entry.files)  # not built here
        else:
            paths = entry_paths(entry)
        present = all(path.is_file() for path in paths)
        if present:
            size = sum(path.stat().st_size for path in paths)
        else:
            stated = [file.approx_bytes for file in entry.files if file.approx_bytes]
            size = sum(stated) if stated else None
        rows.append(ModelStatus(entry.name, present, paths, size, entry.notes, entry.source))
    return rows


def _random_vqgan(name: str) -> VQGAN:
    from pipeline.models.vqgan import random_vqgan

    entry = find_entry("vqgan", name)
    if not isinstance(entry, VQGANEntry):
        raise unknown_name_error(name, "vqgan")
    return random_vqgan(entry.architecture, RANDOM_SEED)


def _random_clip(name: str) -> CLIPModel:
    from pipeline.models.clip import random_clip

    entry = find_entry("clip", name)
    if not isinstance(entry, CLIPEntry):
        raise unknown_name_error(name, "clip")
    config = entry.architecture
    if isinstance(config, str):
        import open_clip

        config = open_clip.get_model_config(config)
    return random_clip(config, RANDOM_SEED, entry.variant)


def _downloaded(entry: Entry | None) -> bool:
    return entry is not None and entry.source is Source.DOWNLOAD


def _warn_random(random_weights: bool, names: Sequence[str]) -> None:
    if random_weights or TINY in names:
        log.warning(
            "%s: these models have random weights and make abstract noise, not art",
            "--random-weights" if random_weights else "tiny",
        )


def load_models(
    vqgan: str,
    clip: str,
    device: str | torch.device = "cpu",
    random_weights: bool = False,
    vqgan_config: str | os.PathLike[str] | None = None,
) -> tuple[VQGAN, CLIPModel]:
    """The VQGAN and CLIP a render uses, on `device`, in eval mode with gradients off.

    Names are registry names or file paths (see resolve_vqgan / resolve_clip).
    With `random_weights`, the named registry models' full-size architectures are built with
    random weights from a fixed seed, and no file is read. Each model's `checksums` maps the
    files it was loaded from to their SHA-256 (empty for random weights), for render.json.
    """
    vqgan_model, ((clip_model, _),) = load_all(
        vqgan, ((clip, 1.0),), device, random_weights, vqgan_config
    )
    return vqgan_model, clip_model


def load_all(
    vqgan: str,
    clips: Sequence[tuple[str, float]],
    device: str | torch.device = "cpu",
    random_weights: bool = False,
    vqgan_config: str | os.PathLike[str] | None = None,
) -> tuple[VQGAN, list[tuple[CLIPModel, float]]]:
    """The VQGAN and each (CLIP, weight) a render uses, as `load_models` loads them; every
    file is found before any is read, and a CLIP named twice is loaded once."""
    names = list(dict.fromkeys(name for name, _ in clips))
    _warn_random(random_weights, [vqgan, *names])
    if random_weights:
        vqgan_model = _random_vqgan(vqgan)
        loaded = {name: _random_clip(name) for name in names}
    else:
        from pipeline.models.clip import load_clip
        from pipeline.models.vqgan import load_vqgan

        ckpt, config, vqgan_sha = resolve_vqgan(vqgan, vqgan_config)
        found = {name: resolve_clip(name) for name in names}
        # Downloaded models' names go into error messages as `feverdream models download NAME`.
        vqgan_model = load_vqgan(
            ckpt, config, vqgan_sha, vqgan if _downloaded(find_entry("vqgan", vqgan)) else ""
        )
        loaded = {}
        for name, (path, sha256) in found.items():
            entry = find_entry("clip", name)
            shown = name if _downloaded(entry) else ""
            loaded[name] = load_clip(path, sha256, shown, _variant(entry))
    entry = find_entry("vqgan", vqgan)
    if isinstance(entry, VQGANEntry):
        vqgan_model.camera_hold = entry.camera_hold
    models = {name: model.to(device) for name, model in loaded.items()}
    return vqgan_model.to(device), [(models[name], weight) for name, weight in clips]


def _variant(entry: Entry | None) -> CLIPVariant:
    """How a CLIP is run: as its entry says, else as OpenAI's (a file given by path)."""
    return entry.variant if isinstance(entry, CLIPEntry) else OPENAI


def load_clip_model(name: str, device: str | torch.device = "cpu") -> CLIPModel:
    """One CLIP, by registry name or file path, as `load_models` loads it."""
    from pipeline.models.clip import load_clip

    path, sha256 = resolve_clip(name)
    entry = find_entry("clip", name)
    shown = name if _downloaded(entry) else ""
    return load_clip(path, sha256, shown, _variant(entry)).to(device)


def digest(model: VQGAN | CLIPModel) -> str:
    """What a loaded model was made from, for a render's records: the SHA-256 of its files,
    or "random weights" when no file was read."""
    if not model.checksums:
        return "random weights"
    return ", ".join(sorted(set(model.checksums.values())))
