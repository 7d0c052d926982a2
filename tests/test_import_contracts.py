"""`make lint` keeps the stages in order: storyboard → schedule → engine → render → tiktok, the
library (pipeline.run) above them and the command line above it; no module imports one
later in the chain, the models import nothing of renders, and only the console script
imports the command line (pyproject.toml, [tool.importlinter]). Checked here on a copy of
the package, with import-linter itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("assets")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_package_keeps_its_import_contracts(package_copy: Path):
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, reaching_up",
    [
        ("storyboard.py", "from pipeline.schedule import Plan"),
        ("engine.py", "from pipeline.render import VideoSpec"),
        ("render.py", "from pipeline.run import load"),
        ("models/vqgan.py", "from pipeline.engine import Engine"),
        ("store.py", "from pipeline.cli import main"),
        ("models/checkpoint.py", "from pipeline.models.loading import load_models"),
        # A front end around the door, even to a module below it in the layers.
        ("cli.py", "from pipeline.store import FrameStore"),
        ("studio/jobs.py", "from pipeline.shots import shots"),
        ("notebook.py", "from pipeline.models.download import ensure_downloaded"),
    ],
)
def test_an_import_up_the_chain_fails_the_lint(package_copy: Path, module: str, reaching_up: str):
    path = package_copy / "pipeline" / module
    path.write_text(path.read_text() + f"\n{reaching_up}  # noqa\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and reaching_up.split()[1] in result.stdout


def test_the_door_contract_names_every_module_behind_the_door():
    """A module added to the package is behind the door unless it is a front end: the
    forbidden list of the one-door contract must name it, or front ends could import it."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (door,) = [
        contract
        for contract in config["tool"]["importlinter"]["contracts"]
        if "pipeline.run" in contract["name"]
    ]
    front_ends = set(door["source_modules"])
    modules = {
        f"pipeline.{path.relative_to(REPO / 'pipeline').parts[0].removesuffix('.py')}"
        for path in (REPO / "pipeline").glob("*")
        if path.suffix == ".py" or (path / "__init__.py").is_file()
    }
    behind = modules - front_ends - {"pipeline.run", "pipeline.errors", "pipeline.__init__",
                                     "pipeline.__main__"}  # fmt: skip
    assert behind == set(door["forbidden_modules"])


def test_the_architecture_page_lists_the_layers_as_the_contract_orders_them():
    """docs/ARCHITECTURE.md's table of layers, read bottom up, names every module of the
    layers contract once and in the contract's order, so the page a newcomer reads first
    cannot drift from what `lint-imports` enforces."""
    import re
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (chain,) = [
        contract
        for contract in config["tool"]["importlinter"]["contracts"]
        if contract["name"] == "each stage imports only the stages before it"
    ]
    layers = chain["layers"]
    height = {  # 0: the bottom layer
        name.strip(): len(layers) - 1 - position
        for position, layer in enumerate(layers)
        for name in layer.split("|")
    }
    page = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    section = page.split("## The layers", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    rows = [line.split("|")[2] for line in table[2:]]  # after the header and its rule
    listed: list[list[str]] = []
    for cell in rows:
        names = []
        for name in re.findall(r"`([a-z0-9_*]+)/?`", cell):
            pattern = re.compile("pipeline." + name.replace("*", ".*") + "$")
            names += [module for module in height if pattern.match(module)] or [name]
        listed.append(names)
    flat = [name for names in listed for name in names]
    assert sorted(flat) == sorted(height), "the page's layers and the contract's differ"
    for lower, upper in zip(listed, listed[1:], strict=False):
        below = max(height[name] for name in lower) < min(height[name] for name in upper)
        assert below, f"the page puts {lower} below {upper}; the contract does not"
