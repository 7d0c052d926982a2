"""The command line's `score` verb; pipeline/cli.py adds it to its parser."""

from __future__ import annotations

import argparse


def cmd_score(args: argparse.Namespace) -> int:
    import json

    from pipeline import run

    story = run.load(args.storyboard) if args.storyboard else None
    clip = None if args.clip == "none" else args.clip
    result = run.score(args.folder, clip, story)
    print(json.dumps(result.to_json(), indent=1) if args.json else result.describe())
    return 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="how a render holds up: CLIP loss, flicker and colour drift (mean, worst second)",
    )
    p.add_argument("folder", help="a render's output folder (outputs/NAME, or its preview/)")
    p.add_argument(
        "--clip",
        default="render",
        help="the CLIP for the loss: render (default: the one the frames were made with), a "
        "registry name or file, or none",
    )
    p.add_argument("--storyboard", help="the storyboard, for the files of its image prompts")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_score)
