"""The known models: their names, files, where each comes from and its hash.

Three kinds: the VQGANs, the CLIPs, and the depth models the 3D camera reads a picture's depth
with. A storyboard's `models:` names an entry (`vqgan_imagenet_f16_16384`, `ViT-B/32`,
`shapes`, `tiny`, `depth-anything-v2-small`) or gives file paths. Each entry says how its
files are obtained (`Source`): downloaded into the models folder, written there on first use
(`tiny`), or shipped in the package (`shapes`, the project's own trained reference). Where the
files are on this machine is `pipeline.models.files`; loading them, `pipeline.models.loading`.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError
from pipeline.models.architectures import (
    DEPTH_ANYTHING_V2_SMALL,
    GUMBEL_F8_8192,
    IMAGENET_F16_1024,
    IMAGENET_F16_16384,
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI,
    SHAPES_CLIP,
    SHAPES_VQGAN,
    TINY_CLIP,
    TINY_DEPTH,
    TINY_VQGAN,
    CLIPVariant,
    DepthConfig,
    VQGANConfig,
)

TINY = "tiny"
SHAPES = "shapes"
NOISE = "random weights: abstract noise, not art"
RANDOM_WEIGHTS_NOTE = (
    "--random-weights (render flag): the named models' full-size architectures with random "
    "weights, no files needed, for benchmarks; " + NOISE
)
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


@dataclass(frozen=True)
class DepthEntry:
    """A depth model: a picture in, its relative inverse depth out (pipeline.models.depth)."""

    name: str
    file: ModelFile
    architecture: DepthConfig
    notes: str = ""
    source: Source = Source.DOWNLOAD
    kind: str = "depth"

    @property
    def files(self) -> tuple[ModelFile, ...]:
        return (self.file,)


Entry = VQGANEntry | CLIPEntry | DepthEntry


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


# The depth models the 3D camera reads a picture's depth with (issue 38; docs/depth-model-choice.md
# says why this one). The authors' own Hugging Face repository, then the same file at the
# repository's revision that projects pin; the hash is the Git LFS object id of the commit that
# uploaded the file (MODELS.md). Only the Small model's weights are Apache-2.0: Base, Large and
# Giant are CC-BY-NC-4.0, and are never to be added.
_DEPTH_ANYTHING = "https://huggingface.co/depth-anything/Depth-Anything-V2-Small/resolve"
DEPTHS: dict[str, DepthEntry] = {
    "depth-anything-v2-small": DepthEntry(
        "depth-anything-v2-small",
        ModelFile(
            "depth_anything_v2_vits.pth",
            f"{_DEPTH_ANYTHING}/main/depth_anything_v2_vits.pth",
            99_218_434,
            "715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378",
            (
                f"{_DEPTH_ANYTHING}/03876f8651c73a60fe4c2c48294e09fcb6838fcf/"
                "depth_anything_v2_vits.pth",
            ),
        ),
        DEPTH_ANYTHING_V2_SMALL,
        "Depth Anything V2 Small (ViT-S/14 + DPT, 24.8M parameters), relative depth; "
        "weights Apache-2.0",
    ),
}


# The shapes world's reference models, trained by the project (tools/shapes/) and committed
# with the package; these hashes are checked at every load. `make shapes` (in a checkout)
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
TINY_DEPTH_NOTES = "small, built on first use, for tests; random weights: its depth means nothing"


def _packaged(filename: str) -> ModelFile:
    return ModelFile(filename, sha256=SHAPES_FILES[filename])


# The tiny models' files: bump TINY_VERSION when an architecture or seed changes, so that stale
# files in a cache are not reused.
TINY_VERSION = 2


@dataclass(frozen=True)
class TinyFiles:
    vqgan_ckpt: Path
    vqgan_config: Path
    clip: Path


def tiny_files(directory: Path) -> TinyFiles:
    stem = f"tiny-v{TINY_VERSION}"
    return TinyFiles(
        directory / f"{stem}.ckpt", directory / f"{stem}.yaml", directory / f"{stem}-clip.pt"
    )


def tiny_depth_file(directory: Path) -> Path:
    """The tiny depth model's file, in the depth model's published format (a state dict)."""
    return directory / f"tiny-v{TINY_VERSION}-depth.pth"


_tiny = tiny_files(Path())
VQGANS[TINY] = VQGANEntry(
    TINY,
    ModelFile(_tiny.vqgan_config.name),
    ModelFile(_tiny.vqgan_ckpt.name),
    TINY_VQGAN,
    TINY_NOTES,
    Source.BUILT,
)
CLIPS[TINY] = CLIPEntry(TINY, ModelFile(_tiny.clip.name), TINY_CLIP, 64, TINY_NOTES, Source.BUILT)
DEPTHS[TINY] = DepthEntry(
    TINY, ModelFile(tiny_depth_file(Path()).name), TINY_DEPTH, TINY_DEPTH_NOTES, Source.BUILT
)
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


def _key(name: str) -> str:
    """Spellings of one name that should find the same entry: `ViT-B/32`, `vit-b-32`."""
    return name.strip().lower().replace("/", "-").replace("@", "-").removesuffix(".pt")


KINDS = ("vqgan", "clip", "depth")


def entries(kind: str) -> dict[str, Entry]:
    """The entries of a kind ("vqgan", "clip" or "depth"), by name."""
    registry: Mapping[str, Entry] = {"vqgan": VQGANS, "clip": CLIPS, "depth": DEPTHS}[kind]
    return dict(registry)


def find_entry(kind: str, name: str) -> Entry | None:
    """The entry of this kind ("vqgan", "clip" or "depth") that `name` names, if any."""
    known = entries(kind)
    if name in known:
        return known[name]
    for entry in known.values():
        if _key(name) in (_key(entry.name), _key(entry.files[-1].filename)):
            return entry
    return None


def find_entries(name: str) -> list[Entry]:
    """The entries that `name` names, one of each kind at most (`tiny` is of every kind)."""
    return [entry for entry in (find_entry(kind, name) for kind in KINDS) if entry is not None]


def known_names(kind: str | None = None) -> list[str]:
    kinds = [kind] if kind else KINDS
    return list(dict.fromkeys(name for k in kinds for name in entries(k)))


def unknown_name_error(name: str, kind: str | None = None) -> ModelError:
    what = {"vqgan": "VQGAN", "clip": "CLIP model", "depth": "depth model", None: "model"}[kind]
    names = {_key(known): known for known in known_names(kind)}
    close = [names[key] for key in difflib.get_close_matches(_key(name), names, n=3, cutoff=0.6)]
    close = close or [known for key, known in names.items() if _key(name) in key][:3]
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ModelError(
        f"unknown {what} {name!r}.{hint} Known: {', '.join(names.values())} "
        "(`feverdream models list`); or give the path to a file."
    )


def looks_like_path(name: str) -> bool:
    """Whether a model's name is meant as a file (it is one, or ends like one)."""
    endings = (".ckpt", ".yaml", ".pt", ".pth", ".bin", ".safetensors")
    return Path(name).expanduser().exists() or name.endswith(endings)
