"""The command line's `score` verb; pipeline/cli.py adds it to its parser."""

from __future__ import annotations

import argparse
import sys


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from pipeline import run

    story = run.load(args.storyboard) if args.storyboard else None
    clip = None if args.clip == "none" else args.clip
    result = run.score(args.folder, clip, story)
    if args.json:
        print(json.dumps(result.to_json(), indent=1, ensure_ascii=False, allow_nan=False))
    else:
        print(result.describe())
    for warning in result.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    if result.clip_loss is not None and result.clip_loss.mean is None:
        print(
            "error: no frame's CLIP loss could be computed (see the warnings); give the "
            "pictures back, or score without it (--clip none)",
            file=sys.stderr,
        )
        return 1
    return 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="how a render holds up: CLIP loss, flicker and colour drift (mean, worst second)",
        description="Scores the frames a render left in its folder: the CLIP loss (lower is "
        "closer to the prompts), flicker (0-255, lower is steadier) and colour drift (CIE76 "
        "ΔE from each shot's first frame), each as its mean and its worst second.",
    )
    p.add_argument("folder", help="a render's output folder (outputs/NAME, or its preview/)")
    p.add_argument(
        "--clip",
        default="render",
        help="the CLIP for the loss: render (default: the one the frames were made with), a "
        "registry name or file, or none",
    )
    p.add_argument(
        "--storyboard",
        metavar="FILE",
        help="the storyboard the render was made from: needed when its prompts include "
        "pictures (image: PATH), whose paths are relative to it",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_score)
