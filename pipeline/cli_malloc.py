"""glibc's malloc hands the engine's large activation buffers back to the system after every
step and maps them again on the next; raising its thresholds keeps them, about 24% faster per
step on CPU (../bench/RESULTS.md). The setting is read when a process starts, so the
command line's heavy verbs run again in a process that has it."""

from __future__ import annotations

import os
import platform
import sys

MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def restart_with_tuning() -> None:
    """Run this command again in a process with the malloc setting: once, on glibc, unless
    GLIBC_TUNABLES is already set or FEVERDREAM_MALLOC_TUNING=0."""
    if (
        "GLIBC_TUNABLES" in os.environ
        or os.environ.get("FEVERDREAM_MALLOC_TUNING") == "0"
        or platform.libc_ver()[0] != "glibc"
    ):
        return
    environment = {**os.environ, "GLIBC_TUNABLES": MALLOC_TUNABLES}
    # -P: not the working folder first on the path, where a pipeline.py of the user's would be
    # run instead of feverdream.
    command = [sys.executable, "-P", "-m", "pipeline", *sys.argv[1:]]
    os.execve(sys.executable, command, environment)
