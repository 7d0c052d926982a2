"""Hash every frame of short renders of each example storyboard, so that a change meant to
leave the pictures alone (a refactor) can show it did: run it before and after and compare.

    .venv/bin/python tools/frame_hashes.py OUT.json [--frames 0:16]

Each example renders its first frames as a preview (`--preview --frames A:B`), with the `tiny`
models, or the `shapes` models for the shapes world's storyboards, on both engines, on the CPU
in fp32 (`--precision fp32`, so the figures do not depend on the CPU's bf16). The JSON maps
"storyboard engine" to the SHA-256 of each frame, in order. Compare two with `cmp` or `diff`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("demo-shapes", "shapes-pictures")


def frame_hashes(storyboard: Path, engine: str, frames: str, scratch: Path) -> list[str]:
    """The SHA-256 of each frame `feverdream render` makes of `storyboard` with these
    options."""
    models = "shapes" if storyboard.stem in SHAPES else "tiny"
    out = scratch / f"{storyboard.stem}-{engine}"
    command = [
        sys.executable, "-m", "pipeline", "render", str(storyboard), "-o", str(out),
        "--preview", "--frames", frames, "--models", models, "--engine", engine,
        "--precision", "fp32", "--device", "cpu", "--encode", "after",
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    pictures = sorted(out.rglob("frames/*.png"))
    if not pictures:
        raise SystemExit(f"no frames under {out}")
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in pictures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the hashes (JSON)")
    parser.add_argument("--frames", default="0:16", help="the span of each render (A:B)")
    args = parser.parse_args()
    hashes = {}
    with tempfile.TemporaryDirectory() as scratch:
        for storyboard in sorted((ROOT / "storyboards").glob("*.yaml")):
            for engine in ("fast", "classic"):
                key = f"{storyboard.stem} {engine}"
                hashes[key] = frame_hashes(storyboard, engine, args.frames, Path(scratch))
                print(key, len(hashes[key]), "frames", flush=True)
    args.out.write_text(json.dumps(hashes, indent=1) + "\n")


if __name__ == "__main__":
    main()
