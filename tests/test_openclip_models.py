"""OpenCLIP's LAION-2B models in the registry: their files (a `.safetensors`, a `.bin` state
dict) load through the real loaders, as tiny models of the same classes written in the same
formats; each is run as it was trained (plain GELU; the ViT-L/14 with 0.5 pixel statistics);
the full-size layouts are what the loader reads; and a file that is not the published one is
refused before it is read."""

from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
from safetensors.torch import save_file
from test_models_loading import assert_same_weights

from pipeline.errors import ModelError
from pipeline.models.architectures import INCEPTION_MEAN, OPENAI, TINY_CLIP, CLIPVariant
from pipeline.models.catalogue import CLIPS
from pipeline.models.clip import build_clip, config_from_state_dict, load_clip, random_clip
from pipeline.models.files import file_sha256
from pipeline.models.loading import load_clip_model

LAION = ("ViT-B-32-laion2b", "ViT-L-14-laion2b")
GELU = CLIPVariant(quick_gelu=False)


def write(clip, path):
    """A CLIP's weights as OpenCLIP publishes them: its state dict, as safetensors or .bin."""
    state = {key: value.contiguous() for key, value in clip.model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def outputs(clip):
    images = torch.rand(2, 3, clip.input_resolution, clip.input_resolution,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    return clip.encode_image(images), clip.encode_text(["a red circle", "static"])


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_an_openclip_file_loads_with_its_weights_and_runs_as_trained(tmp_path, suffix):
    clip = random_clip(TINY_CLIP, seed=8, variant=GELU)
    path = write(clip, tmp_path / f"open_clip_model{suffix}")
    loaded = load_clip(path, variant=GELU)
    assert_same_weights(loaded.model, clip.model)
    for got, want in zip(outputs(loaded), outputs(clip), strict=True):
        torch.testing.assert_close(got, want)
    # Run with OpenAI's activation instead, the same weights see something else.
    as_openai = load_clip(path, variant=OPENAI)
    assert not torch.allclose(outputs(as_openai)[0], outputs(clip)[0], atol=1e-4)


def test_a_damaged_safetensors_file_is_a_clear_error(tmp_path):
    path = write(random_clip(TINY_CLIP, seed=8, variant=GELU), tmp_path / "clip.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable safetensors file.*fetch it again"):
        load_clip(path, variant=GELU)


@pytest.mark.parametrize("name", LAION)
def test_the_registry_runs_each_as_open_clip_says_it_was_trained(name):
    entry = CLIPS[name]
    tag = {"ViT-B-32-laion2b": "laion2b_s34b_b79k", "ViT-L-14-laion2b": "laion2b_s32b_b82k"}
    published = open_clip.get_pretrained_cfg(entry.architecture, tag[name])
    assert published["hf_hub"].strip("/") in entry.file.url
    assert entry.variant.mean == pytest.approx(published.get("mean", OPENAI.mean))
    assert entry.variant.std == pytest.approx(published.get("std", OPENAI.std))
    assert not entry.variant.quick_gelu  # open_clip's config has no quick_gelu for these
    assert not open_clip.get_model_config(entry.architecture).get("quick_gelu", False)
    assert entry.file.sha256 and len(entry.file.sha256) == 64
    assert entry.file.filename.endswith((".safetensors", ".bin"))


@pytest.mark.parametrize("name", LAION)
def test_the_full_size_layout_is_what_the_loader_reads(name, tmp_path):
    """open_clip's own model of the architecture (whose state dict the published file is),
    on the meta device: the loader infers the same architecture from its tensor shapes."""
    entry = CLIPS[name]
    with torch.device("meta"):
        reference = open_clip.create_model(entry.architecture, device="meta")
        shapes = {key: value for key, value in reference.state_dict().items()}
        config = config_from_state_dict(shapes, tmp_path / entry.file.filename)
        built = build_clip(config, entry.variant.quick_gelu)
    assert config["vision_cfg"]["image_size"] == entry.input_resolution
    ours = built.state_dict()
    assert set(ours) == set(shapes)
    assert all(ours[key].shape == shapes[key].shape for key in ours)


@pytest.mark.parametrize("name", LAION)
def test_a_file_that_is_not_the_published_one_is_refused_by_name(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEVERDREAM_MODELS", str(tmp_path))
    entry = CLIPS[name]
    write(random_clip(TINY_CLIP, seed=8, variant=GELU), tmp_path / entry.file.filename)
    with pytest.raises(ModelError, match=f"but {entry.file.sha256} was expected"):
        load_clip_model(name)


@pytest.mark.parametrize("name", LAION)
def test_by_name_a_file_with_the_published_hash_loads_as_its_entry_says(
    name, tmp_path, monkeypatch
):
    """The registry's whole path (models folder, hash, format, variant), with a tiny file in
    place of the 0.6-1.7 GB one: only the hash the entry expects is the tiny file's."""
    monkeypatch.setenv("FEVERDREAM_MODELS", str(tmp_path))
    entry = CLIPS[name]
    clip = random_clip(TINY_CLIP, seed=8, variant=entry.variant)
    path = write(clip, tmp_path / entry.file.filename)
    tiny_file = dataclasses.replace(entry.file, sha256=file_sha256(path))
    monkeypatch.setitem(CLIPS, name, dataclasses.replace(entry, file=tiny_file))
    loaded = load_clip_model(name)
    assert tuple(loaded.mean.flatten().tolist()) == pytest.approx(entry.variant.mean)
    for got, want in zip(outputs(loaded), outputs(clip), strict=True):
        torch.testing.assert_close(got, want)
    if name == "ViT-L-14-laion2b":
        assert entry.variant.mean == INCEPTION_MEAN
