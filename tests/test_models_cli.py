"""`feverdream models`: what is known and present, where files go, clear failures."""

from __future__ import annotations

import subprocess
import sys

from pipeline.cli import main
from pipeline.models.catalogue import CLIPS, DEPTHS, VQGANS, tiny_depth_file, tiny_files
from pipeline.models.files import models_dir


def test_an_unknown_model_name_exits_non_zero_with_suggestions():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "models", "path", "vqgan_imagenet_f16_1638"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "unknown model 'vqgan_imagenet_f16_1638'" in result.stderr
    assert "Did you mean vqgan_imagenet_f16_16384" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_list_shows_every_model_and_labels_the_noise_makers(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in [*VQGANS, *CLIPS, *DEPTHS]:
        assert f"\n{name} " in out
    assert str(models_dir()) in out
    tiny_rows = [line for line in out.splitlines() if line.startswith("tiny ")]
    assert len(tiny_rows) == 3 and all("random weights" in row for row in tiny_rows)
    assert "--random-weights" in out and out.count("abstract noise, not art") == 3


def test_path_of_a_model_not_downloaded_says_how_to_get_it(capsys):
    assert main(["models", "path", "ViT-B/32"]) == 1
    err = capsys.readouterr().err
    assert "feverdream models download ViT-B/32" in err
    assert CLIPS["ViT-B/32"].file.url in err


def test_path_of_tiny_gives_its_four_files(tiny_model_dir, capsys):
    assert main(["models", "path", "tiny"]) == 0
    paths = capsys.readouterr().out.split()
    files = tiny_files(tiny_model_dir)
    depth = tiny_depth_file(tiny_model_dir)
    assert paths == [str(files.vqgan_ckpt), str(files.vqgan_config), str(files.clip), str(depth)]
