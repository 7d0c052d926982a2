"""`feverdream models verify`: a model file copied by hand is checked for its hash, whether
it loads, its architecture, and which registry model it is."""

from __future__ import annotations

import shutil

import pytest
from real_checkpoints import write_openai_clip, write_taming_vqgan
from test_models_loading import small_config

from pipeline.cli import main
from pipeline.models.architectures import TINY_CLIP
from pipeline.models.catalogue import CLIPS, SHAPES_FILES
from pipeline.models.clip import random_clip
from pipeline.models.files import models_dir
from pipeline.models.vqgan import random_vqgan


@pytest.fixture(scope="module")
def by_hand(tmp_path_factory):
    """A taming checkpoint and an OpenAI-style CLIP, as someone fetched them by hand."""
    folder = tmp_path_factory.mktemp("by-hand")
    ckpt, _ = write_taming_vqgan(random_vqgan(small_config(), seed=31), folder, "lightning-1.0.8")
    clip = write_openai_clip(random_clip(TINY_CLIP, seed=32), folder / "ViT-tiny.pt")
    return ckpt, clip


def test_files_of_ones_own_are_usable_and_said_to_be_unknown(by_hand, capsys):
    assert main(["models", "verify", *map(str, by_hand)]) == 0
    out = capsys.readouterr().out
    assert out.count("matches no model feverdream knows") == 2
    assert "VQGAN f2, 16 codes; loads" in out and "CLIP, 64 px input" in out
    assert out.count("verdict    usable") == 2


def test_verifying_an_unknown_file_writes_nothing_into_the_models_folder(by_hand):
    assert main(["models", "verify", str(by_hand[1])]) == 0
    assert not any(models_dir().glob("tiny*"))


def test_a_yaml_without_its_checkpoint_says_what_is_missing(tmp_path, capsys):
    (tmp_path / "lonely.yaml").write_text("model: {}\n")
    assert main(["models", "verify", str(tmp_path / "lonely.yaml")]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'lonely.ckpt'} is missing" in err and "Traceback" not in err


def test_the_packaged_shapes_models_match_their_committed_hashes(capsys):
    assert main(["models", "verify", "shapes"]) == 0
    out = capsys.readouterr().out
    ckpt_hash = SHAPES_FILES["shapes-vqgan.ckpt"]
    assert f"{ckpt_hash}: matches the published hash of shapes" in out
    assert "VQGAN f8, 256 codes; loads" in out


def test_a_file_saved_under_a_known_name_is_checked_against_that_model(by_hand, tmp_path, capsys):
    # Saved where vqgan_imagenet_f16_16384 belongs, but it is another architecture; saved as
    # OpenAI's ViT-B-32.pt, but not the file OpenAI published.
    ckpt, clip = by_hand
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt, folder / "vqgan_imagenet_f16_16384.ckpt")
    shutil.copy(ckpt.with_suffix(".yaml"), folder / "vqgan_imagenet_f16_16384.yaml")
    shutil.copy(clip, folder / "ViT-B-32.pt")
    assert main(["models", "verify", "vqgan_imagenet_f16_16384", "ViT-B/32"]) == 1
    out = capsys.readouterr().out
    assert "registry   vqgan_imagenet_f16_16384" in out
    assert "describes another architecture than vqgan_imagenet_f16_16384's" in out
    published = CLIPS["ViT-B/32"].file.sha256
    assert f"is not the published hash of ViT-B/32 ({published})" in out
    assert out.count("not usable as it is") == 2


def test_a_damaged_file_is_not_usable_and_says_why(by_hand, tmp_path, capsys):
    ckpt, _ = by_hand
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ckpt.read_bytes()[:50_000])
    shutil.copy(ckpt.with_suffix(".yaml"), broken.with_suffix(".yaml"))
    assert main(["models", "verify", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "(does not load)" in out and "cut-short or corrupt" in out
