"""A disk that fills up, for the tests of what a full disk does: a tmpfs of a given size,
mounted in a user and mount namespace of the command's own (`unshare`), so that no root is
needed and nothing is left mounted, grown between runs as a user frees space."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = """\
set -u
disk=$1; keep=$2; shift 2
run=0
for size in {sizes}; do
    if [ $run = 0 ]; then mount -t tmpfs -o size=$size tmpfs $disk
    else mount -o remount,size=$size $disk; fi
    "$@" > $keep/$run.out 2> $keep/$run.err
    echo $? > $keep/$run.rc
    mkdir $keep/$run && cp -a $disk/. $keep/$run/
    run=$((run + 1))
done
"""


@dataclass
class Run:
    code: int
    out: str
    err: str
    disk: Path  # a copy of what the disk held after this run

    @property
    def last_line(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


def on_a_small_disk(disk: Path, sizes: list[int], command: list[str]) -> list[Run]:
    """Run `command` once on a tmpfs at `disk` (an empty folder) of each size in bytes, in
    turn, the disk kept between runs; what each said and left on the disk."""
    if not shutil.which("unshare"):
        pytest.fail("util-linux's unshare is missing: apt-get install util-linux")
    keep = disk.with_name(disk.name + "-runs")
    disk.mkdir(exist_ok=True)
    keep.mkdir()
    script = SCRIPT.format(sizes=" ".join(str(size) for size in sizes))
    ran = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(disk),
         str(keep), *command],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ran.returncode == 0, f"the small disk could not be made: {ran.stderr}"
    return [
        Run(
            int((keep / f"{run}.rc").read_text()),
            (keep / f"{run}.out").read_text(),
            (keep / f"{run}.err").read_text(),
            keep / str(run),
        )  # fmt: skip
        for run in range(len(sizes))
    ]
