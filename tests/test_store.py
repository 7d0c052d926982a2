"""Atomic writes: the whole file or the old one, with an ordinary file's permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.store import atomic_write


def test_an_atomic_write_has_an_ordinary_file_s_permissions(tmp_path: Path):
    out = tmp_path / "contact.png"
    atomic_write(out, lambda tmp: tmp.write_bytes(b"png"))
    mask = os.umask(0o022)
    os.umask(mask)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert out.read_bytes() == b"png"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    out = tmp_path / "render.json"
    out.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(out, fail)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["render.json"]
