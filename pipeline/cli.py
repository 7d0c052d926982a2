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

log = logging.getLogger("feverdream")


# --- verbs -------------------------------------------------------------------------------
# Each verb is a function `cmd_<verb>(args) -> int` (an exit status); each group of verbs
# has an `_add_<group>_verbs(sub)` function that declares its arguments.


def _add_storyboard_verbs(sub: argparse._SubParsersAction) -> None:
    """validate, plan, render."""


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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except FeverdreamError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
