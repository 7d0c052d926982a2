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


def load_plan(path: str):
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
    board, _, plan = load_plan(args.storyboard)
    print(
        f"{args.storyboard}: ok: '{board.title}', {plan.duration:.2f}s at {board.fps} fps "
        f"({plan.n_frames} frames), {len(board.keyframes)} keyframes"
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from pipeline.schedule import format_table

    board, _, plan = load_plan(args.storyboard)
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


def _size_text(size: int | None, present: bool) -> str:
    if size is None:
        return "?"
    text = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
    return text if present else f"~{text}"


def cmd_models_list(args: argparse.Namespace) -> int:
    from pipeline.models import registry

    print(f"models folder: {registry.models_dir()} (set FEVERDREAM_MODELS to move it)")
    for kind, title in (("vqgan", "VQGAN"), ("clip", "CLIP")):
        print(f"\n{title:26} {'size':>10}  {'status':8} notes / path")
        for row in registry.status(kind):
            state = "present" if row.present else "missing"
            if row.name == registry.TINY and not row.present:
                state = "on use"
            print(f"{row.name:26} {_size_text(row.size, row.present):>10}  {state:8} {row.notes}")
            if row.present:
                for path in row.paths:
                    print(f"{'':46} {path}")
    print(f"\n{registry.RANDOM_WEIGHTS_NOTE}")
    return 0


def cmd_models_download(args: argparse.Namespace) -> int:
    from pipeline.models.download import download

    failed = 0
    for name in args.names:
        try:
            for path in download(name):
                print(path)
        except FeverdreamError as error:
            # Go on with the other names; one dead link should not block the rest.
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from pipeline.models.registry import model_paths

    for path in model_paths(args.name):
        print(path)
    return 0


def _add_models_verbs(sub: argparse._SubParsersAction) -> None:
    """models list|download|path."""
    models = sub.add_parser(
        "models",
        help="list, download and locate VQGAN and CLIP checkpoints",
        description="Model files live in the models folder: FEVERDREAM_MODELS, else your "
        "user cache. `tiny` needs no download (random weights: abstract noise, not art).",
    )
    verbs = models.add_subparsers(dest="models_verb", metavar="ACTION", required=True)

    p = verbs.add_parser("list", help="what is known, what is downloaded, sizes and paths")
    p.set_defaults(func=cmd_models_list)

    p = verbs.add_parser("download", help="fetch models into the models folder (resumable)")
    p.add_argument("names", nargs="+", metavar="NAME", help="e.g. vqgan_imagenet_f16_16384")
    p.set_defaults(func=cmd_models_download)

    p = verbs.add_parser("path", help="where a model's files are; fails if not downloaded")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_models_path)


def cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.check import find_problems, probe_video

    info = probe_video(Path(args.video))
    print(info.summary())
    problems = find_problems(info, max_duration_s=args.max_duration)
    if not problems:
        print("TikTok accepts this file")
        return 0
    print("TikTok would reject this file; to fix it:")
    for problem in problems:
        print(f"  - {problem}")
    return 1


def _add_check_verb(sub: argparse._SubParsersAction) -> None:
    """check VIDEO."""
    p = sub.add_parser("check", help="does TikTok accept this video file? what to change")
    p.add_argument("video")
    p.add_argument(
        "--max-duration",
        type=float,
        metavar="SECONDS",
        help="your account's own limit, if below TikTok's 10 minutes",
    )
    p.set_defaults(func=cmd_check)


def _tiktok_say(line: str) -> None:
    # Flushed at once: `tiktok login` waits on the user right after printing the link.
    print(line, flush=True)


def cmd_tiktok_login(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    tiktok.login(port=args.port, open_browser=not args.no_browser, say=_tiktok_say)
    return 0


def cmd_tiktok_whoami(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    tiktok.whoami(say=_tiktok_say)
    return 0


def cmd_tiktok_logout(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    tiktok.logout(say=_tiktok_say)
    return 0


def _tiktok_post_options(args: argparse.Namespace) -> dict:
    """The options `_add_tiktok_post_options` declared, as keywords of `tiktok.post_video` and
    `tiktok.check_can_post` (which `render --post` calls before rendering)."""
    return {
        "privacy": args.privacy,
        "disable_comment": args.no_comment,
        "disable_duet": args.no_duet,
        "disable_stitch": args.no_stitch,
        "cover_ms": args.cover_ms,
        "yes": args.yes,
    }


def _tiktok_post(args: argparse.Namespace, video: str, mode: str, caption: str) -> int:
    """Post `video` as `mode` ("draft" or "direct"); the `tiktok post` verb and
    `render --post` both end here."""
    from pipeline import tiktok

    tiktok.post_video(
        video,
        mode=mode,
        caption=caption,
        wait=not args.no_wait,
        say=_tiktok_say,
        **_tiktok_post_options(args),
    )
    return 0


def cmd_tiktok_post(args: argparse.Namespace) -> int:
    return _tiktok_post(args, args.video, args.mode, args.caption)


def cmd_tiktok_status(args: argparse.Namespace) -> int:
    from pipeline import tiktok

    status = tiktok.post_status(args.publish_id, say=_tiktok_say)
    return 1 if status.status == "FAILED" else 0


def _add_tiktok_post_options(p: argparse.ArgumentParser) -> None:
    """How a post goes out, shared by `tiktok post` and `render --post`."""
    p.add_argument(
        "--privacy",
        metavar="LEVEL",
        help="direct posts: PUBLIC_TO_EVERYONE, MUTUAL_FOLLOW_FRIENDS, FOLLOWER_OF_CREATOR or "
        "SELF_ONLY, as your account offers (no default; unaudited apps: SELF_ONLY)",
    )
    p.add_argument("--no-comment", action="store_true", help="direct posts: nobody can comment")
    p.add_argument("--no-duet", action="store_true", help="direct posts: nobody can duet")
    p.add_argument("--no-stitch", action="store_true", help="direct posts: nobody can stitch")
    p.add_argument("--cover-ms", type=int, metavar="N", help="direct posts: cover frame at N ms")
    p.add_argument("--yes", action="store_true", help="direct posts: do not ask to confirm")
    p.add_argument(
        "--no-wait", action="store_true", help="return after the upload, not the final status"
    )


def _add_tiktok_verbs(sub: argparse._SubParsersAction) -> None:
    """tiktok login|logout|whoami|post|status."""
    tiktok = sub.add_parser(
        "tiktok",
        help="log in to TikTok and post videos",
        description="Needs your own TikTok app: export TIKTOK_CLIENT_KEY and TIKTOK_CLIENT_SECRET.",
    )
    verbs = tiktok.add_subparsers(dest="tiktok_verb", metavar="ACTION", required=True)

    p = verbs.add_parser("login", help="log in through the browser (PKCE, local callback)")
    p.add_argument(
        "--port", type=int, default=3455, help="callback port on 127.0.0.1 (default 3455)"
    )
    p.add_argument("--no-browser", action="store_true", help="print the link, do not open it")
    p.set_defaults(func=cmd_tiktok_login)

    p = verbs.add_parser("whoami", help="who is logged in, with which permissions")
    p.set_defaults(func=cmd_tiktok_whoami)

    p = verbs.add_parser("logout", help="revoke the login and delete the token")
    p.set_defaults(func=cmd_tiktok_logout)

    p = verbs.add_parser("post", help="upload a video as a draft, or post it directly")
    p.add_argument("video")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--draft",
        dest="mode",
        action="store_const",
        const="draft",
        help="send to your TikTok inbox to finish in the app (the default)",
    )
    mode.add_argument(
        "--direct", dest="mode", action="store_const", const="direct", help="publish now"
    )
    p.set_defaults(mode="draft")
    p.add_argument("--caption", default="", help="direct posts: the caption (#tags, @mentions)")
    _add_tiktok_post_options(p)
    p.set_defaults(func=cmd_tiktok_post)

    p = verbs.add_parser("status", help="where a post stands")
    p.add_argument("publish_id")
    p.set_defaults(func=cmd_tiktok_status)


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
