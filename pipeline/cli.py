"""The feverdream command line: parses arguments and wires the pipeline's parts together.

Heavy modules (torch, librosa, ffmpeg) are imported inside the verbs that need them, so
that `validate` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline import __version__
from pipeline.errors import FeverdreamError

log = logging.getLogger(__name__)


# --- verbs -------------------------------------------------------------------------------
# Each verb is a function `cmd_<verb>(args) -> int` (an exit status); each group of verbs
# has an `_add_<group>_verbs(sub)` function that declares its arguments.


def _load_plan(path: str):
    """Storyboard → soundtrack analysis → plan; every problem is a FILE:LINE error."""
    from pipeline.schedule import build_plan
    from pipeline.storyboard import load_storyboard

    board = load_storyboard(path)
    features = None
    if board.audio is not None:
        from pipeline import audio

        try:
            features = audio.analyse(board.audio.path, board.fps, board.audio.offset)
        except audio.AudioError as error:
            raise board.audio.where.error(str(error)) from None
    return board, features, build_plan(board, features)


def cmd_validate(args: argparse.Namespace) -> int:
    board, _, plan = _load_plan(args.storyboard)
    print(
        f"{args.storyboard}: ok: '{board.title}', {plan.duration:.2f}s at {board.fps} fps "
        f"({plan.n_frames} frames), {len(board.keyframes)} keyframes"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from pipeline.schedule import format_table

    board, _, plan = _load_plan(args.storyboard)
    if args.json:
        print(json.dumps(plan.to_json(), ensure_ascii=False, indent=1))
    else:
        print(f"{board.title}: {plan.duration:.2f}s, {board.fps} fps, {plan.n_frames} frames")
        print(format_table(plan, every_frame=args.frames))
    if args.plot:
        from pathlib import Path

        from pipeline.plot import plot_plan

        plot_plan(plan, Path(args.plot), title=board.title)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _add_storyboard_verbs(sub: argparse._SubParsersAction) -> None:
    """validate, plan, render."""
    p = sub.add_parser("validate", help="check a storyboard; exit 2 with FILE:LINE errors")
    p.add_argument("storyboard")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show what every frame will be, before rendering")
    p.add_argument("storyboard")
    p.add_argument("--json", action="store_true", help="the plan as JSON, one object per frame")
    p.add_argument("--frames", action="store_true", help="one row per frame, not per keyframe")
    p.add_argument("--plot", metavar="FILE.png", help="draw motion and prompt weights over time")
    p.set_defaults(func=cmd_plan)


def _add_models_verbs(sub: argparse._SubParsersAction) -> None:
    """models list|download|path."""


def _add_check_verb(sub: argparse._SubParsersAction) -> None:
    """check VIDEO."""


def _add_tiktok_verbs(sub: argparse._SubParsersAction) -> None:
    """tiktok login|logout|whoami|post|status."""


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feverdream",
        description="Turn a YAML storyboard into a vertical VQGAN+CLIP video for TikTok.",
    )
    parser.add_argument("--version", action="version", version=f"feverdream {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_storyboard_verbs(sub)
    _add_models_verbs(sub)
    _add_check_verb(sub)
    _add_tiktok_verbs(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Our own modules log at INFO; libraries only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except FeverdreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
