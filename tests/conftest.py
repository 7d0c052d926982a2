"""Shared test setup: every test runs with its own cache and home directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import stamina

# TikTok's retries and status polls (pipeline/tiktok, through stamina) without their waits, and
# with the attempts the code asks for (a status poll, which asks for no limit, at most 1000).
stamina.set_testing(True, attempts=1000, cap=True)

# `make test` runs the suite in one pytest-xdist worker per core; each computes on one thread
# (before torch is imported), as do the processes it starts: two processes on two threads each
# slow each other 10-28x on two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device-under-test",
        default="cpu",
        help="the device the tests marked `device` compute on (cpu, or cuda: bench/gpu_proof.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "device: exercises a path that differs on a GPU; computes on --device-under-test "
        "(`pytest -m device --device-under-test cuda` is the GPU's share of bench/gpu_proof.py)",
    )


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The device the tests marked `device` compute on: cpu in `make test`."""
    chosen = request.config.getoption("--device-under-test")
    if chosen.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.fail(f"--device-under-test {chosen}: torch sees no CUDA GPU here")
    return chosen


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


@pytest.fixture(scope="session")
def shapes_model_files():
    """The shapes world's reference models, as the package ships them."""
    from pipeline.models.files import packaged_dir
    from tools.shapes.build import shapes_files

    return shapes_files(packaged_dir())


@pytest.fixture(scope="session")
def shapes_models():
    """The shapes VQGAN and CLIP, loaded once by name through the real loaders."""
    from pipeline.models.loading import load_models

    return load_models("shapes", "shapes", "cpu")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """A fake TikTok on 127.0.0.1 (tests/fake_tiktok.py), nobody logged in to it yet."""
    from fake_tiktok import FakeTikTok

    with FakeTikTok() as fake:
        for name, value in fake.environ().items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def logged_in_tiktok(fake):
    """A fake TikTok on 127.0.0.1 (tests/fake_tiktok.py) and a saved login to it."""
    from pipeline.tiktok.auth import Token, TokenStore
    from pipeline.tiktok.config import Settings

    TokenStore(Settings.from_env().token_path).save(Token.from_response(fake.issue_tokens()))
    return fake


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """feverdream's wheel, built from this checkout as `pip wheel .` builds it."""
    from colab_env import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local index of what feverdream needs beyond Colab's packages (tests/colab_env.py)."""
    from colab_env import build_wheelhouse

    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
