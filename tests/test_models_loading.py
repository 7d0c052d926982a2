"""Models load from real-format files through the real loaders, safely, or fail clearly."""

from __future__ import annotations

import logging
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.errors import ModelError
from pipeline.models.architectures import TINY_CLIP, TINY_VQGAN, VQGANConfig
from pipeline.models.catalogue import CLIPS, VQGANS, Source, tiny_files
from pipeline.models.checkpoint import Checkpoint, Opaque
from pipeline.models.clip import CLIPModel, build_clip, load_clip, random_clip
from pipeline.models.files import file_sha256, models_dir, resolve_clip, resolve_vqgan
from pipeline.models.loading import load_models
from pipeline.models.tiny import CLIP_SEED, VQGAN_SEED
from pipeline.models.vqgan import VQGAN, load_vqgan, random_vqgan, save_vqgan


def small_config(n_embed: int = 16, ch: int = 32, gumbel: bool = False) -> VQGANConfig:
    """A VQGAN small enough to build in milliseconds (f2, one block per level)."""
    ddconfig = {
        "double_z": False,
        "z_channels": 32,
        "resolution": 32,
        "in_channels": 3,
        "out_ch": 3,
        "ch": ch,
        "ch_mult": [1, 1],
        "num_res_blocks": 0,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    return VQGANConfig(embed_dim=32, n_embed=n_embed, ddconfig=ddconfig, gumbel=gumbel)


def write_yaml(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


# --- the tiny models, through their real files ----------------------------------------------


def test_tiny_vqgan_from_its_checkpoint_matches_the_seeded_model(tiny_model_dir):
    files = tiny_files(tiny_model_dir)
    loaded = load_vqgan(files.vqgan_ckpt, files.vqgan_config)
    fresh = random_vqgan(TINY_VQGAN, VQGAN_SEED)
    x = torch.rand(1, 3, 144, 256) * 2 - 1
    z = loaded.encode(x)
    assert torch.equal(z, fresh.encode(x))
    assert torch.equal(loaded.decode(loaded.quantize_st(z)), fresh.decode(fresh.quantize_st(z)))
    with zipfile.ZipFile(files.vqgan_ckpt) as archive:  # a torch.save zip, as Lightning writes
        assert any(name.endswith("/data.pkl") for name in archive.namelist())
    config = yaml.safe_load(files.vqgan_config.read_text())
    assert config["model"]["target"] == "taming.models.vqgan.VQModel"


def test_tiny_clip_from_its_torchscript_archive_matches_the_seeded_model(tiny_model_dir):
    path = tiny_files(tiny_model_dir).clip
    loaded = load_clip(path)
    fresh = random_clip(TINY_CLIP, CLIP_SEED)
    texts = ["a narrow hallway", "a racing heart made of ticking clocks"]
    assert torch.equal(loaded.encode_text(texts), fresh.encode_text(texts))
    images = torch.rand(3, 3, loaded.input_resolution, loaded.input_resolution)
    assert torch.equal(loaded.encode_image(images), fresh.encode_image(images))
    # The file is real TorchScript: torch.jit runs it (our own file, so running it is fine)
    # and gets the same image features.
    with pytest.warns(FutureWarning):
        traced = torch.jit.load(str(path))
    normalised = (images - loaded.mean) / loaded.std
    expected = torch.nn.functional.normalize(traced.encode_image(normalised), dim=-1)
    torch.testing.assert_close(loaded.encode_image(images), expected)


def test_clip_saved_as_a_plain_state_dict_loads_too(tmp_path):
    clip = random_clip(TINY_CLIP, seed=5)
    path = tmp_path / "clip.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = load_clip(path)
    assert_same_weights(loaded.model, clip.model)
    assert loaded.checksums == {"clip.pt": file_sha256(path)}


def test_vqgan_tensor_conventions():
    vqgan = random_vqgan(TINY_VQGAN, seed=3)
    assert vqgan.downsample == 16 and not vqgan.training
    assert not any(p.requires_grad for p in vqgan.parameters())
    assert vqgan.codebook.shape == (TINY_VQGAN.n_embed, TINY_VQGAN.embed_dim)
    z = vqgan.encode(torch.rand(2, 3, 144, 256) * 2 - 1)
    assert z.shape == (2, TINY_VQGAN.embed_dim, 9, 16)
    z = (z + 0.3 * torch.randn_like(z)).requires_grad_(True)
    z_q = vqgan.quantize_st(z)

    # Every vector is its nearest codebook entry...
    def flat(latent: torch.Tensor) -> torch.Tensor:
        return latent.detach().movedim(1, -1).reshape(-1, TINY_VQGAN.embed_dim)

    nearest = torch.cdist(flat(z), vqgan.codebook).argmin(1)
    torch.testing.assert_close(flat(z_q), vqgan.codebook[nearest], atol=1e-6, rtol=0)
    # ...and the gradient passes straight through to z.
    image = vqgan.decode(z_q)
    assert image.shape == (2, 3, 144, 256)
    assert image.min() >= -1 and image.max() <= 1
    image.mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_clip_tensor_conventions():
    clip = random_clip(TINY_CLIP, seed=4)
    assert isinstance(clip, CLIPModel) and not clip.training
    assert not any(p.requires_grad for p in clip.parameters())
    text = clip.encode_text(["one", "two", "three"])
    assert text.shape == (3, clip.embed_dim) and not text.requires_grad
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    images = torch.rand(2, 3, clip.input_resolution, clip.input_resolution, requires_grad=True)
    features = clip.encode_image(images)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    (features @ text.T).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="64, 64"):
        clip.encode_image(torch.rand(1, 3, 32, 32))


# --- real checkpoint layouts ------------------------------------------------------------------


class ModelCheckpoint:
    """Stands for Lightning's callback class, which real checkpoints use as a dict key."""


class _Shell:
    """Pickles as a call to os.system: loading it with plain pickle runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    """Pickles as a call to exec: loading it with plain pickle runs Python code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_lightning_checkpoint_with_foreign_objects_loads_them_as_inert_data(tmp_path):
    vqgan = random_vqgan(small_config(), seed=1)
    checkpoint = {
        "epoch": 12,
        "global_step": np.int64(34),
        "pytorch-lightning_version": "1.0.8",
        "state_dict": {
            **vqgan.state_dict(),
            "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4),
        },
        "callbacks": {ModelCheckpoint: {"best_model_score": np.float64(0.25)}},
    }
    ckpt = tmp_path / "last.ckpt"
    torch.save(checkpoint, ckpt)
    config = write_yaml(tmp_path / "model.yaml", vqgan.config.to_yaml())

    assert_same_weights(load_vqgan(ckpt, config), vqgan)
    with Checkpoint(ckpt) as opened:
        root = opened.root
    assert root["epoch"] == 12
    (callback,) = root["callbacks"]
    assert issubclass(callback, Opaque) and callback.qualname.endswith(".ModelCheckpoint")
    assert isinstance(root["global_step"], Opaque)


@pytest.mark.parametrize("payload", [_Shell, _Exec])
def test_a_checkpoint_that_would_run_code_is_refused_as_unsafe(tmp_path, payload):
    vqgan = random_vqgan(small_config(), seed=1)
    marker = tmp_path / "ran"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": vqgan.state_dict(), "hyper_parameters": payload(marker)}, ckpt)
    config = write_yaml(tmp_path / "model.yaml", vqgan.config.to_yaml())

    with pytest.raises(ModelError, match="is unsafe: reading it would call") as caught:
        load_vqgan(ckpt, config)
    message = str(caught.value)
    assert "Nothing was run" in message and "corrupt" not in message
    assert not marker.exists()
    # The payload is live: an ordinary unpickler runs it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


class _Plain:
    """An ordinary object, which pickle protocol 1 rebuilds via builtins.object."""

    def __init__(self):
        self.note = "kept"


def test_harmless_builtins_in_a_pickle_are_data_not_refused(tmp_path):
    vqgan = random_vqgan(small_config(), seed=1)
    config = write_yaml(tmp_path / "model.yaml", vqgan.config.to_yaml())
    ckpt = tmp_path / "last.ckpt"
    hyper = {"plain": _Plain(), "shape": (Ellipsis, 3), "names": frozenset({"a"})}
    torch.save({"state_dict": vqgan.state_dict(), "hyper_parameters": hyper}, ckpt,
               pickle_protocol=1)  # fmt: skip
    assert_same_weights(load_vqgan(ckpt, config), vqgan)
    with Checkpoint(ckpt) as opened:
        kept = opened.root["hyper_parameters"]
    assert isinstance(kept["plain"], Opaque) and kept["plain"].state == {"note": "kept"}
    assert issubclass(kept["shape"][0], Opaque) and kept["shape"][1] == 3
    assert isinstance(kept["names"], Opaque) and list(kept["names"].args[0]) == ["a"]


def test_a_global_is_never_imported(tmp_path):
    """A pickle naming a module that does not exist: plain pickle would try to import it."""
    payload = b"\x80\x02}q\x00X\x04\x00\x00\x00evilcfeverdream_not_a_module\nboom\n)Rs."
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(payload)
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/byteorder", "little")
    with Checkpoint(path) as opened:
        assert isinstance(opened.root["evil"], Opaque)
    assert "feverdream_not_a_module" not in sys.modules
    with pytest.raises(ModelError, match="no VQGAN weights"):
        load_vqgan(path, write_yaml(tmp_path / "evil.yaml", small_config().to_yaml()))


TENSOR = (
    b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
    b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89)tR"
)
REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n"
SET_SHAPE = b"N}X\x05\x00\x00\x00shapeK\x63\x85s\x86b"  # BUILD, slot state shape=(99,)
SET_DEFAULTS = b"N}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b"


@pytest.mark.parametrize("target, build", [(TENSOR, SET_SHAPE), (REBUILD, SET_DEFAULTS)])
def test_a_pickle_cannot_rewrite_what_the_loader_checked_or_trusts(tmp_path, target, build):
    """BUILD sets attributes on whatever is on the stack: a checked tensor's shape, or the
    defaults of the loader's own rebuild function (which would outlive this file)."""
    path = tmp_path / "rewrite.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/data.pkl", b"\x80\x02}X\x01\x00\x00\x00a" + target + build + b"s.")
        archive.writestr("x/data/0", bytes(16))
    with pytest.raises(ModelError, match="tried to modify"):
        Checkpoint(path)


def test_legacy_torch_save_format_loads(tmp_path):
    vqgan = random_vqgan(small_config(), seed=2)
    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": vqgan.state_dict()}, ckpt, _use_new_zipfile_serialization=False)
    config = write_yaml(tmp_path / "old.yaml", vqgan.config.to_yaml())
    assert_same_weights(load_vqgan(ckpt, config), vqgan)


def test_sflckr_style_transformer_checkpoint_loads_its_first_stage(tmp_path):
    first_stage = random_vqgan(small_config(), seed=3)
    cond_stage = random_vqgan(small_config(n_embed=8), seed=4)
    state = {f"first_stage_model.{k}": v for k, v in first_stage.state_dict().items()}
    state |= {f"cond_stage_model.{k}": v for k, v in cond_stage.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.randn(16, 64)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    project = {
        "model": {
            "base_learning_rate": 4.5e-06,
            "target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {
                "first_stage_key": "image",
                "cond_stage_key": "segmentation",
                "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT"},
                "first_stage_config": first_stage.config.to_yaml()["model"],
                "cond_stage_config": cond_stage.config.to_yaml()["model"],
            },
        }
    }
    config = write_yaml(tmp_path / "2020-11-09T13-31-51-project.yaml", project)
    assert_same_weights(load_vqgan(tmp_path / "last.ckpt", config), first_stage)


def test_gumbel_vqgan_loads_and_encodes_onto_its_codebook(tmp_path):
    vqgan = random_vqgan(small_config(gumbel=True), seed=5)
    save_vqgan(vqgan, tmp_path / "gumbel.ckpt", tmp_path / "gumbel.yaml")
    assert "GumbelVQ" in (tmp_path / "gumbel.yaml").read_text()
    loaded = load_vqgan(tmp_path / "gumbel.ckpt", tmp_path / "gumbel.yaml")
    assert_same_weights(loaded, vqgan)
    assert loaded.codebook is loaded.quantize.embed.weight
    z = loaded.encode(torch.rand(1, 3, 16, 16) * 2 - 1)
    assert z.shape == (1, 32, 8, 8)
    assert torch.equal(loaded.quantize_st(z), z)  # already codebook entries


# --- failures -----------------------------------------------------------------------------------


@pytest.fixture
def saved_small(tmp_path) -> tuple[Path, Path]:
    vqgan = random_vqgan(small_config(), seed=6)
    save_vqgan(vqgan, tmp_path / "small.ckpt", tmp_path / "small.yaml")
    return tmp_path / "small.ckpt", tmp_path / "small.yaml"


def _flip_a_data_byte(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    with open(path, "r+b") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(file.read(4), dtype="<u2")
        file.seek(info.header_offset + 30 + int(name_length) + int(extra_length) + 100)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize(
    "damage, says",
    [
        ("truncated", "cut-short or corrupt PyTorch checkpoint"),
        ("flipped byte", "cut-short or corrupt PyTorch checkpoint"),
        ("random bytes", "not a PyTorch checkpoint: it looks like some other kind of file"),
        ("empty", "not a PyTorch checkpoint: it looks like an empty file"),
        ("text", "not a PyTorch checkpoint: it looks like a web page (HTML)"),
        ("other zip", "not a PyTorch checkpoint: it looks like a zip archive of other files"),
        ("other pickle", "not a PyTorch checkpoint: it looks like a Python pickle that"),
    ],
)
def test_a_corrupt_checkpoint_fails_clearly(saved_small, damage, says):
    ckpt, config = saved_small
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "random bytes":
        ckpt.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "flipped byte":
        _flip_a_data_byte(ckpt)
    elif damage == "other zip":
        with zipfile.ZipFile(ckpt, "w") as archive:
            archive.writestr("vqgan/last.ckpt", data)
    elif damage == "other pickle":
        ckpt.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=2))
    else:
        ckpt.write_text("<html>404 Not Found</html>")
    with pytest.raises(ModelError) as caught:
        load_vqgan(ckpt, config)
    message = str(caught.value)
    assert says in message and str(ckpt) in message and "download it again" in message
    assert ("corrupt" in message.replace(str(ckpt), "")) == ("corrupt" in says)


def test_a_config_that_does_not_match_its_checkpoint_fails_clearly(saved_small, tmp_path):
    ckpt, _ = saved_small
    wrong_codes = write_yaml(tmp_path / "codes.yaml", small_config(n_embed=32).to_yaml())
    with pytest.raises(ModelError, match="does not match") as caught:
        load_vqgan(ckpt, wrong_codes)
    expected = "quantize.embedding.weight is (16, 32) in the file but (32, 32) here"
    assert expected in str(caught.value)
    wrong_width = write_yaml(tmp_path / "width.yaml", small_config(ch=64).to_yaml())
    with pytest.raises(ModelError, match="shape mismatch: encoder.conv_in.weight"):
        load_vqgan(ckpt, wrong_width)
    gumbel = write_yaml(tmp_path / "gumbel.yaml", small_config(gumbel=True).to_yaml())
    with pytest.raises(ModelError, match="missing: quantize.proj.*unexpected: quantize.embedding"):
        load_vqgan(ckpt, gumbel)


@pytest.mark.parametrize(
    "document, message",
    [
        ({"model": {"target": "taming.models.vqgan.EMAVQ", "params": {}}}, "is not a VQModel"),
        ({"data": {}}, "no `model:` section"),
        ({"model": {"target": "taming.models.vqgan.VQModel", "params": {}}}, "ddconfig"),
    ],
)
def test_a_config_that_is_not_a_vqgan_config_fails_clearly(
    saved_small, tmp_path, document, message
):
    with pytest.raises(ModelError, match=message):
        load_vqgan(saved_small[0], write_yaml(tmp_path / "bad.yaml", document))


def test_a_wrong_hash_refuses_the_file_before_reading_it(saved_small):
    with pytest.raises(ModelError, match="SHA-256 .* was expected") as caught:
        load_vqgan(*saved_small, sha256="0" * 64, name="vqgan_imagenet_f16_16384")
    assert "feverdream models download vqgan_imagenet_f16_16384" in str(caught.value)


def test_a_vqgan_file_is_not_a_clip(saved_small):
    with pytest.raises(ModelError, match="not an OpenAI CLIP model.*looks like a VQGAN"):
        load_clip(saved_small[0])


def test_a_clip_file_is_not_a_vqgan(tiny_model_dir, saved_small):
    clip = tiny_files(tiny_model_dir).clip
    with pytest.raises(ModelError, match="no VQGAN weights: it looks like a TorchScript module"):
        load_vqgan(clip, saved_small[1])


# --- the registry -----------------------------------------------------------------------------


def test_load_models_tiny_warns_it_is_noise(tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING):
        vqgan, clip = load_models("tiny", "tiny", "cpu")
    assert "abstract noise, not art" in caplog.text
    assert isinstance(vqgan, VQGAN) and isinstance(clip, CLIPModel)
    files = tiny_files(tiny_model_dir)
    assert set(vqgan.checksums) == {files.vqgan_ckpt.name, files.vqgan_config.name}
    assert set(clip.checksums) == {files.clip.name}


def test_random_weights_need_no_files(caplog):
    with caplog.at_level(logging.WARNING):
        vqgan, clip = load_models("tiny", "tiny", "cpu", random_weights=True)
    assert "--random-weights" in caplog.text and vqgan.checksums == {} == clip.checksums
    assert not any(models_dir().glob("*"))


def test_every_registry_architecture_builds():
    """The full-size shapes of every downloaded model, built on the meta device (no memory,
    no compute); every model the registry knows, built or shipped too, at its resolution."""
    downloaded = Source.DOWNLOAD
    with torch.device("meta"):
        for entry in VQGANS.values():
            vqgan = VQGAN(entry.architecture)
            if entry.source is not downloaded:
                continue
            assert vqgan.codebook.shape == (entry.architecture.n_embed, 256)
            state = vqgan.state_dict()
            assert state["encoder.conv_in.weight"].shape == (128, 3, 3, 3)
            assert state["decoder.conv_out.weight"].shape == (3, 128, 3, 3)
        assert VQGAN(VQGANS["vqgan_imagenet_f16_16384"].architecture).downsample == 16
        assert VQGAN(VQGANS["vqgan_gumbel_f8_8192"].architecture).downsample == 8
        import open_clip

        for entry in CLIPS.values():
            config = entry.architecture
            model = build_clip(
                open_clip.get_model_config(config) if isinstance(config, str) else config
            )
            size = model.visual.image_size
            assert (size if isinstance(size, int) else size[0]) == entry.input_resolution
            if entry.source is downloaded and "openaipublic" in entry.file.url:
                # OpenAI's addresses embed each file's hash (OpenCLIP's: test_openclip_models).
                assert entry.file.url.split("/")[-2] == entry.file.sha256


def test_a_checkpoint_path_finds_its_config_beside_it(saved_small):
    ckpt, config = saved_small
    assert resolve_vqgan(str(ckpt)) == (ckpt, config, None)
    assert resolve_vqgan(str(config))[:2] == (ckpt, config)
    Path(f"{ckpt}.sha256").write_text(f"{'a' * 64}  small.ckpt\n")
    assert resolve_vqgan(ckpt)[2] == "a" * 64
    config.unlink()
    with pytest.raises(ModelError, match="config .*small.yaml does not exist"):
        resolve_vqgan(str(ckpt))


def test_names_that_are_not_known_get_suggestions():
    with pytest.raises(ModelError, match="Did you mean vqgan_imagenet_f16_16384"):
        resolve_vqgan("vqgan_imagenet_f16_16385")
    with pytest.raises(ModelError, match="unknown CLIP model 'ViT-B/33'. Did you mean ViT-B/32"):
        resolve_clip("ViT-B/33")


def test_a_missing_download_says_how_to_get_it():
    with pytest.raises(ModelError) as caught:
        resolve_clip("vit-b-32")
    message = str(caught.value)
    assert "feverdream models download ViT-B/32" in message
    assert CLIPS["ViT-B/32"].file.url in message
    assert str(models_dir() / "ViT-B-32.pt") in message
