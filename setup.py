"""Builds feverdream's wheel. pyproject.toml holds everything but one step: the example
storyboards, their pictures and soundtracks live at the checkout's top (where the README's
commands name them), and this copies them into the package as pipeline/example_files/, so that
`feverdream examples DIR` can hand them out from an installed wheel."""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pipeline import examples  # noqa: E402 (the checkout's own, before it is installed)


class BuildWithExamples(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "pipeline" / examples.PACKAGED
        for relative in examples.files(HERE):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / relative, target / relative)


setup(cmdclass={"build_py": BuildWithExamples})
