"""Shared test setup: every test runs with its own cache and home directories."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep tests away from the user's real caches, model store and TikTok token."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("FEVERDREAM_CACHE", str(root / "cache"))
    monkeypatch.setenv("FEVERDREAM_HOME", str(root / "config"))
    monkeypatch.setenv("FEVERDREAM_MODELS", str(root / "models"))
