"""Python environments like a user's, for the install tests: a fresh venv outside the checkout
that already holds what Colab ships (torch, numpy, librosa, Jupyter's kernel, ...) and lacks
feverdream and what Colab does not ship, which a local wheelhouse provides offline.

What Colab ships is this test run's own packages, seen through a .pth file: nothing is copied,
and pip, which never uninstalls a package outside the environment it installs into, cannot
change them. What an install adds lands in the new venv's own site-packages, where a test
can see it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
# Packages feverdream needs that Colab does not ship (by their import and distribution names).
COLAB_LACKS = ("open-clip-torch", "taming-transformers-rom1504", "simpleeval", "imageio-ffmpeg",
               "av", "ftfy")  # fmt: skip
_NOT_SHARED = {
    "open_clip", "open_clip_train", "open_clip_torch", "taming", "taming_transformers_rom1504",
    "simpleeval", "imageio_ffmpeg", "av", "ftfy",
    # feverdream itself (this checkout's editable install), and pip: the venv has its own
    "feverdream", "__editable__", "__editable___feverdream_0_1_0_finder", "pip",
}  # fmt: skip
# What `python -m venv` puts beside pip: an old setuptools, which would hide the shared one
# (torch asks for a newer one), so it goes.
_VENV_EXTRAS = {"setuptools", "pkg_resources", "_distutils_hack", "distutils"}
TORCH = {"torch", "torchvision", "torchgen", "functorch", "triton", "nvidia", "cuda"}


def _name(entry: str) -> str:
    """The package an entry of site-packages belongs to: `av.libs`, `av-18.1.0.dist-info` → av."""
    name = entry.split("-")[0]
    for suffix in (".py", ".libs", ".pth"):
        name = name.removesuffix(suffix)
    return name.split(".")[0]


def pip(python: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_wheel(folder: Path) -> Path:
    """feverdream's wheel, built from this checkout as `pip wheel .` builds it."""
    pip(Path(sys.executable), "wheel", "-q", "--no-deps", "-w", str(folder), str(CHECKOUT))
    (wheel,) = folder.glob("feverdream-*.whl")
    return wheel


def build_wheelhouse(folder: Path) -> Path:
    """The wheels of what Colab lacks, at the versions constraints.txt pins: the local index
    an offline install reads (fetched once from the registry)."""
    pip(Path(sys.executable), "download", "-q", "--no-deps", "-c",
        str(CHECKOUT / "constraints.txt"), "-d", str(folder), *COLAB_LACKS)  # fmt: skip
    return folder


def make_venv(folder: Path, *, without: set[str] = frozenset()) -> Path:
    """A fresh venv in FOLDER sharing this run's packages but feverdream's own and those Colab
    lacks (and `without`); its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    site = next((folder / "lib").glob("python3*/site-packages"))
    for entry in site.iterdir():
        if _name(entry.name) in _VENV_EXTRAS:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shared = folder / "colab-packages"
    shared.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if _name(entry.name) not in _NOT_SHARED | without and entry.name != "__pycache__":
            (shared / entry.name).symlink_to(entry)
    (site / "colab-packages.pth").write_text(f"{shared}\n")
    return folder / "bin" / "python"


def offline(wheelhouse: Path) -> dict[str, str]:
    """An environment in which pip reads only the wheelhouse (the network is not asked)."""
    return {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse),
            "PIP_CONFIG_FILE": os.devnull}  # fmt: skip


def own_packages(python: Path) -> set[str]:
    """What an install put into the venv's own site-packages (by package name)."""
    site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
    return {_name(entry.name).lower() for entry in site.iterdir()}
