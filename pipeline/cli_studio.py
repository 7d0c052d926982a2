"""The command line's `studio` verb; pipeline/cli.py adds it to its parser."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def cmd_studio(args: argparse.Namespace) -> int:
    from pipeline.studio import Studio

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: anyone who can reach this machine and learns the URL can render "
            "here, write storyboards and post to your TikTok; keep the URL private",
            args.host,
        )
    studio = Studio.start(
        Path(args.folder),
        host=args.host,
        port=args.port,
        outputs=Path(args.outputs) if args.outputs else None,
        models=args.models,
        device=args.device,
        background=False,
    )
    print(f"feverdream studio: {studio.url}", flush=True)
    print("(Ctrl-C stops it; a render in progress keeps every frame made)", file=sys.stderr)
    if not args.no_browser:
        import webbrowser

        webbrowser.open(studio.url)
    studio.serve_forever()
    return 0


def add_verbs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio", help="edit, preview, render and post the storyboards of a folder in the browser"
    )
    p.add_argument("folder", nargs="?", default=".", help="the storyboards' folder (default: .)")
    p.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1, this machine only)",
    )
    p.add_argument("--outputs", help="where renders go (default: outputs/, as for `render`)")
    p.add_argument(
        "--models", help="render with these models instead of the storyboards' (e.g. tiny)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--no-browser", action="store_true", help="print the URL only")
    p.set_defaults(func=cmd_studio)
