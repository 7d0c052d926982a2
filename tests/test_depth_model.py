"""The 3D camera's depth model: Depth Anything V2 Small's architecture has the published
file's names and shapes, and the tiny stand-in, written in the published format, loads through
the real loader and gives a depth for every pixel; wrong or missing files fail clearly."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from test_models_download import FileServer, server  # noqa: F401 (a fixture)

from pipeline.cli import main
from pipeline.errors import ModelError
from pipeline.models.architectures import DEPTH_ANYTHING_V2_SMALL, TINY_DEPTH
from pipeline.models.catalogue import DEPTHS, TINY, DepthEntry, ModelFile, tiny_depth_file
from pipeline.models.checkpoint import Checkpoint, kind_of
from pipeline.models.depth import MASK_TOKEN, DepthModel, random_depth, save_depth
from pipeline.models.download import ensure_downloaded
from pipeline.models.files import file_sha256, models_dir
from pipeline.models.loading import digest, load_depth_model
from pipeline.models.tiny import tiny_depth
from pipeline.record import RANDOM_WEIGHTS

SMALL = DEPTHS["depth-anything-v2-small"]


def pictures(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def as_published(tmp_path, name: str = "depth_anything_v2_vits.pth"):
    """The tiny depth model saved as someone might save a file under the real one's name."""
    path = tmp_path / name
    save_depth(random_depth(TINY_DEPTH, seed=7), path)
    return path


# --- the tiny model, through its real file --------------------------------------------------


def test_the_tiny_depth_model_is_written_as_the_authors_publish_theirs(caplog):
    with caplog.at_level(logging.WARNING):
        model = load_depth_model(TINY)
    assert "its depth means nothing" in caplog.text
    path = tiny_depth_file(models_dir())
    with Checkpoint(path) as checkpoint:
        assert not checkpoint.is_torchscript and isinstance(checkpoint.root, dict)
        names = set(checkpoint.root)
        assert kind_of(checkpoint.root) == "a Depth Anything depth model"
    assert MASK_TOKEN in names and names - {MASK_TOKEN} == set(model.state_dict())
    seeded = tiny_depth().state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, seeded[key]), key
    assert model.checksums == {path.name: file_sha256(path)} and digest(model) == file_sha256(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_the_tiny_depth_model_is_the_same_bytes_wherever_it_is_built(tmp_path):
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    save_depth(tiny_depth(), first)
    save_depth(tiny_depth(), second)
    assert first.read_bytes() == second.read_bytes()


def test_depth_comes_out_at_the_pictures_size_never_negative_and_the_same_every_time():
    model = load_depth_model(TINY)
    for size in [(50, 70), (56, 56), (90, 33)]:
        batch = pictures(2, 3, *size)
        with torch.no_grad():
            depth = model(batch)
            again = load_depth_model(TINY)(batch)  # the same file, loaded again
        assert depth.shape == (2, 1, *size) and depth.dtype == torch.float32
        assert torch.isfinite(depth).all() and (depth >= 0).all()
        assert torch.equal(depth, again)
        assert not torch.allclose(depth[0], depth[1])  # it reads the picture


def test_a_picture_is_run_with_its_shorter_side_at_the_models_input_side():
    with torch.device("meta"):
        model = DepthModel(DEPTH_ANYTHING_V2_SMALL)
    assert model.input_size(518, 518) == (518, 518)
    assert model.input_size(1920, 1080) == (924, 518)  # a TikTok frame: 37x66 patches
    assert model.input_size(288, 512) == (518, 924)
    model.input_side = 364  # faster, coarser
    assert model.input_size(1920, 1080) == (644, 364)
    assert load_depth_model(TINY).input_size(50, 70) == (56, 84)


def test_the_head_reads_the_transformers_own_normed_tokens():
    """At the size its position embeddings were trained at, the tokens the head reads are
    what timm's ViT gives as its normed intermediates; at another, a grid of that size."""
    model = random_depth(TINY_DEPTH, seed=3)
    batch = pictures(2, 3, 56, 56)
    with torch.no_grad():
        ours = model._tokens(batch, (4, 4))
        timms = model.pretrained.forward_intermediates(
            batch, indices=list(TINY_DEPTH.layers), norm=True, output_fmt="NLC",
            intermediates_only=True,
        )  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(ours, timms, strict=True))
        wide = model._tokens(pictures(1, 3, 56, 84), (4, 6))
    assert [tuple(tokens.shape) for tokens in wide] == [(1, 24, 24)] * 4


def test_random_weights_read_no_file(caplog):
    with caplog.at_level(logging.WARNING):
        model = load_depth_model(TINY, random_weights=True)
    assert "--random-weights" in caplog.text
    assert model.checksums == {} and digest(model) == RANDOM_WEIGHTS
    assert not any(models_dir().glob("*"))


# --- the full-size architecture -------------------------------------------------------------


def test_the_full_size_architecture_has_the_published_files_names_and_shapes():
    """Depth Anything V2 Small, built on the meta device (no memory, no compute): the tensors
    of depth_anything_v2_vits.pth (docs/depth-model-choice.md), less DINOv2's mask token."""
    with torch.device("meta"):
        model = DepthModel(SMALL.architecture)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert len(shapes) == 238 and MASK_TOKEN not in shapes
    assert sum(torch.Size(shape).numel() for shape in shapes.values()) == 24_784_705
    assert all(key.startswith(("pretrained.", "depth_head.")) for key in shapes)
    assert len([key for key in shapes if key.startswith("pretrained.")]) == 174  # 12 blocks of 14
    expected = {
        "pretrained.cls_token": (1, 1, 384),
        "pretrained.pos_embed": (1, 1370, 384),  # 37x37 patches and the class token
        "pretrained.patch_embed.proj.weight": (384, 3, 14, 14),
        "pretrained.blocks.11.attn.qkv.weight": (1152, 384),
        "pretrained.blocks.11.ls2.gamma": (384,),
        "pretrained.norm.bias": (384,),
        "depth_head.projects.0.weight": (48, 384, 1, 1),
        "depth_head.projects.3.weight": (384, 384, 1, 1),
        "depth_head.resize_layers.0.weight": (48, 48, 4, 4),  # transposed, stride 4
        "depth_head.resize_layers.1.weight": (96, 96, 2, 2),  # transposed, stride 2
        "depth_head.resize_layers.3.weight": (384, 384, 3, 3),  # stride 2
        "depth_head.scratch.layer1_rn.weight": (64, 48, 3, 3),
        "depth_head.scratch.layer4_rn.weight": (64, 384, 3, 3),
        "depth_head.scratch.refinenet4.resConfUnit1.conv1.bias": (64,),
        "depth_head.scratch.refinenet1.out_conv.weight": (64, 64, 1, 1),
        "depth_head.scratch.output_conv1.weight": (32, 64, 3, 3),
        "depth_head.scratch.output_conv2.0.weight": (32, 32, 3, 3),
        "depth_head.scratch.output_conv2.2.weight": (1, 32, 1, 1),
    }
    assert {key: shapes.get(key) for key in expected} == expected
    assert "depth_head.scratch.layer1_rn.bias" not in shapes
    assert "depth_head.resize_layers.2.weight" not in shapes  # an identity
    # The published file is these numbers and the mask token as float32, and its index.
    numbers = sum(torch.Size(shape).numel() for shape in shapes.values()) + 384
    assert 0 < SMALL.file.approx_bytes - 4 * numbers < 100_000


# --- files that are wrong, missing, or fetched ----------------------------------------------


def test_a_file_that_is_not_the_published_one_is_refused_saying_what_to_do(tmp_path):
    models_dir().mkdir(parents=True)
    shutil.copy(as_published(tmp_path), models_dir() / SMALL.file.filename)
    with pytest.raises(ModelError, match="SHA-256 .* was expected") as caught:
        load_depth_model("depth-anything-v2-small")
    message = str(caught.value)
    assert SMALL.file.sha256 in message
    assert "feverdream models download depth-anything-v2-small" in message


def test_a_missing_depth_model_says_how_to_download_it():
    with pytest.raises(ModelError) as caught:
        load_depth_model("Depth-Anything-V2-Small")
    message = str(caught.value)
    assert "depth-anything-v2-small is not downloaded" in message
    assert "feverdream models download depth-anything-v2-small" in message
    assert SMALL.file.url in message and str(models_dir() / SMALL.file.filename) in message


def test_an_unknown_depth_model_gets_suggestions():
    with pytest.raises(ModelError, match="unknown depth model .*Did you mean depth-anything-v2"):
        load_depth_model("depth-anything-v2-smal")


def test_a_file_of_another_kind_is_not_a_depth_model(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"visual.proj": torch.zeros(2, 2)}, path)
    with pytest.raises(ModelError, match="holds no depth model: it looks like a checkpoint"):
        load_depth_model(str(path))


def test_a_render_fetches_the_depth_model_it_names_once(
    server: FileServer,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
):
    published = as_published(tmp_path)
    server.files["/depth.pth"] = published.read_bytes()
    file = ModelFile("test-depth.pth", server.url("/depth.pth"), sha256=file_sha256(published))
    entry = DepthEntry("test-depth", file, TINY_DEPTH)
    monkeypatch.setitem(DEPTHS, entry.name, entry)
    ensure_downloaded("test-depth")
    ensure_downloaded("test-depth")  # there now: not fetched again
    assert len(server.requests) == 1
    model = load_depth_model("test-depth")
    assert model.checksums == {"test-depth.pth": entry.file.sha256}


# --- the command line -----------------------------------------------------------------------


def test_models_list_shows_the_depth_models(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("\ndepth") :]
    assert "\ndepth-anything-v2-small " in section and "missing" in section
    assert "Apache-2.0" in section and "\ntiny " in section


def test_verify_checks_a_depth_file_by_path_and_by_name(tmp_path, capsys):
    path = as_published(tmp_path, "mine.pth")
    assert main(["models", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "depth model (Depth Anything V2), a 24-d ViT/14 of 4 blocks" in out
    assert "matches no model feverdream knows" in out and "verdict    usable" in out

    assert main(["models", "verify", "depth-anything-v2-small"]) == 1
    assert "feverdream models download depth-anything-v2-small" in capsys.readouterr().err

    models_dir().mkdir(parents=True)
    shutil.copy(path, models_dir() / SMALL.file.filename)
    assert main(["models", "verify", "depth-anything-v2-small"]) == 1
    out = capsys.readouterr().out
    assert "registry   depth-anything-v2-small" in out
    assert f"is not the published hash of depth-anything-v2-small ({SMALL.file.sha256})" in out
    assert "another architecture than depth-anything-v2-small's" in out
    assert "not usable as it is" in out


def test_verify_tiny_checks_each_of_its_models(tiny_model_dir):
    from pipeline.models.verify import verify

    verdicts = verify(TINY)
    assert [Path(v.path).name for v in verdicts] == [
        "tiny-v2.ckpt", "tiny-v2-clip.pt", tiny_depth_file(models_dir()).name
    ]  # fmt: skip
    assert all(v.ok for v in verdicts) and "depth model" in verdicts[-1].architecture
