"""Print pip constraints that pin each of feverdream's direct dependencies to the oldest
release pyproject.toml admits (its `>=` bound), for tools/test_floor.sh.

    python tools/floor_constraints.py [EXTRA ...] > floor.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# NAME[extras] ... >=FLOOR: the name and the floor of a requirement.
FLOOR = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?[^;]*?>=\s*([^,;\s]+)")


def floors(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = []
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match is None:
            raise SystemExit(f"{requirement!r} has no >= floor: give it one in pyproject.toml")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(sys.argv[1:])))
