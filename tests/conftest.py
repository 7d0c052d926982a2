"""Shared test setup: every test runs with its own cache and home directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep tests away from the user's real caches, model store and TikTok token."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("FEVERDREAM_CACHE", str(root / "cache"))
    monkeypatch.setenv("FEVERDREAM_HOME", str(root / "config"))
    monkeypatch.setenv("FEVERDREAM_MODELS", str(root / "models"))


@pytest.fixture(scope="session")
def _tiny_model_files(tmp_path_factory: pytest.TempPathFactory):
    """The tiny models' files, written once per test session through the real writers."""
    from pipeline.models.tiny import ensure_tiny

    return ensure_tiny(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def tiny_model_dir(_tiny_model_files, _isolated_dirs):
    """A models folder (this test's FEVERDREAM_MODELS) holding the tiny models' files, so
    `tiny` loads through the real loaders without being built again."""
    import shutil

    folder = Path(os.environ["FEVERDREAM_MODELS"])
    folder.mkdir(parents=True, exist_ok=True)
    for path in (
        _tiny_model_files.vqgan_ckpt,
        _tiny_model_files.vqgan_config,
        _tiny_model_files.clip,
    ):
        shutil.copy(path, folder / path.name)
    return folder


# Where `make setup` trains the shapes models (git-ignored); a test session trains them there
# itself if they are missing, which takes about twenty minutes.
SHAPES_DIR = Path(__file__).resolve().parents[1] / ".models" / "shapes"


@pytest.fixture(scope="session")
def shapes_model_files():
    """The shapes models' files, trained once into the checkout's .models/shapes."""
    from pipeline.models import shapes

    return shapes.ensure_shapes(SHAPES_DIR, progress=False)


@pytest.fixture
def shapes_model_dir(shapes_model_files, _isolated_dirs):
    """A models folder (this test's FEVERDREAM_MODELS) in which `shapes` names the trained
    files, so that it loads by name without training again."""
    folder = Path(os.environ["FEVERDREAM_MODELS"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shapes").symlink_to(SHAPES_DIR, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def shapes_models(shapes_model_files):
    """The shapes VQGAN and CLIP, loaded once by path through the real loaders."""
    from pipeline.models.registry import load_models

    files = shapes_model_files
    return load_models(str(files.vqgan_ckpt), str(files.clip), "cpu")
